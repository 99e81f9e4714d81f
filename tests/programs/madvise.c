/* madvise: anonymous regions, each with one advice that shows in its VmFlags (MADV_DONTFORK "dc",
 * DONTDUMP "dd", WIPEONFORK "wf", HUGEPAGE "hg", NOHUGEPAGE "nh", MERGEABLE "mg", SEQUENTIAL "sr",
 * RANDOM "rr"), separated by guard pages so that they do not merge, each with data. After the restart
 * every region has the same VmFlags and data. */
#include "e2e.h"
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
    say("READY");
    e2e_wait_usr1();
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
