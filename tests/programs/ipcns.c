/* ipcns [sem]: a tree (parent and child) in an IPC namespace of its own (made by the program:
 * unshare(CLONE_NEWIPC)).
 *   (no argument) the namespace is empty: after the restart both are in one IPC namespace, still empty,
 *                 and a SysV semaphore set made in it then is seen there alone (id 0, the first of a new
 *                 namespace), not among the machine's; the script checks it is not ckpt's namespace
 *   sem           the namespace holds a semaphore set: the checkpoint must refuse (the program checks
 *                 the set is intact afterwards) */
#include "e2e.h"
#include <sched.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/wait.h>

static int objects(const char *file)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/sysvipc/%s", file);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = -1;   /* the header line */
    while (fgets(line, sizeof line, f)) n++;
    fclose(f);
    return n;
}

int main(int argc, char **argv)
{
    e2e_init();
    int with_sem = argc > 1 && strcmp(argv[1], "sem") == 0;
    MUST(unshare(CLONE_NEWIPC) == 0);
    int sem = -1;
    if (with_sem) {
        sem = semget(IPC_PRIVATE, 1, 0600);
        MUST(sem >= 0);
        MUST(semctl(sem, 0, SETVAL, 5) == 0);
    }
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, NULL);   /* the child waits in sigsuspend: nothing may be lost before */
    pid_t c = fork();
    MUST(c >= 0);
    if (c == 0) {
        e2e_wait_usr1();
        CHECK(objects("shm") == 0 && objects("msg") == 0, "child: the namespace holds objects");
        _exit(e2e_failures ? 1 : 0);
    }
    sigprocmask(SIG_UNBLOCK, &block, NULL);
    say("READY");
    e2e_wait_usr1();
    if (with_sem) {
        CHECK(semctl(sem, 0, GETVAL) == 5, "the semaphore set is not intact after the refused checkpoint: %s", strerror(errno));
    } else {
        CHECK(objects("shm") == 0 && objects("sem") == 0 && objects("msg") == 0, "the namespace holds objects after the restart");
        int s2 = semget(IPC_PRIVATE, 1, 0600);
        CHECK(s2 == 0, "a new semaphore set in the namespace has id %d, want 0 (the first of a new namespace)", s2);
        CHECK(objects("sem") == 1, "%d semaphore sets in the namespace, want the one just made", objects("sem"));
        if (s2 >= 0) semctl(s2, 0, IPC_RMID);
    }
    char mine[64], its[64];
    ns_link(getpid(), "ipc", mine, sizeof mine);
    ns_link(c, "ipc", its, sizeof its);
    CHECK(strcmp(mine, its) == 0, "the child is in IPC namespace %s, the parent in %s", its, mine);
    say("NS %s", mine);
    kill(c, SIGUSR1);
    e2e_child_verdict(c, "the child");
    if (sem >= 0) semctl(sem, 0, IPC_RMID);
    return e2e_finish();
}
