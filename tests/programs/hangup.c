/* hangup: terminals that were hung up. The program opens a pty, its slave twice (the second without
 * blocking), and closes the master: the kernel hangs the slave up (a job left behind by a closed
 * terminal window or ssh session has such stdio). Prints "HUNG /dev/pts/N" and READY; after SIGUSR1 it
 * checks that both are still hung up (reads give end of file, writes EIO: not a live terminal, even if
 * another pty has that index now), terminals by major, the second still non-blocking. */
#include "e2e.h"
#include <sys/stat.h>
#include <sys/sysmacros.h>

static void check_hung(int fd, const char *who, int nonblock)
{
    char c;
    struct stat st;
    CHECK(fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) >= 136 && major(st.st_rdev) <= 143,
          "%s: not a pty slave (mode 0%o, rdev %u:%u)", who, st.st_mode, major(st.st_rdev), minor(st.st_rdev));
    ssize_t n = read(fd, &c, 1);
    CHECK(n == 0, "%s: read gave %zd (errno %d), want end of file", who, n, errno);
    errno = 0;
    n = write(fd, "x", 1);
    CHECK(n == -1 && errno == EIO, "%s: write gave %zd (errno %d), want EIO", who, n, errno);
    int fl = fcntl(fd, F_GETFL);
    CHECK(fl >= 0 && ((fl & O_NONBLOCK) != 0) == nonblock, "%s: flags 0%o", who, fl);
}

int main(void)
{
    e2e_init();
    signal(SIGHUP, SIG_IGN);
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    MUST(m >= 0 && grantpt(m) == 0 && unlockpt(m) == 0);
    char name[64];
    MUST(ptsname_r(m, name, sizeof name) == 0);
    int s1 = open(name, O_RDWR | O_NOCTTY);
    int s2 = open(name, O_RDWR | O_NOCTTY | O_NONBLOCK);
    MUST(s1 >= 0 && s2 >= 0);
    close(m);
    check_hung(s1, "slave", 0);
    check_hung(s2, "second slave", 1);
    MUST(e2e_failures == 0);
    say("HUNG %s", name);
    say("READY");
    e2e_wait_usr1();
    check_hung(s1, "slave", 0);
    check_hung(s2, "second slave", 1);
    return e2e_finish();
}
