/* deadproc: /proc files of a process that has exited. The program forks a child, opens its
 * /proc/CHILD/stat and /proc/CHILD/mountinfo, kills and reaps it: reads then fail with ESRCH (an exited
 * process's files; its mountinfo still shows the mounts it had). Prints "DEAD CHILD" and READY; after SIGUSR1 it checks that the fds are still
 * files of the proc file system that read as before, and that pid CHILD is free. */
#include "e2e.h"
#include <sys/vfs.h>

/* stat fails with ESRCH (its task is gone); mountinfo still reads the mount namespace it was opened in */
static void check(int fd, const char *what, int readable)
{
    char buf[64];
    struct statfs sf;
    CHECK(fstatfs(fd, &sf) == 0 && sf.f_type == 0x9fa0, "%s: not a file of the proc file system", what);
    errno = 0;
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    if (readable) CHECK(n > 0, "%s: read gave %zd (errno %d)", what, n, errno);
    else CHECK(n < 0 && errno == ESRCH, "%s: read gave %zd (errno %d), want ESRCH", what, n, errno);
}

int main(void)
{
    e2e_init();
    pid_t child = fork();
    MUST(child >= 0);
    if (child == 0) { for (;;) pause(); }
    char p1[64], p2[64];
    snprintf(p1, sizeof p1, "/proc/%d/stat", child);
    snprintf(p2, sizeof p2, "/proc/%d/mountinfo", child);
    int f1 = open(p1, O_RDONLY), f2 = open(p2, O_RDONLY | O_CLOEXEC);
    MUST(f1 >= 0 && f2 >= 0);
    MUST(kill(child, SIGKILL) == 0 && waitpid(child, NULL, 0) == child);
    check(f1, "stat", 0);
    check(f2, "mountinfo", 1);
    MUST(e2e_failures == 0);
    say("DEAD %d", child);
    say("READY");
    e2e_wait_usr1();
    check(f1, "stat", 0);
    check(f2, "mountinfo", 1);
    CHECK((fcntl(f2, F_GETFD) & FD_CLOEXEC) != 0 && (fcntl(f1, F_GETFD) & FD_CLOEXEC) == 0, "close-on-exec flags");
    CHECK(kill(child, 0) != 0 && errno == ESRCH, "pid %d is taken after the restart", child);
    return e2e_finish();
}
