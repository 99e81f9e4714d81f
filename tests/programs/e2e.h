/* Shared helpers of the end-to-end test programs (tests/programs, one .c file each).
 *
 * Protocol: a program sets up one kind of state, prints READY, waits for SIGUSR1 (checkpoint, kill and
 * restart happen meanwhile), verifies its whole state, then prints PASS (exit 0) or FAIL: reasons
 * (exit 1). Output is written with write(2), unbuffered, so that nothing sits in a stdio buffer.
 */
#ifndef E2E_H
#define E2E_H
#pragma GCC diagnostic ignored "-Wunused-function"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int e2e_failures;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof buf - 2) n = sizeof buf - 2;
    if (buf[n - 1] != '\n') buf[n++] = '\n';
    for (int off = 0; off < n;) {
        ssize_t w = write(1, buf + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        off += w;
    }
}

/* Records one failed check (the program goes on checking the rest). */
#define CHECK(cond, fmt, ...) do { if (!(cond)) { e2e_failures++; say("FAIL: %s:%d: (%s) " fmt, __FILE__, __LINE__, #cond, ##__VA_ARGS__); } } while (0)
/* A setup step that must work, or the test is meaningless. */
#define MUST(cond) do { if (!(cond)) { say("SETUP-ERROR: %s:%d: %s: %s", __FILE__, __LINE__, #cond, strerror(errno)); exit(2); } } while (0)

static volatile sig_atomic_t e2e_go;
static void e2e_on_usr1(int sig) { (void)sig; e2e_go = 1; }

/* Only 0, 1, 2 and what the program opens itself: drop anything inherited. */
static void e2e_init(void)
{
    syscall(SYS_close_range, 3, ~0U, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = e2e_on_usr1;
    sigemptyset(&sa.sa_mask);
    MUST(sigaction(SIGUSR1, &sa, NULL) == 0);
}

/* Blocks until SIGUSR1 has been received, sleeping in sigsuspend with `waitmask` (SIGUSR1 is unblocked in it). */
static void e2e_wait_usr1_mask(sigset_t waitmask)
{
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &old);
    sigdelset(&waitmask, SIGUSR1);
    while (!e2e_go) sigsuspend(&waitmask);
    sigprocmask(SIG_SETMASK, &old, NULL);
}

/* A child that waits for SIGUSR1: block it before the fork (none is lost while the child starts),
 * e2e_block_usr1(1); the child waits with e2e_child_wait_usr1() (sigwait) or e2e_wait_usr1()
 * (sigsuspend); the parent unblocks it after the fork, e2e_block_usr1(0). */
static void e2e_block_usr1(int block)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    MUST(sigprocmask(block ? SIG_BLOCK : SIG_UNBLOCK, &s, NULL) == 0);
}

static void e2e_child_wait_usr1(void)
{
    sigset_t s;
    int sig;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    sigwait(&s, &sig);
}

static void e2e_wait_usr1(void)
{
    sigset_t cur;
    sigprocmask(SIG_BLOCK, NULL, &cur);
    e2e_wait_usr1_mask(cur);
}

/* The namespace of kind `kind` ("uts", "ipc"...) that process `pid` is in: the /proc/PID/ns/KIND link, "" if unreadable. */
static void ns_link(pid_t pid, const char *kind, char *out, size_t n)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)pid, kind);
    ssize_t len = readlink(path, out, n - 1);
    out[len < 0 ? 0 : len] = 0;
}

/* Waits for child `pid`, whose verdict is its exit status: a check that it exited with 0. */
static void e2e_child_verdict(pid_t pid, const char *who)
{
    int st = 0;
    pid_t got = waitpid(pid, &st, 0);
    CHECK(got == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s failed (waitpid %d, status 0x%x)", who, (int)got, st);
}

static int e2e_finish(void)
{
    if (e2e_failures == 0) { say("PASS"); return 0; }
    say("FAIL: %d check(s) failed", e2e_failures);
    return 1;
}

/* The VmFlags line (after "VmFlags:") of the region of /proc/self/smaps that starts at `addr`, and its
 * Locked size in kB (-1, "" if there is no such region). */
static void region_info(void *addr, char *flags, size_t n, long *locked_kb)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0;
    flags[0] = 0;
    *locked_kb = -1;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long s, e;
        char c;
        if (sscanf(line, "%lx-%lx %c", &s, &e, &c) == 3 && strchr(line, '-') < strchr(line, ' ')) { in = s == (unsigned long)addr; continue; }
        if (!in) continue;
        sscanf(line, "Locked: %ld kB", locked_kb);
        if (!strncmp(line, "VmFlags:", 8)) { snprintf(flags, n, "%s", line + 8); break; }
    }
    if (f) fclose(f);
}

/* A deterministic byte pattern. */
static inline uint8_t pat(uint64_t i, uint64_t seed)
{
    uint64_t x = i * 0x9E3779B97F4A7C15ull + seed;
    x ^= x >> 29; x *= 0xBF58476D1CE4E5B9ull; x ^= x >> 32;
    return (uint8_t)x;
}
static void fill(void *p, size_t n, uint64_t seed) { for (size_t i = 0; i < n; i++) ((uint8_t *)p)[i] = pat(i, seed); }
/* Index of the first byte that differs from the pattern, or -1. */
static long check_fill(const void *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) if (((const uint8_t *)p)[i] != pat(i, seed)) return (long)i;
    return -1;
}

static double now_mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* Sleeps `sec` seconds whatever signals arrive. */
static void sleep_full(double sec)
{
    double end = now_mono() + sec;
    for (double left; (left = end - now_mono()) > 0;) {
        struct timespec t = { (time_t)left, (long)((left - (time_t)left) * 1e9) };
        nanosleep(&t, NULL);
    }
}

static ssize_t read_full(int fd, void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = read(fd, (char *)buf + done, n - done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return done ? (ssize_t)done : r;
        done += r;
    }
    return done;
}

static ssize_t write_full(int fd, const void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = write(fd, (const char *)buf + done, n - done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return done ? (ssize_t)done : r;
        done += r;
    }
    return done;
}

#endif
