/* fdlimit: a process that raised its fd limit and holds nearly that many fds, each its own description
 * (plus a few dup'd ones), numbered densely from 3 up. After SIGUSR1 it checks that every fd is there,
 * refers to /dev/null or to the same file as its twin, and that its limit is the one it set. Restarted
 * by a ckpt whose own soft limit is lower, it needs ckpt to raise it for the vessel, and the fds to be
 * placed without needing room for twice as many. */
#include "e2e.h"
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#define LIMIT 3000
#define FDS 2990

int main(void)
{
    e2e_init();
    struct rlimit rl;
    MUST(getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max >= LIMIT);
    rl.rlim_cur = LIMIT;
    MUST(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    for (int i = 3; i < FDS; i++) {
        int fd = i % 100 == 0 ? dup(i - 1) : open("/dev/null", i % 2 ? O_RDONLY : O_WRONLY | O_CLOEXEC);
        MUST(fd == i);
    }
    say("READY");
    e2e_wait_usr1();
    int missing = 0, wrong = 0;
    for (int i = 3; i < FDS; i++) {
        struct stat st;
        if (fstat(i, &st) != 0) { missing++; continue; }
        if (!S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 3)) wrong++;
        int fl = fcntl(i, F_GETFD);
        if (i % 100 != 0 && ((fl & FD_CLOEXEC) != 0) != (i % 2 == 0)) wrong++;
    }
    CHECK(missing == 0 && wrong == 0, "%d fds missing, %d wrong", missing, wrong);
    CHECK(fcntl(FDS, F_GETFD) < 0, "fd %d is open", FDS);
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur == LIMIT, "fd limit %lu, want %d", (unsigned long)rl.rlim_cur, LIMIT);
    return e2e_finish();
}
