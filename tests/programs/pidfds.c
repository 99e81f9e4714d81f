/* pidfds: a non-blocking pidfd of a running child and a pidfd of a child that has exited (a zombie,
 * not reaped), and a thread pidfd (PIDFD_THREAD) of a thread of the process; pidfds of two children that
 * exited and were reaped, one non-blocking. After the restart the running child is still running for its
 * pidfd (not readable), is signalled and waited for through it; the zombie's pidfd is readable and gives
 * its exit status; the thread's pidfd names that thread; the reaped ones' are readable, name no process
 * (Pid -1), cannot be waited for or signalled, and are still two different processes'.
 *
 * build: pidfds -pthread
 */
#include "e2e.h"
#include <pthread.h>
#include <poll.h>
#include <sys/wait.h>
#include <sys/stat.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

static pid_t thread_tid;
static void *sleeper(void *arg) { (void)arg; thread_tid = gettid(); for (;;) pause(); return NULL; }

/* The Pid: line of an fd's fdinfo, or -2. */
static int fdinfo_pid(int fd)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    int f = open(path, O_RDONLY);
    ssize_t n = f >= 0 ? read(f, buf, sizeof buf - 1) : -1;
    if (f >= 0) close(f);
    if (n <= 0) return -2;
    buf[n] = 0;
    char *p = strstr(buf, "\nPid:");
    return p ? atoi(p + 5) : -2;
}

static int readable(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

int main(void)
{
    e2e_init();
    pid_t a = fork();
    MUST(a >= 0);
    if (a == 0) { for (;;) pause(); }
    pid_t b = fork();
    MUST(b >= 0);
    if (b == 0) _exit(7);
    int pa = syscall(SYS_pidfd_open, a, O_NONBLOCK), pb = syscall(SYS_pidfd_open, b, 0);
    MUST(pa >= 0 && pb >= 0);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    MUST(waitid(P_PID, b, &si, WEXITED | WNOWAIT) == 0);   /* b is a zombie now */
    /* two children reaped, whose pidfds stay */
    int reaped[2];
    for (int i = 0; i < 2; i++) {
        pid_t c = fork();
        MUST(c >= 0);
        if (c == 0) _exit(3);
        reaped[i] = syscall(SYS_pidfd_open, c, i == 0 ? O_NONBLOCK : 0);
        MUST(reaped[i] >= 0 && waitpid(c, NULL, 0) == c && fdinfo_pid(reaped[i]) == -1);
    }
    struct stat r0, r1;
    MUST(fstat(reaped[0], &r0) == 0 && fstat(reaped[1], &r1) == 0);
    int distinct = r0.st_ino != r1.st_ino;   /* pidfs (6.9+): an inode per process */
    pthread_t th;
    MUST(pthread_create(&th, NULL, sleeper, NULL) == 0);
    for (int i = 0; i < 1000 && !thread_tid; i++) usleep(1000);
    int pt = syscall(SYS_pidfd_open, thread_tid, O_EXCL /* PIDFD_THREAD */);
    MUST(pt >= 0 && fcntl(pt, F_SETFD, FD_CLOEXEC) == 0);
    say("READY");
    e2e_wait_usr1();

    CHECK(fdinfo_pid(pt) == thread_tid, "the thread's pidfd names pid %d, not the thread %d", fdinfo_pid(pt), thread_tid);
    CHECK((fcntl(pt, F_GETFL) & O_EXCL) != 0 && (fcntl(pt, F_GETFD) & FD_CLOEXEC), "the thread's pidfd lost PIDFD_THREAD or its close-on-exec flag");
    CHECK(fcntl(pa, F_GETFL) & O_NONBLOCK, "the running child's pidfd lost O_NONBLOCK");
    CHECK(!readable(pa), "the running child's pidfd is readable (it says the child exited)");
    CHECK(readable(pb), "the zombie's pidfd is not readable");
    memset(&si, 0, sizeof si);
    CHECK(syscall(SYS_waitid, P_PIDFD, pb, &si, WEXITED, NULL) == 0 && si.si_pid == b && si.si_code == CLD_EXITED && si.si_status == 7,
          "waitid on the zombie's pidfd: pid %d code %d status %d (%s)", si.si_pid, si.si_code, si.si_status, strerror(errno));
    for (int i = 0; i < 2; i++) {
        CHECK(fdinfo_pid(reaped[i]) == -1, "reaped pidfd %d names pid %d", i, fdinfo_pid(reaped[i]));
        CHECK(readable(reaped[i]), "reaped pidfd %d is not readable", i);
        CHECK(syscall(SYS_waitid, P_PIDFD, reaped[i], &si, WEXITED | WNOHANG, NULL) == -1 && errno == ECHILD,
              "waitid on reaped pidfd %d: %s", i, strerror(errno));
        CHECK(syscall(SYS_pidfd_send_signal, reaped[i], SIGTERM, NULL, 0) == -1 && errno == ESRCH,
              "pidfd_send_signal on reaped pidfd %d: %s", i, strerror(errno));
    }
    CHECK((fcntl(reaped[0], F_GETFL) & O_NONBLOCK) && !(fcntl(reaped[1], F_GETFL) & O_NONBLOCK), "the reaped pidfds' O_NONBLOCK differs");
    CHECK(fstat(reaped[0], &r0) == 0 && fstat(reaped[1], &r1) == 0 && (r0.st_ino != r1.st_ino) == distinct,
          "the reaped pidfds are %s, were %s", r0.st_ino != r1.st_ino ? "distinct" : "one", distinct ? "distinct" : "one");
    CHECK(syscall(SYS_pidfd_send_signal, pa, SIGTERM, NULL, 0) == 0, "pidfd_send_signal: %s", strerror(errno));
    struct pollfd p = { .fd = pa, .events = POLLIN };
    CHECK(poll(&p, 1, 5000) == 1, "the pidfd did not report the child's end");
    memset(&si, 0, sizeof si);
    CHECK(syscall(SYS_waitid, P_PIDFD, pa, &si, WEXITED, NULL) == 0 && si.si_pid == a && si.si_code == CLD_KILLED && si.si_status == SIGTERM,
          "waitid on the child's pidfd: pid %d code %d status %d", si.si_pid, si.si_code, si.si_status);
    return e2e_finish();
}
