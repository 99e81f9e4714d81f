/* children: a process with a running child and a zombie child (process trees are not supported: the
 * checkpoint must refuse, naming a child, and the process must go on with both children). Prints
 * "CHILDREN running zombie". */
#include "e2e.h"
#include <sys/wait.h>

int main(void)
{
    e2e_init();
    pid_t running = fork();
    MUST(running >= 0);
    if (running == 0) { for (;;) pause(); }
    pid_t zombie = fork();
    MUST(zombie >= 0);
    if (zombie == 0) _exit(7);
    siginfo_t si;
    MUST(waitid(P_PID, zombie, &si, WEXITED | WNOWAIT) == 0);   /* exited, left unreaped */
    say("CHILDREN %d %d", running, zombie);
    say("READY");
    e2e_wait_usr1();

    int st;
    CHECK(waitpid(zombie, &st, WNOHANG) == zombie && WIFEXITED(st) && WEXITSTATUS(st) == 7, "the zombie child is gone: %s", strerror(errno));
    CHECK(kill(running, SIGTERM) == 0, "kill the running child: %s", strerror(errno));
    CHECK(waitpid(running, &st, 0) == running && WIFSIGNALED(st), "the running child is not ours any more: %s", strerror(errno));
    return e2e_finish();
}
