/* seccompdrop: a daemon that installs a seccomp filter while root (no no_new_privs: getppid fails
 * with EPERM), starts a thread (which inherits it), then drops root for uid/gid 65534 and every
 * capability. Its filter could not be installed again with the credentials it has now: the restart must
 * install it before it sets them. After the restart both threads are still filtered, the process is
 * still unprivileged, without no_new_privs. */
// build: seccompdrop -pthread
#include "e2e.h"
#include "e2e_seccomp.h"
#include <linux/seccomp.h>
#include <grp.h>
#include <pthread.h>
#include <sys/prctl.h>

static volatile int thread_result = -1, thread_go;

static void *worker(void *arg)
{
    (void)arg;
    while (!thread_go) usleep(1000);
    thread_result = syscall(SYS_getppid) < 0 && errno == EPERM ? 0 : 1;
    return NULL;
}

static long status_field(const char *name)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(name);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, name, n) && line[n] == ':') { v = strtol(line + n + 1, NULL, 10); break; }
    if (f) fclose(f);
    return v;
}

int main(void)
{
    e2e_init();
    MUST(getuid() == 0 && seccomp_deny(SYS_getppid, EPERM, 0) == 0);
    pthread_t t;
    MUST(pthread_create(&t, NULL, worker, NULL) == 0);
    /* every thread at once (glibc's setresuid changes all threads' credentials) */
    MUST(setgroups(0, NULL) == 0 && setresgid(65534, 65534, 65534) == 0 && setresuid(65534, 65534, 65534) == 0);
    MUST(status_field("NoNewPrivs") == 0 && status_field("Seccomp") == 2);
    say("READY");
    e2e_wait_usr1();
    CHECK(syscall(SYS_getppid) < 0 && errno == EPERM, "the main thread is no longer filtered");
    thread_go = 1;
    pthread_join(t, NULL);
    CHECK(thread_result == 0, "the other thread is no longer filtered");
    uid_t r, e, s;
    CHECK(getresuid(&r, &e, &s) == 0 && r == 65534 && e == 65534 && s == 65534, "uid %d %d %d", (int)r, (int)e, (int)s);
    CHECK(status_field("NoNewPrivs") == 0 && status_field("Seccomp") == 2, "no_new_privs %ld, seccomp %ld", status_field("NoNewPrivs"), status_field("Seccomp"));
    CHECK(prctl(PR_CAPBSET_READ, 21 /* CAP_SYS_ADMIN */) >= 0 && status_field("CapEff") == 0, "capabilities are back");
    return e2e_finish();
}
