/* vdsogone: a process that unmapped [vdso] and [vvar] (keeping [vvar_vclock] where the kernel has one),
 * as a sandbox or a test of the vDSO does: the restart must leave them unmapped and keep the rest (it
 * refused the layout before). Only raw syscalls after the unmap: glibc's clock calls would jump into the
 * vDSO. */
#include "e2e.h"
#include <sys/mman.h>

/* The start and end of the mapping named `name` in /proc/self/maps; 0 if there is none. */
static int find(const char *name, unsigned long *lo, unsigned long *hi)
{
    char buf[65536];
    int fd = open("/proc/self/maps", O_RDONLY);
    MUST(fd >= 0);
    ssize_t n = read_full(fd, buf, sizeof buf - 1);
    close(fd);
    MUST(n > 0);
    buf[n] = 0;
    for (char *line = buf; line && *line; ) {
        char *next = strchr(line, '\n');
        if (next) *next++ = 0;
        size_t ln = strlen(line), nn = strlen(name);
        if (ln >= nn && !strcmp(line + ln - nn, name) && sscanf(line, "%lx-%lx", lo, hi) == 2) return 1;
        line = next;
    }
    return 0;
}

int main(void)
{
    e2e_init();
    unsigned long lo, hi;
    MUST(find("[vdso]", &lo, &hi));
    MUST(syscall(SYS_munmap, lo, hi - lo) == 0);
    if (find("[vvar]", &lo, &hi)) MUST(syscall(SYS_munmap, lo, hi - lo) == 0);
    unsigned long clo = 0, chi = 0;
    int vclock = find("[vvar_vclock]", &clo, &chi);
    say("READY");
    e2e_wait_usr1();
    CHECK(!find("[vdso]", &lo, &hi), "[vdso] is mapped again at %lx", lo);
    CHECK(!find("[vvar]", &lo, &hi), "[vvar] is mapped again at %lx", lo);
    if (vclock) CHECK(find("[vvar_vclock]", &lo, &hi) && lo == clo && hi == chi, "[vvar_vclock] moved or went (%lx-%lx, was %lx-%lx)", lo, hi, clo, chi);
    struct timespec ts;
    CHECK(syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts) == 0, "clock_gettime");
    return e2e_finish();
}
