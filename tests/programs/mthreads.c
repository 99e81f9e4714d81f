/* mthreads: a multi-threaded process. Four threads, each blocked or busy in its own way, with its own
 * TLS, name, blocked mask and tid; after the restart every thread must be there with the same tid and
 * state and carry on: the sleeper keeps counting, the futex waiter wakes on its condition, the reader
 * gets the bytes written to its pipe, the spinner keeps its xmm value.
 *
 * build: mthreads -pthread
 */
#include "e2e.h"
#include <pthread.h>
#include <sys/prctl.h>

static __thread long tls_value;
static pid_t tids[4];
static long tls_seen[4];
static volatile long counter, spins;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int go_cond, woke;
static int pfd[2];
static char got[16];
static volatile int stop;
static sigset_t masks[4];

static void setup(int i, const char *name)
{
    tids[i] = (pid_t)syscall(SYS_gettid);
    tls_value = 1000 + i;
    prctl(PR_SET_NAME, name);
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGRTMIN + i);
    pthread_sigmask(SIG_BLOCK, &m, NULL);
}

static void finish(int i)
{
    tls_seen[i] = tls_value;
    pthread_sigmask(SIG_BLOCK, NULL, &masks[i]);
}

static void *sleeper(void *a) { (void)a; setup(0, "t-sleeper"); while (!stop) { counter++; usleep(2000); } finish(0); return NULL; }
static void *waiter(void *a)
{
    (void)a; setup(1, "t-waiter");
    pthread_mutex_lock(&mu);
    while (!go_cond) pthread_cond_wait(&cv, &mu);
    woke = 1;
    pthread_mutex_unlock(&mu);
    finish(1);
    return NULL;
}
static void *reader(void *a)
{
    (void)a; setup(2, "t-reader");
    ssize_t n;
    while ((n = read(pfd[0], got, 5)) < 0 && errno == EINTR) {}
    finish(2);
    return NULL;
}
static void *spinner(void *a)
{
    (void)a; setup(3, "t-spinner");
    double x = 1.0;
    while (!stop) { x = x * 1.0000001; if (x > 2.0) x = 1.0; spins++; }
    finish(3);
    return NULL;
}

int main(void)
{
    e2e_init();
    MUST(pipe(pfd) == 0);
    pthread_t th[4];
    void *(*fn[4])(void *) = { sleeper, waiter, reader, spinner };
    for (int i = 0; i < 4; i++) MUST(pthread_create(&th[i], NULL, fn[i], NULL) == 0);
    while (!tids[0] || !tids[1] || !tids[2] || !tids[3]) usleep(1000);
    usleep(20000);
    pid_t before[4];
    memcpy(before, tids, sizeof before);
    say("READY");
    e2e_wait_usr1();

    CHECK(getpid() == (pid_t)syscall(SYS_gettid), "main thread is not the leader");
    const char *names[4] = { "t-sleeper", "t-waiter", "t-reader", "t-spinner" };
    for (int i = 0; i < 4; i++) {
        char path[64], name[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%d/comm", before[i]);
        FILE *f = fopen(path, "r");
        CHECK(f != NULL, "thread %d (tid %d) is gone", i, before[i]);
        if (f) { if (fgets(name, sizeof name, f)) name[strcspn(name, "\n")] = 0; fclose(f); }
        CHECK(strcmp(name, names[i]) == 0, "thread %d is named '%s', not '%s'", i, name, names[i]);
    }
    long c0 = counter, s0 = spins;
    sleep_full(0.1);
    CHECK(counter > c0, "the sleeping thread stopped counting");
    CHECK(spins > s0, "the spinning thread stopped");

    pthread_mutex_lock(&mu);
    go_cond = 1;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    MUST(write(pfd[1], "hello", 5) == 5);
    stop = 1;
    for (int i = 0; i < 4; i++) MUST(pthread_join(th[i], NULL) == 0);
    CHECK(woke, "the futex waiter did not wake");
    CHECK(memcmp(got, "hello", 5) == 0, "the reader got '%.5s'", got);
    for (int i = 0; i < 4; i++) {
        CHECK(tls_seen[i] == 1000 + i, "thread %d TLS holds %ld", i, tls_seen[i]);
        CHECK(sigismember(&masks[i], SIGRTMIN + i) == 1, "thread %d lost its blocked mask", i);
        CHECK(tids[i] == before[i], "thread %d tid changed", i);
    }
    return e2e_finish();
}
