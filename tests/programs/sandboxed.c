/* sandboxed [nnp-only|notify]: a process with no_new_privs and a seccomp filter (mkdir and mkdirat fail
 * with EPROTONOSUPPORT). After restart both must still hold: a restarted process must not leave its
 * sandbox. With nnp-only, only no_new_privs is set. With notify, a second filter hands mkdir to a
 * supervisor (SECCOMP_RET_USER_NOTIF; its listener fd is closed at once), which ckpt must refuse. */
#include "e2e.h"
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>

int main(int argc, char **argv)
{
    e2e_init();
    int filter = !(argc > 1 && strcmp(argv[1], "nnp-only") == 0);
    MUST(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0);
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mkdir, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mkdirat, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPROTONOSUPPORT),
    };
    struct sock_fprog prog = { .len = sizeof code / sizeof code[0], .filter = code };
    if (filter) MUST(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0);
    if (argc > 1 && strcmp(argv[1], "notify") == 0) {
        struct sock_filter notify[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mkdir, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog nprog = { .len = sizeof notify / sizeof notify[0], .filter = notify };
        int listener = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &nprog);
        MUST(listener >= 0);
        close(listener);
    }
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/ckpt-e2e-sandbox-%d", getpid());
    if (filter) MUST(mkdir(dir, 0700) < 0 && errno == EPROTONOSUPPORT);
    say("READY");
    e2e_wait_usr1();

    CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1, "no_new_privs was dropped");
    if (filter) {
        CHECK(prctl(PR_GET_SECCOMP, 0, 0, 0, 0) == SECCOMP_MODE_FILTER, "seccomp mode is %d, expected a filter", prctl(PR_GET_SECCOMP, 0, 0, 0, 0));
        int r = mkdir(dir, 0700);
        CHECK(r < 0 && errno == EPROTONOSUPPORT, "mkdir is allowed again (returned %d, %s): the seccomp filter is gone", r, r < 0 ? strerror(errno) : "created");
        if (r == 0) rmdir(dir);
    }
    return e2e_finish();
}
