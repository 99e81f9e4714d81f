/* attrs [alarm-pending]: command name (PR_SET_NAME), nice value, lowered resource limits, an interval
 * timer (ITIMER_REAL every 50 ms, SIGALRM counted: still ticking after restart), umask, pid, exe,
 * cmdline, environ, auxv, clear_child_tid address, the rseq registration, and leading its session or
 * process group (when started through setsid).
 * With alarm-pending, SIGALRM is blocked and has fired when the checkpoint is taken: the timer is then
 * waiting for the signal to be dequeued before it re-arms (getitimer shows a zero value). */
#include "e2e.h"
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/auxv.h>
#include <sys/rseq.h>
#include <sched.h>

static void read_file(const char *path, char *buf, size_t n, ssize_t *len)
{
    int fd = open(path, O_RDONLY);
    *len = fd < 0 ? -1 : read_full(fd, buf, n);
    if (fd >= 0) close(fd);
}

/* The cpu the rseq area says this thread runs on (the kernel updates it only while registered). */
static int rseq_cpu(void)
{
    struct rseq *rs = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
    return (int)*(volatile uint32_t *)&rs->cpu_id;
}

/* Moves to each cpu in turn: the rseq area must follow. Returns the number of mismatches. */
static int rseq_follows(void)
{
    int bad = 0;
    cpu_set_t all, one;
    sched_getaffinity(0, sizeof all, &all);
    for (int cpu = 0; cpu < 2; cpu++) {
        if (!CPU_ISSET(cpu, &all)) continue;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        if (sched_setaffinity(0, sizeof one, &one) != 0) continue;
        sched_yield();
        unsigned int now;
        syscall(SYS_getcpu, &now, NULL, NULL);
        if (rseq_cpu() != (int)now) { say("rseq cpu_id %d while on cpu %u", rseq_cpu(), now); bad++; }
    }
    sched_setaffinity(0, sizeof all, &all);
    return bad;
}

static volatile sig_atomic_t ticks;
static void on_alrm(int sig) { (void)sig; ticks++; }

int main(int argc, char **argv)
{
    e2e_init();
    int alarm_pending = argc > 1 && strcmp(argv[1], "alarm-pending") == 0;
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
    pid_t pid = getpid(), sid0 = getsid(0), pgid0 = getpgrp();
    static char exe0[1024], cmd0[4096], env0[16384], exe1[1024], cmd1[4096], env1[16384], aux0[1024], aux1[1024];
    ssize_t exelen0 = readlink("/proc/self/exe", exe0, sizeof exe0), cmdlen0, envlen0;
    read_file("/proc/self/cmdline", cmd0, sizeof cmd0, &cmdlen0);
    read_file("/proc/self/environ", env0, sizeof env0, &envlen0);
    ssize_t auxlen0, auxlen1;
    read_file("/proc/self/auxv", aux0, sizeof aux0, &auxlen0);
    unsigned long entry0 = getauxval(AT_ENTRY), phdr0 = getauxval(AT_PHDR), random0 = getauxval(AT_RANDOM);
    unsigned long tidaddr0 = 0, tidaddr1 = 0;
    MUST(prctl(PR_GET_TID_ADDRESS, &tidaddr0) == 0);
    MUST(__rseq_size > 0);
    MUST(rseq_follows() == 0);

    sigset_t alrm;
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    if (alarm_pending) {
        sigprocmask(SIG_BLOCK, &alrm, NULL);
        sigset_t pend;
        do { sleep_full(0.01); sigpending(&pend); } while (!sigismember(&pend, SIGALRM));
        struct itimerval now;
        getitimer(ITIMER_REAL, &now);
        say("timer value %ld.%06ld (SIGALRM pending)", (long)now.it_value.tv_sec, (long)now.it_value.tv_usec);
    }

    say("READY");
    e2e_wait_usr1();

    if (alarm_pending) {
        sigset_t pend;
        sigpending(&pend);
        CHECK(sigismember(&pend, SIGALRM), "the pending SIGALRM was lost");
        int before = ticks;
        sigprocmask(SIG_UNBLOCK, &alrm, NULL);
        CHECK(ticks == before + 1, "unblocking SIGALRM ran the handler %d times", ticks - before);
    }
    int t0 = ticks;
    sleep_full(0.5);
    int t1 = ticks;
    CHECK(t1 - t0 >= 3 && t1 - t0 <= 15, "the interval timer ticked %d times in 0.5 s (expected ~10)", t1 - t0);
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
    /* leading its session or process group is the process's own state (membership in others' is not) */
    if (sid0 == pid) CHECK(getsid(0) == pid, "it led its session; now it is in session %d", getsid(0));
    if (pgid0 == pid) CHECK(getpgrp() == pid, "it led its process group; now it is in group %d", getpgrp());
    ssize_t exelen1 = readlink("/proc/self/exe", exe1, sizeof exe1), cmdlen1, envlen1;
    CHECK(exelen1 == exelen0 && memcmp(exe0, exe1, exelen0) == 0, "/proc/self/exe is %.*s, was %.*s", (int)exelen1, exe1, (int)exelen0, exe0);
    read_file("/proc/self/cmdline", cmd1, sizeof cmd1, &cmdlen1);
    read_file("/proc/self/environ", env1, sizeof env1, &envlen1);
    CHECK(cmdlen1 == cmdlen0 && memcmp(cmd0, cmd1, cmdlen0) == 0, "/proc/self/cmdline changed");
    CHECK(envlen1 == envlen0 && memcmp(env0, env1, envlen0) == 0, "/proc/self/environ changed");
    read_file("/proc/self/auxv", aux1, sizeof aux1, &auxlen1);
    CHECK(auxlen1 == auxlen0 && memcmp(aux0, aux1, auxlen0) == 0, "/proc/self/auxv changed");
    CHECK(getauxval(AT_ENTRY) == entry0 && getauxval(AT_PHDR) == phdr0 && getauxval(AT_RANDOM) == random0, "auxv changed");
    CHECK(prctl(PR_GET_TID_ADDRESS, &tidaddr1) == 0 && tidaddr1 == tidaddr0, "clear_child_tid address 0x%lx, was 0x%lx", tidaddr1, tidaddr0);
    CHECK(rseq_follows() == 0, "the rseq area is not updated by the kernel any more (not registered again)");
    CHECK(syscall(SYS_getpid) == pid && syscall(SYS_gettid) == pid, "kernel pid/tid differ");
    return e2e_finish();
}
