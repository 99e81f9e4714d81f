/* ptycanon: a pseudo-terminal in canonical mode (echo on, the usual special characters) with input
 * typed and not read yet: two whole lines, a line with a ^C made literal by ^V, and a partial line
 * (no newline yet, invisible to FIONREAD). After the restart the slave reads the three lines as they
 * were, nothing was echoed again, and the partial line completes when the rest is typed. */
#include "e2e.h"
#include <sys/ioctl.h>
#include <termios.h>

static int queued(int fd)
{
    int n = -1;
    return ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}

int main(void)
{
    e2e_init();
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    MUST(m >= 0 && grantpt(m) == 0 && unlockpt(m) == 0);
    char name[64];
    MUST(ptsname_r(m, name, sizeof name) == 0);
    int s = open(name, O_RDWR | O_NOCTTY);
    MUST(s >= 0);
    struct termios t;
    MUST(tcgetattr(s, &t) == 0);
    MUST((t.c_lflag & (ICANON | ECHO | ISIG | IEXTEN)) == (ICANON | ECHO | ISIG | IEXTEN));
    static const char typed[] = "first line\nsecond\tline\nlit\x16\x03x\npartial";
    MUST(write(m, typed, sizeof typed - 1) == (ssize_t)(sizeof typed - 1));
    /* the three whole lines are there (the ^V is not: it made the ^C literal) */
    for (int i = 0; i < 1000 && queued(s) != 29; i++) usleep(1000);
    MUST(queued(s) == 29);
    /* the echo is read, so that the master has nothing waiting */
    usleep(20000);
    char echo[256];
    MUST(fcntl(m, F_SETFL, O_NONBLOCK) == 0);
    while (read(m, echo, sizeof echo) > 0) { }
    MUST(fcntl(m, F_SETFL, 0) == 0);
    say("PTY %s", name);
    say("READY");
    e2e_wait_usr1();

    CHECK(queued(m) == 0, "the master has %d bytes to read: the input was echoed again", queued(m));
    CHECK(queued(s) == 29, "%d bytes of whole lines wait on the slave, want 29", queued(s));
    char line[64];
    static const char *want[] = { "first line\n", "second\tline\n", "lit\x03x\n" };
    for (int i = 0; i < 3; i++)
    {
        memset(line, 0, sizeof line);
        ssize_t n = read(s, line, sizeof line - 1);
        CHECK(n == (ssize_t)strlen(want[i]) && !memcmp(line, want[i], n), "line %d is '%s' (%zd bytes)", i + 1, line, n);
    }
    CHECK(queued(s) == 0, "%d bytes more wait on the slave", queued(s));
    MUST(write(m, "ly\n", 3) == 3);
    memset(line, 0, sizeof line);
    ssize_t n = read(s, line, sizeof line - 1);
    CHECK(n == 10 && !memcmp(line, "partially\n", 10), "the partial line came back as '%s' (%zd bytes)", line, n);
    struct termios t2;
    CHECK(tcgetattr(s, &t2) == 0 && t2.c_lflag == t.c_lflag && t2.c_iflag == t.c_iflag && !memcmp(t2.c_cc, t.c_cc, NCCS), "the terminal settings changed");
    return e2e_finish();
}
