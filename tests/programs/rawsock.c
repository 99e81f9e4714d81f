/* rawsock: raw IP sockets (what ping and traceroute use as root):
 *   r4  SOCK_RAW IPPROTO_ICMP with an ICMP_FILTER that lets only echo replies through
 *   r6  SOCK_RAW IPPROTO_ICMPV6 with an ICMP6_FILTER that blocks everything but echo replies
 *   rc  SOCK_RAW IPPROTO_ICMP connected to 127.0.0.1, IP_HDRINCL off, IP_TTL 7
 * After the restart each has its type, protocol and options, and r4 still gets the kernel's answer
 * to an echo request it sends to 127.0.0.1 (through the filter).
 * "rawsock slow": after SIGUSR2 it sends an echo request and reads the reply 300 ms after it came; a
 * checkpoint taken meanwhile finds it queued (it cannot be saved) and lets the tree read it first. */
#include "e2e.h"
#include <arpa/inet.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <sys/socket.h>

#ifndef ICMP_FILTER
#define ICMP_FILTER 1
#endif
#define SOL_RAW_ 255

static unsigned short checksum(const void *p, int len)
{
    const unsigned short *w = p;
    unsigned long sum = 0;
    for (; len > 1; len -= 2) sum += *w++;
    if (len) sum += *(const unsigned char *)w;
    sum = (sum >> 16) + (sum & 0xffff);
    sum += sum >> 16;
    return (unsigned short)~sum;
}

static int sockopt_int(int fd, int level, int name)
{
    int v = -1;
    socklen_t l = sizeof v;
    return getsockopt(fd, level, name, &v, &l) == 0 ? v : -1;
}

static volatile sig_atomic_t usr2;
static void on_usr2(int sig) { (void)sig; usr2 = 1; }

static void echo_request(int fd, const struct sockaddr_in *to, int id)
{
    struct icmphdr req = { .type = ICMP_ECHO, .un.echo.id = htons(id), .un.echo.sequence = htons(1) };
    req.checksum = checksum(&req, sizeof req);
    MUST(sendto(fd, &req, sizeof req, 0, (const struct sockaddr *)to, sizeof *to) == sizeof req);
}

static int slow_mode(void)
{
    int r = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    MUST(r >= 0);
    uint32_t filter = ~(1U << ICMP_ECHOREPLY);
    MUST(setsockopt(r, SOL_RAW_, ICMP_FILTER, &filter, sizeof filter) == 0);
    struct sigaction sa = { .sa_handler = on_usr2 };
    MUST(sigaction(SIGUSR2, &sa, NULL) == 0);
    say("READY");
    while (!usr2) pause();
    struct sockaddr_in lo = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    echo_request(r, &lo, 0x4444);
    struct pollfd p = { r, POLLIN, 0 };
    while (poll(&p, 1, -1) != 1) MUST(errno == EINTR);
    sleep_full(0.3);
    char buf[256];
    MUST(recv(r, buf, sizeof buf, 0) > 0);
    say("SEEN");
    e2e_wait_usr1();
    echo_request(r, &lo, 0x4545);
    CHECK(poll(&p, 1, 2000) == 1, "no reply after the checkpoint");
    return e2e_finish();
}

int main(int argc, char **argv)
{
    e2e_init();
    if (argc > 1 && strcmp(argv[1], "slow") == 0) return slow_mode();
    int r4 = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP), r6 = socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6), rc = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    MUST(r4 >= 0 && r6 >= 0 && rc >= 0);
    uint32_t filter = ~(1U << ICMP_ECHOREPLY);   /* a set bit blocks that type */
    MUST(setsockopt(r4, SOL_RAW_, ICMP_FILTER, &filter, sizeof filter) == 0);
    struct icmp6_filter f6;
    ICMP6_FILTER_SETBLOCKALL(&f6);
    ICMP6_FILTER_SETPASS(ICMP6_ECHO_REPLY, &f6);
    MUST(setsockopt(r6, IPPROTO_ICMPV6, ICMP6_FILTER, &f6, sizeof f6) == 0);
    struct sockaddr_in lo = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int ttl = 7;
    MUST(connect(rc, (struct sockaddr *)&lo, sizeof lo) == 0 && setsockopt(rc, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl) == 0);
    say("READY");
    e2e_wait_usr1();

    CHECK(sockopt_int(r4, SOL_SOCKET, SO_TYPE) == SOCK_RAW && sockopt_int(r4, SOL_SOCKET, SO_PROTOCOL) == IPPROTO_ICMP, "r4: type %d protocol %d", sockopt_int(r4, SOL_SOCKET, SO_TYPE), sockopt_int(r4, SOL_SOCKET, SO_PROTOCOL));
    uint32_t got4 = 0;
    socklen_t l = sizeof got4;
    CHECK(getsockopt(r4, SOL_RAW_, ICMP_FILTER, &got4, &l) == 0 && got4 == filter, "r4: ICMP filter 0x%x, want 0x%x", got4, filter);
    struct icmp6_filter got6;
    l = sizeof got6;
    CHECK(getsockopt(r6, IPPROTO_ICMPV6, ICMP6_FILTER, &got6, &l) == 0 && memcmp(&got6, &f6, sizeof f6) == 0, "r6: ICMPv6 filter differs");
    /* (getpeername refuses raw sockets) connected, it sends without an address */
    struct icmphdr probe = { .type = ICMP_ECHO, .un.echo.id = htons(0x4343) };
    probe.checksum = checksum(&probe, sizeof probe);
    CHECK(send(rc, &probe, sizeof probe, 0) == sizeof probe, "rc is no longer connected: send gives %s", strerror(errno));
    CHECK(sockopt_int(rc, IPPROTO_IP, IP_TTL) == 7, "rc: TTL %d", sockopt_int(rc, IPPROTO_IP, IP_TTL));

    /* an echo request to 127.0.0.1; the kernel's reply comes back through r4's filter */
    struct icmphdr req = { .type = ICMP_ECHO, .un.echo.id = htons(0x4242), .un.echo.sequence = htons(1) };
    req.checksum = checksum(&req, sizeof req);
    CHECK(sendto(r4, &req, sizeof req, 0, (struct sockaddr *)&lo, sizeof lo) == sizeof req, "sendto: %s", strerror(errno));
    int replied = 0;
    for (int i = 0; i < 20 && !replied; i++) {
        struct pollfd p = { r4, POLLIN, 0 };
        if (poll(&p, 1, 100) != 1) continue;
        char buf[256];
        ssize_t n = recv(r4, buf, sizeof buf, 0);
        if (n < (ssize_t)(sizeof(struct iphdr) + sizeof(struct icmphdr))) continue;
        struct iphdr *ip = (struct iphdr *)buf;
        struct icmphdr *ic = (struct icmphdr *)(buf + ip->ihl * 4);
        CHECK(ic->type == ICMP_ECHOREPLY, "r4 let an ICMP type %d through its filter", ic->type);
        if (ic->type == ICMP_ECHOREPLY && ic->un.echo.id == htons(0x4242)) replied = 1;
    }
    CHECK(replied, "no echo reply on r4");
    return e2e_finish();
}
