/* vforker: a parent blocked in vfork() while its child waits for SIGUSR1 without calling exec. The
 * checkpoint must refuse (naming the child) without hanging; once the child exits, the parent goes on
 * and prints PASS. */
#include "e2e.h"
#include <sys/wait.h>

int main(void)
{
    e2e_init();
    say("READY");
    pid_t c = vfork();
    if (c == 0) {
        /* the vfork child: only raw system calls until _exit */
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGUSR2);
        syscall(SYS_rt_sigprocmask, SIG_BLOCK, &s, NULL, 8);
        siginfo_t si;
        syscall(SYS_rt_sigtimedwait, &s, &si, NULL, 8);
        _exit(0);
    }
    int st;
    CHECK(c > 0 && waitpid(c, &st, 0) == c && WIFEXITED(st), "vfork child: 0x%x", st);
    return e2e_finish();
}
