/* timers: POSIX timers (timer_create). A periodic CLOCK_MONOTONIC timer (50 ms) signalling SIGRTMIN+1
 * with a sigev_value, a one-shot CLOCK_REALTIME SIGEV_NONE timer 100 s away, a disarmed timer created
 * without a sigevent (SIGALRM, value = its id) after a gap in the ids, a CLOCK_PROCESS_CPUTIME_ID timer
 * 500 s of CPU away, and a glibc SIGEV_THREAD periodic timer (50 ms; the kernel timer signals glibc's
 * helper thread: SIGEV_THREAD_ID). After SIGUSR1: the ids are the same (/proc/self/timers and the
 * timer_t values), timer_gettime works on every one with the expected time left, the periodic timers
 * keep firing with the right siginfo, and a new timer_create works normally.
 * Built a second time with -DTHREAD_CPU: one more timer, on CLOCK_THREAD_CPUTIME_ID, which the checkpoint
 * of this multi-threaded process must refuse (which thread's CPU time it measures is not visible).
 * build: timers
 * build: timers_threadcpu -DTHREAD_CPU
 */
#include "e2e.h"
#include <pthread.h>
#include <stdatomic.h>

#define RT_SIG (SIGRTMIN + 1)
#define VALUE 4242
#define MS 1000000L

static volatile sig_atomic_t ticks, bad_value, bad_code, bad_id;

/* glibc runs each SIGEV_THREAD expiry in a new thread, on a stack from its cache of freed ones, and maps a
 * new stack when every cached one is in use (two runs overlapping): n stacks cached up front (n threads
 * alive at once, then joined), so that the memory map does not change between the layout the test takes
 * before the checkpoint and the checkpoint itself */
static pthread_barrier_t warm;
static void *warm_thread(void *a) { (void)a; pthread_barrier_wait(&warm); return NULL; }
static void cache_stacks(int n)
{
    pthread_t t[8];
    MUST(n <= 8 && pthread_barrier_init(&warm, NULL, (unsigned)n) == 0);
    for (int i = 0; i < n; i++) MUST(pthread_create(&t[i], NULL, warm_thread, NULL) == 0);
    for (int i = 0; i < n; i++) MUST(pthread_join(t[i], NULL) == 0);
    pthread_barrier_destroy(&warm);
}
static int periodic_kid;
static atomic_int thread_calls, thread_bad;

static void on_tick(int sig, siginfo_t *si, void *uc)
{
    (void)sig; (void)uc;
    ticks++;
    if (si->si_value.sival_int != VALUE) bad_value++;
    if (si->si_code != SI_TIMER) bad_code++;
    if (si->si_timerid != periodic_kid) bad_id++;
}

static void on_thread(union sigval v)
{
    if (v.sival_int != 777) thread_bad++;
    thread_calls++;
}

/* The kernel timer ids of /proc/self/timers, ascending; returns how many. */
static int proc_ids(int *ids, int max)
{
    FILE *f = fopen("/proc/self/timers", "r");
    if (!f) return -1;
    char line[256];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "ID: ", 4) == 0 && n < max) ids[n++] = atoi(line + 4);
    fclose(f);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && ids[j - 1] > ids[j]; j--) { int t = ids[j]; ids[j] = ids[j - 1]; ids[j - 1] = t; }
    return n;
}

static double secs(const struct timespec *t) { return t->tv_sec + t->tv_nsec / 1e9; }

int main(void)
{
    e2e_init();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_tick;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    MUST(sigaction(RT_SIG, &sa, NULL) == 0);

    timer_t periodic, oneshot, disarmed, cpu, thr, gap;
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = RT_SIG;
    ev.sigev_value.sival_int = VALUE;
    MUST(timer_create(CLOCK_MONOTONIC, &ev, &periodic) == 0);
    periodic_kid = (int)(intptr_t)periodic;

    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_NONE;
    MUST(timer_create(CLOCK_REALTIME, &ev, &oneshot) == 0);

    /* a gap in the ids: two timers created and deleted */
    MUST(timer_create(CLOCK_MONOTONIC, NULL, &gap) == 0);
    MUST(timer_delete(gap) == 0);
    MUST(timer_create(CLOCK_MONOTONIC, NULL, &gap) == 0);
    MUST(timer_delete(gap) == 0);
    MUST(timer_create(CLOCK_MONOTONIC, NULL, &disarmed) == 0);

    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_NONE;
    MUST(timer_create(CLOCK_PROCESS_CPUTIME_ID, &ev, &cpu) == 0);

    cache_stacks(3);
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD;
    ev.sigev_notify_function = on_thread;
    ev.sigev_value.sival_int = 777;
    MUST(timer_create(CLOCK_MONOTONIC, &ev, &thr) == 0);

    struct itimerspec its = { .it_interval = { 0, 50 * MS }, .it_value = { 0, 50 * MS } };
    MUST(timer_settime(periodic, 0, &its, NULL) == 0);
    MUST(timer_settime(thr, 0, &its, NULL) == 0);
    struct itimerspec far = { .it_value = { 100, 0 } };
    MUST(timer_settime(oneshot, 0, &far, NULL) == 0);
    struct itimerspec cpufar = { .it_value = { 500, 0 } };
    MUST(timer_settime(cpu, 0, &cpufar, NULL) == 0);

#ifdef THREAD_CPU
    timer_t tcpu;
    MUST(timer_create(CLOCK_THREAD_CPUTIME_ID, NULL, &tcpu) == 0);
    MUST(timer_settime(tcpu, 0, &cpufar, NULL) == 0);
    const int expected = 6;
#else
    const int expected = 5;
#endif
    int before[16], nbefore = proc_ids(before, 16);
    MUST(nbefore == expected);
    double t0 = now_mono();
    while ((ticks < 2 || thread_calls < 2) && now_mono() - t0 < 5) sleep_full(0.02);
    MUST(ticks >= 2 && thread_calls >= 2);
    say("IDS %d %d %d %d %d", before[0], before[1], before[2], before[3], before[4]);
    say("READY");
    double created = now_mono();
    e2e_wait_usr1();

    /* the same kernel ids */
    int after[16], nafter = proc_ids(after, 16);
    CHECK(nafter == nbefore, "%d timers after the restart, %d before", nafter, nbefore);
    for (int i = 0; i < nbefore && i < nafter; i++) CHECK(after[i] == before[i], "timer %d has id %d, was %d", i, after[i], before[i]);

    struct itimerspec cur;
    CHECK(timer_gettime(periodic, &cur) == 0, "timer_gettime(periodic): %s", strerror(errno));
    CHECK(cur.it_interval.tv_sec == 0 && cur.it_interval.tv_nsec == 50 * MS, "periodic interval %.9f", secs(&cur.it_interval));
    CHECK(secs(&cur.it_value) > 0 && secs(&cur.it_value) <= 0.05, "periodic value %.9f", secs(&cur.it_value));

    CHECK(timer_gettime(oneshot, &cur) == 0, "timer_gettime(oneshot): %s", strerror(errno));
    double left = secs(&cur.it_value), elapsed = now_mono() - created;
    CHECK(secs(&cur.it_interval) == 0, "oneshot interval %.9f", secs(&cur.it_interval));
    CHECK(left > 100 - elapsed - 5 && left <= 100, "oneshot has %.3f s left, %.3f s after READY", left, elapsed);

    CHECK(timer_gettime(disarmed, &cur) == 0, "timer_gettime(disarmed): %s", strerror(errno));
    CHECK(secs(&cur.it_value) == 0 && secs(&cur.it_interval) == 0, "disarmed timer: value %.9f interval %.9f", secs(&cur.it_value), secs(&cur.it_interval));

    CHECK(timer_gettime(cpu, &cur) == 0, "timer_gettime(cpu): %s", strerror(errno));
    CHECK(secs(&cur.it_value) > 490 && secs(&cur.it_value) <= 500, "CPU-time timer has %.3f s left", secs(&cur.it_value));

    CHECK(timer_gettime(thr, &cur) == 0, "timer_gettime(SIGEV_THREAD): %s", strerror(errno));
    CHECK(cur.it_interval.tv_nsec == 50 * MS, "SIGEV_THREAD interval %.9f", secs(&cur.it_interval));

    /* the periodic timers keep firing */
    int t_before = ticks, c_before = thread_calls;
    sleep_full(0.3);
    int fired = ticks - t_before, called = thread_calls - c_before;
    CHECK(fired >= 3 && fired <= 8, "the periodic timer fired %d times in 300 ms", fired);
    CHECK(called >= 3 && called <= 8, "the SIGEV_THREAD timer ran its function %d times in 300 ms", called);
    CHECK(bad_value == 0, "%d signals with the wrong si_value", (int)bad_value);
    CHECK(bad_code == 0, "%d signals with si_code other than SI_TIMER", (int)bad_code);
    CHECK(bad_id == 0, "%d signals with the wrong si_timerid", (int)bad_id);
    CHECK(thread_bad == 0, "%d SIGEV_THREAD calls with the wrong value", (int)thread_bad);

    /* timer_create works normally (restore-ids mode is off: the id passed in is ignored) */
    timer_t fresh = periodic;
    CHECK(timer_create(CLOCK_MONOTONIC, NULL, &fresh) == 0, "timer_create after the restart: %s", strerror(errno));
    CHECK(fresh != periodic, "a new timer got the id of an existing one");
    int all[16], nall = proc_ids(all, 16);
    CHECK(nall == nbefore + 1, "%d timers after creating one more", nall);

    struct itimerspec stop = { 0 };
    timer_settime(periodic, 0, &stop, NULL);
    timer_settime(thr, 0, &stop, NULL);
    return e2e_finish();
}
