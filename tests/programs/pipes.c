/* pipes: pipes with data queued in them (both ends held), O_NONBLOCK on one end, a 1 MiB pipe holding
 * more than the default capacity, a second open file description of a read end (other flags), and an
 * empty pipe. */
#include "e2e.h"

#define BIGDATA (300 * 1024)

static int getfl(int fd) { return fcntl(fd, F_GETFL); }

int main(void)
{
    e2e_init();
    int a[2], b[2], c[2];
    MUST(pipe(a) == 0);
    MUST(pipe2(b, O_CLOEXEC) == 0);
    MUST(pipe(c) == 0);
    MUST(fcntl(a[0], F_SETFL, O_NONBLOCK) == 0);
    MUST(fcntl(a[1], F_SETPIPE_SZ, 1 << 20) == 1 << 20);
    static char big[BIGDATA], got[BIGDATA + 16];
    fill(big, BIGDATA, 31);
    MUST(write_full(a[1], big, BIGDATA) == BIGDATA);
    MUST(write(b[1], "small data", 10) == 10);
    /* a second description of b's read end, non-blocking, via /proc/self/fd */
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", b[0]);
    int b0nb = open(path, O_RDONLY | O_NONBLOCK);
    MUST(b0nb >= 0);
    int b1dup = dup(b[1]);
    MUST(b1dup >= 0);
    int szb = fcntl(b[0], F_GETPIPE_SZ);

    say("READY");
    e2e_wait_usr1();

    CHECK(fcntl(a[0], F_GETPIPE_SZ) == 1 << 20, "pipe a capacity %d, expected 1 MiB", fcntl(a[0], F_GETPIPE_SZ));
    CHECK(fcntl(b[0], F_GETPIPE_SZ) == szb, "pipe b capacity %d, expected %d", fcntl(b[0], F_GETPIPE_SZ), szb);
    CHECK((getfl(a[0]) & O_NONBLOCK) != 0, "read end of a lost O_NONBLOCK");
    CHECK((getfl(a[1]) & O_NONBLOCK) == 0, "write end of a became O_NONBLOCK");
    CHECK((getfl(a[0]) & O_ACCMODE) == O_RDONLY && (getfl(a[1]) & O_ACCMODE) == O_WRONLY, "access modes of a");
    CHECK((getfl(b0nb) & O_NONBLOCK) != 0 && (getfl(b[0]) & O_NONBLOCK) == 0, "the two descriptions of b's read end have lost their own flags");
    CHECK((fcntl(b[0], F_GETFD) & FD_CLOEXEC) && (fcntl(b[1], F_GETFD) & FD_CLOEXEC), "pipe2 O_CLOEXEC lost");
    CHECK(!(fcntl(a[0], F_GETFD) & FD_CLOEXEC) && !(fcntl(b1dup, F_GETFD) & FD_CLOEXEC), "close-on-exec set where it was not");

    ssize_t total = 0, r;
    while ((r = read(a[0], got + total, sizeof got - total)) > 0) total += r;
    CHECK(r < 0 && errno == EAGAIN, "pipe a: read ended with %zd (%s), expected EAGAIN", r, strerror(errno));
    CHECK(total == BIGDATA, "pipe a held %zd bytes, expected %d", total, BIGDATA);
    long bad = check_fill(got, BIGDATA, 31);
    CHECK(bad < 0, "pipe a data differs at %ld", bad);

    /* b: one pipe behind b[0] and b0nb, writes through the dup reach it */
    CHECK(write(b1dup, "+more", 5) == 5, "write through the dup of b's write end");
    char s[32] = { 0 };
    r = read(b0nb, s, sizeof s - 1);
    CHECK(r == 15 && memcmp(s, "small data+more", 15) == 0, "pipe b gave %zd bytes '%s'", r, s);
    r = read(b0nb, s, 1);
    CHECK(r < 0 && errno == EAGAIN, "pipe b not empty or its second description blocks");

    /* c: empty, still connected */
    int fl = getfl(c[0]);
    fcntl(c[0], F_SETFL, fl | O_NONBLOCK);
    r = read(c[0], s, 1);
    CHECK(r < 0 && errno == EAGAIN, "empty pipe c: read gave %zd", r);
    CHECK(write(c[1], "c", 1) == 1 && read(c[0], s, 1) == 1 && s[0] == 'c', "pipe c does not connect its ends");
    close(c[1]);
    CHECK(read(c[0], s, 1) == 0, "pipe c: no EOF once its only write end is closed (another writer is left)");
    return e2e_finish();
}
