/* pingsock: an ICMP echo socket (what ping uses without privileges, allowed by
 * net.ipv4.ping_group_range), connected to 127.0.0.1, one echo sent and its reply read. After the
 * restart it has the same echo identifier (its port) and peer, and a second echo gets its reply. */
#include "e2e.h"
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>

static int echo(int s, int seq)
{
    struct icmphdr h = { .type = ICMP_ECHO, .un.echo.sequence = htons(seq) };
    char pkt[sizeof h + 8];
    memcpy(pkt, &h, sizeof h);
    memcpy(pkt + sizeof h, "ckptping", 8);
    if (send(s, pkt, sizeof pkt, 0) != (ssize_t)sizeof pkt) return -1;
    struct pollfd p = { .fd = s, .events = POLLIN };
    if (poll(&p, 1, 5000) != 1) return -2;
    char in[128];
    ssize_t n = recv(s, in, sizeof in, 0);
    struct icmphdr *r = (struct icmphdr *)in;
    if (n < (ssize_t)sizeof *r || r->type != ICMP_ECHOREPLY || ntohs(r->un.echo.sequence) != seq) return -3;
    return 0;
}

int main(void)
{
    e2e_init();
    int s = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
    if (s < 0) { say("SKIP: no ICMP echo socket here: %s", strerror(errno)); return 3; }
    struct sockaddr_in lo = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    MUST(connect(s, (struct sockaddr *)&lo, sizeof lo) == 0);
    MUST(echo(s, 1) == 0);
    struct sockaddr_in a0, a1;
    socklen_t l = sizeof a0;
    MUST(getsockname(s, (struct sockaddr *)&a0, &l) == 0 && a0.sin_port != 0);
    say("READY");
    e2e_wait_usr1();
    l = sizeof a1;
    CHECK(getsockname(s, (struct sockaddr *)&a1, &l) == 0 && a1.sin_port == a0.sin_port, "the echo identifier is %d, was %d", ntohs(a1.sin_port), ntohs(a0.sin_port));
    int one = 0;
    socklen_t ol = sizeof one;
    CHECK(getsockopt(s, SOL_SOCKET, SO_PROTOCOL, &one, &ol) == 0 && one == IPPROTO_ICMP, "the socket's protocol is %d", one);
    int rc = echo(s, 2);
    CHECK(rc == 0, "the second echo got no reply (%d: %s)", rc, strerror(errno));
    return e2e_finish();
}
