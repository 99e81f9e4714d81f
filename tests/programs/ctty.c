/* ctty: the leader of a session on a terminal that is not part of the tree (an interactive shell of a
 * terminal window, ssh's shell, a program under setsid), as ptyhost starts it. Before the checkpoint it
 * turns echo off (a password prompt's setting). Restarted from another terminal window by a `ckpt
 * restart` that waits in its foreground, it must have a controlling terminal again: its session's
 * (tcgetsid), with its group in the foreground, /dev/tty opening it, a child's group able to get the
 * foreground (job control), the settings it made, the window size of the new window with SIGWINCH, and
 * the line typed in the new window read from it.
 */
#include "e2e.h"
#include <sys/ioctl.h>
#include <termios.h>

static volatile sig_atomic_t winches;
static void on_winch(int sig) { (void)sig; winches++; }

int main(void)
{
    e2e_init();
    MUST(isatty(0) && isatty(1));
    MUST(getsid(0) == getpid() && tcgetsid(0) == getpid());
    struct termios t;
    MUST(tcgetattr(0, &t) == 0);
    t.c_lflag &= ~(tcflag_t)ECHO;
    MUST(tcsetattr(0, TCSANOW, &t) == 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_winch;
    sa.sa_flags = SA_RESTART;
    MUST(sigaction(SIGWINCH, &sa, NULL) == 0);
    struct winsize before;
    MUST(ioctl(0, TIOCGWINSZ, &before) == 0);
    say("READY pid=%d cols=%d", (int)getpid(), before.ws_col);
    e2e_wait_usr1();

    CHECK(tcgetsid(0) == getpid(), "its terminal is not the controlling terminal of its session (tcgetsid: %d, %s)", (int)tcgetsid(0), strerror(errno));
    CHECK(tcgetpgrp(0) == getpgrp(), "the foreground group of its terminal is %d, not its own %d", (int)tcgetpgrp(0), (int)getpgrp());
    int tty = open("/dev/tty", O_RDWR);
    CHECK(tty >= 0, "open /dev/tty: %s", strerror(errno));
    if (tty >= 0) close(tty);
    struct termios now;
    MUST(tcgetattr(0, &now) == 0);
    CHECK((now.c_lflag & ECHO) == 0 && (now.c_lflag & ICANON) != 0, "the terminal's settings are not the program's: lflag 0x%x", (unsigned)now.c_lflag);
    struct winsize ws;
    MUST(ioctl(0, TIOCGWINSZ, &ws) == 0);
    CHECK(ws.ws_col != before.ws_col && ws.ws_col > 0, "the window has %d columns, as before the checkpoint (%d), not those of the new window", ws.ws_col, before.ws_col);
    CHECK(winches > 0, "no SIGWINCH after the restart");

    /* job control: a child's group gets the foreground, then the leader's again */
    pid_t c = fork();
    MUST(c >= 0);
    if (c == 0) { setpgid(0, 0); pause(); _exit(0); }
    setpgid(c, c);
    CHECK(tcsetpgrp(0, c) == 0, "tcsetpgrp to a child's group: %s", strerror(errno));
    sigset_t ttou, old;
    sigemptyset(&ttou);
    sigaddset(&ttou, SIGTTOU);
    MUST(sigprocmask(SIG_BLOCK, &ttou, &old) == 0);
    CHECK(tcsetpgrp(0, getpgrp()) == 0, "tcsetpgrp back to its own group: %s", strerror(errno));
    MUST(sigprocmask(SIG_SETMASK, &old, NULL) == 0);
    kill(c, SIGKILL);
    waitpid(c, NULL, 0);

    say("READING");
    char line[256];
    ssize_t n;
    do n = read(0, line, sizeof line - 1); while (n < 0 && errno == EINTR);
    CHECK(n == 6 && memcmp(line, "hello\n", 6) == 0, "read %zd bytes from the terminal, not the line typed", n);
    return e2e_finish();
}
