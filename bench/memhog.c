/* Benchmark target for bench/run.sh: allocates and touches N MiB of anonymous memory filled with
 * pseudo-random non-zero words (no two pages alike), reports "READY pid=P sum=S", then sleeps in a loop.
 * On SIGUSR1 it recomputes the checksum of the whole buffer and reports "SUM S" (used to check that a
 * restarted copy holds exactly the same memory). Reports are appended to REPORT_FILE, which is opened
 * for each line and closed again: no open file in the image, so one image can be restarted repeatedly
 * (ckpt refuses to reopen a file whose size changed since the checkpoint).
 * Usage: memhog MiB REPORT_FILE */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <unistd.h>

static const char *report_path;

static void report(const char *fmt, ...)
{
    char line[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    int fd = open(report_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    if (write(fd, line, (size_t)n) != n) { /* nothing to do */ }
    close(fd);
}

static volatile sig_atomic_t want_sum;
static void on_usr1(int sig) { (void)sig; want_sum = 1; }

static uint64_t checksum(const uint64_t *p, size_t n)
{
    uint64_t a = 1, b = 0;                 /* Fletcher-like: sensitive to values and positions */
    for (size_t i = 0; i < n; i++) { a += p[i]; b += a; }
    return a ^ (b * 0x9E3779B97F4A7C15ULL);
}

int main(int argc, char **argv)
{
    if (argc != 3) { fprintf(stderr, "usage: %s MiB REPORT_FILE\n", argv[0]); return 2; }
    report_path = argv[2];
    /* ckpt does not save pipes shared with other processes: keep only stdin/stdout/stderr */
    close_range(3, ~0U, 0);
    size_t bytes = (size_t)strtoull(argv[1], NULL, 10) << 20;
    size_t words = bytes / 8;
    uint64_t *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) { perror("mmap"); return 1; }
    uint64_t x = 0x243F6A8885A308D3ULL ^ (uint64_t)getpid();
    for (size_t i = 0; i < words; i++) {  /* xorshift64*: every word different, never zero */
        x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
        buf[i] = (x * 0x2545F4914F6CDD1DULL) | 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;               /* no SA_RESTART: the sleep returns early */
    sigaction(SIGUSR1, &sa, NULL);
    report("READY pid=%d sum=%016llx\n", getpid(), (unsigned long long)checksum(buf, words));
    for (;;) {
        if (want_sum) {
            want_sum = 0;
            report("SUM %016llx\n", (unsigned long long)checksum(buf, words));
        }
        usleep(200000);
    }
}
