/* fgjob: a program started in the background of a shell with job control (a process group of its own),
 * on a terminal; checkpointed, killed, and restarted by `ckpt restart` run in the foreground of another
 * terminal by a shell with job control. After SIGUSR1 it must have that terminal's foreground: its group
 * is the foreground group, and it may change the terminal's settings (tcsetattr from a background group
 * stops it with SIGTTOU). Then it stops itself as Ctrl-Z would (SIGTSTP to its group); the shell's fg,
 * through ckpt, continues it with the foreground again. Before the checkpoint it sets its terminal as an
 * editor does (no canonical mode, no echo): after the restart the new terminal has those settings, and
 * the program got SIGWINCH (a full-screen program draws itself again then).
 */
#include "e2e.h"
#include <termios.h>

static volatile sig_atomic_t winches;
static void on_winch(int sig) { (void)sig; winches++; }

int main(void)
{
    e2e_init();
    MUST(isatty(0) && isatty(1));
    struct termios raw;
    MUST(tcgetattr(0, &raw) == 0);
    raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    sigset_t ttou, old;
    sigemptyset(&ttou);
    sigaddset(&ttou, SIGTTOU);
    MUST(sigprocmask(SIG_BLOCK, &ttou, &old) == 0);   /* from the background of the first terminal */
    MUST(tcsetattr(0, TCSANOW, &raw) == 0);
    MUST(sigprocmask(SIG_SETMASK, &old, NULL) == 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_winch;
    sa.sa_flags = SA_RESTART;
    MUST(sigaction(SIGWINCH, &sa, NULL) == 0);
    say("READY pgid=%d", (int)getpgrp());
    e2e_wait_usr1();
    CHECK(winches > 0, "no SIGWINCH after the restart");
    struct termios now;
    MUST(tcgetattr(0, &now) == 0);
    CHECK((now.c_lflag & (ICANON | ECHO)) == 0, "the terminal's settings are not the program's: lflag 0x%x", (unsigned)now.c_lflag);
    CHECK(getpgrp() == getpid(), "it no longer leads its process group (%d)", (int)getpgrp());
    CHECK(tcgetpgrp(0) == getpgrp(), "the foreground group of its terminal is %d, not its own %d", (int)tcgetpgrp(0), (int)getpgrp());
    struct termios t;
    MUST(tcgetattr(0, &t) == 0);
    CHECK(tcsetattr(0, TCSANOW, &t) == 0, "tcsetattr: %s", strerror(errno));
    say("STOPPING");
    MUST(kill(0, SIGTSTP) == 0);
    say("CONTINUED");
    CHECK(tcgetpgrp(0) == getpgrp(), "after fg, the foreground group of its terminal is %d, not its own %d", (int)tcgetpgrp(0), (int)getpgrp());
    MUST(tcgetattr(0, &now) == 0);
    CHECK((now.c_lflag & (ICANON | ECHO)) == 0, "after fg, the terminal's settings are not the program's: lflag 0x%x", (unsigned)now.c_lflag);
    CHECK(tcsetattr(0, TCSANOW, &t) == 0, "tcsetattr after fg: %s", strerror(errno));
    return e2e_finish();
}
