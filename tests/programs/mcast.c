/* mcast: UDP sockets in multicast groups (joined memberships are nowhere else than in the socket):
 *   a  IPv4, bound to port P, joined to 239.1.2.3 on lo (any source)
 *   b  IPv4, joined to 232.1.1.1 on lo for the source 127.0.0.1 only (source-specific)
 *   c  IPv6, joined to ff02::4242 on lo
 * After the restart each is still in its group with the same filter (getsockopt MCAST_MSFILTER answers
 * only for a group the socket joined), and a datagram sent to 239.1.2.3:P through lo reaches a. */
#include "e2e.h"
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

/* the filter mode and source count of `fd`'s membership in `group` on interface `ifindex`; -1: not a member */
static int membership(int fd, int level, int ifindex, const void *group, socklen_t glen, unsigned *numsrc)
{
    char buf[sizeof(struct group_filter) + 8 * sizeof(struct sockaddr_storage)];
    struct group_filter *gf = (struct group_filter *)buf;
    memset(buf, 0, sizeof buf);
    gf->gf_interface = ifindex;
    memcpy(&gf->gf_group, group, glen);
    socklen_t l = sizeof buf;
    if (getsockopt(fd, level, MCAST_MSFILTER, gf, &l) != 0) return -1;
    *numsrc = gf->gf_numsrc;
    return (int)gf->gf_fmode;
}

int main(void)
{
    e2e_init();
    int lo = (int)if_nametoindex("lo");
    MUST(lo > 0);
    int a = socket(AF_INET, SOCK_DGRAM, 0), b = socket(AF_INET, SOCK_DGRAM, 0), c = socket(AF_INET6, SOCK_DGRAM, 0);
    MUST(a >= 0 && b >= 0 && c >= 0);
    int one = 1;
    struct sockaddr_in any = { .sin_family = AF_INET };
    socklen_t al = sizeof any;
    MUST(setsockopt(a, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 && bind(a, (struct sockaddr *)&any, sizeof any) == 0 && getsockname(a, (struct sockaddr *)&any, &al) == 0);
    struct ip_mreqn m = { .imr_ifindex = lo };
    inet_pton(AF_INET, "239.1.2.3", &m.imr_multiaddr);
    MUST(setsockopt(a, IPPROTO_IP, IP_ADD_MEMBERSHIP, &m, sizeof m) == 0);
    struct ip_mreq_source ms = { 0 };
    inet_pton(AF_INET, "232.1.1.1", &ms.imr_multiaddr);
    inet_pton(AF_INET, "127.0.0.1", &ms.imr_interface);
    inet_pton(AF_INET, "127.0.0.1", &ms.imr_sourceaddr);
    MUST(setsockopt(b, IPPROTO_IP, IP_ADD_SOURCE_MEMBERSHIP, &ms, sizeof ms) == 0);
    struct ipv6_mreq m6 = { .ipv6mr_interface = lo };
    inet_pton(AF_INET6, "ff02::4242", &m6.ipv6mr_multiaddr);
    MUST(setsockopt(c, IPPROTO_IPV6, IPV6_ADD_MEMBERSHIP, &m6, sizeof m6) == 0);
    struct sockaddr_in ga = { .sin_family = AF_INET }, gb = { .sin_family = AF_INET };
    inet_pton(AF_INET, "239.1.2.3", &ga.sin_addr);
    inet_pton(AF_INET, "232.1.1.1", &gb.sin_addr);
    struct sockaddr_in6 gc = { .sin6_family = AF_INET6 };
    inet_pton(AF_INET6, "ff02::4242", &gc.sin6_addr);
    unsigned n = 99;
    MUST(membership(a, IPPROTO_IP, lo, &ga, sizeof ga, &n) == MCAST_EXCLUDE && n == 0);
    MUST(membership(b, IPPROTO_IP, lo, &gb, sizeof gb, &n) == MCAST_INCLUDE && n == 1);
    MUST(membership(c, IPPROTO_IPV6, lo, &gc, sizeof gc, &n) == MCAST_EXCLUDE && n == 0);
    MUST(membership(a, IPPROTO_IP, lo, &gb, sizeof gb, &n) == -1);
    say("READY");
    e2e_wait_usr1();

    CHECK(membership(a, IPPROTO_IP, lo, &ga, sizeof ga, &n) == MCAST_EXCLUDE && n == 0, "a is not in 239.1.2.3 (any source) on lo");
    CHECK(membership(b, IPPROTO_IP, lo, &gb, sizeof gb, &n) == MCAST_INCLUDE && n == 1, "b is not in 232.1.1.1 for one source on lo (%u sources)", n);
    CHECK(membership(c, IPPROTO_IPV6, lo, &gc, sizeof gc, &n) == MCAST_EXCLUDE && n == 0, "c is not in ff02::4242 on lo");
    CHECK(membership(a, IPPROTO_IP, lo, &gb, sizeof gb, &n) == -1, "a joined a group it was not in");

    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct in_addr loaddr;
    inet_pton(AF_INET, "127.0.0.1", &loaddr);
    MUST(s >= 0 && setsockopt(s, IPPROTO_IP, IP_MULTICAST_IF, &loaddr, sizeof loaddr) == 0);
    ga.sin_port = any.sin_port;
    MUST(sendto(s, "to the group", 12, 0, (struct sockaddr *)&ga, sizeof ga) == 12);
    struct pollfd p = { a, POLLIN, 0 };
    char buf[64] = { 0 };
    CHECK(poll(&p, 1, 2000) == 1 && recv(a, buf, sizeof buf, 0) == 12 && memcmp(buf, "to the group", 12) == 0, "the datagram sent to the group did not reach a ('%s')", buf);
    return e2e_finish();
}
