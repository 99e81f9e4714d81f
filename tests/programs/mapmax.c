/* mapmax: a process with as many memory mappings as vm.max_map_count allows (one large region cut into
 * one-page regions of alternating protections until mprotect says ENOMEM), so that a checkpoint cannot
 * add the one mapping it needs in the process for a moment. After SIGUSR1 it checks that it still has
 * the same number of mappings and that every writable page holds its data. */
#include "e2e.h"
#include <sys/mman.h>

/* The number of lines of /proc/self/maps, read without allocating (no mapping may be added). */
static int count_maps(void)
{
    static char buf[1 << 16];
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int lines = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++) lines += buf[i] == '\n';
    close(fd);
    return lines;
}

int main(void)
{
    e2e_init();
    const size_t page = 4096, pages = 140000;
    char *base = mmap(NULL, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    MUST(base != MAP_FAILED);
    say("STARTING");   /* stdout's buffer, if any, and say's code paths are in place before the limit */
    size_t cut = 0;
    for (size_t i = 1; i < pages; i += 2) {
        ((size_t *)(base + (i - 1) * page))[0] = i * 2654435761u;
        if (mprotect(base + i * page, page, PROT_READ) != 0) {
            MUST(errno == ENOMEM);
            break;
        }
        cut = i;
    }
    MUST(cut > 0 && cut + 2 < pages);   /* the limit was reached before the region's end */
    /* a cut adds two mappings: one more may still fit; single pages until none does (alternate
     * protections, so that one does not merge with the one before it) */
    for (int k = 0; k < 64; k++) {
        void *p = mmap(NULL, page, k % 2 ? PROT_READ | PROT_EXEC : PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) { MUST(errno == ENOMEM); break; }
    }
    int before = count_maps();
    MUST(before > 1000);
    say("MAPS %d", before);
    say("READY");
    e2e_wait_usr1();
    int after = count_maps();
    CHECK(after == before, "%d mappings after the refused checkpoint, %d before", after, before);
    for (size_t i = 1; i <= cut; i += 2)
        if (((size_t *)(base + (i - 1) * page))[0] != i * 2654435761u) { CHECK(0, "page %zu lost its data", i - 1); break; }
    if (e2e_failures == 0) say("PASS");
    return e2e_failures ? 1 : 0;
}
