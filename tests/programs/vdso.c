/* vdso proxy|same: the functions of the vDSO (clock_gettime, gettimeofday, time, clock_getres, getcpu),
 * called through glibc, which looked them up in the vDSO at start, by the main thread and by a thread
 * that calls clock_gettime without pause (it is likely stopped inside the vDSO by the checkpoint). After
 * the restart every one still answers (the same as the system call, within a margin) and the busy thread
 * goes on. With "proxy" (restarted with CKPT_VDSO_PROXY=1: the checkpointed vDSO put back with jumps to
 * the kernel's, moved) the [vdso] of /proc/self/maps is no longer where the auxiliary vector points; with
 * "same" it is.
 *
 * build: vdso -pthread
 */
#include "e2e.h"
#include <pthread.h>
#include <sched.h>
#include <sys/auxv.h>
#include <sys/time.h>
#include <time.h>

static volatile unsigned long spins;
static volatile int stop;

static void *busy(void *arg)
{
    (void)arg;
    struct timespec t;
    while (!stop) { clock_gettime(CLOCK_MONOTONIC, &t); spins++; }
    return NULL;
}

static long long ns(struct timespec t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }

/* The start of the [vdso] line of /proc/self/maps, or 0. */
static unsigned long maps_vdso(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return 0;
    char line[512];
    unsigned long start = 0, s, e;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "[vdso]") && sscanf(line, "%lx-%lx", &s, &e) == 2) { start = s; break; }
    fclose(f);
    return start;
}

static void check_all(const char *when)
{
    struct timespec v, k;
    for (int i = 0; i < 1000; i++) {   /* many calls: any crash in the jump shows */
        MUST(clock_gettime(CLOCK_MONOTONIC, &v) == 0);
    }
    clockid_t clocks[] = { CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_BOOTTIME, CLOCK_MONOTONIC_RAW, CLOCK_TAI };
    for (size_t i = 0; i < sizeof clocks / sizeof *clocks; i++) {
        MUST(syscall(SYS_clock_gettime, clocks[i], &k) == 0);
        CHECK(clock_gettime(clocks[i], &v) == 0, "%s: clock_gettime(%d) failed", when, clocks[i]);
        long long d = ns(v) - ns(k);
        CHECK(d >= 0 && d < 200000000LL, "%s: clock %d says %lld ns after the system call", when, clocks[i], d);
    }
    struct timeval tv;
    MUST(syscall(SYS_clock_gettime, CLOCK_REALTIME, &k) == 0);
    CHECK(gettimeofday(&tv, NULL) == 0, "%s: gettimeofday failed", when);
    long long d = tv.tv_sec * 1000000000LL + tv.tv_usec * 1000LL - ns(k);
    CHECK(d > -1000000LL && d < 200000000LL, "%s: gettimeofday is %lld ns from the system call", when, d);
    time_t t = time(NULL);
    /* (time() reads the seconds the kernel updates at its tick: up to a tick behind the system call) */
    CHECK(t >= k.tv_sec - 1 && t <= k.tv_sec + 1, "%s: time() %ld, the system call %ld", when, (long)t, (long)k.tv_sec);
    struct timespec res;
    CHECK(clock_getres(CLOCK_MONOTONIC, &res) == 0 && res.tv_sec == 0 && res.tv_nsec > 0, "%s: clock_getres", when);
    int cpu = sched_getcpu();
    CHECK(cpu >= 0 && cpu < CPU_SETSIZE, "%s: sched_getcpu %d", when, cpu);
}

int main(int argc, char **argv)
{
    e2e_init();
    MUST(argc == 2);
    int proxy = !strcmp(argv[1], "proxy");
    unsigned long aux = getauxval(AT_SYSINFO_EHDR);
    MUST(aux != 0 && maps_vdso() == aux);
    check_all("before");
    pthread_t th;
    MUST(pthread_create(&th, NULL, busy, NULL) == 0);
    while (spins < 1000) usleep(1000);
    say("READY");
    e2e_wait_usr1();

    unsigned long was = spins;
    check_all("after");
    for (int i = 0; i < 2000 && spins < was + 100000; i++) usleep(1000);
    CHECK(spins >= was + 100000, "the busy thread went from %lu to %lu calls only", was, spins);
    stop = 1;
    MUST(pthread_join(th, NULL) == 0);
    CHECK(getauxval(AT_SYSINFO_EHDR) == aux, "the auxiliary vector's vDSO moved");
    unsigned long now = maps_vdso();
    if (proxy) CHECK(now != 0 && now != aux, "the kernel's vDSO is at 0x%lx, the checkpointed one's place (no proxy built?)", now);
    else CHECK(now == aux, "the vDSO is at 0x%lx, was at 0x%lx", now, aux);
    return e2e_finish();
}
