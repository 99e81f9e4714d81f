/* tree N MiB READYFILE: a process tree of N processes (the root and N-1 children, all in the root's
 * process group), each with MiB of touched, non-zero memory, sleeping; prints READY to READYFILE once
 * every child is ready. Used by bench/run.sh for the process-tree case. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

int main(int argc, char **argv)
{
    if (argc != 4) { fprintf(stderr, "usage: tree N MiB READYFILE\n"); return 2; }
    syscall(SYS_close_range, 3, ~0U, 0);
    int n = atoi(argv[1]);
    size_t bytes = (size_t)atoi(argv[2]) << 20;
    if (setpgid(0, 0) != 0) { perror("setpgid"); return 1; }
    int p[2];
    if (pipe(p) != 0) return 1;
    for (int i = 1; i < n; i++) {
        pid_t c = fork();
        if (c < 0) { perror("fork"); return 1; }
        if (c == 0) {
            close(p[0]);
            unsigned char *m = malloc(bytes);
            if (!m) _exit(1);
            for (size_t j = 0; j < bytes; j++) m[j] = (unsigned char)(j * 31 + i) | 1;
            if (write(p[1], "x", 1) != 1) _exit(1);
            close(p[1]);
            for (;;) pause();
        }
    }
    close(p[1]);
    unsigned char *m = malloc(bytes);
    if (!m) return 1;
    memset(m, 0x5a, bytes);
    char b;
    for (int i = 1; i < n; i++) if (read(p[0], &b, 1) != 1) return 1;
    close(p[0]);
    FILE *f = fopen(argv[3], "w");
    if (!f) return 1;
    fprintf(f, "READY\n");
    fclose(f);
    for (;;) pause();
}
