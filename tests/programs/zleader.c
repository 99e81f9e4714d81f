/* zleader [child]: the main thread exits (pthread_exit) while two threads go on: a zombie thread-group leader.
 * One thread holds memory and a file, the other waits for SIGUSR1 (sent to the process: a live thread
 * takes it). After the restart: the main thread is still a zombie (State Z in /proc/PID/status), the
 * threads have their tids, memory and file position, and the process ends with exit(0) from a thread.
 * With "child" that process is a child of the root, which passes SIGUSR1 on and checks its exit status.
 *
 * build: zleader -pthread
 */
#include "e2e.h"
#include <pthread.h>
#include <sys/wait.h>

static pid_t main_pid;
static pid_t tids[2];
static char *mem;
static int fd = -1;
static volatile int ready;

static char leader_state(void)
{
    char path[64], line[256], st = '?';
    snprintf(path, sizeof path, "/proc/%d/status", (int)main_pid);
    FILE *f = fopen(path, "r");
    if (!f) return '!';
    while (fgets(line, sizeof line, f)) if (sscanf(line, "State: %c", &st) == 1) break;
    fclose(f);
    return st;
}

static void *holder(void *arg)
{
    (void)arg;
    tids[0] = gettid();
    __atomic_add_fetch(&ready, 1, __ATOMIC_SEQ_CST);
    for (;;) pause();
    return NULL;
}

static void *waiter(void *arg)
{
    (void)arg;
    tids[1] = gettid();
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    MUST(pthread_sigmask(SIG_UNBLOCK, &s, NULL) == 0);
    __atomic_add_fetch(&ready, 1, __ATOMIC_SEQ_CST);
    while (leader_state() != 'Z') usleep(1000);
    say("READY");
    e2e_wait_usr1();

    CHECK(getpid() == main_pid, "getpid %d, was %d", (int)getpid(), (int)main_pid);
    CHECK(gettid() == tids[1], "tid %d, was %d", (int)gettid(), (int)tids[1]);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d", (int)main_pid, (int)tids[0]);
    CHECK(access(path, F_OK) == 0, "the other thread %d is gone", (int)tids[0]);
    CHECK(leader_state() == 'Z', "the main thread is in state %c, not a zombie", leader_state());
    CHECK(check_fill(mem, 3 << 20, 9) < 0, "memory differs");
    CHECK(lseek(fd, 0, SEEK_CUR) == 12345, "file position %ld", (long)lseek(fd, 0, SEEK_CUR));
    exit(e2e_finish());
    return NULL;
}

int main(int argc, char **argv)
{
    e2e_init();
    if (argc > 1 && !strcmp(argv[1], "child")) {
        e2e_block_usr1(1);
        pid_t c = fork();
        MUST(c >= 0);
        if (c > 0) {
            e2e_block_usr1(0);
            e2e_wait_usr1();
            MUST(kill(c, SIGUSR1) == 0);
            int st;
            CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child ended with status 0x%x", st);
            return e2e_finish();
        }
        e2e_block_usr1(0);
    }
    main_pid = getpid();
    mem = malloc(3 << 20);
    MUST(mem != NULL);
    fill(mem, 3 << 20, 9);
    fd = open("/proc/self/exe", O_RDONLY);
    MUST(fd >= 0 && lseek(fd, 12345, SEEK_SET) == 12345);
    /* SIGUSR1 blocked in the main thread and the holder: the waiter takes it */
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    MUST(pthread_sigmask(SIG_BLOCK, &s, NULL) == 0);
    pthread_t a, b;
    MUST(pthread_create(&a, NULL, holder, NULL) == 0 && pthread_create(&b, NULL, waiter, NULL) == 0);
    while (__atomic_load_n(&ready, __ATOMIC_SEQ_CST) < 2) usleep(1000);
    pthread_exit(NULL);
}
