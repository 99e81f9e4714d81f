/* regions N READYFILE: a process of 2*N regions, one page each: N pages holding data, each followed by a
 * page without any (PROT_NONE or read-only, alternately), so that no two regions merge. Prints READY to
 * READYFILE. Used by bench/run.sh for the many-regions case (a JVM's or a search engine's thousands of
 * mappings: the cost per region, not per byte). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/syscall.h>

int main(int argc, char **argv)
{
    if (argc != 3) { fprintf(stderr, "usage: regions N READYFILE\n"); return 2; }
    syscall(SYS_close_range, 3, ~0U, 0);   /* nothing inherited beyond stdio */
    int n = atoi(argv[1]);
    size_t page = 4096;
    char *base = mmap(NULL, 2 * (size_t)n * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) { perror("mmap"); return 1; }
    for (int i = 0; i < n; i++) {
        memset(base + 2 * (size_t)i * page, i % 251 + 1, 64);
        if (mprotect(base + (2 * (size_t)i + 1) * page, page, i % 2 ? PROT_READ : PROT_NONE) != 0) { perror("mprotect"); return 1; }
    }
    FILE *f = fopen(argv[2], "w");
    if (!f) return 1;
    fprintf(f, "READY\n");
    fclose(f);
    for (;;) pause();
}
