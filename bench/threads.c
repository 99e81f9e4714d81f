/* threads N READYFILE [PERIOD_US]: a process with N threads (the main one included), each sleeping in a
 * loop of PERIOD_US microseconds (default 100000); prints READY to READYFILE once every thread runs.
 * Used by bench/run.sh for the many-threads cases (a short period: a process whose threads keep the
 * CPUs busy waking up). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>

static volatile int started;
static useconds_t period = 100000;
static void *worker(void *arg) { (void)arg; __sync_fetch_and_add(&started, 1); for (;;) usleep(period); return NULL; }

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) { fprintf(stderr, "usage: threads N READYFILE [PERIOD_US]\n"); return 2; }
    if (argc == 4) period = (useconds_t)atoi(argv[3]);
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
