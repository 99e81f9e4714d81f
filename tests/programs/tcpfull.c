/* tcpfull: a loopback TCP connection whose two ends this process holds, with big buffers (SO_SNDBUF and
 * SO_RCVBUF of 1 MiB) filled both ways until nothing more goes: each send queue holds what the other's
 * full receive queue could not take. Both ends are rebuilt in repair mode at the restart, where nothing
 * acknowledges anything: filling such a send queue must not wait (it once hung the restart for good).
 * After the restart each end reads everything the other sent, in order, and the connection still works. */
#include "e2e.h"
#include "e2e_tcp.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#define BUF (1 << 20)

/* writes the pattern `seed` from byte `*sent` on until the socket takes no more for 200 ms */
static void fill_up(int s, uint64_t seed, size_t *sent)
{
    static char chunk[65536];
    for (;;) {
        for (size_t i = 0; i < sizeof chunk; i++) chunk[i] = pat(*sent + i, seed);
        ssize_t n = send(s, chunk, sizeof chunk, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) { *sent += n; continue; }
        MUST(n < 0 && errno == EAGAIN);
        struct pollfd p = { .fd = s, .events = POLLOUT };
        if (poll(&p, 1, 200) == 0) return;
    }
}

/* reads `want` bytes and checks they are the pattern `seed` */
static long drain(int s, uint64_t seed, size_t want)
{
    static char b[65536];
    size_t got = 0;
    while (got < want) {
        ssize_t n = recv(s, b, want - got < sizeof b ? want - got : sizeof b, 0);
        if (n <= 0) return -2;
        for (ssize_t i = 0; i < n; i++) if ((uint8_t)b[i] != pat(got + i, seed)) return (long)(got + i);
        got += n;
    }
    return -1;
}

int main(void)
{
    e2e_init();
    int one = 1, big = BUF;
    int c, s;
    tcp_loopback_pair(big, &c, &s);
    MUST(setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
    size_t from_c = 0, from_s = 0;
    fill_up(c, 61, &from_c);
    fill_up(s, 62, &from_s);
    say("FILLED %zu %zu", from_c, from_s);
    say("READY");
    e2e_wait_usr1();
    long bad = drain(s, 61, from_c);
    CHECK(bad == -1, "the server end's data from the client differs (at %ld of %zu)", bad, from_c);
    bad = drain(c, 62, from_s);
    CHECK(bad == -1, "the client end's data from the server differs (at %ld of %zu)", bad, from_s);
    char b[4] = { 0 };
    CHECK(send(c, "ping", 4, 0) == 4 && recv(s, b, 4, MSG_WAITALL) == 4 && !memcmp(b, "ping", 4), "the connection no longer works");
    return e2e_finish();
}
