/* tcphalf: half-closed TCP connections over loopback, both ends held: one whose client sent "bye" and
 * closed its end (the server end is in CLOSE_WAIT with "bye" unread: the client end is gone), and one
 * whose server end shut its writing down (FIN_WAIT2, the client end in CLOSE_WAIT). After the restart
 * the server end of the first reads "bye" then end of file; on the second, the client end reads end of
 * file, can still send to the server end, and its close ends the server end's reading.
 * Ended connections (state CLOSE, still held): one that both ends shut down (FINs both ways), whose
 * client end had a port of the kernel's choosing (given back when it ended) and whose ends may not bind
 * their ports again; one whose client end was bound to a port by the program (kept); one reset by its
 * peer (the reset already read). After the restart each reads end of file, cannot send (EPIPE), polls
 * POLLHUP, has the same address and the same peer address (SO_PEERNAME; getpeername says ENOTCONN), and
 * the bound one still has its port. */
#include "e2e.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

static int state(int fd)
{
    struct tcp_info ti;
    socklen_t l = sizeof ti;
    return getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0 ? ti.tcpi_state : -1;
}

int main(void)
{
    e2e_init();
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof a;
    int lst = socket(AF_INET, SOCK_STREAM, 0);
    MUST(lst >= 0 && bind(lst, (struct sockaddr *)&a, sizeof a) == 0 && listen(lst, 4) == 0 && getsockname(lst, (struct sockaddr *)&a, &l) == 0);
    int c1 = socket(AF_INET, SOCK_STREAM, 0);
    MUST(c1 >= 0 && connect(c1, (struct sockaddr *)&a, sizeof a) == 0);
    int s1 = accept(lst, NULL, NULL);
    MUST(s1 >= 0 && write(c1, "bye", 3) == 3);
    close(c1);
    int c2 = socket(AF_INET, SOCK_STREAM, 0);
    MUST(c2 >= 0 && connect(c2, (struct sockaddr *)&a, sizeof a) == 0);
    int s2 = accept(lst, NULL, NULL);
    MUST(s2 >= 0 && shutdown(s2, SHUT_WR) == 0);
    /* ended connections */
    int c3 = socket(AF_INET, SOCK_STREAM, 0);
    MUST(c3 >= 0 && connect(c3, (struct sockaddr *)&a, sizeof a) == 0);
    int s3 = accept(lst, NULL, NULL);
    MUST(s3 >= 0 && shutdown(c3, SHUT_WR) == 0);
    usleep(20000);
    MUST(shutdown(s3, SHUT_WR) == 0);
    struct sockaddr_in b = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t bl = sizeof b;
    int one = 1, probe = socket(AF_INET, SOCK_STREAM, 0);   /* a free port, for c4 to bind by number */
    MUST(probe >= 0 && bind(probe, (struct sockaddr *)&b, sizeof b) == 0 && getsockname(probe, (struct sockaddr *)&b, &bl) == 0);
    close(probe);
    int c4 = socket(AF_INET, SOCK_STREAM, 0);
    MUST(c4 >= 0 && setsockopt(c4, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 && bind(c4, (struct sockaddr *)&b, sizeof b) == 0);
    MUST(connect(c4, (struct sockaddr *)&a, sizeof a) == 0);
    int s4 = accept(lst, NULL, NULL);
    MUST(s4 >= 0 && shutdown(c4, SHUT_WR) == 0);
    usleep(20000);
    MUST(shutdown(s4, SHUT_WR) == 0);
    int c5 = socket(AF_INET, SOCK_STREAM, 0);
    MUST(c5 >= 0 && connect(c5, (struct sockaddr *)&a, sizeof a) == 0);
    int s5 = accept(lst, NULL, NULL);
    struct linger lg = { 1, 0 };
    MUST(s5 >= 0 && setsockopt(s5, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
    close(s5);   /* sends a reset */
    usleep(100000);
    char x;
    MUST(read(c5, &x, 1) < 0 && errno == ECONNRESET);
    MUST(state(c3) == TCP_CLOSE && state(s3) == TCP_CLOSE && state(c4) == TCP_CLOSE && state(c5) == TCP_CLOSE);
    MUST(state(s1) == TCP_CLOSE_WAIT && state(s2) == TCP_FIN_WAIT2 && state(c2) == TCP_CLOSE_WAIT);
    int ended[] = { c3, s3, c4, s4, c5 };
    struct sockaddr_in names[5], peers[5];
    for (int i = 0; i < 5; i++) {
        socklen_t nl = sizeof names[i], pl = sizeof peers[i];
        MUST(getsockname(ended[i], (struct sockaddr *)&names[i], &nl) == 0 && getsockopt(ended[i], SOL_SOCKET, SO_PEERNAME, &peers[i], &pl) == 0);
    }
    say("READY");
    e2e_wait_usr1();

    char buf[16] = { 0 };
    CHECK(read(s1, buf, sizeof buf) == 3 && !memcmp(buf, "bye", 3), "the CLOSE_WAIT end lost its unread data ('%s')", buf);
    CHECK(read(s1, buf, sizeof buf) == 0, "the CLOSE_WAIT end does not see the end of file");
    CHECK(read(c2, buf, sizeof buf) == 0, "the client end of the second connection does not see the server's FIN");
    CHECK(write(c2, "late", 4) == 4, "the client end cannot send any more: %s", strerror(errno));
    memset(buf, 0, sizeof buf);
    CHECK(read_full(s2, buf, 4) == 4 && !memcmp(buf, "late", 4), "the FIN_WAIT2 end did not get the data ('%s')", buf);
    close(c2);
    CHECK(read(s2, buf, sizeof buf) == 0, "the FIN_WAIT2 end does not see the end of file after the client closed");

    for (int i = 0; i < 5; i++) {
        int fd = ended[i];
        struct sockaddr_in n, pn;
        socklen_t nl = sizeof n, pl = sizeof pn;
        CHECK(getsockname(fd, (struct sockaddr *)&n, &nl) == 0 && n.sin_port == names[i].sin_port && n.sin_addr.s_addr == names[i].sin_addr.s_addr,
              "ended connection %d: address port %d, was %d", i, ntohs(n.sin_port), ntohs(names[i].sin_port));
        CHECK(getsockopt(fd, SOL_SOCKET, SO_PEERNAME, &pn, &pl) == 0 && pn.sin_port == peers[i].sin_port && pn.sin_addr.s_addr == peers[i].sin_addr.s_addr,
              "ended connection %d: SO_PEERNAME gives port %d (%s), was %d", i, ntohs(pn.sin_port), strerror(errno), ntohs(peers[i].sin_port));
        pl = sizeof pn;
        CHECK(getpeername(fd, (struct sockaddr *)&pn, &pl) < 0 && errno == ENOTCONN, "ended connection %d: getpeername does not say ENOTCONN", i);
        CHECK(state(fd) == TCP_CLOSE, "ended connection %d: state %d", i, state(fd));
        errno = 0;
        CHECK(read(fd, buf, sizeof buf) == 0, "ended connection %d: read does not give end of file (%s)", i, strerror(errno));
        CHECK(send(fd, "x", 1, MSG_NOSIGNAL) < 0 && errno == EPIPE, "ended connection %d: send does not fail with EPIPE (%s)", i, strerror(errno));
        struct pollfd p = { fd, POLLIN | POLLOUT, 0 };
        CHECK(poll(&p, 1, 0) == 1 && (p.revents & POLLHUP), "ended connection %d: poll gives 0x%x", i, p.revents);
    }
    struct sockaddr_in c4now;
    socklen_t cl = sizeof c4now;
    CHECK(getsockname(c4, (struct sockaddr *)&c4now, &cl) == 0 && c4now.sin_port == b.sin_port, "the ended connection bound by the program lost its port %d (now %d)", ntohs(b.sin_port), ntohs(c4now.sin_port));
    return e2e_finish();
}
