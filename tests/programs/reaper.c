/* reaper ARGV...: runs ARGV (a test script) as a child subreaper, so that the processes it leaves behind
 * (a process restarted with --detach is reparented here) are reaped at once and their pid freed.
 * Each reaped process is logged to $REAPER_LOG as "PID exit N" or "PID signal N". When the script
 * exits, whatever it left running is killed and reaped; the reaper exits with the script's status.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int logfd = -1;

static void note(pid_t p, int st)
{
    if (logfd < 0) return;
    char line[64];
    int n = WIFEXITED(st) ? snprintf(line, sizeof line, "%d exit %d\n", p, WEXITSTATUS(st))
                          : snprintf(line, sizeof line, "%d signal %d\n", p, WTERMSIG(st));
    if (write(logfd, line, n) < 0) { /* nothing to do */ }
}

/* Kills every child of ours (orphans adopted as subreaper included); returns how many. */
static int kill_children(void)
{
    int n = 0;
    DIR *d = opendir("/proc");
    if (!d) return 0;
    struct dirent *e;
    pid_t me = getpid();
    while ((e = readdir(d))) {
        char path[300], buf[512];
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t r = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (r <= 0) continue;
        buf[r] = 0;
        char *rp = strrchr(buf, ')');
        char state;
        int ppid;
        if (!rp || sscanf(rp + 2, "%c %d", &state, &ppid) != 2) continue;
        if (ppid == me && state != 'Z') { kill(atoi(e->d_name), SIGKILL); n++; }
    }
    closedir(d);
    return n;
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: reaper PROGRAM [ARGS...]\n"); return 64; }
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) { perror("reaper: PR_SET_CHILD_SUBREAPER"); return 70; }
    syscall(SYS_close_range, 3, ~0U, 0);
    const char *log = getenv("REAPER_LOG");
    if (log) logfd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    pid_t script = fork();
    if (script < 0) { perror("reaper: fork"); return 70; }
    if (script == 0) {
        execvp(argv[1], argv + 1);
        perror("reaper: exec");
        _exit(127);
    }
    int script_status = 0;
    for (;;) {
        int st;
        pid_t p = waitpid(-1, &st, 0);
        if (p < 0) {
            if (errno == EINTR) continue;
            break;
        }
        note(p, st);
        if (p == script) { script_status = st; break; }
    }
    /* the script is done: nothing it started may outlive it */
    for (int round = 0; round < 50; round++) {
        int killed = kill_children();
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, killed ? 0 : WNOHANG)) > 0) {
            if (logfd >= 0) {
                char line[64];
                int n = snprintf(line, sizeof line, "%d leftover-killed\n", p);
                if (write(logfd, line, n) < 0) { /* ignore */ }
            }
            note(p, st);
        }
        if (p < 0 && errno == ECHILD) break;
        usleep(20000);
    }
    return WIFEXITED(script_status) ? WEXITSTATUS(script_status) : 128 + WTERMSIG(script_status);
}
