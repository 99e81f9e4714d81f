/* fgjob: a program started in the background of a shell with job control (a process group of its own),
 * on a terminal; checkpointed, killed, and restarted by `ckpt restart` run in the foreground of another
 * terminal by a shell with job control. After SIGUSR1 it must have that terminal's foreground: its group
 * is the foreground group, and it may change the terminal's settings (tcsetattr from a background group
 * stops it with SIGTTOU). Then it stops itself as Ctrl-Z would (SIGTSTP to its group); the shell's fg,
 * through ckpt, continues it with the foreground again.
 */
#include "e2e.h"
#include <termios.h>

int main(void)
{
    e2e_init();
    MUST(isatty(0) && isatty(1));
    say("READY pgid=%d", (int)getpgrp());
    e2e_wait_usr1();
    CHECK(getpgrp() == getpid(), "it no longer leads its process group (%d)", (int)getpgrp());
    CHECK(tcgetpgrp(0) == getpgrp(), "the foreground group of its terminal is %d, not its own %d", (int)tcgetpgrp(0), (int)getpgrp());
    struct termios t;
    MUST(tcgetattr(0, &t) == 0);
    CHECK(tcsetattr(0, TCSANOW, &t) == 0, "tcsetattr: %s", strerror(errno));
    say("STOPPING");
    MUST(kill(0, SIGTSTP) == 0);
    say("CONTINUED");
    CHECK(tcgetpgrp(0) == getpgrp(), "after fg, the foreground group of its terminal is %d, not its own %d", (int)tcgetpgrp(0), (int)getpgrp());
    CHECK(tcsetattr(0, TCSANOW, &t) == 0, "tcsetattr after fg: %s", strerror(errno));
    return e2e_finish();
}
