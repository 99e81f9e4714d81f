/* signals: handlers with SA_RESTART / SA_SIGINFO / SA_ONSTACK / SA_RESETHAND and masks, SIG_IGN, a
 * blocked mask, pending blocked signals (private and shared, standard and real-time with values),
 * and an alternate signal stack. After SIGUSR1 everything is compared, then the pending signals are
 * unblocked and must reach their handlers with the right siginfo. */
#include "e2e.h"

#define ALTSZ (64 * 1024)
#define RT_A (SIGRTMIN + 2)
#define RT_B (SIGRTMIN + 3)

static char altstack[ALTSZ];
static volatile int usr2_count, usr2_onstack, usr2_code, usr2_pid;
static volatile int rta_count, rta_vals[4];
static volatile int rtb_count, rtb_val, rtb_code;
static volatile int term_count;

static void on_usr2(int sig, siginfo_t *si, void *uc)
{
    (void)sig; (void)uc;
    int here;
    usr2_onstack = (char *)&here >= altstack && (char *)&here < altstack + ALTSZ;
    usr2_code = si->si_code;
    usr2_pid = si->si_pid;
    usr2_count++;
}
static void on_rta(int sig, siginfo_t *si, void *uc)
{
    (void)sig; (void)uc;
    if (rta_count < 4) rta_vals[rta_count] = si->si_value.sival_int;
    rta_count++;
}
static void on_rtb(int sig, siginfo_t *si, void *uc)
{
    (void)sig; (void)uc;
    rtb_val = si->si_value.sival_int;
    rtb_code = si->si_code;
    rtb_count++;
}
static void on_term(int sig) { (void)sig; term_count++; }
static volatile int winch_count;
static void on_winch(int sig) { (void)sig; winch_count++; }

struct act { int sig; struct sigaction sa; };
static struct act acts[65];

int main(void)
{
    e2e_init();
    stack_t ss = { .ss_sp = altstack, .ss_size = ALTSZ, .ss_flags = 0 };
    MUST(sigaltstack(&ss, NULL) == 0);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr2;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);
    sigaddset(&sa.sa_mask, SIGQUIT);
    MUST(sigaction(SIGUSR2, &sa, NULL) == 0);

    sa.sa_sigaction = on_rta;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGRTMIN + 7);
    MUST(sigaction(RT_A, &sa, NULL) == 0);

    sa.sa_sigaction = on_rtb;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    MUST(sigaction(RT_B, &sa, NULL) == 0);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sa.sa_flags = SA_RESETHAND | SA_NODEFER;
    MUST(sigaction(SIGTERM, &sa, NULL) == 0);

    sa.sa_handler = on_winch;
    sa.sa_flags = 0;
    MUST(sigaction(SIGWINCH, &sa, NULL) == 0);

    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGRTMIN + 9, SIG_IGN);

    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR2);
    sigaddset(&block, RT_A);
    sigaddset(&block, RT_B);
    sigaddset(&block, SIGQUIT);
    sigaddset(&block, SIGWINCH);
    MUST(sigprocmask(SIG_BLOCK, &block, NULL) == 0);

    /* pending while blocked: SIGUSR2 to this thread, RT_A twice to the process (queued with values),
     * RT_B to this thread with a value */
    MUST(raise(SIGUSR2) == 0);
    MUST(kill(getpid(), SIGWINCH) == 0);   /* a standard signal on the shared queue */
    union sigval v;
    v.sival_int = 12345;
    MUST(sigqueue(getpid(), RT_A, v) == 0);
    v.sival_int = 67890;
    MUST(sigqueue(getpid(), RT_A, v) == 0);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    si.si_signo = RT_B;
    si.si_code = SI_QUEUE;
    si.si_pid = getpid();
    si.si_uid = getuid();
    si.si_value.sival_int = 777;
    MUST(syscall(SYS_rt_tgsigqueueinfo, getpid(), gettid(), RT_B, &si) == 0);

    for (int s = 1; s < 65; s++) { acts[s].sig = s; sigaction(s, NULL, &acts[s].sa); }
    sigset_t mask_before, pend_before;
    sigprocmask(SIG_BLOCK, NULL, &mask_before);
    sigpending(&pend_before);
    pid_t me = getpid();

    say("READY");
    e2e_wait_usr1();

    /* handlers */
    for (int s = 1; s < 65; s++) {
        if (s == SIGKILL || s == SIGSTOP) continue;
        struct sigaction now;
        sigaction(s, NULL, &now);
        struct sigaction *b = &acts[s].sa;
        CHECK(now.sa_handler == b->sa_handler, "signal %d: handler %p, was %p", s, (void *)now.sa_handler, (void *)b->sa_handler);
        CHECK(now.sa_flags == b->sa_flags, "signal %d: flags 0x%x, was 0x%x", s, now.sa_flags, b->sa_flags);
        CHECK(memcmp(&now.sa_mask, &b->sa_mask, 8) == 0, "signal %d: mask 0x%lx, was 0x%lx", s, *(unsigned long *)&now.sa_mask, *(unsigned long *)&b->sa_mask);
    }
    sigset_t mask_now, pend_now;
    sigprocmask(SIG_BLOCK, NULL, &mask_now);
    sigpending(&pend_now);
    CHECK(memcmp(&mask_now, &mask_before, 8) == 0, "blocked mask 0x%lx, was 0x%lx", *(unsigned long *)&mask_now, *(unsigned long *)&mask_before);
    CHECK(memcmp(&pend_now, &pend_before, 8) == 0, "pending set 0x%lx, was 0x%lx", *(unsigned long *)&pend_now, *(unsigned long *)&pend_before);
    CHECK(sigismember(&pend_now, SIGUSR2) && sigismember(&pend_now, RT_A) && sigismember(&pend_now, RT_B) && sigismember(&pend_now, SIGWINCH), "pending signals lost");
    stack_t cur;
    CHECK(sigaltstack(NULL, &cur) == 0 && cur.ss_sp == altstack && cur.ss_size == ALTSZ && cur.ss_flags == 0,
          "sigaltstack is %p/%zu/flags %d", cur.ss_sp, cur.ss_size, cur.ss_flags);
    CHECK(usr2_count == 0 && rta_count == 0 && rtb_count == 0 && winch_count == 0, "a blocked signal was delivered early");

    /* unblock: every pending signal reaches its handler */
    MUST(sigprocmask(SIG_UNBLOCK, &block, NULL) == 0);
    CHECK(usr2_count == 1, "SIGUSR2 delivered %d times", usr2_count);
    CHECK(winch_count == 1, "SIGWINCH (shared pending) delivered %d times", winch_count);
    CHECK(usr2_onstack, "SIGUSR2 handler did not run on the alternate stack");
    CHECK(usr2_code == SI_TKILL && usr2_pid == me, "SIGUSR2 siginfo: code %d pid %d", usr2_code, usr2_pid);
    CHECK(rta_count == 2, "real-time signal A delivered %d times, expected 2", rta_count);
    CHECK(rta_vals[0] == 12345 && rta_vals[1] == 67890, "real-time signal A values %d, %d", rta_vals[0], rta_vals[1]);
    CHECK(rtb_count == 1 && rtb_val == 777 && rtb_code == SI_QUEUE, "real-time signal B: count %d value %d code %d", rtb_count, rtb_val, rtb_code);
    sigpending(&pend_now);
    CHECK(!sigismember(&pend_now, SIGUSR2) && !sigismember(&pend_now, RT_A), "signals still pending");

    /* the handlers still work for new signals; SIG_IGN still ignores */
    raise(SIGUSR2);
    CHECK(usr2_count == 2, "a new SIGUSR2 was not handled");
    raise(SIGHUP);
    raise(SIGPIPE);
    raise(SIGTERM);
    CHECK(term_count == 1, "SIGTERM handler ran %d times", term_count);
    sigaction(SIGTERM, NULL, &sa);
    CHECK(sa.sa_handler == SIG_DFL, "SA_RESETHAND did not reset the SIGTERM handler");
    return e2e_finish();
}
