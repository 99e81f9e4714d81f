/* inetsock [established]: TCP and UDP sockets without connection state: an IPv4 listener (SO_REUSEADDR,
 * TCP_NODELAY, backlog 7), an IPv6 listener (IPV6_V6ONLY), an unbound TCP socket (SO_KEEPALIVE, SO_DONTROUTE), a
 * bound TCP socket not listening, a bound UDP socket (SO_RCVBUF) and a UDP socket connected to it.
 * After the restart every address and option is the same, the listeners accept connections, the
 * bound socket can listen, and a datagram goes from the connected UDP socket to the bound one.
 * Datagrams queued at the checkpoint (two from the connected socket, one from an unbound one; one in an
 * IPv6 socket) are received after the restart, in order, from their sources.
 * Also: a UDP pair connected both ways, one end shut down for writing and the other for reading (the
 * shutdown state only inet_diag shows); a TCP socket bound to the "lo" device (SO_BINDTODEVICE); an
 * IPv6 UDP socket with IPV6_FREEBIND; one bound to an address this machine does not have, with
 * IPV6_FREEBIND set for the bind and cleared after; two listeners sharing a port (SO_REUSEPORT, cleared on
 * the first since); two UDP-Lite sockets (one with a send checksum coverage of 20).
 * With "pending": also a listener with a connection it has not accepted yet, which the checkpoint must
 * refuse. With "skipped": the same, checkpointed with --skip-in-flight: after the restart the listener
 * listens on its port with nothing waiting (the connection was left out) and accepts a new one, and the
 * client of the connection left out is reset when it sends. */
#include "e2e.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

static socklen_t name_of(int fd, struct sockaddr_storage *a)
{
    socklen_t l = sizeof *a;
    memset(a, 0, sizeof *a);
    MUST(getsockname(fd, (struct sockaddr *)a, &l) == 0);
    return l;
}

static int opt(int fd, int level, int name)
{
    int v = -1;
    socklen_t l = sizeof v;
    if (getsockopt(fd, level, name, &v, &l) != 0) return -2;
    return v;
}

static int port(const struct sockaddr_storage *a)
{
    return ntohs(a->ss_family == AF_INET ? ((struct sockaddr_in *)a)->sin_port : ((struct sockaddr_in6 *)a)->sin6_port);
}

/* Connects a new client to the listener at a, accepts it, and passes a message: 1 if it all worked. */
static int accepts(int listener, struct sockaddr_storage *a, socklen_t al)
{
    int c = socket(a->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, (struct sockaddr *)a, al) != 0) { say("connect: %s", strerror(errno)); return 0; }
    int s = accept(listener, NULL, NULL);
    if (s < 0) { say("accept: %s", strerror(errno)); close(c); return 0; }
    char buf[8] = { 0 };
    int ok = write(c, "hello", 5) == 5 && read_full(s, buf, 5) == 5 && !memcmp(buf, "hello", 5);
    close(s);
    close(c);
    return ok;
}

int main(int argc, char **argv)
{
    e2e_init();
    int one = 1;
    struct sockaddr_in lo = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct sockaddr_in6 lo6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };

    int t1 = socket(AF_INET, SOCK_STREAM, 0);
    MUST(t1 >= 0 && setsockopt(t1, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 && setsockopt(t1, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
    MUST(bind(t1, (struct sockaddr *)&lo, sizeof lo) == 0 && listen(t1, 7) == 0);
    int t6 = socket(AF_INET6, SOCK_STREAM, 0);
    MUST(t6 >= 0 && setsockopt(t6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) == 0);
    MUST(bind(t6, (struct sockaddr *)&lo6, sizeof lo6) == 0 && listen(t6, 3) == 0);
    int tc = socket(AF_INET, SOCK_STREAM, 0);
    MUST(tc >= 0 && setsockopt(tc, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) == 0 && setsockopt(tc, SOL_SOCKET, SO_DONTROUTE, &one, sizeof one) == 0);
    /* its send buffer size locked (SO_BUF_LOCK, without setting a size), quick acks off */
    int off = 0;
    MUST(setsockopt(tc, SOL_SOCKET, 72 /* SO_BUF_LOCK */, &one, sizeof one) == 0 && setsockopt(tc, IPPROTO_TCP, TCP_QUICKACK, &off, sizeof off) == 0);
    int tb = socket(AF_INET, SOCK_STREAM, 0);
    MUST(tb >= 0 && bind(tb, (struct sockaddr *)&lo, sizeof lo) == 0);
    int u1 = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0), rcvbuf = 65536;
    MUST(u1 >= 0 && setsockopt(u1, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) == 0 && bind(u1, (struct sockaddr *)&lo, sizeof lo) == 0);
    struct sockaddr_storage a1, a6, ac, ab, au1, au2;
    socklen_t l1 = name_of(t1, &a1), l6 = name_of(t6, &a6), lu1 = name_of(u1, &au1);
    name_of(tc, &ac);
    name_of(tb, &ab);
    int u2 = socket(AF_INET, SOCK_DGRAM, 0);
    MUST(u2 >= 0 && connect(u2, (struct sockaddr *)&au1, lu1) == 0);
    name_of(u2, &au2);
    int rcv_before = opt(u1, SOL_SOCKET, SO_RCVBUF);
    /* datagrams left queued: from the connected socket, from an unbound one, and over IPv6 */
    int u3 = socket(AF_INET, SOCK_DGRAM, 0);
    MUST(send(u2, "q1", 2, 0) == 2 && send(u2, "q22", 3, 0) == 3);
    MUST(u3 >= 0 && sendto(u3, "from3", 5, 0, (struct sockaddr *)&au1, lu1) == 5);
    struct sockaddr_storage au3;
    name_of(u3, &au3);
    int v6 = socket(AF_INET6, SOCK_DGRAM, 0), v6s = socket(AF_INET6, SOCK_DGRAM, 0);
    MUST(v6 >= 0 && v6s >= 0 && bind(v6, (struct sockaddr *)&lo6, sizeof lo6) == 0);
    struct sockaddr_storage a6u;
    socklen_t l6u = name_of(v6, &a6u);
    MUST(sendto(v6s, "six", 3, 0, (struct sockaddr *)&a6u, l6u) == 3);
    struct sockaddr_storage a6s;
    name_of(v6s, &a6s);
    /* shut down one way each: w can no longer send, r no longer receive */
    int sw = socket(AF_INET, SOCK_DGRAM, 0), sr = socket(AF_INET, SOCK_DGRAM, 0);
    MUST(sw >= 0 && sr >= 0 && bind(sw, (struct sockaddr *)&lo, sizeof lo) == 0 && bind(sr, (struct sockaddr *)&lo, sizeof lo) == 0);
    struct sockaddr_storage asw, asr;
    socklen_t lsw = name_of(sw, &asw), lsr = name_of(sr, &asr);
    MUST(connect(sw, (struct sockaddr *)&asr, lsr) == 0 && connect(sr, (struct sockaddr *)&asw, lsw) == 0);
    MUST(shutdown(sw, SHUT_WR) == 0 && shutdown(sr, SHUT_RD) == 0);
    int dev = socket(AF_INET, SOCK_STREAM, 0);
    MUST(dev >= 0 && setsockopt(dev, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3) == 0);
    int fb = socket(AF_INET6, SOCK_DGRAM, 0);
    MUST(fb >= 0 && setsockopt(fb, IPPROTO_IPV6, 78 /* IPV6_FREEBIND */, &one, sizeof one) == 0);
    int rp1 = socket(AF_INET, SOCK_STREAM, 0), rp2 = socket(AF_INET, SOCK_STREAM, 0), zero = 0;
    MUST(rp1 >= 0 && rp2 >= 0 && setsockopt(rp1, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0 && setsockopt(rp2, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0);
    MUST(bind(rp1, (struct sockaddr *)&lo, sizeof lo) == 0 && listen(rp1, 2) == 0);
    struct sockaddr_storage arp;
    socklen_t lrp = name_of(rp1, &arp);
    MUST(bind(rp2, (struct sockaddr *)&arp, lrp) == 0 && listen(rp2, 2) == 0);
    MUST(setsockopt(rp1, SOL_SOCKET, SO_REUSEPORT, &zero, sizeof zero) == 0);
    int fb2 = socket(AF_INET6, SOCK_DGRAM, 0);
    struct sockaddr_in6 far = { .sin6_family = AF_INET6 };
    MUST(inet_pton(AF_INET6, "2001:db8::4242", &far.sin6_addr) == 1);
    MUST(fb2 >= 0 && setsockopt(fb2, IPPROTO_IPV6, 78, &one, sizeof one) == 0 && bind(fb2, (struct sockaddr *)&far, sizeof far) == 0
         && setsockopt(fb2, IPPROTO_IPV6, 78, &zero, sizeof zero) == 0);
    struct sockaddr_storage afar;
    name_of(fb2, &afar);
    int ul1 = socket(AF_INET, SOCK_DGRAM, 136 /* IPPROTO_UDPLITE */), ul2 = socket(AF_INET, SOCK_DGRAM, 136), cscov = 20;
    MUST(ul1 >= 0 && ul2 >= 0 && bind(ul1, (struct sockaddr *)&lo, sizeof lo) == 0 && setsockopt(ul2, 136, 10 /* UDPLITE_SEND_CSCOV */, &cscov, sizeof cscov) == 0);
    struct sockaddr_storage aul1;
    socklen_t lul1 = name_of(ul1, &aul1);
    MUST(connect(ul2, (struct sockaddr *)&aul1, lul1) == 0);
    int skipped = argc > 1 && !strcmp(argv[1], "skipped"), l2 = -1, c = -1;
    struct sockaddr_storage a2;
    if (argc > 1 && (!strcmp(argv[1], "pending") || skipped)) {
        l2 = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0);
        MUST(l2 >= 0 && c >= 0 && bind(l2, (struct sockaddr *)&lo, sizeof lo) == 0 && listen(l2, 4) == 0);
        socklen_t l2l = name_of(l2, &a2);
        MUST(connect(c, (struct sockaddr *)&a2, l2l) == 0);
        say("PENDING %d", l2);
    }
    say("PORTS %d %d %d %d %d", port(&a1), port(&a6), port(&ab), port(&au1), port(&au2));
    say("READY");
    e2e_wait_usr1();

    struct sockaddr_storage now;
    name_of(t1, &now);
    CHECK(!memcmp(&now, &a1, sizeof now), "IPv4 listener now on port %d, was %d", port(&now), port(&a1));
    name_of(t6, &now);
    CHECK(!memcmp(&now, &a6, sizeof now), "IPv6 listener now on port %d, was %d", port(&now), port(&a6));
    name_of(tc, &now);
    CHECK(!memcmp(&now, &ac, sizeof now), "the unbound TCP socket has port %d", port(&now));
    name_of(tb, &now);
    CHECK(!memcmp(&now, &ab, sizeof now), "the bound TCP socket now on port %d, was %d", port(&now), port(&ab));
    name_of(u1, &now);
    CHECK(!memcmp(&now, &au1, sizeof now), "the bound UDP socket now on port %d, was %d", port(&now), port(&au1));
    name_of(u2, &now);
    CHECK(!memcmp(&now, &au2, sizeof now), "the connected UDP socket now on port %d, was %d", port(&now), port(&au2));

    CHECK(opt(t1, SOL_SOCKET, SO_ACCEPTCONN) == 1 && opt(t6, SOL_SOCKET, SO_ACCEPTCONN) == 1, "the listeners do not listen");
    CHECK(opt(tb, SOL_SOCKET, SO_ACCEPTCONN) == 0 && opt(tc, SOL_SOCKET, SO_ACCEPTCONN) == 0, "a socket that did not listen listens");
    CHECK(opt(t1, SOL_SOCKET, SO_REUSEADDR) == 1, "SO_REUSEADDR %d", opt(t1, SOL_SOCKET, SO_REUSEADDR));
    CHECK(opt(t1, IPPROTO_TCP, TCP_NODELAY) == 1, "TCP_NODELAY %d", opt(t1, IPPROTO_TCP, TCP_NODELAY));
    CHECK(opt(t6, IPPROTO_IPV6, IPV6_V6ONLY) == 1, "IPV6_V6ONLY %d", opt(t6, IPPROTO_IPV6, IPV6_V6ONLY));
    CHECK(opt(tc, SOL_SOCKET, SO_KEEPALIVE) == 1 && opt(tc, SOL_SOCKET, SO_DONTROUTE) == 1, "SO_KEEPALIVE %d, SO_DONTROUTE %d", opt(tc, SOL_SOCKET, SO_KEEPALIVE), opt(tc, SOL_SOCKET, SO_DONTROUTE));
    CHECK(opt(tb, SOL_SOCKET, SO_KEEPALIVE) == 0, "SO_KEEPALIVE set where it was not");
    CHECK(opt(tc, SOL_SOCKET, 72) == 1, "SO_BUF_LOCK %d, want 1", opt(tc, SOL_SOCKET, 72));
    CHECK(opt(tc, IPPROTO_TCP, TCP_QUICKACK) == 0, "TCP_QUICKACK %d, want 0", opt(tc, IPPROTO_TCP, TCP_QUICKACK));
    CHECK(opt(u1, SOL_SOCKET, SO_RCVBUF) == rcv_before, "SO_RCVBUF %d, was %d", opt(u1, SOL_SOCKET, SO_RCVBUF), rcv_before);
    CHECK((fcntl(u1, F_GETFL) & O_NONBLOCK) && !(fcntl(u2, F_GETFL) & O_NONBLOCK), "O_NONBLOCK not as it was");
    CHECK((fcntl(t1, F_GETFD) & FD_CLOEXEC) == 0, "close-on-exec set on a socket that had none");

    CHECK(accepts(t1, &a1, l1), "the IPv4 listener does not accept");
    CHECK(accepts(t6, &a6, l6), "the IPv6 listener does not accept");
    CHECK(listen(tb, 1) == 0, "the bound socket cannot listen: %s", strerror(errno));
    CHECK(accepts(tb, &ab, sizeof(struct sockaddr_in)), "the bound socket does not accept once listening");
    /* the datagrams queued at the checkpoint first, in order, from their sources */
    {
        const char *want[] = { "q1", "q22", "from3" };
        const struct sockaddr_storage *from_want[] = { &au2, &au2, &au3 };
        for (int i = 0; i < 3; i++) {
            char b[16] = { 0 };
            struct sockaddr_storage f;
            socklen_t fl = sizeof f;
            ssize_t n = recvfrom(u1, b, sizeof b, MSG_DONTWAIT, (struct sockaddr *)&f, &fl);
            CHECK(n == (ssize_t)strlen(want[i]) && !memcmp(b, want[i], n) && port(&f) == port(from_want[i]),
                  "queued datagram %d: %zd bytes '%s' from port %d (want '%s' from %d)", i, n, b, n < 0 ? 0 : port(&f), want[i], port(from_want[i]));
        }
        char b[16] = { 0 };
        struct sockaddr_storage f;
        socklen_t fl = sizeof f;
        ssize_t n = recvfrom(v6, b, sizeof b, MSG_DONTWAIT, (struct sockaddr *)&f, &fl);
        CHECK(n == 3 && !memcmp(b, "six", 3) && port(&f) == port(&a6s) && f.ss_family == AF_INET6, "queued IPv6 datagram: %zd bytes from port %d", n, n < 0 ? 0 : port(&f));
        CHECK(recv(u1, b, sizeof b, MSG_DONTWAIT) < 0 && errno == EAGAIN, "more datagrams than were queued");
    }
    CHECK(send(sw, "x", 1, MSG_DONTWAIT) < 0 && errno == EPIPE, "the UDP socket shut down for writing sends (%s)", strerror(errno));
    CHECK(send(sr, "y", 1, MSG_DONTWAIT) == 1, "the UDP socket shut down for reading cannot send: %s", strerror(errno));
    {
        char b[4];
        CHECK(recv(sw, b, sizeof b, MSG_DONTWAIT) == 1 && b[0] == 'y', "the one shut down for writing does not receive");
        struct pollfd p = { .fd = sr, .events = POLLIN | POLLRDHUP };
        int hup = poll(&p, 1, 0) == 1 && (p.revents & POLLRDHUP);
        CHECK(hup, "the UDP socket shut down for reading polls 0x%x", p.revents);
        if (hup) CHECK(recv(sr, b, sizeof b, 0) == 0, "the UDP socket shut down for reading does not read end of file");
    }
    char devname[16] = { 0 };
    socklen_t dl = sizeof devname;
    CHECK(getsockopt(dev, SOL_SOCKET, SO_BINDTODEVICE, devname, &dl) == 0 && !strcmp(devname, "lo"), "the TCP socket is bound to device '%s'", devname);
    CHECK(opt(fb, IPPROTO_IPV6, 78) == 1, "IPV6_FREEBIND %d", opt(fb, IPPROTO_IPV6, 78));
    name_of(rp1, &now);
    CHECK(!memcmp(&now, &arp, sizeof now) && opt(rp1, SOL_SOCKET, SO_ACCEPTCONN) == 1 && opt(rp1, SOL_SOCKET, SO_REUSEPORT) == 0, "the first port-sharing listener: port %d, reuseport %d", port(&now), opt(rp1, SOL_SOCKET, SO_REUSEPORT));
    name_of(rp2, &now);
    CHECK(!memcmp(&now, &arp, sizeof now) && opt(rp2, SOL_SOCKET, SO_ACCEPTCONN) == 1 && opt(rp2, SOL_SOCKET, SO_REUSEPORT) == 1, "the second port-sharing listener: port %d, reuseport %d", port(&now), opt(rp2, SOL_SOCKET, SO_REUSEPORT));
    name_of(fb2, &now);
    CHECK(!memcmp(&now, &afar, sizeof now) && opt(fb2, IPPROTO_IPV6, 78) == 0, "the socket bound to a foreign address: port %d (was %d), IPV6_FREEBIND %d", port(&now), port(&afar), opt(fb2, IPPROTO_IPV6, 78));
    CHECK(opt(ul1, SOL_SOCKET, SO_PROTOCOL) == 136 && opt(ul2, SOL_SOCKET, SO_PROTOCOL) == 136, "the UDP-Lite sockets are protocol %d, %d", opt(ul1, SOL_SOCKET, SO_PROTOCOL), opt(ul2, SOL_SOCKET, SO_PROTOCOL));
    CHECK(opt(ul2, 136, 10) == 20, "UDPLITE_SEND_CSCOV %d", opt(ul2, 136, 10));
    {
        char b[8] = { 0 };
        CHECK(send(ul2, "lite", 4, 0) == 4 && recv(ul1, b, sizeof b, 0) == 4 && !memcmp(b, "lite", 4), "UDP-Lite datagram: '%s'", b);
    }
    CHECK(send(u2, "dgram", 5, 0) == 5, "send on the connected UDP socket: %s", strerror(errno));
    char buf[16] = { 0 };
    struct sockaddr_storage from;
    socklen_t fl = sizeof from;
    ssize_t got = -1;
    for (int i = 0; i < 100 && got < 0; i++) { got = recvfrom(u1, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl); if (got < 0) usleep(10000); }
    CHECK(got == 5 && !memcmp(buf, "dgram", 5) && port(&from) == port(&au2), "datagram: %zd bytes from port %d", got, got < 0 ? 0 : port(&from));
    if (skipped) {
        name_of(l2, &now);
        CHECK(!memcmp(&now, &a2, sizeof now) && opt(l2, SOL_SOCKET, SO_ACCEPTCONN) == 1, "the listener whose connection was left out: port %d (was %d)", port(&now), port(&a2));
        int fl2 = fcntl(l2, F_GETFL);
        CHECK(fcntl(l2, F_SETFL, fl2 | O_NONBLOCK) == 0 && accept(l2, NULL, NULL) < 0 && errno == EAGAIN, "a connection waits on the listener after the restart");
        CHECK(fcntl(l2, F_SETFL, fl2) == 0 && accepts(l2, &a2, sizeof(struct sockaddr_in)), "the listener whose connection was left out does not accept");
        /* its client: the other end is gone, the listener answers what it sends with a reset */
        char b[4];
        struct pollfd p = { .fd = c, .events = POLLIN };
        CHECK(send(c, "x", 1, MSG_NOSIGNAL) == 1, "the client of the connection left out cannot send: %s", strerror(errno));
        CHECK(poll(&p, 1, 5000) == 1 && recv(c, b, sizeof b, 0) < 0 && errno == ECONNRESET, "the client of the connection left out was not reset (%s)", strerror(errno));
    }
    return e2e_finish();
}
