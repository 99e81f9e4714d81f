/* secbits: the securebits of three processes survive a restart.
 *   root (uid 0, all capabilities): keep-caps, no-root (locked) and no-ambient-raise
 *   child A (uids 1000, CAP_KILL kept): keep-caps only, left set with PR_SET_KEEPCAPS after the uid
 *     change (a process without CAP_SETPCAP: the restart sets it with PR_SET_KEEPCAPS)
 *   child B (uids 1000, CAP_SETPCAP permitted but not effective): no-setuid-fixup, locked (the restart
 *     makes CAP_SETPCAP effective a moment to set them)
 * Each checks its bits and capabilities after the restart; the root forwards SIGUSR1 and collects the
 * children's verdicts. */
#include "e2e.h"
#include <sys/prctl.h>
#include <sys/wait.h>
#include <linux/capability.h>
#include <linux/securebits.h>

struct caps { uint32_t eff, prm, inh; };

static struct caps getcaps(void)
{
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    syscall(SYS_capget, &h, d);
    return (struct caps){ d[0].effective, d[0].permitted, d[0].inheritable };
}

static int setcaps(uint32_t eff, uint32_t prm)
{
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    d[0].effective = eff;
    d[0].permitted = prm;
    return (int)syscall(SYS_capset, &h, d);
}

static int check_self(const char *who, int bits, struct caps c0)
{
    int now = prctl(PR_GET_SECUREBITS);
    CHECK(now == bits, "%s: securebits 0x%x after the restart, 0x%x before", who, now, bits);
    CHECK(prctl(PR_GET_KEEPCAPS) == !!(bits & SECBIT_KEEP_CAPS), "%s: keepcaps %d", who, prctl(PR_GET_KEEPCAPS));
    struct caps c1 = getcaps();
    CHECK(c1.eff == c0.eff && c1.prm == c0.prm && c1.inh == c0.inh, "%s: capabilities eff %x prm %x inh %x, were eff %x prm %x inh %x",
          who, c1.eff, c1.prm, c1.inh, c0.eff, c0.prm, c0.inh);
    return e2e_failures;
}

static pid_t child(const char *who, int bits_as_root, uint32_t eff, uint32_t prm, int keepcaps_after)
{
    pid_t p = fork();
    MUST(p >= 0);
    if (p > 0) return p;
    if (bits_as_root) MUST(prctl(PR_SET_SECUREBITS, bits_as_root) == 0);
    MUST(prctl(PR_SET_KEEPCAPS, 1) == 0 || (bits_as_root & SECBIT_NO_SETUID_FIXUP));
    MUST(setresgid(1000, 1000, 1000) == 0);
    MUST(setresuid(1000, 1000, 1000) == 0);
    MUST(setcaps(eff, prm) == 0);
    if (!keepcaps_after && !(bits_as_root & SECBIT_KEEP_CAPS_LOCKED)) MUST(prctl(PR_SET_KEEPCAPS, 0) == 0 || (bits_as_root & SECBIT_NO_SETUID_FIXUP));
    int bits = prctl(PR_GET_SECUREBITS);
    struct caps c0 = getcaps();
    say("%s: securebits 0x%x, caps eff %x prm %x", who, bits, c0.eff, c0.prm);
    e2e_wait_usr1();
    _exit(check_self(who, bits, c0) ? 1 : 0);
}

int main(void)
{
    e2e_init();
    e2e_block_usr1(1);   /* the children wait in sigsuspend: nothing may be lost before */
    pid_t a = child("A", 0, 1u << CAP_KILL, 1u << CAP_KILL, 1);
    pid_t b = child("B", SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED, 0, 1u << CAP_SETPCAP, 0);
    e2e_block_usr1(0);
    int bits = SECBIT_KEEP_CAPS | SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE;
    MUST(prctl(PR_SET_SECUREBITS, bits) == 0);
    struct caps c0 = getcaps();
    sleep_full(0.3);   /* the children print their state first */
    say("READY");
    e2e_wait_usr1();
    check_self("root", bits, c0);
    kill(a, SIGUSR1);
    kill(b, SIGUSR1);
    e2e_child_verdict(a, "child A");
    e2e_child_verdict(b, "child B");
    return e2e_finish();
}
