/* uts: a tree in a UTS namespace of its own (made by the program: unshare(CLONE_NEWUTS)) with its own
 * host name and NIS domain name, a parent and a child. After the restart both still see those names and
 * share one namespace; the machine's host name was never changed (the script checks it). */
#include "e2e.h"
#include <sched.h>
#include <sys/utsname.h>
#include <sys/wait.h>

static const char *const Host = "ckpt-uts-test", *const Domain = "ckpt.example";

static void check_names(const char *who)
{
    char host[128] = "", domain[128] = "";
    CHECK(gethostname(host, sizeof host) == 0 && strcmp(host, Host) == 0, "%s: host name '%s', want '%s'", who, host, Host);
    CHECK(getdomainname(domain, sizeof domain) == 0 && strcmp(domain, Domain) == 0, "%s: domain name '%s', want '%s'", who, domain, Domain);
}

int main(void)
{
    e2e_init();
    MUST(unshare(CLONE_NEWUTS) == 0);
    MUST(sethostname(Host, strlen(Host)) == 0);
    MUST(setdomainname(Domain, strlen(Domain)) == 0);
    e2e_block_usr1(1);   /* the child waits in sigsuspend: nothing may be lost before */
    pid_t c = fork();
    MUST(c >= 0);
    if (c == 0) {
        e2e_wait_usr1();
        check_names("child");
        _exit(e2e_failures ? 1 : 0);
    }
    e2e_block_usr1(0);
    say("READY");
    e2e_wait_usr1();
    check_names("parent");
    char mine[64], its[64];
    ns_link(getpid(), "uts", mine, sizeof mine);
    ns_link(c, "uts", its, sizeof its);
    CHECK(strcmp(mine, its) == 0, "the child is in UTS namespace %s, the parent in %s", its, mine);
    say("NS %s", mine);
    kill(c, SIGUSR1);
    e2e_child_verdict(c, "the child");
    return e2e_finish();
}
