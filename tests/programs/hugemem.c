/* hugemem huge|small: a region of 2 MiB-aligned blocks whose every page holds data, one block only half
 * present, and the same data reached through a second, unaligned region. After the restart the data
 * must be intact, the resident size of each region the same as before, and the regions' flags
 * unchanged; with "huge" (restarted with --huge-pages) the fully present blocks must be transparent
 * huge pages, with "small" none may be. */
#include "e2e.h"
#include <sys/mman.h>

#define MB (1UL << 20)
#define BLOCK (2 * MB)
#define DENSE (12 * MB)           /* six full blocks */
#define LEN (DENSE + BLOCK)       /* and a seventh, half present */

struct smaps { long rss_kb, huge_kb; char flags[512]; };

/* The Rss, AnonHugePages and VmFlags lines of the region that starts at addr. */
static int read_smaps(void *addr, struct smaps *out)
{
    memset(out, 0, sizeof *out);
    out->rss_kb = out->huge_kb = -1;
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return 0;
    char line[512];
    int in = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) { in = s == (unsigned long)addr; continue; }
        if (!in) continue;
        sscanf(line, "Rss: %ld kB", &out->rss_kb);
        sscanf(line, "AnonHugePages: %ld kB", &out->huge_kb);
        if (!strncmp(line, "VmFlags:", 8)) { snprintf(out->flags, sizeof out->flags, "%s", line + 8); break; }
    }
    fclose(f);
    return out->rss_kb >= 0;
}

int main(int argc, char **argv)
{
    e2e_init();
    MUST(argc == 2);
    int huge = !strcmp(argv[1], "huge");
    /* both regions inside one PROT_NONE reservation, apart: neither merges with a neighbour */
    char *raw = mmap(NULL, 2 * LEN + 4 * BLOCK, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    MUST(raw != MAP_FAILED);
    char *p = (char *)(((unsigned long)raw + 2 * BLOCK - 1) & ~(BLOCK - 1));   /* 2 MiB-aligned, not at the start */
    MUST(mprotect(p, LEN, PROT_READ | PROT_WRITE) == 0);
    fill(p, DENSE, 7);
    for (size_t off = DENSE; off < LEN; off += 2 * 4096) fill(p + off, 4096, off);   /* every other page */
    /* a second region, not aligned, fully present: blocks only inside it may become huge */
    char *q = p + LEN + BLOCK + 3 * 4096;
    MUST(mprotect(q, 5 * MB + 4096 * 3, PROT_READ | PROT_WRITE) == 0);
    fill(q, 5 * MB + 4096 * 3, 11);
    struct smaps before, qbefore;
    MUST(read_smaps(p, &before) && read_smaps(q, &qbefore));
    say("READY region %p rss %ld kB", (void *)p, before.rss_kb);
    e2e_wait_usr1();
    /* the sizes first: reading the untouched pages below may give each a page of its own (a kernel with
     * no shared zero page, as a PVM guest booted with pvm_no_zero_page=1) */
    struct smaps after, qafter;
    MUST(read_smaps(p, &after) && read_smaps(q, &qafter));

    long bad = check_fill(p, DENSE, 7);
    CHECK(bad < 0, "dense data differs at offset %ld", bad);
    for (size_t off = DENSE; off < LEN; off += 4096) {
        if ((off - DENSE) % (2 * 4096) == 0) { bad = check_fill(p + off, 4096, off); CHECK(bad < 0, "sparse page at %zu differs at %ld", off, bad); }
        else { int zero = 1; for (size_t i = 0; i < 4096; i++) zero &= p[off + i] == 0; CHECK(zero, "untouched page at %zu is not zero", off); }
    }
    bad = check_fill(q, 5 * MB + 4096 * 3, 11);
    CHECK(bad < 0, "unaligned region differs at offset %ld", bad);
    CHECK(!strcmp(after.flags, before.flags), "flags '%s', were '%s'", after.flags, before.flags);
    CHECK(!strcmp(qafter.flags, qbefore.flags), "unaligned region flags '%s', were '%s'", qafter.flags, qbefore.flags);
    /* with THP "always" the kernel itself fills aligned blocks with huge pages on a fault, before and
     * after alike but not block for block: only the data and the flags are compared then */
    char thp[128] = "";
    FILE *t = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (t) { if (!fgets(thp, sizeof thp, t)) thp[0] = 0; fclose(t); }
    if (strstr(thp, "[always]")) return e2e_finish();
    CHECK(after.rss_kb == before.rss_kb, "resident %ld kB, was %ld kB", after.rss_kb, before.rss_kb);
    CHECK(qafter.rss_kb == qbefore.rss_kb, "unaligned region resident %ld kB, was %ld kB", qafter.rss_kb, qbefore.rss_kb);
    if (huge) {
        CHECK(after.huge_kb == (long)(DENSE / 1024), "huge pages %ld kB, want %lu kB (the full blocks only)", after.huge_kb, DENSE / 1024);
        CHECK(qafter.huge_kb <= 4096, "unaligned region has %ld kB of huge pages, more than its aligned blocks", qafter.huge_kb);
    } else {
        CHECK(after.huge_kb == before.huge_kb, "huge pages %ld kB, were %ld kB", after.huge_kb, before.huge_kb);
    }
    return e2e_finish();
}
