/* attrs2: process and thread attributes beyond attrs.c.
 * Process: personality (ADDR_NO_RANDOMIZE added), child subreaper, dumpable 0, THP disabled,
 * oom_score_adj 123 (the child: 456), audit login uid 4321 (both; set before the fork, where this
 * machine lets a process set its own).
 * Threads (each its own): timer slack, scheduling policy, nice, CPU affinity, I/O priority (A: idle class,
 * B: best-effort level 2, the others the default):
 *   main     slack 123456 ns, SCHED_OTHER, nice 0 (process default), all CPUs it started with
 *   worker A slack 654321 ns, SCHED_BATCH, nice 5, CPU 0 only
 *   worker B default slack,   SCHED_IDLE,  nice 3, all CPUs (not left pinned where the restart ran it)
 *   worker C SCHED_FIFO priority 7 with SCHED_RESET_ON_FORK (timer slack 0, as for any RT thread), nice -2
 *            (where RT scheduling is not allowed, it keeps the default policy and says so)
 * Child process (forked first, before the parent changes its own flags): parent-death signal SIGWINCH
 * (handled: it must not arrive), dumpable 1, subreaper 0, THP enabled, the parent's personality.
 * The root sets a parent-death signal too: it is not restored for the root (its parent is outside the
 * tree), and it must not arrive either.
 * After SIGUSR1 the root forwards SIGUSR1 to the child, whose verdict is its exit status. */
#include "e2e.h"
#include <pthread.h>
#include <sched.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>

#ifndef PR_GET_THP_DISABLE
#define PR_SET_THP_DISABLE 41
#define PR_GET_THP_DISABLE 42
#endif

static volatile sig_atomic_t winch;
static void on_winch(int sig) { (void)sig; winch++; }

static cpu_set_t all0;
static volatile int check_now;

struct worker {
    const char *name;
    unsigned long slack;   /* 0: leave the default */
    int policy, prio, nice;
    int cpu0_only;
    int ioprio;   /* 0: leave the default */
    pid_t tid;
    volatile int ready, failures;
};

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    w->tid = gettid();
    if (w->cpu0_only) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(0, &one);
        MUST(sched_setaffinity(0, sizeof one, &one) == 0);
    }
    struct sched_param sp = { .sched_priority = w->prio };
    if (sched_setscheduler(0, w->policy, &sp) != 0) {   /* per thread on Linux */
        MUST(w->prio != 0);
        say("%s: no RT scheduling here (%s): default policy", w->name, strerror(errno));
        w->policy = sched_getscheduler(0);
        w->prio = 0;
    }
    MUST(setpriority(PRIO_PROCESS, w->tid, w->nice) == 0);
    if (w->ioprio) MUST(syscall(SYS_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, 0, w->ioprio) == 0);
    if (w->slack) MUST(prctl(PR_SET_TIMERSLACK, w->slack) == 0);
    unsigned long slack0 = (unsigned long)prctl(PR_GET_TIMERSLACK);
    w->ready = 1;
    while (!check_now) sleep_full(0.01);
    /* timer slack and affinity, as the thread itself sees them */
    unsigned long slack = (unsigned long)prctl(PR_GET_TIMERSLACK);
    if (slack != slack0) { say("FAIL: %s: timer slack %lu ns, was %lu", w->name, slack, slack0); w->failures++; }
    cpu_set_t cur;
    sched_getaffinity(0, sizeof cur, &cur);
    if (w->cpu0_only ? !(CPU_COUNT(&cur) == 1 && CPU_ISSET(0, &cur)) : !CPU_EQUAL(&cur, &all0)) {
        say("FAIL: %s: affinity has %d CPUs%s", w->name, CPU_COUNT(&cur), CPU_ISSET(0, &cur) ? " (0 among them)" : "");
        w->failures++;
    }
    return NULL;
}

/* From another thread: policy and nice of a thread, by tid. */
static void check_thread(const struct worker *w)
{
    int pol = sched_getscheduler(w->tid);
    CHECK(pol == w->policy, "%s: scheduling policy 0x%x, expected 0x%x", w->name, pol, w->policy);
    struct sched_param sp = { .sched_priority = -1 };
    CHECK(sched_getparam(w->tid, &sp) == 0 && sp.sched_priority == w->prio, "%s: priority %d, expected %d", w->name, sp.sched_priority, w->prio);
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, w->tid);
    CHECK(errno == 0 && nice == w->nice, "%s: nice %d, expected %d", w->name, nice, w->nice);
    if (w->ioprio) {
        long io = syscall(SYS_ioprio_get, 1 /* IOPRIO_WHO_PROCESS */, w->tid);
        CHECK(io == w->ioprio, "%s: I/O priority 0x%lx, expected 0x%x", w->name, io, w->ioprio);
    }
}

static void set_oom(int v)
{
    FILE *f = fopen("/proc/self/oom_score_adj", "w");
    MUST(f != NULL && fprintf(f, "%d", v) > 0 && fclose(f) == 0);
}

static int get_oom(void)
{
    int v = -9999;
    FILE *f = fopen("/proc/self/oom_score_adj", "r");
    if (f) { if (fscanf(f, "%d", &v) != 1) v = -9998; fclose(f); }
    return v;
}

static long get_loginuid(void)
{
    long v = -2;
    FILE *f = fopen("/proc/self/loginuid", "r");
    if (f) { if (fscanf(f, "%ld", &v) != 1) v = -3; fclose(f); }
    return v;
}

static int loginuid_set;   /* this machine let the process set its login uid */

static int child_main(int pers)
{
    MUST(prctl(PR_SET_PDEATHSIG, SIGWINCH) == 0);
    set_oom(456);
    say("CHILD-READY");
    e2e_wait_usr1();
    int sig = -1;
    CHECK(prctl(PR_GET_PDEATHSIG, &sig) == 0 && sig == SIGWINCH, "child: parent-death signal %d, expected SIGWINCH", sig);
    CHECK(winch == 0, "child: received SIGWINCH %d times", (int)winch);
    CHECK(prctl(PR_GET_DUMPABLE) == 1, "child: dumpable %d", prctl(PR_GET_DUMPABLE));
    int sub = -1;
    CHECK(prctl(PR_GET_CHILD_SUBREAPER, &sub) == 0 && sub == 0, "child: subreaper %d", sub);
    CHECK(prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == 0, "child: THP disable %d", prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
    CHECK(personality(0xffffffff) == pers, "child: personality 0x%x, expected 0x%x", personality(0xffffffff), pers);
    CHECK(get_oom() == 456, "child: oom_score_adj %d, expected 456", get_oom());
    if (loginuid_set) CHECK(get_loginuid() == 4321, "child: loginuid %ld, expected 4321", get_loginuid());
    if (e2e_failures) say("child: FAIL");
    return e2e_failures ? 1 : 0;
}

int main(void)
{
    e2e_init();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_winch;
    sa.sa_flags = SA_RESTART;
    MUST(sigaction(SIGWINCH, &sa, NULL) == 0);
    MUST(sched_getaffinity(0, sizeof all0, &all0) == 0);
    int pers = personality(0xffffffff) | ADDR_NO_RANDOMIZE;
    MUST(personality(pers) >= 0);
    MUST(personality(0xffffffff) == pers);

    FILE *lf = fopen("/proc/self/loginuid", "w");
    if (lf) { fprintf(lf, "4321"); loginuid_set = fclose(lf) == 0 && get_loginuid() == 4321; }
    if (!loginuid_set) say("(the login uid cannot be set here: not checked)");

    pid_t child = fork();
    MUST(child >= 0);
    if (child == 0) _exit(child_main(pers));

    MUST(prctl(PR_SET_PDEATHSIG, SIGWINCH) == 0);
    MUST(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
    MUST(prctl(PR_SET_TIMERSLACK, 123456UL) == 0);
    MUST(prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0);
    MUST(prctl(PR_SET_DUMPABLE, 0) == 0);
    set_oom(123);   /* raised: lowering needs CAP_SYS_RESOURCE, which some roots lack */

    static struct worker a = { .name = "worker A", .slack = 654321, .policy = SCHED_BATCH, .nice = 5, .cpu0_only = 1, .ioprio = 3 << 13 /* IOPRIO_CLASS_IDLE */ };
    static struct worker b = { .name = "worker B", .slack = 0, .policy = SCHED_IDLE, .nice = 3, .cpu0_only = 0, .ioprio = 2 << 13 | 2 /* IOPRIO_CLASS_BE, level 2 */ };
    static struct worker c = { .name = "worker C", .slack = 0, .policy = SCHED_FIFO | SCHED_RESET_ON_FORK, .prio = 7, .nice = -2 };
    pthread_t ta, tb, tc;
    MUST(pthread_create(&ta, NULL, run_worker, &a) == 0);
    MUST(pthread_create(&tb, NULL, run_worker, &b) == 0);
    MUST(pthread_create(&tc, NULL, run_worker, &c) == 0);
    while (!a.ready || !b.ready || !c.ready) sleep_full(0.01);
    sleep_full(0.2);   /* the child has set its parent-death signal */
    say("THREADS %d %d %d", a.tid, b.tid, c.tid);
    say("READY");
    e2e_wait_usr1();

    struct worker m = { .name = "main", .tid = gettid(), .policy = SCHED_OTHER, .nice = 0 };
    check_thread(&m);
    check_thread(&a);   /* while the workers still wait */
    check_thread(&b);
    check_thread(&c);
    check_now = 1;
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_join(tc, NULL);
    e2e_failures += a.failures + b.failures + c.failures;
    CHECK(prctl(PR_GET_TIMERSLACK) == 123456, "main: timer slack %d ns", prctl(PR_GET_TIMERSLACK));
    cpu_set_t cur;
    sched_getaffinity(0, sizeof cur, &cur);
    CHECK(CPU_EQUAL(&cur, &all0), "main: affinity has %d CPUs, had %d", CPU_COUNT(&cur), CPU_COUNT(&all0));
    CHECK(personality(0xffffffff) == pers, "personality 0x%x, expected 0x%x", personality(0xffffffff), pers);
    int sub = -1;
    CHECK(prctl(PR_GET_CHILD_SUBREAPER, &sub) == 0 && sub == 1, "subreaper %d", sub);
    CHECK(prctl(PR_GET_DUMPABLE) == 0, "dumpable %d", prctl(PR_GET_DUMPABLE));
    CHECK(prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1, "THP disable %d", prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
    CHECK(get_oom() == 123, "oom_score_adj %d, expected 123", get_oom());
    if (loginuid_set) CHECK(get_loginuid() == 4321, "loginuid %ld, expected 4321", get_loginuid());
    CHECK(winch == 0, "received SIGWINCH %d times", (int)winch);

    CHECK(kill(child, SIGUSR1) == 0, "signal the child: %s", strerror(errno));
    int st = 0;
    CHECK(waitpid(child, &st, 0) == child, "wait for the child: %s", strerror(errno));
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's checks failed (status 0x%x)", st);
    return e2e_finish();
}
