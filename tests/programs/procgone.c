/* procgone: its working directory is the /proc directory of a child that has ended since (the entry is
 * unhashed: getcwd fails with ENOENT, /proc/self/cwd reads "/proc/N (deleted)"). After restart it must
 * still be one: getcwd fails with ENOENT and the link reads "/proc/M (deleted)" (M is N when N is free). */
#include "e2e.h"

static int cwd_is_gone_proc(char *link, size_t n)
{
    char buf[256];
    errno = 0;
    if (getcwd(buf, sizeof buf) != NULL || errno != ENOENT) { say("getcwd: '%s' (%s), want ENOENT", buf, strerror(errno)); return 0; }
    ssize_t len = readlink("/proc/self/cwd", link, n - 1);
    if (len < 0) { say("readlink cwd: %s", strerror(errno)); return 0; }
    link[len] = 0;
    int pid = 0, end = 0;
    if (sscanf(link, "/proc/%d (deleted)%n", &pid, &end) != 1 || end != (int)len || pid <= 0) { say("cwd link '%s'", link); return 0; }
    return 1;
}

int main(void)
{
    e2e_init();
    pid_t c = fork();
    MUST(c >= 0);
    if (c == 0) { for (;;) pause(); }
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d", (int)c);
    MUST(chdir(dir) == 0);
    kill(c, SIGKILL);
    MUST(waitpid(c, NULL, 0) == c);
    char before[256], after[256];
    MUST(cwd_is_gone_proc(before, sizeof before));
    say("READY");
    e2e_wait_usr1();
    CHECK(cwd_is_gone_proc(after, sizeof after), "the working directory is not an ended process's /proc directory");
    say("CWD %s | %s", before, after);
    if (e2e_failures == 0) say("PASS");
    return e2e_failures ? 1 : 0;
}
