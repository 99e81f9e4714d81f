/* The program demo.sh checkpoints and restarts: every 0.3 s it changes a word of a 1 MiB heap
 * buffer, then appends a line to a log file with its pid, a tick counter, a checksum of the whole
 * heap buffer and the time it started. All of that lives in its memory, so after a restart the
 * counter, the checksum and the start time go on from where they were.
 * Usage: counter LOGFILE */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define WORDS (1 << 18)                    /* 1 MiB of uint32_t */

int main(int argc, char **argv)
{
    if (argc != 2) { fprintf(stderr, "usage: %s LOGFILE\n", argv[0]); return 2; }
    close_range(3, ~0U, 0);                /* nothing inherited beyond stdin/stdout/stderr */
    FILE *log = fopen(argv[1], "a");
    if (!log) { perror(argv[1]); return 1; }
    uint32_t *heap = malloc(WORDS * sizeof *heap);
    if (!heap) return 1;
    for (uint32_t i = 0; i < WORDS; i++) heap[i] = i * 2654435761u;
    time_t started = time(NULL);
    char since[16];
    strftime(since, sizeof since, "%H:%M:%S", localtime(&started));
    for (unsigned long tick = 0;; tick++) {
        heap[(tick * 7919) % WORDS] ^= (uint32_t)(tick * 40503u + 1);
        uint32_t sum = 0;
        for (uint32_t i = 0; i < WORDS; i++) sum = (sum << 5 | sum >> 27) ^ heap[i];
        fprintf(log, "pid %d  tick %4lu  heap checksum %08x  running since %s\n", getpid(), tick, sum, since);
        fflush(log);
        usleep(300000);
    }
}
