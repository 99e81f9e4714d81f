/* deadtimer: a POSIX timer that signals a thread that has exited (SIGEV_THREAD_ID: a thread made it
 * for itself, armed it periodic, 20 ms, and exited; the kernel keeps the timer, and its expiries signal
 * no one). Prints "TIMER tid" (the exited thread's id) and READY. After SIGUSR1: the timer is still
 * there under its id (/proc/self/timers names that tid), timer_gettime works and shows the 20 ms
 * interval, and its signal still reaches no one (the handler never ran, 200 ms more).
 * build: deadtimer -pthread
 */
#include "e2e.h"
#include <pthread.h>
#include <sys/syscall.h>

#define SIG (SIGRTMIN + 2)
#define MS 1000000L

static timer_t timer;
static volatile sig_atomic_t fired;
static pid_t thread_tid;

static void on_signal(int sig) { (void)sig; fired++; }

static void *maker(void *a)
{
    (void)a;
    thread_tid = (pid_t)syscall(SYS_gettid);
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev._sigev_un._tid = thread_tid;
    ev.sigev_signo = SIG;
    if (timer_create(CLOCK_MONOTONIC, &ev, &timer) != 0) return (void *)1;
    struct itimerspec its = { .it_interval = { 0, 20 * MS }, .it_value = { 0, 20 * MS } };
    if (timer_settime(timer, 0, &its, NULL) != 0) return (void *)1;
    return NULL;
}

/* the tid /proc/self/timers names for the timer, or -1 */
static int proc_target(void)
{
    FILE *f = fopen("/proc/self/timers", "r");
    if (!f) return -1;
    char line[256];
    int tid = -1;
    while (fgets(line, sizeof line, f)) {
        char *p = strstr(line, "notify: ");
        if (p && (p = strchr(p, '.'))) tid = atoi(p + 1);
    }
    fclose(f);
    return tid;
}

int main(void)
{
    e2e_init();
    signal(SIG, on_signal);
    pthread_t t;
    void *r;
    MUST(pthread_create(&t, NULL, maker, NULL) == 0 && pthread_join(t, &r) == 0 && r == NULL);
    sleep_full(0.1);
    MUST(fired == 0 && proc_target() == thread_tid);
    say("TIMER %d", thread_tid);
    say("READY");
    e2e_wait_usr1();

    CHECK(proc_target() == thread_tid, "/proc/self/timers names thread %d, want %d", proc_target(), thread_tid);
    struct itimerspec cur;
    CHECK(timer_gettime(timer, &cur) == 0, "timer_gettime: %s", strerror(errno));
    CHECK(cur.it_interval.tv_sec == 0 && cur.it_interval.tv_nsec == 20 * MS, "interval %ld.%09ld, want 0.020", (long)cur.it_interval.tv_sec, cur.it_interval.tv_nsec);
    sleep_full(0.2);
    CHECK(fired == 0, "the timer's signal reached the process %d time(s)", (int)fired);
    CHECK(timer_delete(timer) == 0, "timer_delete: %s", strerror(errno));
    return e2e_finish();
}
