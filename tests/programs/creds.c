/* creds: a root process that dropped to other ids: real/effective/saved uids and gids all different
 * (file-system ids the saved ones, not the effective),
 * supplementary groups, a few capabilities kept in the permitted and inheritable sets (PR_SET_KEEPCAPS),
 * a smaller bounding set, dumpable flag. All must be the same after restart. */
#include "e2e.h"
#include <grp.h>
#include <sys/prctl.h>
#include <linux/capability.h>
#include <sys/fsuid.h>

struct caps { uint32_t eff[2], prm[2], inh[2]; };

static struct caps getcaps(void)
{
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    syscall(SYS_capget, &h, d);
    struct caps c = { { d[0].effective, d[1].effective }, { d[0].permitted, d[1].permitted }, { d[0].inheritable, d[1].inheritable } };
    return c;
}

int main(void)
{
    e2e_init();
    gid_t groups[] = { 5, 6, 1234 };
    MUST(setgroups(3, groups) == 0);
    MUST(prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT) == 0 && prctl(PR_CAPBSET_DROP, CAP_MKNOD) == 0);
    MUST(prctl(PR_SET_KEEPCAPS, 1) == 0);
    MUST(setresgid(1001, 1002, 1003) == 0);
    MUST(setresuid(1000, 1010, 1020) == 0);
    /* keep CAP_NET_BIND_SERVICE and CAP_KILL permitted, CAP_KILL effective and inheritable */
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    d[0].permitted = (1u << CAP_NET_BIND_SERVICE) | (1u << CAP_KILL);
    d[0].effective = 1u << CAP_KILL;
    d[0].inheritable = 1u << CAP_KILL;
    MUST(syscall(SYS_capset, &h, d) == 0);
    MUST(prctl(PR_SET_KEEPCAPS, 0) == 0);
    /* file-system ids other than the effective ones (the saved ids: allowed without privilege) */
    setfsuid(1020);
    setfsgid(1003);
    int fsuid = setfsuid(-1), fsgid = setfsgid(-1);
    MUST(fsuid == 1020 && fsgid == 1003);

    uid_t ru, eu, su; gid_t rg, eg, sg;
    getresuid(&ru, &eu, &su);
    getresgid(&rg, &eg, &sg);
    gid_t gl[16];
    int ng = getgroups(16, gl);
    struct caps c0 = getcaps();
    int dumpable = prctl(PR_GET_DUMPABLE);
    int bnd_boot = prctl(PR_CAPBSET_READ, CAP_SYS_BOOT), bnd_kill = prctl(PR_CAPBSET_READ, CAP_KILL);
    say("READY");
    e2e_wait_usr1();

    uid_t ru1, eu1, su1; gid_t rg1, eg1, sg1;
    getresuid(&ru1, &eu1, &su1);
    getresgid(&rg1, &eg1, &sg1);
    CHECK(ru1 == ru && eu1 == eu && su1 == su, "uids %d %d %d, were %d %d %d", ru1, eu1, su1, ru, eu, su);
    CHECK(rg1 == rg && eg1 == eg && sg1 == sg, "gids %d %d %d, were %d %d %d", rg1, eg1, sg1, rg, eg, sg);
    gid_t gl1[16];
    int ng1 = getgroups(16, gl1);
    CHECK(ng1 == ng && memcmp(gl, gl1, ng * sizeof(gid_t)) == 0, "%d supplementary groups, were %d", ng1, ng);
    struct caps c1 = getcaps();
    CHECK(memcmp(&c0, &c1, sizeof c0) == 0, "capabilities eff %x prm %x inh %x, were eff %x prm %x inh %x",
          c1.eff[0], c1.prm[0], c1.inh[0], c0.eff[0], c0.prm[0], c0.inh[0]);
    CHECK(prctl(PR_CAPBSET_READ, CAP_SYS_BOOT) == bnd_boot && prctl(PR_CAPBSET_READ, CAP_KILL) == bnd_kill, "bounding set changed");
    CHECK(prctl(PR_GET_DUMPABLE) == dumpable, "dumpable %d, was %d", prctl(PR_GET_DUMPABLE), dumpable);
    CHECK(prctl(PR_GET_KEEPCAPS) == 0, "keepcaps left set");
    CHECK(setfsuid(-1) == fsuid && setfsgid(-1) == fsgid, "file-system ids %d/%d, were %d/%d", setfsuid(-1), setfsgid(-1), fsuid, fsgid);
    CHECK(kill(1, 0) == 0, "CAP_KILL does not work: %s", strerror(errno));
    return e2e_finish();
}
