/* pipe_read: blocked in read() on an empty pipe of its own when checkpointed. The SIGUSR1 handler
 * (SA_RESTART) writes to that pipe, so the restarted read() returns what the handler wrote, without
 * EINTR. A second pipe holds data queued before the checkpoint; the handler appends to it, and the
 * queued data must come out first and intact. */
#include "e2e.h"

#define QUEUED 40000
static int wake[2], data[2];

static void on_usr1(int sig)
{
    (void)sig;
    e2e_go = 1;
    if (write(data[1], "TAIL", 4) != 4) _exit(3);
    if (write(wake[1], "WAKE", 4) != 4) _exit(3);
}

int main(void)
{
    e2e_init();
    MUST(pipe(wake) == 0 && pipe(data) == 0);
    static char queued[QUEUED], got[QUEUED + 4];
    fill(queued, QUEUED, 11);
    MUST(write_full(data[1], queued, QUEUED) == QUEUED);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    MUST(sigaction(SIGUSR1, &sa, NULL) == 0);
    say("READY");

    char buf[64];
    errno = 0;
    ssize_t n = read(wake[0], buf, sizeof buf);   /* blocks here: checkpoint, kill, restart */
    int err = errno;
    CHECK(n == 4, "read returned %zd (%s)", n, n < 0 ? strerror(err) : "short");
    CHECK(n != 4 || memcmp(buf, "WAKE", 4) == 0, "read returned '%.4s', expected WAKE", buf);
    CHECK(e2e_go, "read returned before SIGUSR1");

    int fl = fcntl(data[0], F_GETFL);
    MUST(fcntl(data[0], F_SETFL, fl | O_NONBLOCK) == 0);
    ssize_t total = 0;
    for (;;) {
        ssize_t r = read(data[0], got + total, sizeof got - total);
        if (r <= 0) break;
        total += r;
        if (total == (ssize_t)sizeof got) break;
    }
    CHECK(total == QUEUED + 4, "data pipe held %zd bytes, expected %d", total, QUEUED + 4);
    long bad = check_fill(got, QUEUED, 11);
    CHECK(bad < 0, "data queued before the checkpoint differs at byte %ld", bad);
    CHECK(memcmp(got + QUEUED, "TAIL", 4) == 0, "data written after the restart is not after the queued data");
    char extra;
    CHECK(read(data[0], &extra, 1) < 0 && errno == EAGAIN, "more data than expected in the pipe");
    return e2e_finish();
}
