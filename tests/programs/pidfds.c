/* pidfds: a non-blocking pidfd of a running child and a pidfd of a child that has exited (a zombie,
 * not reaped), and a thread pidfd (PIDFD_THREAD) of a thread of the process; pidfds of three children that
 * were reaped, one non-blocking: one exited with 3 (a second pidfd of it too), one killed by SIGKILL,
 * one by SIGTERM. After the restart the running child is still running for its
 * pidfd (not readable), is signalled and waited for through it; the zombie's pidfd is readable and gives
 * its exit status; the thread's pidfd names that thread; the reaped ones' are readable, name no process
 * (Pid -1), cannot be waited for or signalled, are still different processes' (the two of one process
 * one's), and report the status each ended with (PIDFD_GET_INFO, where the kernel has it).
 *
 * build: pidfds -pthread
 */
#include "e2e.h"
#include <pthread.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

/* The wait status PIDFD_GET_INFO (6.13+) reports for a pidfd's reaped process, -1 if none. */
static int exit_status(int pidfd)
{
    struct { uint64_t mask, cgroupid; uint32_t ids[11]; int32_t exit_code; } info = { .mask = 1 << 3 };
    if (ioctl(pidfd, _IOWR(0xFF, 11, info), &info) != 0 || !(info.mask & (1 << 3))) return -1;
    return info.exit_code;
}
#include <sys/wait.h>

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
    /* three children reaped, whose pidfds stay: one exited with 3 (and has a second pidfd), one was
     * killed by SIGKILL, one by SIGTERM */
    int reaped[3], again = -1, want_status[3] = { 3 << 8, SIGKILL, SIGTERM };
    for (int i = 0; i < 3; i++) {
        pid_t c = fork();
        MUST(c >= 0);
        if (c == 0) {
            if (i == 0) _exit(3);
            for (;;) pause();
        }
        reaped[i] = syscall(SYS_pidfd_open, c, i == 0 ? O_NONBLOCK : 0);
        if (i == 0) again = syscall(SYS_pidfd_open, c, 0);
        if (i > 0) kill(c, want_status[i]);
        MUST(reaped[i] >= 0 && waitpid(c, NULL, 0) == c && fdinfo_pid(reaped[i]) == -1);
    }
    struct stat r0, r1;
    MUST(fstat(reaped[0], &r0) == 0 && fstat(reaped[1], &r1) == 0);
    int distinct = r0.st_ino != r1.st_ino;   /* pidfs (6.9+): an inode per process */
    int has_info = exit_status(reaped[0]) == want_status[0];   /* PIDFD_GET_INFO (6.13+) */
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
    for (int i = 0; i < 3; i++) {
        if (has_info)
            CHECK(exit_status(reaped[i]) == want_status[i], "reaped pidfd %d reports the status 0x%x, not 0x%x", i, exit_status(reaped[i]), want_status[i]);
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
    struct stat ra;
    CHECK(fstat(again, &ra) == 0 && ra.st_ino == r0.st_ino && !(fcntl(again, F_GETFL) & O_NONBLOCK),
          "the second pidfd of the first reaped child is not one of that process");
    if (has_info) CHECK(exit_status(again) == want_status[0], "the second pidfd of the first reaped child reports 0x%x", exit_status(again));
    CHECK(syscall(SYS_pidfd_send_signal, pa, SIGTERM, NULL, 0) == 0, "pidfd_send_signal: %s", strerror(errno));
    struct pollfd p = { .fd = pa, .events = POLLIN };
    CHECK(poll(&p, 1, 5000) == 1, "the pidfd did not report the child's end");
    memset(&si, 0, sizeof si);
    CHECK(syscall(SYS_waitid, P_PIDFD, pa, &si, WEXITED, NULL) == 0 && si.si_pid == a && si.si_code == CLD_KILLED && si.si_status == SIGTERM,
          "waitid on the child's pidfd: pid %d code %d status %d", si.si_pid, si.si_code, si.si_status);
    return e2e_finish();
}
