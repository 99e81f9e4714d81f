/* ptys: a pseudo-terminal whose master this process holds (like tmux or script), with a window size
 * and echo turned off; a child leads a session with the pty as its controlling terminal (on its fds
 * 0-2) and a grandchild in another process group in the foreground. After the restart the child is
 * asked (through the pty) to check from inside: same tty name, controlling terminal, session,
 * foreground group, window size; it answers through the pty; the master keeps its name and settings.
 * The grandchild writes a line before READY that the master does not read before the checkpoint: it
 * is read after the restart, as it was written (one \r before the \n, from ONLCR applied once). The
 * grandchild's terminal is in non-canonical mode without echo, and the master writes "typed\r" that the
 * grandchild does not read before the checkpoint: it reads it after the restart as the line discipline
 * gave it (ICRNL made the \r a \n). */
#include "e2e.h"
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>

static ssize_t read_line(int fd, char *buf, size_t n)
{
    size_t got = 0;
    while (got + 1 < n) {
        ssize_t r = read(fd, buf + got, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        if (buf[got] == '\n') { got++; break; }
        if (buf[got] != '\r') got++;
    }
    buf[got] = 0;
    return got;
}

int main(void)
{
    e2e_init();
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    MUST(m >= 0 && grantpt(m) == 0 && unlockpt(m) == 0);
    char name[64];
    MUST(ptsname_r(m, name, sizeof name) == 0);
    struct winsize ws = { .ws_row = 41, .ws_col = 103 };
    MUST(ioctl(m, TIOCSWINSZ, &ws) == 0);
    struct termios t;
    MUST(tcgetattr(m, &t) == 0);
    t.c_lflag &= ~(ECHO | ECHONL);
    MUST(tcsetattr(m, TCSANOW, &t) == 0);
    int sync[2], go[2];
    MUST(pipe(sync) == 0 && pipe(go) == 0);
    pid_t c = fork();
    MUST(c >= 0);
    if (c == 0) {
        close(m);
        close(sync[0]);
        setsid();
        int s = open(name, O_RDWR);   /* becomes the controlling terminal */
        if (s < 0) _exit(20);
        dup2(s, 0); dup2(s, 1); dup2(s, 2);
        if (s > 2) close(s);
        pid_t leader = getpid();
        pid_t g = fork();
        if (g == 0) {
            /* the foreground group's process: it reads the terminal */
            setpgid(0, 0);
            while (tcgetpgrp(0) != getpid()) usleep(1000);
            if (write(1, "early output\n", 13) != 13) _exit(26);
            tcdrain(1);
            struct termios nt;
            if (tcgetattr(0, &nt) != 0) _exit(27);
            nt.c_lflag &= ~(ICANON | ECHO);
            nt.c_cc[VMIN] = 1;
            nt.c_cc[VTIME] = 0;
            if (tcsetattr(0, TCSANOW, &nt) != 0) _exit(28);
            char ok = 'x';
            if (write(sync[1], &ok, 1) != 1) _exit(22);
            /* the input typed meanwhile is read only after the restart */
            if (read(go[0], &ok, 1) != 1) _exit(29);
            char typed[8] = { 0 };
            for (int k = 0; k < 6; k++) if (read(0, typed + k, 1) != 1) _exit(30);
            if (memcmp(typed, "typed\n", 6) != 0) { dprintf(1, "REPORT bad typed='%s'\n", typed); _exit(31); }
            char line[256];
            if (read_line(0, line, sizeof line) <= 0) _exit(23);   /* "check", after the restart */
            char self[64] = "";
            ttyname_r(0, self, sizeof self);
            struct winsize w;
            ioctl(0, TIOCGWINSZ, &w);
            int bad = strcmp(self, name) != 0 || getsid(0) != leader || tcgetpgrp(0) != getpid() || tcgetsid(0) != leader
                || w.ws_row != 41 || w.ws_col != 103;
            dprintf(1, "REPORT %s tty=%s sid=%d fg=%d want=%d size=%dx%d\n", bad ? "bad" : "ok", self, (int)getsid(0), (int)tcgetpgrp(0), (int)getpid(), w.ws_col, w.ws_row);
            _exit(bad);
        }
        setpgid(g, g);
        if (tcsetpgrp(0, g) != 0) _exit(21);
        int st;
        if (waitpid(g, &st, 0) != g) _exit(24);
        /* the session leader still has the terminal */
        _exit(WIFEXITED(st) && WEXITSTATUS(st) == 0 && tcgetsid(0) == getpid() ? 0 : 25);
    }
    close(sync[1]);
    char x;
    MUST(read(sync[0], &x, 1) == 1);
    MUST(write(m, "typed\r", 6) == 6);   /* not read by the grandchild until after the restart */
    for (int i = 0; i < 1000; i++) {
        int q = 0, s = open(name, O_RDONLY | O_NOCTTY | O_NONBLOCK);
        if (s >= 0) { ioctl(s, FIONREAD, &q); close(s); }
        if (q == 6) break;
        usleep(1000);
    }
    say("PTY %s", name);
    say("READY");
    e2e_wait_usr1();

    char now[64] = "";
    CHECK(ptsname_r(m, now, sizeof now) == 0 && !strcmp(now, name), "the master's pty is %s, was %s", now, name);
    struct winsize w;
    CHECK(ioctl(m, TIOCGWINSZ, &w) == 0 && w.ws_row == 41 && w.ws_col == 103, "window %dx%d", w.ws_col, w.ws_row);
    struct termios t2;
    CHECK(tcgetattr(m, &t2) == 0 && !(t2.c_lflag & ECHO), "echo is back on");
    char early[32] = { 0 };
    CHECK(read_full(m, early, 14) == 14 && !memcmp(early, "early output\r\n", 14), "the output not read before the checkpoint: '%s'", early);
    MUST(write(go[1], "g", 1) == 1);
    CHECK(write(m, "check\n", 6) == 6, "cannot write to the master");
    char line[256];
    CHECK(read_line(m, line, sizeof line) > 0 && !strncmp(line, "REPORT ok", 9), "the child says: '%s'", line);
    int st;
    CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child ended with 0x%x", st);
    return e2e_finish();
}
