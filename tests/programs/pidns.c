/* pidns: a tree with pid namespaces of its own.
 *   R (the root, in ckpt's namespace) unshares a pid namespace N and forks A, N's init (pid 1 there), then
 *   D, which goes into N too (its parent is outside N); R's children keep going into N.
 *   A forks B, B forks C (with a second thread) and exits: C is adopted by A, the namespace's reaper. A
 *   holds a pidfd of C. A then unshares a namespace N2 (below N) and forks E, N2's init: A's children go into N2.
 * Every process checks its ids after the restart (getpid, getppid, gettid), A signals C through its pidfd,
 * and R and A fork once more to see that their children still go into the namespace they went into.
 * Prints "PIDNS R A D" (ids in ckpt's namespace) and READY. */
#include "e2e.h"
#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/stat.h>

static pid_t sys_gettid(void) { return (pid_t)syscall(SYS_gettid); }

static volatile pid_t thread_tid, thread_tid_after;
static volatile int recheck;
static int pipe_r, pipe_w;
static void *c_thread(void *arg)
{
    (void)arg;
    thread_tid = sys_gettid();
    while (!recheck) usleep(1000);
    thread_tid_after = sys_gettid();
    return NULL;
}

/* C: ids as before, adopted by A (pid 1), its thread's id kept. */
static int run_c(void)
{
    pid_t me = getpid();
    pthread_t t;
    MUST(pthread_create(&t, NULL, c_thread, NULL) == 0);
    while (!thread_tid) usleep(1000);
    pid_t tt = thread_tid;
    e2e_child_wait_usr1();
    CHECK(getpid() == me, "C: getpid %d, was %d", getpid(), me);
    CHECK(getppid() == 1, "C: getppid %d, expected 1 (adopted by the namespace's init)", getppid());
    CHECK(sys_gettid() == me, "C: gettid %d, was %d", sys_gettid(), me);
    recheck = 1;
    MUST(pthread_join(t, NULL) == 0);
    CHECK(thread_tid_after == tt, "C: its thread's id is %d, was %d", thread_tid_after, tt);
    return e2e_failures ? 1 : 0;
}

/* G: a daemon in N, forked twice (its session leader F exited): adopted by A, in F's session. */
static int run_g(pid_t sid)
{
    e2e_child_wait_usr1();
    CHECK(getsid(0) == sid, "G: getsid %d, expected %d (the session of its exited leader)", getsid(0), sid);
    CHECK(getpgid(0) == sid, "G: getpgid %d, expected %d", getpgid(0), sid);
    CHECK(getppid() == 1, "G: getppid %d, expected 1 (adopted by the namespace's init)", getppid());
    return e2e_failures ? 1 : 0;
}

/* E: init of N2 (pid 1 there), its parent A outside it. */
static int run_e(void)
{
    e2e_child_wait_usr1();
    CHECK(getpid() == 1, "E: getpid %d, expected 1", getpid());
    CHECK(getppid() == 0, "E: getppid %d, expected 0 (its parent is outside its namespace)", getppid());
    return e2e_failures ? 1 : 0;
}

static int run_a(void)
{
    CHECK(getpid() == 1, "A: getpid %d before the checkpoint", getpid());
    pid_t b = fork();
    MUST(b >= 0);
    if (b == 0) {
        pid_t c = fork();
        MUST(c >= 0);
        if (c == 0) _exit(run_c());
        /* C's id in N, for A */
        MUST(write(pipe_w, &c, sizeof c) == sizeof c);
        _exit(0);
    }
    pid_t c;
    MUST(read(pipe_r, &c, sizeof c) == sizeof c);
    int st;
    MUST(waitpid(b, &st, 0) == b);
    int pidfd = (int)syscall(SYS_pidfd_open, c, 0);
    MUST(pidfd >= 0);
    int nsfd = open("/proc/self/ns/pid", O_RDONLY);   /* its own namespace, held open */
    MUST(nsfd >= 0);
    /* a daemon: F makes a session, forks G and exits */
    pid_t f = fork();
    MUST(f >= 0);
    if (f == 0) {
        MUST(setsid() == getpid());
        pid_t g = fork();
        MUST(g >= 0);
        if (g == 0) _exit(run_g(getsid(0)));
        MUST(write(pipe_w, &g, sizeof g) == sizeof g);
        _exit(0);
    }
    pid_t g;
    MUST(read(pipe_r, &g, sizeof g) == sizeof g);
    MUST(waitpid(f, &st, 0) == f);
    MUST(unshare(CLONE_NEWPID) == 0);
    pid_t e = fork();
    MUST(e >= 0);
    if (e == 0) _exit(run_e());
    e2e_child_wait_usr1();
    CHECK(getpid() == 1, "A: getpid %d, expected 1", getpid());
    CHECK(getppid() == 0, "A: getppid %d, expected 0 (its parent is outside its namespace)", getppid());
    struct stat held, now;
    CHECK(fstat(nsfd, &held) == 0 && stat("/proc/self/ns/pid", &now) == 0 && held.st_ino == now.st_ino,
          "A: the namespace file it holds is not its namespace");
    CHECK(syscall(SYS_pidfd_send_signal, pidfd, SIGUSR1, NULL, 0) == 0, "A: pidfd_send_signal to C: %s", strerror(errno));
    e2e_child_verdict(c, "C");
    CHECK(kill(g, SIGUSR1) == 0, "A: kill G: %s", strerror(errno));
    e2e_child_verdict(g, "G");
    /* a new child goes into N2, after E (while E lives: its end ends N2) */
    pid_t x = fork();
    MUST(x >= 0);
    if (x == 0) _exit(getpid() == 2 && getppid() == 0 ? 0 : 1);
    e2e_child_verdict(x, "A's new child (pid 2 in N2)");
    CHECK(kill(e, SIGUSR1) == 0, "A: kill E: %s", strerror(errno));
    e2e_child_verdict(e, "E");
    return e2e_failures ? 1 : 0;
}

static int run_d(void)
{
    pid_t me = getpid();
    e2e_child_wait_usr1();
    CHECK(getpid() == me, "D: getpid %d, was %d", getpid(), me);
    CHECK(getppid() == 0, "D: getppid %d, expected 0 (its parent is outside its namespace)", getppid());
    return e2e_failures ? 1 : 0;
}

static void same_ns(pid_t a, pid_t b, const char *what)
{
    char la[64], lb[64];
    ns_link(a, "pid", la, sizeof la);
    ns_link(b, "pid", lb, sizeof lb);
    CHECK(la[0] && strcmp(la, lb) == 0, "%s: %s vs %s", what, la, lb);
}

int main(void)
{
    e2e_init();
    int p[2];
    MUST(pipe(p) == 0);   /* B tells A the id of C */
    pipe_r = p[0];
    pipe_w = p[1];
    e2e_block_usr1(1);
    MUST(unshare(CLONE_NEWPID) == 0);
    pid_t a = fork();
    MUST(a >= 0);
    if (a == 0) _exit(run_a());
    pid_t d = fork();
    MUST(d >= 0);
    if (d == 0) _exit(run_d());
    e2e_block_usr1(0);
    /* wait until C, G and E are A's (A forks E last, then sleeps in sigwait) */
    char link[64], self[64];
    for (int i = 0; i < 500; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/task/%d/children", a, a);
        FILE *f = fopen(path, "r");
        int n = 0, x;
        if (f) { while (fscanf(f, "%d", &x) == 1) n++; fclose(f); }
        if (n >= 3) break;
        usleep(10000);
    }
    ns_link(getpid(), "pid", self, sizeof self);
    ns_link(a, "pid", link, sizeof link);
    MUST(strcmp(self, link) != 0);
    say("PIDNS %d %d %d", getpid(), a, d);
    say("READY");
    e2e_wait_usr1();
    same_ns(a, d, "A and D are in one namespace");
    char pfc[64];
    ns_link(getpid(), "pid_for_children", pfc, sizeof pfc);
    ns_link(a, "pid", link, sizeof link);
    CHECK(strcmp(pfc, link) == 0, "R's children go into %s, A is in %s", pfc, link);
    CHECK(kill(d, SIGUSR1) == 0 && kill(a, SIGUSR1) == 0, "R: kill: %s", strerror(errno));
    e2e_child_verdict(d, "D");
    e2e_child_verdict(a, "A");
    /* R's children still go into N, whose init has ended now: no process can enter it any more */
    pid_t y = fork();
    if (y == 0) _exit(0);
    CHECK(y < 0 && errno == ENOMEM, "R: a fork into N after its init ended gave %d (%s)", y, strerror(errno));
    return e2e_finish();
}
