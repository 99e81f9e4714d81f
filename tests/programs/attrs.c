/* attrs: command name (PR_SET_NAME), nice value, lowered resource limits, an interval timer
 * (ITIMER_REAL every 50 ms, SIGALRM counted: still ticking after restart), umask and pid. */
#include "e2e.h"
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>

static volatile sig_atomic_t ticks;
static void on_alrm(int sig) { (void)sig; ticks++; }

int main(void)
{
    e2e_init();
    MUST(prctl(PR_SET_NAME, "ckpt-e2e-name") == 0);
    MUST(setpriority(PRIO_PROCESS, 0, 7) == 0);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = 200;
    if (rl.rlim_max > 4096) rl.rlim_max = 4096;
    MUST(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    rl.rlim_cur = 4096; rl.rlim_max = 1 << 20;
    MUST(setrlimit(RLIMIT_CORE, &rl) == 0);
    getrlimit(RLIMIT_STACK, &rl);
    rl.rlim_cur = 4 << 20;
    MUST(setrlimit(RLIMIT_STACK, &rl) == 0);
    getrlimit(RLIMIT_FSIZE, &rl);
    rl.rlim_cur = 1L << 40;
    MUST(setrlimit(RLIMIT_FSIZE, &rl) == 0);
    umask(0077);

    struct rlimit limits[RLIM_NLIMITS];
    for (int i = 0; i < RLIM_NLIMITS; i++) getrlimit(i, &limits[i]);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alrm;
    sa.sa_flags = SA_RESTART;
    MUST(sigaction(SIGALRM, &sa, NULL) == 0);
    struct itimerval it = { .it_interval = { 0, 50000 }, .it_value = { 0, 50000 } };
    MUST(setitimer(ITIMER_REAL, &it, NULL) == 0);
    pid_t pid = getpid(), ppid = getppid();
    (void)ppid;

    say("READY");
    e2e_wait_usr1();

    int t0 = ticks;
    sleep_full(0.5);
    int t1 = ticks;
    CHECK(t1 - t0 >= 5 && t1 - t0 <= 15, "the interval timer ticked %d times in 0.5 s (expected ~10)", t1 - t0);
    struct itimerval cur;
    getitimer(ITIMER_REAL, &cur);
    CHECK(cur.it_interval.tv_sec == 0 && cur.it_interval.tv_usec == 50000, "timer interval is %ld.%06ld",
          (long)cur.it_interval.tv_sec, (long)cur.it_interval.tv_usec);
    struct itimerval off = { { 0, 0 }, { 0, 0 } };
    setitimer(ITIMER_REAL, &off, NULL);

    char name[32] = { 0 };
    prctl(PR_GET_NAME, name);
    CHECK(strcmp(name, "ckpt-e2e-name") == 0, "command name is '%s'", name);
    char comm[64] = { 0 };
    int cf = open("/proc/self/comm", O_RDONLY);
    ssize_t n = read(cf, comm, sizeof comm - 1);
    close(cf);
    CHECK(n > 0 && strcmp(comm, "ckpt-e2e-name\n") == 0, "/proc/self/comm is '%s'", comm);
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, 0);
    CHECK(errno == 0 && nice == 7, "nice value is %d, expected 7", nice);
    static const char *rnames[] = { "cpu", "fsize", "data", "stack", "core", "rss", "nproc", "nofile", "memlock", "as",
                                    "locks", "sigpending", "msgqueue", "nice", "rtprio", "rttime" };
    for (int i = 0; i < RLIM_NLIMITS; i++) {
        getrlimit(i, &rl);
        CHECK(rl.rlim_cur == limits[i].rlim_cur && rl.rlim_max == limits[i].rlim_max, "rlimit %s is %lu/%lu, was %lu/%lu",
              i < 16 ? rnames[i] : "?", (unsigned long)rl.rlim_cur, (unsigned long)rl.rlim_max,
              (unsigned long)limits[i].rlim_cur, (unsigned long)limits[i].rlim_max);
    }
    mode_t um = umask(0);
    CHECK(um == 0077, "umask is 0%o", um);
    CHECK(getpid() == pid, "pid is %d, was %d", getpid(), pid);
    CHECK(syscall(SYS_getpid) == pid && syscall(SYS_gettid) == pid, "kernel pid/tid differ");
    return e2e_finish();
}
