/* hangup: terminals that were hung up. The program opens a pty, its slave twice (the second without
 * blocking), and closes the master: the kernel hangs the slave up (a job left behind by a closed
 * terminal window or ssh session has such stdio). Prints "HUNG /dev/pts/N" and READY; after SIGUSR1 it
 * checks that both are still hung up (reads give end of file, writes EIO: not a live terminal, even if
 * another pty has that index now), terminals by major, the second still non-blocking, both still of one
 * terminal (same device, same "/dev/pts/N (deleted)" link). */
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
    /* still two descriptions of one terminal: the same device, the same name */
    struct stat a, b;
    CHECK(fstat(s1, &a) == 0 && fstat(s2, &b) == 0 && a.st_rdev == b.st_rdev,
          "the two slaves are of different terminals now (%u:%u and %u:%u)", major(a.st_rdev), minor(a.st_rdev), major(b.st_rdev), minor(b.st_rdev));
    char l1[128] = "", l2[128] = "", p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", s1);
    ssize_t n1 = readlink(p, l1, sizeof l1 - 1);
    snprintf(p, sizeof p, "/proc/self/fd/%d", s2);
    ssize_t n2 = readlink(p, l2, sizeof l2 - 1);
    CHECK(n1 > 0 && n1 == n2 && strcmp(l1, l2) == 0 && strstr(l1, " (deleted)") != NULL, "the slaves link to '%s' and '%s'", l1, l2);
    return e2e_finish();
}
