/* Many small regions: 6000 one-page regions of alternating protections, each writable one holding its
 * own data, and a few threads. After restart every page must hold its data and every region its
 * protection (the regions are rebuilt in batches, their pages written after the batch). Also, where the
 * kernel has them (Linux 6.13): guard pages in two adjoining regions without any data (read-only, then
 * read-write: their guard pages are one run to the kernel's scan), at the end of the first and the start
 * of the second, and in the middle of a third; they must still fault after the restart, the pages
 * around them must not. */
#define _GNU_SOURCE
#include "e2e.h"
#include "e2e_faults.h"
#include <pthread.h>
#include <sys/mman.h>

#define N 6000

static void *idle(void *a) { (void)a; for (;;) pause(); return NULL; }

/* The guard pattern of the 12 pages at g: 1 where a page is a guard page. */
static const int guard_at[12] = { 0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0 };

static int guards_hold(char *g)
{
    for (int i = 0; i < 12; i++) if (faults(g + i * 4096) != guard_at[i]) return 0;
    return 1;
}

int main(void)
{
    e2e_init();
    size_t page = 4096;
    char *base = mmap(NULL, 2 * N * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MUST(base != MAP_FAILED);
    for (int i = 0; i < N; i++) {
        memset(base + 2 * i * page, (char)(i * 7 + 1), 64);
        ((int *)(base + 2 * i * page))[100] = i;
        MUST(mprotect(base + (2 * i + 1) * page, page, i % 3 == 0 ? PROT_NONE : PROT_READ) == 0);
    }
    pthread_t t[8];
    for (int i = 0; i < 8; i++) MUST(pthread_create(&t[i], NULL, idle, NULL) == 0);
    /* pages 0-3 read-only, 4-7 read-write, 8-11 read-only; guard pages 2-5 (across the first two) and 9 */
    char *g = mmap(NULL, 12 * page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MUST(g != MAP_FAILED);
    MUST(mprotect(g + 4 * page, 4 * page, PROT_READ | PROT_WRITE) == 0);
    int guards = madvise(g + 2 * page, 4 * page, 102 /* MADV_GUARD_INSTALL */) == 0
        && madvise(g + 9 * page, page, 102) == 0;
    /* (not read before the checkpoint: regions without any page, whose guard pages are found by one scan) */
    say("READY");
    e2e_wait_usr1();
    if (guards) CHECK(guards_hold(g), "the guard pages of regions without data are not where they were after the restart");

    int wrong = 0;
    for (int i = 0; i < N; i++) {
        char *p = base + 2 * i * page;
        for (int k = 0; k < 64; k++) if (p[k] != (char)(i * 7 + 1)) { wrong++; break; }
        if (((int *)p)[100] != i) wrong++;
    }
    CHECK(wrong == 0, "%d pages lost their data", wrong);
    /* the protections, from /proc/self/maps: the pages between the data pages */
    FILE *m = fopen("/proc/self/maps", "r");
    MUST(m != NULL);
    char line[512];
    int none = 0, ro = 0;
    unsigned long lo = (unsigned long)base, hi = lo + 2 * N * page;
    while (fgets(line, sizeof line, m)) {
        unsigned long s, e;
        char perms[5];
        if (sscanf(line, "%lx-%lx %4s", &s, &e, perms) != 3 || s < lo || e > hi) continue;
        if (strncmp(perms, "---p", 4) == 0) none += (int)((e - s) / page);
        if (strncmp(perms, "r--p", 4) == 0) ro += (int)((e - s) / page);
    }
    fclose(m);
    CHECK(none == (N + 2) / 3 && ro == N - (N + 2) / 3, "%d PROT_NONE and %d read-only pages, want %d and %d", none, ro, (N + 2) / 3, N - (N + 2) / 3);
    return e2e_finish();
}
