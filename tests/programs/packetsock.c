/* packetsock: packet sockets (AF_PACKET), as DHCP clients and capture tools without rings have them:
 *   p1  SOCK_DGRAM for IPv4 (ETH_P_IP), bound to lo, PACKET_AUXDATA on, with a classic filter that
 *       keeps only UDP to port 54321 (so that nothing else queues in it)
 *   p2  SOCK_RAW, protocol 0 (receives nothing), PACKET_VERSION TPACKET_V2
 * After the restart each has its type, protocol, interface and options, and p1 captures a UDP datagram
 * sent to 127.0.0.1:54321 (its filter kept). */
#include "e2e.h"
#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static int opt(int fd, int level, int name)
{
    int v = -1;
    socklen_t l = sizeof v;
    return getsockopt(fd, level, name, &v, &l) == 0 ? v : -1;
}

int main(void)
{
    e2e_init();
    int lo = (int)if_nametoindex("lo");
    MUST(lo > 0);
    int p1 = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IP)), p2 = socket(AF_PACKET, SOCK_RAW, 0);
    MUST(p1 >= 0 && p2 >= 0);
    struct sock_filter code[] = {
        { 0x30, 0, 0, 9 },        /* ldb [9]: IP protocol */
        { 0x15, 0, 3, 17 },       /* UDP? */
        { 0x28, 0, 0, 22 },       /* ldh [22]: destination port (no IP options) */
        { 0x15, 0, 1, 54321 },
        { 0x06, 0, 0, 0xffff },   /* keep */
        { 0x06, 0, 0, 0 },        /* drop */
    };
    struct sock_fprog prog = { .len = sizeof code / sizeof code[0], .filter = code };
    MUST(setsockopt(p1, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) == 0);
    /* packets that came before the filter: drained */
    char buf[2048];
    while (recv(p1, buf, sizeof buf, MSG_DONTWAIT) > 0) {}
    struct sockaddr_ll ll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP), .sll_ifindex = lo };
    MUST(bind(p1, (struct sockaddr *)&ll, sizeof ll) == 0);
    int one = 1, v2 = TPACKET_V2;
    MUST(setsockopt(p1, SOL_PACKET, PACKET_AUXDATA, &one, sizeof one) == 0);
    MUST(setsockopt(p2, SOL_PACKET, PACKET_VERSION, &v2, sizeof v2) == 0);
    while (recv(p1, buf, sizeof buf, MSG_DONTWAIT) > 0) {}
    say("READY");
    e2e_wait_usr1();

    struct sockaddr_ll got;
    socklen_t l = sizeof got;
    CHECK(getsockname(p1, (struct sockaddr *)&got, &l) == 0 && got.sll_ifindex == lo && got.sll_protocol == htons(ETH_P_IP), "p1 is bound to interface %d protocol 0x%x", got.sll_ifindex, ntohs(got.sll_protocol));
    CHECK(opt(p1, SOL_SOCKET, SO_TYPE) == SOCK_DGRAM, "p1: type %d", opt(p1, SOL_SOCKET, SO_TYPE));
    l = sizeof got;
    CHECK(getsockname(p2, (struct sockaddr *)&got, &l) == 0 && got.sll_ifindex == 0 && got.sll_protocol == 0, "p2 is bound to interface %d protocol 0x%x", got.sll_ifindex, ntohs(got.sll_protocol));
    CHECK(opt(p1, SOL_PACKET, PACKET_AUXDATA) == 1, "p1: PACKET_AUXDATA %d", opt(p1, SOL_PACKET, PACKET_AUXDATA));
    CHECK(opt(p2, SOL_SOCKET, SO_TYPE) == SOCK_RAW && opt(p2, SOL_PACKET, PACKET_VERSION) == TPACKET_V2, "p2: type %d version %d", opt(p2, SOL_SOCKET, SO_TYPE), opt(p2, SOL_PACKET, PACKET_VERSION));

    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(54321), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    MUST(u >= 0 && sendto(u, "hello", 5, 0, (struct sockaddr *)&to, sizeof to) == 5);
    int seen = 0;
    struct pollfd p = { p1, POLLIN, 0 };
    while (!seen && poll(&p, 1, 2000) == 1) {
        ssize_t n = recv(p1, buf, sizeof buf, 0);
        if (n >= 33 && memcmp(buf + 28, "hello", 5) == 0) seen = 1;
        else CHECK(n >= 24 && buf[9] == 17 && ntohs(*(uint16_t *)(buf + 22)) == 54321, "p1 let through a packet its filter drops (%zd bytes)", n);
    }
    CHECK(seen, "p1 did not capture the datagram to 127.0.0.1:54321");
    return e2e_finish();
}
