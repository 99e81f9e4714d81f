/* tcpflow: a loopback TCP connection whose two ends this process holds, with big buffers (32 MiB) and
 * traffic both ways in small writes (17 bytes, as zdtm socket-tcpbuf): each round fills both send queues
 * until they take no more, then reads half of what waits at each end. Many small segments keep the kernel
 * moving data between the ends for a while after the process is frozen (the receive queues are pruned and
 * collapsed, windows open again): the checkpoint must save each queue as it was at one moment (once a
 * segment that came between reading a queue's length and its sequence number lost its bytes). After
 * SIGUSR1 both ends stop writing, shut down, and read everything the other sent: every byte once, in
 * order (a pattern), and the counts match. Prints READY after the first round. */
#include "e2e.h"
#include "e2e_tcp.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define BUF (32 << 20)

/* writes the pattern `seed` in 17-byte pieces from byte `*sent` on until the socket takes no more */
static void fill_small(int s, uint64_t seed, size_t *sent)
{
    char b[17];
    for (;;) {
        for (size_t i = 0; i < sizeof b; i++) b[i] = pat(*sent + i, seed);
        ssize_t n = send(s, b, sizeof b, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) { *sent += n; continue; }
        MUST(n < 0 && errno == EAGAIN);
        return;
    }
}

/* reads up to `limit` bytes (0: until the end), checking they are the pattern `seed` from `*got` on;
 * returns 0, or -1 with the offset of a wrong byte in *bad */
static int drain(int s, uint64_t seed, size_t *got, size_t limit, size_t *bad)
{
    static char b[65536];
    size_t read_now = 0;
    for (;;) {
        size_t want = sizeof b;
        if (limit && limit - read_now < want) want = limit - read_now;
        if (limit && want == 0) return 0;
        ssize_t n = recv(s, b, want, limit ? MSG_DONTWAIT : 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return 0;
        MUST(n >= 0);
        if (n == 0) return 0;
        for (ssize_t i = 0; i < n; i++)
            if ((uint8_t)b[i] != pat(*got + i, seed)) { *bad = *got + i; return -1; }
        *got += n;
        read_now += n;
    }
}

int main(void)
{
    e2e_init();
    int big = BUF;
    int c, s, lst = tcp_loopback_pair(big, &c, &s);
    close(lst);
    size_t sent_c = 0, sent_s = 0, got_s = 0, got_c = 0, bad = 0;
    int rounds = 0;
    while (!e2e_go) {
        fill_small(c, 71, &sent_c);
        fill_small(s, 72, &sent_s);
        if (drain(s, 71, &got_s, (sent_c - got_s) / 2, &bad) < 0) { CHECK(0, "server end: byte %zu is wrong", bad); return e2e_finish(); }
        if (drain(c, 72, &got_c, (sent_s - got_c) / 2, &bad) < 0) { CHECK(0, "client end: byte %zu is wrong", bad); return e2e_finish(); }
        if (++rounds == 1) say("READY");
        usleep(2000);
    }
    MUST(shutdown(c, SHUT_WR) == 0 && shutdown(s, SHUT_WR) == 0);
    int rs = drain(s, 71, &got_s, 0, &bad);
    CHECK(rs == 0, "server end: byte %zu is wrong", bad);
    int rc = drain(c, 72, &got_c, 0, &bad);
    CHECK(rc == 0, "client end: byte %zu is wrong", bad);
    CHECK(got_s == sent_c, "the server end got %zu bytes, the client end sent %zu", got_s, sent_c);
    CHECK(got_c == sent_s, "the client end got %zu bytes, the server end sent %zu", got_c, sent_s);
    say("ROUNDS %d, %zu and %zu bytes", rounds, sent_c, sent_s);
    return e2e_finish();
}
