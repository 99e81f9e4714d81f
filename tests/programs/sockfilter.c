/* sockfilter: classic BPF socket filters. UDP socket A (bound on loopback) has a filter that drops every
 * packet, locked with SO_LOCK_FILTER; socket B has a two-instruction filter that accepts packets; a
 * unix datagram socketpair has the drop-all filter on one end. After the restart each filter must read
 * back the same, A's still locked, and datagrams must be dropped or received as before. */
#include "e2e.h"
#include <linux/filter.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static struct sock_filter drop_all[] = { { BPF_RET | BPF_K, 0, 0, 0 } };
static struct sock_filter accept_all[] = { { BPF_LD | BPF_W | BPF_LEN, 0, 0, 0 }, { BPF_RET | BPF_A, 0, 0, 0 } };

static void attach(int s, struct sock_filter *code, int n)
{
    struct sock_fprog prog = { (unsigned short)n, code };
    MUST(setsockopt(s, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) == 0);
}

static void check_filter(const char *what, int s, struct sock_filter *code, int n)
{
    struct sock_filter got[8];
    socklen_t len = 0;
    CHECK(getsockopt(s, SOL_SOCKET, SO_GET_FILTER, NULL, &len) == 0 && (int)len == n, "%s: the filter has %d instructions, expected %d", what, (int)len, n);
    len = 8;
    if (getsockopt(s, SOL_SOCKET, SO_GET_FILTER, got, &len) == 0 && (int)len == n)
        CHECK(memcmp(got, code, n * sizeof *code) == 0, "%s: the filter's instructions changed", what);
}

static int bound_udp(struct sockaddr_in *a)
{
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    MUST(s >= 0);
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    MUST(bind(s, (struct sockaddr *)a, sizeof *a) == 0);
    socklen_t l = sizeof *a;
    MUST(getsockname(s, (struct sockaddr *)a, &l) == 0);
    return s;
}

static int readable(int s)
{
    struct pollfd p = { s, POLLIN, 0 };
    return poll(&p, 1, 300) == 1;
}

int main(void)
{
    e2e_init();
    struct sockaddr_in aa, ab;
    int a = bound_udp(&aa), b = bound_udp(&ab), sv[2];
    MUST(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == 0);
    attach(a, drop_all, 1);
    int one = 1;
    MUST(setsockopt(a, SOL_SOCKET, SO_LOCK_FILTER, &one, sizeof one) == 0);
    attach(b, accept_all, 2);
    attach(sv[1], drop_all, 1);
    say("READY");
    e2e_wait_usr1();
    check_filter("socket A", a, drop_all, 1);
    check_filter("socket B", b, accept_all, 2);
    check_filter("unix socket", sv[1], drop_all, 1);
    int locked = 0;
    socklen_t ll = sizeof locked;
    CHECK(getsockopt(a, SOL_SOCKET, SO_LOCK_FILTER, &locked, &ll) == 0 && locked == 1, "socket A's filter is no longer locked");
    CHECK(setsockopt(a, SOL_SOCKET, SO_DETACH_FILTER, &one, sizeof one) != 0 && errno == EPERM, "socket A's filter could be detached");
    ll = sizeof locked;
    CHECK(getsockopt(b, SOL_SOCKET, SO_LOCK_FILTER, &locked, &ll) == 0 && locked == 0, "socket B's filter became locked");
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    MUST(s >= 0);
    MUST(sendto(s, "to-a", 4, 0, (struct sockaddr *)&aa, sizeof aa) == 4);
    MUST(sendto(s, "to-b", 4, 0, (struct sockaddr *)&ab, sizeof ab) == 4);
    MUST(send(sv[0], "to-unix", 7, 0) == 7);
    CHECK(readable(b), "socket B did not get its datagram");
    CHECK(!readable(a), "socket A got a datagram through its drop-all filter");
    CHECK(!readable(sv[1]), "the unix socket got a datagram through its drop-all filter");
    if (e2e_failures) return 1;
    say("PASS");
    return 0;
}
