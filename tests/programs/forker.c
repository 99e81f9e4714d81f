/* forker: a tree that forks all the time: 6 workers, each forking and reaping a short-lived child in a
 * loop and counting them in shared memory. After restart every worker must still be there and counting
 * (checked by root), and the root's own fork loop goes on. */
#include "e2e.h"
#include <sys/mman.h>
#include <sys/wait.h>

#define WORKERS 6

int main(void)
{
    e2e_init();
    volatile long *count = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    MUST(count != MAP_FAILED);
    pid_t w[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        w[i] = fork();
        MUST(w[i] >= 0);
        if (w[i] == 0) {
            signal(SIGUSR1, SIG_DFL);
            for (;;) {
                pid_t c = fork();
                if (c == 0) _exit(5);
                int st;
                if (c > 0 && waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 5) count[i]++;
            }
        }
    }
    while (count[WORKERS - 1] < 10) usleep(1000);
    say("READY");
    while (!e2e_go) {
        pid_t c = fork();
        if (c == 0) _exit(0);
        if (c > 0) waitpid(c, NULL, 0);
    }
    long before[WORKERS];
    for (int i = 0; i < WORKERS; i++) before[i] = count[i];
    usleep(300000);
    for (int i = 0; i < WORKERS; i++) {
        CHECK(count[i] > before[i], "worker %d stopped counting (%ld)", i, count[i]);
        CHECK(kill(w[i], SIGKILL) == 0, "worker %d (pid %d) is gone: %s", i, w[i], strerror(errno));
        int st;
        CHECK(waitpid(w[i], &st, 0) == w[i] && WIFSIGNALED(st), "worker %d not reaped as killed (0x%x)", i, st);
    }
    return e2e_finish();
}
