/* threads N READYFILE: a process with N threads (the main one included), each sleeping in a loop;
 * prints READY to READYFILE once every thread runs. Used by bench/run.sh for the many-threads case. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>

static volatile int started;
static void *worker(void *arg) { (void)arg; __sync_fetch_and_add(&started, 1); for (;;) usleep(100000); return NULL; }

int main(int argc, char **argv)
{
    if (argc != 3) { fprintf(stderr, "usage: threads N READYFILE\n"); return 2; }
    syscall(SYS_close_range, 3, ~0U, 0);   /* nothing inherited beyond stdio */
    int n = atoi(argv[1]);
    for (int i = 1; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, NULL) != 0) { perror("pthread_create"); return 1; }
    }
    while (started < n - 1) usleep(1000);
    FILE *f = fopen(argv[2], "w");
    if (!f) return 1;
    fprintf(f, "READY\n");
    fclose(f);
    for (;;) pause();
}
