/* namedsem: a POSIX named semaphore (sem_open) shared by a process and its child. glibc maps it from a
 * temporary file in /dev/shm that it then links to the semaphore's name and removes, so the mapping
 * shows a removed name of a file that still has another (as Python's multiprocessing semaphores do
 * with the forkserver and spawn start methods). Value 3; the child takes one (2) before READY. After
 * SIGUSR1: the value is 2, the child posts through its own mapping and the parent sees 3 (the page is
 * still shared), and sem_open by the name still reaches the same semaphore.
 * build: namedsem -pthread
 */
#include "e2e.h"
#include <semaphore.h>
#include <sys/wait.h>

int main(void)
{
    e2e_init();
    char name[64];
    snprintf(name, sizeof name, "/ckpt-namedsem-%d", (int)getpid());
    sem_t *s = sem_open(name, O_CREAT | O_EXCL, 0600, 3);
    MUST(s != SEM_FAILED);
    int go[2];
    MUST(pipe(go) == 0);
    e2e_block_usr1(1);
    pid_t c = fork();
    MUST(c >= 0);
    if (c == 0) {
        MUST(sem_wait(s) == 0);
        char b;
        if (read(go[0], &b, 1) != 1) _exit(2);
        _exit(sem_post(s) == 0 ? 0 : 3);
    }
    e2e_block_usr1(0);
    int v = 0;
    for (int i = 0; i < 500 && (sem_getvalue(s, &v) != 0 || v != 2); i++) sleep_full(0.01);
    MUST(v == 2);
    say("READY");
    e2e_wait_usr1();

    CHECK(sem_getvalue(s, &v) == 0 && v == 2, "the value is %d, want 2", v);
    CHECK(write(go[1], "x", 1) == 1, "cannot tell the child");
    int st;
    CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child failed (status 0x%x)", st);
    CHECK(sem_getvalue(s, &v) == 0 && v == 3, "after the child's post the value is %d, want 3 (not shared any more?)", v);
    sem_t *again = sem_open(name, 0);
    CHECK(again != SEM_FAILED, "sem_open(%s) after the restart: %s", name, strerror(errno));
    if (again != SEM_FAILED) {
        CHECK(sem_trywait(again) == 0 && sem_getvalue(s, &v) == 0 && v == 2, "the semaphore opened by name is another one (value %d)", v);
        sem_close(again);
    }
    sem_unlink(name);
    return e2e_finish();
}
