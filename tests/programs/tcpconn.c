/* tcpconn: an established TCP connection over loopback whose two ends the process holds, with data
 * in flight both ways: 64 KiB the server end has not read yet, and as much as fits in the client's
 * receive queue and the server's send queue (the server writes until its non-blocking send would
 * block). After the restart every byte arrives once and in order, the connection carries new data
 * both ways, its addresses and options are the same, and the listener still accepts. Its segments are
 * as large as before (up to 32755 bytes: a restored connection's size is clamped with TCP_MAXSEG, which
 * takes at most 32767 with the timestamp option; loopback's are 65483), not the default 524. */
#include "e2e.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#define A_LEN (64 << 10)
#define B_MAX (16 << 20)

static int opt(int fd, int level, int name)
{
    int v = -1;
    socklen_t l = sizeof v;
    return getsockopt(fd, level, name, &v, &l) == 0 ? v : -2;
}

int main(void)
{
    e2e_init();
    struct sockaddr_in lo = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) }, la, ca, sa, pa;
    socklen_t l = sizeof la;
    int one = 1;
    int lst = socket(AF_INET, SOCK_STREAM, 0);
    MUST(lst >= 0 && bind(lst, (struct sockaddr *)&lo, sizeof lo) == 0 && listen(lst, 4) == 0);
    MUST(getsockname(lst, (struct sockaddr *)&la, &l) == 0);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    MUST(c >= 0 && setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
    MUST(connect(c, (struct sockaddr *)&la, sizeof la) == 0);
    int s = accept(lst, NULL, NULL);
    MUST(s >= 0);
    /* repair mode (the checkpoint's and the restart's) clears SO_REUSEADDR when it ends */
    MUST(setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
    l = sizeof ca; MUST(getsockname(c, (struct sockaddr *)&ca, &l) == 0);
    l = sizeof sa; MUST(getsockname(s, (struct sockaddr *)&sa, &l) == 0);

    static char a[A_LEN], b[B_MAX], got[B_MAX];
    fill(a, sizeof a, 3);
    fill(b, sizeof b, 4);
    MUST(write_full(c, a, A_LEN) == A_LEN);
    MUST(fcntl(s, F_SETFL, O_NONBLOCK) == 0);
    size_t sent = 0;
    for (;;) {
        ssize_t n = send(s, b + sent, 4096, MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN) {
            struct pollfd p = { .fd = s, .events = POLLOUT };
            if (poll(&p, 1, 200) == 0) break;   /* nothing drained for 200 ms: both queues are full */
            continue;
        }
        MUST(n > 0);
        sent += n;
        MUST(sent + 4096 <= B_MAX);
    }
    int outq = 0;
    ioctl(s, TIOCOUTQ, &outq);
    int mss_c = opt(c, IPPROTO_TCP, TCP_MAXSEG), mss_s = opt(s, IPPROTO_TCP, TCP_MAXSEG);
    say("INFLIGHT sent %zu, %d still in the server's send queue", sent, outq);
    say("READY");
    e2e_wait_usr1();

    l = sizeof pa;
    CHECK(getsockname(c, (struct sockaddr *)&pa, &l) == 0 && !memcmp(&pa, &ca, sizeof pa), "client address changed");
    l = sizeof pa;
    CHECK(getpeername(c, (struct sockaddr *)&pa, &l) == 0 && !memcmp(&pa, &sa, sizeof pa), "client's peer changed");
    CHECK(opt(c, IPPROTO_TCP, TCP_NODELAY) == 1, "TCP_NODELAY lost");
    CHECK(opt(c, IPPROTO_TCP, TCP_MAXSEG) >= (mss_c < 32755 ? mss_c : 32755) && opt(s, IPPROTO_TCP, TCP_MAXSEG) >= (mss_s < 32755 ? mss_s : 32755),
          "segment sizes %d and %d, were %d and %d", opt(c, IPPROTO_TCP, TCP_MAXSEG), opt(s, IPPROTO_TCP, TCP_MAXSEG), mss_c, mss_s);
    CHECK(opt(s, SOL_SOCKET, SO_REUSEADDR) == 1, "SO_REUSEADDR of the accepted end lost");
    CHECK(opt(c, SOL_SOCKET, SO_REUSEADDR) == 0, "SO_REUSEADDR of the client end set");
    CHECK(fcntl(s, F_GETFL) & O_NONBLOCK, "the server end lost O_NONBLOCK");
    MUST(fcntl(s, F_SETFL, 0) == 0);
    long bad;
    memset(got, 0, A_LEN);
    CHECK(read_full(s, got, A_LEN) == A_LEN && (bad = check_fill(got, A_LEN, 3)) < 0, "the server end's unread data differs");
    memset(got, 0, sent);
    ssize_t n = read_full(c, got, sent);
    CHECK(n == (ssize_t)sent, "the client end got %zd of %zu bytes", n, sent);
    CHECK((bad = check_fill(got, sent, 4)) < 0, "the client end's data differs at %ld", bad);
    /* nothing more, nothing twice */
    struct pollfd p = { .fd = c, .events = POLLIN };
    CHECK(poll(&p, 1, 100) == 0, "more data than was sent arrived");
    char buf[8] = { 0 };
    CHECK(write(c, "ping", 4) == 4 && read_full(s, buf, 4) == 4 && !memcmp(buf, "ping", 4), "client to server after restart");
    CHECK(write(s, "pong", 4) == 4 && read_full(c, buf, 4) == 4 && !memcmp(buf, "pong", 4), "server to client after restart");
    int c2 = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(c2 >= 0 && connect(c2, (struct sockaddr *)&la, sizeof la) == 0 && accept(lst, NULL, NULL) >= 0, "the listener does not accept");
    close(c);
    CHECK(read(s, buf, 1) == 0, "no end of file after the client closed");
    return e2e_finish();
}
