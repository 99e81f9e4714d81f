/* threadcreds: threads with credentials of their own (changed with raw system calls, which change only
 * the calling thread; glibc's set*id calls change every thread):
 *   main      root, as started
 *   thread A  groups {5000}, gids 2000, uids 1000: a thread acting for a user (no capabilities left)
 *   thread B  file-system uid 3000 only (a file server's per-thread fsuid), capabilities kept
 * After the restart each thread finds its own Uid, Gid, Groups and CapEff lines in
 * /proc/thread-self/status as they were before the checkpoint.
 *
 * build: threadcreds -pthread
 */
#include "e2e.h"
#include <pthread.h>

static volatile int ready, check_now, failures;

/* the Uid, Gid, Groups and CapEff lines of the calling thread */
static void creds(char *out, size_t n)
{
    FILE *f = fopen("/proc/thread-self/status", "r");
    char line[512];
    out[0] = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Uid:", 4) || !strncmp(line, "Gid:", 4) || !strncmp(line, "Groups:", 7) || !strncmp(line, "CapEff:", 7))
            strncat(out, line, n - strlen(out) - 1);
    if (f) fclose(f);
}

struct worker { const char *name; int kind; char before[2048]; };

static void *run(void *arg)
{
    struct worker *w = arg;
    if (w->kind == 'A') {
        gid_t g = 5000;
        MUST(syscall(SYS_setgroups, 1, &g) == 0 && syscall(SYS_setresgid, 2000, 2000, 2000) == 0 && syscall(SYS_setresuid, 1000, 1000, 1000) == 0);
    } else {
        syscall(SYS_setfsuid, 3000);
        MUST(syscall(SYS_setfsuid, -1) == 3000);
    }
    creds(w->before, sizeof w->before);
    __atomic_add_fetch(&ready, 1, __ATOMIC_SEQ_CST);
    while (!check_now) usleep(1000);
    char now[2048];
    creds(now, sizeof now);
    if (strcmp(now, w->before)) { say("FAIL: %s has credentials\n%s-- instead of --\n%s", w->name, now, w->before); __atomic_add_fetch(&failures, 1, __ATOMIC_SEQ_CST); }
    return NULL;
}

int main(void)
{
    e2e_init();
    MUST(getuid() == 0);
    static struct worker a = { .name = "thread A", .kind = 'A' }, b = { .name = "thread B", .kind = 'B' };
    pthread_t ta, tb;
    MUST(pthread_create(&ta, NULL, run, &a) == 0 && pthread_create(&tb, NULL, run, &b) == 0);
    while (ready < 2) usleep(1000);
    char mine[2048];
    creds(mine, sizeof mine);
    MUST(strcmp(mine, a.before) && strcmp(mine, b.before));
    say("READY");
    e2e_wait_usr1();
    char now[2048];
    creds(now, sizeof now);
    CHECK(!strcmp(now, mine), "the main thread has credentials\n%s-- instead of --\n%s", now, mine);
    check_now = 1;
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    e2e_failures += failures;
    return e2e_finish();
}
