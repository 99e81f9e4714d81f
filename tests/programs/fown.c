/* fown: signal-driven I/O. A pipe with O_ASYNC owned by the process, signalling SIGRTMIN+2 (F_SETSIG, so
 * the siginfo names the fd); a second pipe with O_ASYNC owned by one thread (F_OWNER_TID), signalling
 * SIGRTMIN+3; a socket whose owner is the process group (F_OWNER_PGRP, no O_ASYNC: it would get SIGURG).
 * After the restart the owners, signals and flags must read back the same, and data written to each
 * pipe must raise its signal, in the right thread, with the right fd.
 *
 * build: fown -pthread
 */
#include "e2e.h"
#include <pthread.h>
#include <sys/socket.h>

static int p1[2], p2[2], sv[2];
static volatile int got1_fd = -1, got2_fd = -1, got2_tid = -1, worker_tid;
static volatile int stop;

static void on_sig(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    if (sig == SIGRTMIN + 2) got1_fd = si->si_fd;
    /* the thread first: main stops waiting as soon as it sees the fd */
    if (sig == SIGRTMIN + 3) { got2_tid = (int)syscall(SYS_gettid); got2_fd = si->si_fd; }
}

static void *worker(void *arg)
{
    (void)arg;
    worker_tid = (int)syscall(SYS_gettid);
    while (!stop) usleep(1000);
    return NULL;
}

static void own(int fd, int type, int pid, int sig, int async)
{
    struct f_owner_ex ex = { type, pid };
    MUST(fcntl(fd, F_SETOWN_EX, &ex) == 0);
    if (sig) MUST(fcntl(fd, F_SETSIG, sig) == 0);
    if (async) MUST(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC | O_NONBLOCK) == 0);
}

static void check_owner(const char *what, int fd, int type, int pid, int sig, int async)
{
    struct f_owner_ex ex = { -1, -1 };
    CHECK(fcntl(fd, F_GETOWN_EX, &ex) == 0, "%s: F_GETOWN_EX: %s", what, strerror(errno));
    CHECK(ex.type == type && ex.pid == pid, "%s: owner is type %d pid %d, expected type %d pid %d", what, ex.type, ex.pid, type, pid);
    CHECK(fcntl(fd, F_GETSIG) == sig, "%s: F_GETSIG is %d, expected %d", what, fcntl(fd, F_GETSIG), sig);
    int fl = fcntl(fd, F_GETFL);
    CHECK(!!(fl & O_ASYNC) == async, "%s: O_ASYNC is %s (flags 0x%x)", what, fl & O_ASYNC ? "set" : "clear", fl);
}

int main(void)
{
    e2e_init();
    MUST(setpgid(0, 0) == 0 || getpgrp() == getpid());
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sig;
    sa.sa_flags = SA_SIGINFO;
    MUST(sigaction(SIGRTMIN + 2, &sa, NULL) == 0 && sigaction(SIGRTMIN + 3, &sa, NULL) == 0);
    /* only the worker takes SIGRTMIN+3 */
    sigset_t s3;
    sigemptyset(&s3);
    sigaddset(&s3, SIGRTMIN + 3);
    pthread_t t;
    MUST(pthread_create(&t, NULL, worker, NULL) == 0);
    MUST(pthread_sigmask(SIG_BLOCK, &s3, NULL) == 0);
    while (!worker_tid) usleep(1000);
    MUST(pipe(p1) == 0 && pipe(p2) == 0 && socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    own(p1[0], F_OWNER_PID, getpid(), SIGRTMIN + 2, 1);
    own(p2[0], F_OWNER_TID, worker_tid, SIGRTMIN + 3, 1);
    own(sv[0], F_OWNER_PGRP, getpgrp(), 0, 0);
    say("READY");
    e2e_wait_usr1();
    check_owner("pipe 1", p1[0], F_OWNER_PID, getpid(), SIGRTMIN + 2, 1);
    check_owner("pipe 2", p2[0], F_OWNER_TID, worker_tid, SIGRTMIN + 3, 1);
    check_owner("socket", sv[0], F_OWNER_PGRP, getpgrp(), 0, 0);
    CHECK(got1_fd == -1 && got2_fd == -1, "a signal came before any data was written (%d, %d)", got1_fd, got2_fd);
    MUST(write(p1[1], "x", 1) == 1 && write(p2[1], "y", 1) == 1);
    for (int i = 0; i < 2000 && (got1_fd < 0 || got2_fd < 0 || got2_tid < 0); i++) usleep(1000);
    CHECK(got1_fd == p1[0], "SIGRTMIN+2 for the first pipe: si_fd %d, expected %d", got1_fd, p1[0]);
    CHECK(got2_fd == p2[0], "SIGRTMIN+3 for the second pipe: si_fd %d, expected %d", got2_fd, p2[0]);
    CHECK(got2_tid == worker_tid, "SIGRTMIN+3 was handled by thread %d, not by its owner %d", got2_tid, worker_tid);
    stop = 1;
    pthread_join(t, NULL);
    if (e2e_failures) return 1;
    say("PASS");
    return 0;
}
