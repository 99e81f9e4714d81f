/* tracer PID: another tracer holding PID (PTRACE_SEIZE, so the target keeps running). Passes every
 * signal on to the target until it is killed itself (the kernel then detaches the target). */
#include "e2e.h"
#include <sys/ptrace.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
    MUST(argc == 2);
    syscall(SYS_close_range, 3, ~0U, 0);
    pid_t t = atoi(argv[1]);
    MUST(ptrace(PTRACE_SEIZE, t, 0, 0) == 0);
    say("TRACING %d", t);
    for (;;) {
        int st;
        pid_t r = waitpid(t, &st, __WALL);
        if (r < 0) {
            if (errno == EINTR) continue;
            return 0;
        }
        if (!WIFSTOPPED(st)) return 0;
        int sig = WSTOPSIG(st), ev = (st >> 16) & 0xff;
        if (ev == PTRACE_EVENT_STOP) ptrace(PTRACE_LISTEN, t, 0, 0);
        else ptrace(PTRACE_CONT, t, 0, ev ? 0 : sig);
    }
}
