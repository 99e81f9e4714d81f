/* seccomptsync: a filter installed before a thread is made is shared by both threads; after the restart
 * the main thread adds a filter with SECCOMP_FILTER_FLAG_TSYNC, which the kernel only accepts when every
 * thread's filters are the same ones (shared, not copies): it must succeed and apply to the other thread.
 *
 * build: seccomptsync -pthread
 */
#include "e2e.h"
#include "e2e_seccomp.h"
#include <linux/seccomp.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/stat.h>

static volatile int go, result = -1;
static char dir[64];


static void *worker(void *arg)
{
    (void)arg;
    while (!go) usleep(1000);
    int a = syscall(SYS_getppid) < 0 && errno == EPERM;
    int b = mkdir(dir, 0700) < 0 && errno == ENOTTY;
    result = a && b ? 0 : 1 + a;
    return NULL;
}

int main(void)
{
    e2e_init();
    snprintf(dir, sizeof dir, "/tmp/ckpt-seccomptsync-%d", getpid());
    MUST(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && seccomp_deny(SYS_getppid, EPERM, 0) == 0);
    pthread_t t;
    MUST(pthread_create(&t, NULL, worker, NULL) == 0);
    say("READY");
    e2e_wait_usr1();
    long r = seccomp_deny(SYS_mkdir, ENOTTY, SECCOMP_FILTER_FLAG_TSYNC);
    CHECK(r == 0, "the TSYNC filter was refused (%ld: thread %ld has filters of its own)", r, r);
    go = 1;
    pthread_join(t, NULL);
    CHECK(result == 0, "the other thread is filtered by %s", result == 2 ? "the first filter only" : result == 1 ? "neither" : "?");
    rmdir(dir);
    return e2e_finish();
}
