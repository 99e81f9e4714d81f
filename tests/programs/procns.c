/* procns: run as the init of a pid namespace with a proc of its own on /proc (unshare --pid --fork
 * --mount-proc), with a child. Checks that its /proc is its namespace's (/proc/self is 1, /proc lists
 * its two processes, a child's /proc/PID/status has its id of the namespace) before and after. */
#include "e2e.h"
#include <dirent.h>
#include <sys/stat.h>

static int count_pids(void)
{
    DIR *d = opendir("/proc");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] >= '1' && e->d_name[0] <= '9') n++;
    closedir(d);
    return n;
}

static void check_proc(pid_t child, const char *when)
{
    char self[32] = "";
    ssize_t n = readlink("/proc/self", self, sizeof self - 1);
    if (n > 0) self[n] = 0;
    CHECK(strcmp(self, "1") == 0, "%s: /proc/self is '%s', expected 1", when, self);
    CHECK(count_pids() == 2, "%s: /proc lists %d processes, expected 2", when, count_pids());
    char path[64], buf[4096] = "";
    snprintf(path, sizeof path, "/proc/%d/status", child);
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0, "%s: cannot open %s: %s", when, path, strerror(errno));
    if (fd >= 0) {
        ssize_t got = read(fd, buf, sizeof buf - 1);
        if (got > 0) buf[got] = 0;
        close(fd);
        char want[64];
        snprintf(want, sizeof want, "NSpid:\t%d\n", child);
        CHECK(strstr(buf, want) != NULL, "%s: %s has no '%s'", when, path, "NSpid: child");
    }
}

int main(void)
{
    e2e_init();
    MUST(getpid() == 1);
    /* files held open on its own proc: its status, and the proc's root directory */
    int status_fd = open("/proc/self/status", O_RDONLY);
    int dir_fd = open("/proc", O_RDONLY | O_DIRECTORY);
    MUST(status_fd >= 0 && dir_fd >= 0);
    pid_t child = fork();
    MUST(child >= 0);
    if (child == 0) { for (;;) pause(); }
    check_proc(child, "before");
    say("PROCNS %d", child);
    say("READY");
    e2e_wait_usr1();
    check_proc(child, "after");
    char buf[4096];
    ssize_t got = pread(status_fd, buf, sizeof buf - 1, 0);
    if (got > 0) buf[got] = 0;
    CHECK(got > 0 && strstr(buf, "NSpid:\t1\n") != NULL, "the status it holds open is not its own in its namespace's proc");
    struct stat st;
    CHECK(fstatat(dir_fd, "1/status", &st, 0) == 0, "the /proc directory it holds open has no 1/status: %s", strerror(errno));
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    return e2e_finish();
}
