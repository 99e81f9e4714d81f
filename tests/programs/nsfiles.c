/* nsfiles: namespace files held open: the network and mount namespaces it runs in (ckpt's), and a UTS
 * namespace of its own (unshare) with its hostname, as well as the one it left (ckpt's). After the
 * restart each fd names the namespace it named before (the same one as ckpt's, or the process's own
 * rebuilt one), setns works with it, and the own namespace's hostname is back.
 * "other": also an fd of a network namespace made and left (unshare, then setns back): refused. */
#include "e2e.h"
#include <sched.h>
#include <sys/stat.h>

static void link_of(int fd, char *out, size_t n)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    ssize_t l = readlink(p, out, n - 1);
    out[l < 0 ? 0 : l] = 0;
}

int main(int argc, char **argv)
{
    e2e_init();
    int net = open("/proc/self/ns/net", O_RDONLY);
    int mnt = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    int uts_old = open("/proc/self/ns/uts", O_RDONLY);
    MUST(net >= 0 && mnt >= 0 && uts_old >= 0);
    MUST(unshare(CLONE_NEWUTS) == 0 && sethostname("nsfiles-host", 12) == 0);
    int uts_own = open("/proc/self/ns/uts", O_RDONLY);
    MUST(uts_own >= 0);
    if (argc > 1 && !strcmp(argv[1], "other")) {
        int back = open("/proc/self/ns/net", O_RDONLY);
        MUST(back >= 0 && unshare(CLONE_NEWNET) == 0);
        int other = open("/proc/self/ns/net", O_RDONLY);
        MUST(other >= 0 && setns(back, CLONE_NEWNET) == 0);
        close(back);
        say("SOCKFD %d", other);
    }
    say("READY");
    e2e_wait_usr1();

    char l[64], want[64];
    link_of(net, l, sizeof l);
    ns_link(getpid(), "net", want, sizeof want);
    CHECK(!strcmp(l, want), "the net namespace fd names %s, the process is in %s", l, want);
    link_of(mnt, l, sizeof l);
    ns_link(getpid(), "mnt", want, sizeof want);
    CHECK(!strcmp(l, want), "the mnt namespace fd names %s, the process is in %s", l, want);
    CHECK(fcntl(mnt, F_GETFD) == FD_CLOEXEC && fcntl(net, F_GETFD) == 0, "close-on-exec flags changed");
    link_of(uts_own, l, sizeof l);
    ns_link(getpid(), "uts", want, sizeof want);
    CHECK(!strcmp(l, want), "the own uts namespace fd names %s, the process is in %s", l, want);
    char old[64];
    link_of(uts_old, old, sizeof old);
    CHECK(strcmp(old, want) != 0, "the left uts namespace fd names the process's own %s", old);
    CHECK(setns(uts_old, CLONE_NEWUTS) == 0, "setns into the left uts namespace: %s", strerror(errno));
    char h[64] = { 0 };
    CHECK(setns(uts_own, CLONE_NEWUTS) == 0 && gethostname(h, sizeof h) == 0 && !strcmp(h, "nsfiles-host"), "back in its own uts namespace: hostname '%s'", h);
    CHECK(setns(net, CLONE_NEWNET) == 0, "setns into the net namespace: %s", strerror(errno));
    return e2e_finish();
}
