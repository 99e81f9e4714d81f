/* cow: a parent and two children forked from it share the copy-on-write pages of a 32 MiB region:
 * after the fork the first child wrote pages 0-63, the second dropped pages 64-127 (MADV_DONTNEED) and
 * wrote pages 128-159, the parent wrote pages 160-191. On SIGUSR1 (after a restart) each checks its own
 * contents, and each child checks, in /proc/PID/pagemap (page frames, shown to root), that every page
 * neither it nor the parent wrote is still the parent's page (one physical page, not a copy), and that
 * the pages it wrote are its own. The same for a private mapping of a 16-page file (argv[1]): pages 0-7
 * written by the parent before the fork (copies shared with the children), page 0 written again by the
 * first child after it; pages 8-15 never written (the file's). Prints "COW child1 child2", then "READY". */
#include "e2e.h"
#include <sys/mman.h>
#include <sys/wait.h>

#define PAGES 8192
#define PG 4096

static uint8_t *mem, *fmem;

/* The first page of [from, to) of the file mapping that does not hold generation `gen`, or -1. */
static int fbad(int from, int to, int gen)
{
    for (int i = from; i < to; i++)
        if (check_fill(fmem + (size_t)i * PG, PG, (uint64_t)i * 977 + gen) >= 0) return i;
    return -1;
}

/* Fills pages [from, to) with the pattern of generation `gen` (each page its own). */
static void put(int from, int to, int gen)
{
    for (int i = from; i < to; i++) fill(mem + (size_t)i * PG, PG, (uint64_t)i * 131 + gen);
}

/* The first page of [from, to) that does not hold generation `gen` (gen -1: zeros), or -1. */
static int bad(int from, int to, int gen)
{
    for (int i = from; i < to; i++)
    {
        const uint8_t *p = mem + (size_t)i * PG;
        if (gen < 0) { for (int k = 0; k < PG; k++) if (p[k]) return i; }
        else if (check_fill(p, PG, (uint64_t)i * 131 + gen) >= 0) return i;
    }
    return -1;
}

static uint64_t frame(int fd, uint8_t *base, int page)
{
    uint64_t e = 0;
    if (pread(fd, &e, 8, (off_t)(((uintptr_t)base / PG + page) * 8)) != 8) return 0;
    return (e >> 63) ? (e & ((1ULL << 55) - 1)) : 0;
}

/* In a child: pages [from, to) of `base` are (shared 1) or are not (shared 0) the parent's very pages. */
static int sharing_of(uint8_t *base, int from, int to, int shared)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/pagemap", (int)getppid());
    int mine = open("/proc/self/pagemap", O_RDONLY), theirs = open(path, O_RDONLY);
    int wrong = -1;
    for (int i = from; i < to && wrong < 0; i++)
    {
        uint64_t a = frame(mine, base, i), b = frame(theirs, base, i);
        if (shared ? (a == 0 || a != b) : (a != 0 && a == b)) wrong = i;
    }
    close(mine);
    close(theirs);
    return wrong;
}

static int sharing(int from, int to, int shared) { return sharing_of(mem, from, to, shared); }

static int child(int which)
{
    e2e_child_wait_usr1();
    int failures = 0, p;
#define EXPECT(cond, fmt, ...) do { if (!(cond)) { failures++; say("FAIL: child %d: " fmt, which, __VA_ARGS__); } } while (0)
    if (which == 1)
    {
        EXPECT((p = bad(0, 64, 1)) < 0, "page %d is not what it wrote", p);
        EXPECT((p = bad(64, PAGES, 0)) < 0, "page %d is not the parent's content from before the fork", p);
        EXPECT((p = sharing(64, 160, 1)) < 0, "page %d is not shared with the parent any more", p);
        EXPECT((p = sharing(192, PAGES, 1)) < 0, "page %d is not shared with the parent any more", p);
        EXPECT((p = sharing(0, 64, 0)) < 0, "page %d it wrote is the parent's", p);
        EXPECT((p = fbad(0, 1, 11)) < 0, "file page %d is not what it wrote", p);
        EXPECT((p = fbad(1, 8, 9)) < 0, "file page %d is not the parent's copy", p);
        EXPECT((p = fbad(8, 16, 7)) < 0, "file page %d is not the file's", p);
        EXPECT((p = sharing_of(fmem, 1, 8, 1)) < 0, "file page %d is not shared with the parent any more", p);
        EXPECT((p = sharing_of(fmem, 0, 1, 0)) < 0, "file page %d it wrote is the parent's", p);
    }
    else
    {
        EXPECT((p = bad(0, 64, 0)) < 0, "page %d is not the parent's content from before the fork", p);
        EXPECT((p = bad(64, 128, -1)) < 0, "dropped page %d is not zero", p);
        EXPECT((p = bad(128, 160, 2)) < 0, "page %d is not what it wrote", p);
        EXPECT((p = bad(160, PAGES, 0)) < 0, "page %d is not the parent's content from before the fork", p);
        EXPECT((p = sharing(0, 64, 1)) < 0, "page %d is not shared with the parent any more", p);
        EXPECT((p = sharing(192, PAGES, 1)) < 0, "page %d is not shared with the parent any more", p);
        EXPECT((p = sharing(128, 192, 0)) < 0, "page %d written since the fork is the parent's", p);
    }
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    e2e_init();
    MUST(argc == 2);
    int f = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    MUST(f >= 0 && ftruncate(f, 16 * PG) == 0);
    fmem = mmap(NULL, 16 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
    MUST(fmem != MAP_FAILED);
    for (int i = 0; i < 16; i++) fill(fmem + (size_t)i * PG, PG, (uint64_t)i * 977 + 7);
    MUST(munmap(fmem, 16 * PG) == 0);
    fmem = mmap(NULL, 16 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, f, 0);
    MUST(fmem != MAP_FAILED);
    close(f);
    for (int i = 0; i < 8; i++) fill(fmem + (size_t)i * PG, PG, (uint64_t)i * 977 + 9);
    mem = mmap(NULL, (size_t)PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MUST(mem != MAP_FAILED);
    put(0, PAGES, 0);
    int ready[2];
    MUST(pipe(ready) == 0);
    e2e_block_usr1(1);
    pid_t c1 = fork();
    MUST(c1 >= 0);
    if (c1 == 0)
    {
        put(0, 64, 1);
        fill(fmem, PG, 11);
        MUST(write(ready[1], "1", 1) == 1);
        _exit(child(1));
    }
    pid_t c2 = fork();
    MUST(c2 >= 0);
    if (c2 == 0)
    {
        MUST(madvise(mem + 64 * PG, 64 * PG, MADV_DONTNEED) == 0);
        put(128, 160, 2);
        MUST(write(ready[1], "2", 1) == 1);
        _exit(child(2));
    }
    e2e_block_usr1(0);
    char b[2];
    MUST(read_full(ready[0], b, 2) == 2);
    close(ready[0]);
    close(ready[1]);
    put(160, 192, 3);
    say("COW %d %d", c1, c2);
    say("READY");
    e2e_wait_usr1();

    int p;
    CHECK((p = bad(0, 160, 0)) < 0, "page %d is not its content", p);
    CHECK((p = bad(160, 192, 3)) < 0, "page %d is not what it wrote", p);
    CHECK((p = bad(192, PAGES, 0)) < 0, "page %d is not its content", p);
    CHECK((p = fbad(0, 8, 9)) < 0, "file page %d is not what it wrote", p);
    CHECK((p = fbad(8, 16, 7)) < 0, "file page %d is not the file's", p);
    MUST(kill(c1, SIGUSR1) == 0 && kill(c2, SIGUSR1) == 0);
    e2e_child_verdict(c1, "child 1");
    e2e_child_verdict(c2, "child 2");
    return e2e_finish();
}
