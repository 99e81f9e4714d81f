/* seccomp: filters per thread and per process. The main thread installs filter A (mkdir fails with
 * EPROTONOSUPPORT), starts a thread that adds filter B for itself only (rmdir fails with EXDEV, with
 * SECCOMP_FILTER_FLAG_LOG), forks a child (which inherits A), then adds filter C for itself (chmod
 * fails with ENOTTY). After the restart each task must be filtered exactly as before: the main thread
 * by A and C, the thread by A and B, the child by A. */
#include "e2e.h"
#include "e2e_seccomp.h"
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

static char dir[64];

static void deny(int nr, int err, unsigned flags) { MUST(seccomp_deny(nr, err, flags) == 0); }

/* errno of a call that fails (0 if it worked) */
static int err_of(long r) { return r < 0 ? errno : 0; }
static int try_mkdir(void) { int e = err_of(syscall(SYS_mkdir, dir, 0700)); if (!e) rmdir(dir); return e; }
static int try_rmdir(void) { return err_of(syscall(SYS_rmdir, "/nonexistent-ckpt-dir")); }
static int try_chmod(void) { return err_of(syscall(SYS_chmod, "/nonexistent-ckpt-file", 0600)); }

/* "A": mkdir denied; "B": rmdir denied; "C": chmod denied; what is not denied fails with ENOENT */
static int check(const char *who, int a, int b, int c)
{
    int bad = 0, m = try_mkdir(), r = try_rmdir(), ch = try_chmod();
    if (a ? m != EPROTONOSUPPORT : m != 0) { say("FAIL: %s: mkdir gives %s", who, strerror(m)); bad++; }
    if (b ? r != EXDEV : r != ENOENT) { say("FAIL: %s: rmdir gives %s", who, strerror(r)); bad++; }
    if (c ? ch != ENOTTY : ch != ENOENT) { say("FAIL: %s: chmod gives %s", who, strerror(ch)); bad++; }
    return bad;
}

static pthread_barrier_t ready, go, done;
static int thread_bad;

static void *thread_main(void *arg)
{
    (void)arg;
    deny(SYS_rmdir, EXDEV, SECCOMP_FILTER_FLAG_LOG);
    pthread_barrier_wait(&ready);
    pthread_barrier_wait(&go);
    thread_bad = check("thread", 1, 1, 0);
    pthread_barrier_wait(&done);
    return NULL;
}

int main(void)
{
    e2e_init();
    snprintf(dir, sizeof dir, "/tmp/ckpt-e2e-seccomp-%d", getpid());
    MUST(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0);
    deny(SYS_mkdir, EPROTONOSUPPORT, 0);
    pthread_barrier_init(&ready, NULL, 2);
    pthread_barrier_init(&go, NULL, 2);
    pthread_barrier_init(&done, NULL, 2);
    pthread_t t;
    MUST(pthread_create(&t, NULL, thread_main, NULL) == 0);
    pthread_barrier_wait(&ready);
    int sync[2];
    MUST(pipe(sync) == 0);
    pid_t child = fork();
    MUST(child >= 0);
    if (child == 0) {
        char c;
        close(sync[1]);
        if (read(sync[0], &c, 1) != 1) _exit(3);   /* the parent says when (after the restart) */
        _exit(check("child", 1, 0, 0) ? 1 : 0);
    }
    close(sync[0]);
    deny(SYS_chmod, ENOTTY, 0);
    MUST(check("main before", 1, 0, 1) == 0);
    say("READY");
    e2e_wait_usr1();

    CHECK(prctl(PR_GET_SECCOMP, 0, 0, 0, 0) == SECCOMP_MODE_FILTER, "seccomp mode %d", prctl(PR_GET_SECCOMP, 0, 0, 0, 0));
    CHECK(check("main", 1, 0, 1) == 0, "the main thread's filters differ");
    pthread_barrier_wait(&go);
    pthread_barrier_wait(&done);
    CHECK(thread_bad == 0, "the thread's filters differ");
    pthread_join(t, NULL);
    MUST(write(sync[1], "x", 1) == 1);
    int st;
    CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's filters differ (status 0x%x)", st);
    return e2e_finish();
}
