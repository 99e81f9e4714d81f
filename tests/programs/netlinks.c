/* netlinks: a NETLINK_ROUTE socket bound with multicast groups (link and IPv4 address changes) and
 * NETLINK_NO_ENOBUFS, and one left unbound for requests. After the restart both have the same port
 * ids, groups and options, and a link dump request is answered.
 * "netlinks slowread": a link dump request whose answer is read 300 ms after READY (a checkpoint taken
 * at once finds it queued and waits for it); prints SEEN once it is read, and after SIGUSR1 checks that
 * a new request is answered. */
#include "e2e.h"
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

static int name_of(int fd, struct sockaddr_nl *a)
{
    socklen_t l = sizeof *a;
    memset(a, 0, sizeof *a);
    return getsockname(fd, (struct sockaddr *)a, &l);
}

static int dump_request(int fd, unsigned seq)
{
    struct { struct nlmsghdr h; struct rtgenmsg g; } q = {
        .h = { .nlmsg_len = sizeof q, .nlmsg_type = RTM_GETLINK, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = seq },
        .g = { .rtgen_family = AF_UNSPEC },
    };
    struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
    return sendto(fd, &q, sizeof q, 0, (struct sockaddr *)&kernel, sizeof kernel) == sizeof q ? 0 : -1;
}

/* reads the answer to request seq up to its NLMSG_DONE; 0 when it came whole */
static int read_dump(int fd, unsigned seq)
{
    static char buf[65536];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) return -1;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != seq) return -1;
            if (h->nlmsg_type == NLMSG_DONE) return 0;
        }
    }
}

static int slowread(void)
{
    int req = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
    MUST(req >= 0);
    say("READY");
    MUST(dump_request(req, 1) == 0);
    sleep_full(0.3);
    MUST(read_dump(req, 1) == 0);
    say("SEEN");
    e2e_wait_usr1();
    CHECK(dump_request(req, 2) == 0 && read_dump(req, 2) == 0, "no answer to a new request");
    return e2e_finish();
}

int main(int argc, char **argv)
{
    e2e_init();
    if (argc > 1 && strcmp(argv[1], "slowread") == 0) return slowread();
    int mon = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE), req = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK, NETLINK_ROUTE);
    MUST(mon >= 0 && req >= 0);
    struct sockaddr_nl b = { .nl_family = AF_NETLINK, .nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR };
    MUST(bind(mon, (struct sockaddr *)&b, sizeof b) == 0);
    int one = 1;
    MUST(setsockopt(mon, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one) == 0);
    struct sockaddr_nl m0, r0;
    MUST(name_of(mon, &m0) == 0 && name_of(req, &r0) == 0);
    say("READY");
    e2e_wait_usr1();

    struct sockaddr_nl m1, r1;
    CHECK(name_of(mon, &m1) == 0 && m1.nl_pid == m0.nl_pid && m1.nl_groups == m0.nl_groups, "monitor: port id %u groups 0x%x, were %u 0x%x", m1.nl_pid, m1.nl_groups, m0.nl_pid, m0.nl_groups);
    CHECK(name_of(req, &r1) == 0 && r1.nl_pid == r0.nl_pid, "requester: port id %u, was %u", r1.nl_pid, r0.nl_pid);
    int v = 0;
    socklen_t l = sizeof v;
    CHECK(getsockopt(mon, SOL_NETLINK, NETLINK_NO_ENOBUFS, &v, &l) == 0 && v == 1, "NETLINK_NO_ENOBUFS lost");
    CHECK(fcntl(req, F_GETFL) & O_NONBLOCK, "the requester lost O_NONBLOCK");
    struct { struct nlmsghdr h; struct rtgenmsg g; } q = {
        .h = { .nlmsg_len = sizeof q, .nlmsg_type = RTM_GETLINK, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 7 },
        .g = { .rtgen_family = AF_UNSPEC },
    };
    struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
    CHECK(sendto(req, &q, sizeof q, 0, (struct sockaddr *)&kernel, sizeof kernel) == sizeof q, "cannot send a request: %s", strerror(errno));
    static char buf[65536];
    ssize_t n = -1;
    for (int i = 0; i < 200 && n < 0; i++) { n = recv(req, buf, sizeof buf, 0); if (n < 0) usleep(5000); }
    struct nlmsghdr *h = (struct nlmsghdr *)buf;
    CHECK(n > 0 && h->nlmsg_seq == 7 && h->nlmsg_type == RTM_NEWLINK, "no link dump answer (%zd bytes)", n);
    return e2e_finish();
}
