/* e2e_faults.h: whether touching an address faults, for the end-to-end programs that check guard and
 * protected pages (include after e2e.h). */
#ifndef E2E_FAULTS_H
#define E2E_FAULTS_H
#include <setjmp.h>

static sigjmp_buf e2e_fault_jmp;
static void e2e_on_segv(int sig) { (void)sig; siglongjmp(e2e_fault_jmp, 1); }

/* Whether reading p faults (SIGSEGV); the SIGSEGV action is put back after. */
static int faults(volatile char *p)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = e2e_on_segv;
    sigaction(SIGSEGV, &sa, &old);
    int f = 0;
    if (sigsetjmp(e2e_fault_jmp, 1) == 0) (void)*p;
    else f = 1;
    sigaction(SIGSEGV, &old, NULL);
    return f;
}
#endif
