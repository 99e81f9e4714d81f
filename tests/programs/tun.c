/* tun: run in a network namespace of its own. Makes a tun device (tun7, no packet info, 10.77.0.1/24,
 * up) and a persistent tap device (tap7, a vnet header of 12 bytes), holding a file of each. After the
 * restart: both files are attached to their devices with the same flags (tun7 not persistent, tap7
 * persistent), tun7 has its address, a datagram sent to 10.77.0.2 comes out of the tun file, and an IPv4
 * packet written into it reaches a socket bound to 10.77.0.1. */
#include "e2e.h"
#include <arpa/inet.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

static int tun_open(const char *name, int flags)
{
    int fd = open("/dev/net/tun", O_RDWR);
    struct ifreq r;
    memset(&r, 0, sizeof r);
    snprintf(r.ifr_name, IFNAMSIZ, "%s", name);
    r.ifr_flags = flags;
    MUST(fd >= 0 && ioctl(fd, TUNSETIFF, &r) == 0);
    return fd;
}

static int iff(int fd, char *name)
{
    struct ifreq r;
    memset(&r, 0, sizeof r);
    if (ioctl(fd, TUNGETIFF, &r) != 0) return -1;
    strcpy(name, r.ifr_name);
    return r.ifr_flags;
}

static unsigned short csum(const void *p, int n)
{
    const unsigned short *w = p;
    unsigned long s = 0;
    for (; n > 1; n -= 2) s += *w++;
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return ~s;
}

/* A datagram to 10.77.0.2:9 comes out of the tun file within a second. */
static int comes_out(int tun, int udp, const char *what)
{
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(9) };
    inet_pton(AF_INET, "10.77.0.2", &to.sin_addr);
    if (sendto(udp, what, strlen(what), 0, (struct sockaddr *)&to, sizeof to) < 0) return 0;
    unsigned char pkt[2048];
    for (;;) {
        struct pollfd p = { .fd = tun, .events = POLLIN };
        if (poll(&p, 1, 1000) != 1) return 0;
        ssize_t n = read(tun, pkt, sizeof pkt);
        if (n < 28) continue;
        struct iphdr *ip = (struct iphdr *)pkt;
        if (ip->version == 4 && ip->protocol == IPPROTO_UDP && ip->daddr == to.sin_addr.s_addr && n - 28 == (ssize_t)strlen(what) && memcmp(pkt + 28, what, n - 28) == 0)
            return 1;
    }
}

/* An IPv4/UDP packet from 10.77.0.2 to 10.77.0.1:port written into the tun file reaches the socket. */
static int goes_in(int tun, int udp, int port, const char *what)
{
    unsigned char pkt[256];
    size_t len = 28 + strlen(what);
    memset(pkt, 0, sizeof pkt);
    struct iphdr *ip = (struct iphdr *)pkt;
    ip->version = 4; ip->ihl = 5; ip->ttl = 64; ip->protocol = IPPROTO_UDP; ip->tot_len = htons(len);
    inet_pton(AF_INET, "10.77.0.2", &ip->saddr);
    inet_pton(AF_INET, "10.77.0.1", &ip->daddr);
    ip->check = csum(ip, 20);
    unsigned short *u = (unsigned short *)(pkt + 20);
    u[0] = htons(4000); u[1] = htons(port); u[2] = htons(8 + strlen(what)); u[3] = 0;
    memcpy(pkt + 28, what, strlen(what));
    if (write(tun, pkt, len) != (ssize_t)len) return 0;
    char got[64];
    struct pollfd p = { .fd = udp, .events = POLLIN };
    if (poll(&p, 1, 1000) != 1) return 0;
    ssize_t n = recv(udp, got, sizeof got, 0);
    return n == (ssize_t)strlen(what) && memcmp(got, what, n) == 0;
}

int main(void)
{
    e2e_init();
    int tun = tun_open("tun7", IFF_TUN | IFF_NO_PI);
    int tap = tun_open("tap7", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
    int hdr = 12;
    MUST(ioctl(tap, TUNSETPERSIST, 1) == 0 && ioctl(tap, TUNSETVNETHDRSZ, &hdr) == 0);

    int sk = socket(AF_INET, SOCK_DGRAM, 0);
    struct ifreq r;
    memset(&r, 0, sizeof r);
    strcpy(r.ifr_name, "tun7");
    struct sockaddr_in *a = (struct sockaddr_in *)&r.ifr_addr;
    a->sin_family = AF_INET;
    inet_pton(AF_INET, "10.77.0.1", &a->sin_addr);
    MUST(ioctl(sk, SIOCSIFADDR, &r) == 0);
    inet_pton(AF_INET, "255.255.255.0", &a->sin_addr);
    MUST(ioctl(sk, SIOCSIFNETMASK, &r) == 0);
    MUST(ioctl(sk, SIOCGIFFLAGS, &r) == 0);
    r.ifr_flags |= IFF_UP;
    MUST(ioctl(sk, SIOCSIFFLAGS, &r) == 0);

    struct sockaddr_in me = { .sin_family = AF_INET, .sin_port = htons(5000) };
    inet_pton(AF_INET, "10.77.0.1", &me.sin_addr);
    int udp = socket(AF_INET, SOCK_DGRAM, 0);
    MUST(udp >= 0 && bind(udp, (struct sockaddr *)&me, sizeof me) == 0);
    MUST(comes_out(tun, sk, "before-out"));
    MUST(goes_in(tun, udp, 5000, "before-in"));
    char name[IFNAMSIZ];
    int tunflags = iff(tun, name), tapflags = iff(tap, name);

    say("READY");
    e2e_wait_usr1();

    int f = iff(tun, name);
    CHECK(f == tunflags && strcmp(name, "tun7") == 0, "tun file: device %s flags 0x%x, was tun7 0x%x", name, f, tunflags);
    CHECK(!(f & IFF_PERSIST), "tun7 is persistent after the restart");
    f = iff(tap, name);
    CHECK(f == tapflags && strcmp(name, "tap7") == 0, "tap file: device %s flags 0x%x, was tap7 0x%x", name, f, tapflags);
    CHECK(f & IFF_PERSIST, "tap7 is not persistent after the restart");
    int h = 0;
    CHECK(ioctl(tap, TUNGETVNETHDRSZ, &h) == 0 && h == 12, "tap7's vnet header size %d, was 12", h);
    memset(&r, 0, sizeof r);
    strcpy(r.ifr_name, "tun7");
    CHECK(ioctl(sk, SIOCGIFADDR, &r) == 0 && a->sin_addr.s_addr == me.sin_addr.s_addr, "tun7 lost its address");
    CHECK(comes_out(tun, sk, "after-out"), "a datagram to 10.77.0.2 does not come out of the tun file");
    CHECK(goes_in(tun, udp, 5000, "after-in"), "a packet written into the tun file does not reach the socket");
    return e2e_finish();
}
