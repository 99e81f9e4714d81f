/* netdev HOST PORT: a process in a network namespace of its own that the test script gave a veth to the
 * host (eth0, MTU 1400, 10.231.0.2/24 and fd31::2/64, default route through HOST), an extra address on
 * lo (10.231.9.1/32), a veth pair of its own (in0/in1) and a macvlan on the host end (mv0). It holds a TCP connection to an echo server
 * on the host (HOST:PORT, through eth0) and a listener on lo's extra address. After the restart: the
 * devices have their index, MAC and MTU; the connection carries a new line; a new connection to the
 * host works (route, neighbour resolution); the addresses can be bound again (the IPv6 one at once: it
 * is not tentative again); the listener accepts. */
#include "e2e.h"
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

struct dev { char name[IFNAMSIZ]; int index, mtu; unsigned char mac[6]; };

static void look(int sk, const char *name, struct dev *d)
{
    struct ifreq r;
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    memset(&r, 0, sizeof r); snprintf(r.ifr_name, IFNAMSIZ, "%s", name);
    d->index = ioctl(sk, SIOCGIFINDEX, &r) == 0 ? r.ifr_ifindex : -1;
    memset(&r, 0, sizeof r); snprintf(r.ifr_name, IFNAMSIZ, "%s", name);
    d->mtu = ioctl(sk, SIOCGIFMTU, &r) == 0 ? r.ifr_mtu : -1;
    memset(&r, 0, sizeof r); snprintf(r.ifr_name, IFNAMSIZ, "%s", name);
    if (ioctl(sk, SIOCGIFHWADDR, &r) == 0) memcpy(d->mac, r.ifr_hwaddr.sa_data, 6);
}

static int echo_line(int fd, const char *line)
{
    char buf[64], want[64];
    snprintf(want, sizeof want, "%s\n", line);
    if (write(fd, want, strlen(want)) != (ssize_t)strlen(want)) return 0;
    size_t got = 0;
    while (got < strlen(want)) {
        ssize_t n = read(fd, buf + got, strlen(want) - got);
        if (n <= 0) return 0;
        got += n;
    }
    return memcmp(buf, want, got) == 0;
}

static int tcp_to(const char *host, int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, host, &a.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = { .tv_sec = 10 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { close(fd); return -1; }
    return fd;
}

static int bind_to(int family, const char *addr)
{
    int fd = socket(family, SOCK_DGRAM, 0), r;
    if (family == AF_INET) {
        struct sockaddr_in a = { .sin_family = AF_INET };
        inet_pton(AF_INET, addr, &a.sin_addr);
        r = bind(fd, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in6 a = { .sin6_family = AF_INET6 };
        inet_pton(AF_INET6, addr, &a.sin6_addr);
        r = bind(fd, (struct sockaddr *)&a, sizeof a);
    }
    int e = errno;
    close(fd);
    errno = e;
    return r == 0;
}

int main(int argc, char **argv)
{
    e2e_init();
    MUST(argc == 3);
    const char *host = argv[1];
    int port = atoi(argv[2]);
    int sk = socket(AF_INET, SOCK_DGRAM, 0);
    MUST(sk >= 0);
    const char *names[] = { "lo", "eth0", "in0", "in1", "mv0" };
    struct dev before[5], after[5];
    for (int i = 0; i < 5; i++) { look(sk, names[i], &before[i]); MUST(before[i].index > 0); }
    MUST(before[1].mtu == 1400);

    int conn = tcp_to(host, port);
    MUST(conn >= 0);
    MUST(echo_line(conn, "before"));
    struct sockaddr_in la = { .sin_family = AF_INET, .sin_port = htons(7100) };
    inet_pton(AF_INET, "10.231.9.1", &la.sin_addr);
    int one = 1, lst = socket(AF_INET, SOCK_STREAM, 0);
    MUST(lst >= 0 && setsockopt(lst, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
    MUST(bind(lst, (struct sockaddr *)&la, sizeof la) == 0 && listen(lst, 4) == 0);

    say("READY");
    e2e_wait_usr1();

    for (int i = 0; i < 5; i++) {
        look(sk, names[i], &after[i]);
        CHECK(after[i].index == before[i].index, "%s: index %d, was %d", names[i], after[i].index, before[i].index);
        CHECK(after[i].mtu == before[i].mtu, "%s: mtu %d, was %d", names[i], after[i].mtu, before[i].mtu);
        CHECK(memcmp(after[i].mac, before[i].mac, 6) == 0, "%s: another MAC address", names[i]);
    }
    CHECK(echo_line(conn, "after"), "the connection to the host does not carry a new line: %s", strerror(errno));
    int c2 = tcp_to(host, port);
    CHECK(c2 >= 0, "a new connection to the host through eth0: %s", strerror(errno));
    if (c2 >= 0) { CHECK(echo_line(c2, "new"), "the new connection does not echo"); close(c2); }
    CHECK(bind_to(AF_INET, "10.231.9.1"), "lo's extra address cannot be bound: %s", strerror(errno));
    CHECK(bind_to(AF_INET, "10.231.0.2"), "eth0's address cannot be bound: %s", strerror(errno));
    CHECK(bind_to(AF_INET, "10.233.0.2"), "mv0's address cannot be bound: %s", strerror(errno));
    CHECK(bind_to(AF_INET6, "fd31::2"), "eth0's IPv6 address cannot be bound: %s", strerror(errno));
    int c3 = tcp_to("10.231.9.1", 7100);
    CHECK(c3 >= 0, "no connection to the listener on lo's extra address: %s", strerror(errno));
    if (c3 >= 0) {
        int a = accept(lst, NULL, NULL);
        CHECK(a >= 0, "the listener does not accept: %s", strerror(errno));
        if (a >= 0) close(a);
        close(c3);
    }
    return e2e_finish();
}
