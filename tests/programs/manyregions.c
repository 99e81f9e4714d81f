/* Many small regions: 6000 one-page regions of alternating protections, each writable one holding its
 * own data, and a few threads. After restart every page must hold its data and every region its
 * protection (the regions are rebuilt in batches, their pages written after the batch). */
#define _GNU_SOURCE
#include "e2e.h"
#include <pthread.h>
#include <sys/mman.h>

#define N 6000

static void *idle(void *a) { (void)a; for (;;) pause(); return NULL; }

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
    say("READY");
    e2e_wait_usr1();

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
