/* madvise: anonymous regions, each with one advice that shows in its VmFlags (MADV_DONTFORK "dc",
 * DONTDUMP "dd", WIPEONFORK "wf", HUGEPAGE "hg", NOHUGEPAGE "nh", MERGEABLE "mg", SEQUENTIAL "sr",
 * RANDOM "rr"), separated by guard pages so that they do not merge, each with data. After the restart
 * every region has the same VmFlags and data. Also, where the kernel has them: guard pages installed in
 * the middle of a written region (MADV_GUARD_INSTALL: they fault, the pages around keep their data),
 * and a droppable mapping (MAP_DROPPABLE, VmFlags "dp", as glibc's getrandom state), which stays one. */
#include "e2e.h"
#include "e2e_faults.h"
#include <sys/mman.h>

#define LEN (16 * 4096)

static const struct { int advice; const char *flag; } advices[] = {
    { MADV_DONTFORK, "dc" }, { MADV_DONTDUMP, "dd" }, { MADV_WIPEONFORK, "wf" }, { MADV_HUGEPAGE, "hg" },
    { MADV_NOHUGEPAGE, "nh" }, { MADV_MERGEABLE, "mg" }, { MADV_SEQUENTIAL, "sr" }, { MADV_RANDOM, "rr" },
};
#define N (sizeof advices / sizeof advices[0])

int main(void)
{
    e2e_init();
    char *raw = mmap(NULL, (2 * N + 1) * LEN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MUST(raw != MAP_FAILED);
    static char before[N][512];
    for (size_t i = 0; i < N; i++) {
        char *r = raw + (2 * i + 1) * LEN;
        MUST(mprotect(r, LEN, PROT_READ | PROT_WRITE) == 0);
        fill(r, LEN, 40 + i);
        MUST(madvise(r, LEN, advices[i].advice) == 0);
        long locked;
        region_info(r, before[i], sizeof before[i], &locked);
        char want[8];
        snprintf(want, sizeof want, " %s", advices[i].flag);
        MUST(strstr(before[i], want) != NULL);
    }
    /* guard pages: pages 4-5 of 8, between data (Linux 6.13) */
    char *g = mmap(NULL, 8 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MUST(g != MAP_FAILED);
    fill(g, 8 * 4096, 77);
    int guards = madvise(g + 4 * 4096, 2 * 4096, 102 /* MADV_GUARD_INSTALL */) == 0;
    if (guards) MUST(faults(g + 4 * 4096));
    /* a droppable mapping (Linux 6.11) */
    char *dp = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | 0x08 /* MAP_DROPPABLE */, -1, 0);
    char dpflags[512] = "";
    long dplocked;
    if (dp != MAP_FAILED) { memset(dp, 7, 4 * 4096); region_info(dp, dpflags, sizeof dpflags, &dplocked); MUST(strstr(dpflags, " dp") != NULL); }
    say("READY");
    e2e_wait_usr1();
    if (guards) {
        CHECK(faults(g + 4 * 4096) && faults(g + 5 * 4096 + 100), "the guard pages do not fault after the restart");
        int same = check_fill(g, 4 * 4096, 77) < 0;
        for (size_t i = 6 * 4096; i < 8 * 4096 && same; i++) same = (uint8_t)g[i] == pat(i, 77);
        CHECK(same, "the pages around the guard pages lost their data");
    }
    if (dp != MAP_FAILED) {
        char after[512];
        region_info(dp, after, sizeof after, &dplocked);
        CHECK(strstr(after, " dp") != NULL, "the droppable mapping is not one any more: '%s'", after);
        for (int i = 0; i < 4 * 4096; i++) if (dp[i] != 0 && dp[i] != 7) { CHECK(0, "the droppable mapping holds %d at %d", dp[i], i); break; }
    }
    for (size_t i = 0; i < N; i++) {
        char *r = raw + (2 * i + 1) * LEN;
        char after[512];
        long locked;
        region_info(r, after, sizeof after, &locked);
        CHECK(strcmp(before[i], after) == 0, "region %zu (%s): VmFlags were '%s', now '%s'", i, advices[i].flag, before[i], after);
        CHECK(check_fill(r, LEN, 40 + i) < 0, "region %zu (%s): data differ", i, advices[i].flag);
    }
    return e2e_finish();
}
