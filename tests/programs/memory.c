/* memory DIR: heap, brk, anonymous, sparse, guard, read-only, executable, file-backed (private and shared)
 * and shared anonymous memory, stack data and the vDSO across a checkpoint/restart. */
#include "e2e.h"
#include <setjmp.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>

#define PG 4096UL
#define BIG_LEN (48UL << 20)
#define SPARSE_LEN (64UL << 30)
#define NSMALL 200
#define LARGE_LEN (8UL << 20)
#define FILE_LEN (16 * PG)

static const size_t sparse_touch[] = { 0, 1, 4095, 262144, 1UL << 22, (SPARSE_LEN / PG) - 1, 12345678 };
#define NTOUCH (sizeof sparse_touch / sizeof sparse_touch[0])

static sigjmp_buf fault_jmp;
static volatile sig_atomic_t faulted;
static void on_segv(int sig) { (void)sig; faulted = 1; siglongjmp(fault_jmp, 1); }

/* Does reading (write=0) or writing (write=1) *p fault? */
static int faults(volatile char *p, int write)
{
    faulted = 0;
    if (sigsetjmp(fault_jmp, 1) == 0) {
        if (write) *p = *p; else (void)*p;
    }
    return faulted;
}

/* The permissions /proc/self/maps shows for the mapping holding addr ("rw-p"...). */
static void maps_perms(void *addr, char out[5])
{
    strcpy(out, "????");
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e;
        char perms[5];
        if (sscanf(line, "%lx-%lx %4s", &s, &e, perms) == 3 && (unsigned long)addr >= s && (unsigned long)addr < e) {
            memcpy(out, perms, 5);
            break;
        }
    }
    fclose(f);
}

/* Uses `kib` KiB of stack below the current frame (the stack mapping must grow down). */
static __attribute__((noinline)) int deep_stack(size_t kib)
{
    volatile char big[kib * 1024];
    for (size_t i = 0; i < sizeof big; i += 4096) big[i] = (char)i;
    int sum = 0;
    for (size_t i = 0; i < sizeof big; i += 4096) sum += big[i];
    return sum;
}

static unsigned long vdso_in_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    unsigned long s = 0, e;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "[vdso]")) { sscanf(line, "%lx-%lx", &s, &e); break; }
    if (f) fclose(f);
    return s;
}

static void file_content(const char *path, char *buf, size_t n)
{
    int fd = open(path, O_RDONLY);
    MUST(fd >= 0);
    MUST(read_full(fd, buf, n) == (ssize_t)n);
    close(fd);
}

int main(int argc, char **argv)
{
    e2e_init();
    MUST(argc == 2);
    const char *dir = argv[1];
    char privpath[512], sharedpath[512];
    snprintf(privpath, sizeof privpath, "%s/private.dat", dir);
    snprintf(sharedpath, sizeof sharedpath, "%s/shared.dat", dir);

    /* stack data in main's frame */
    volatile char stackbuf[32768];
    for (size_t i = 0; i < sizeof stackbuf; i++) stackbuf[i] = pat(i, 1);

    /* heap: many small blocks and one large (mmap-backed) block */
    char *small[NSMALL];
    for (int i = 0; i < NSMALL; i++) { MUST((small[i] = malloc(24 + i)) != NULL); fill(small[i], 24 + i, 100 + i); }
    char *large = malloc(LARGE_LEN);
    MUST(large != NULL);
    fill(large, LARGE_LEN, 2);

    /* brk growth */
    char *brk0 = sbrk(0);
    MUST(sbrk(1 << 20) != (void *)-1);
    fill(brk0, 1 << 20, 3);
    char *brk1 = sbrk(0);

    /* a big anonymous mapping with a pattern */
    char *big = mmap(NULL, BIG_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MUST(big != MAP_FAILED);
    for (size_t i = 0; i < BIG_LEN; i += 8) *(uint64_t *)(big + i) = i * 0x9E3779B97F4A7C15ull;

    /* a huge sparse region with a few touched pages */
    char *sparse = mmap(NULL, SPARSE_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    MUST(sparse != MAP_FAILED);
    for (size_t k = 0; k < NTOUCH; k++) fill(sparse + sparse_touch[k] * PG, PG, 1000 + k);

    /* guard page between two data pages, holding data of its own */
    char *guard = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MUST(guard != MAP_FAILED);
    fill(guard, 3 * PG, 4);
    MUST(mprotect(guard + PG, PG, PROT_NONE) == 0);

    /* read-only region with data */
    char *ro = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MUST(ro != MAP_FAILED);
    fill(ro, 4 * PG, 5);
    MUST(mprotect(ro, 4 * PG, PROT_READ) == 0);

    /* executable region: mov eax, 42; ret */
    unsigned char *code = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MUST(code != MAP_FAILED);
    static const unsigned char fn42[] = { 0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3 };
    memcpy(code, fn42, sizeof fn42);
    MUST(mprotect(code, PG, PROT_READ | PROT_EXEC) == 0);
    int (*f42)(void) = (int (*)(void))code;
    MUST(f42() == 42);

    /* private file mapping, modified (copy-on-write: the file must not change) */
    static char filebuf[FILE_LEN], check[FILE_LEN];
    fill(filebuf, FILE_LEN, 6);
    int pf = open(privpath, O_RDWR | O_CREAT | O_TRUNC, 0644);
    MUST(pf >= 0 && write_full(pf, filebuf, FILE_LEN) == FILE_LEN);
    char *priv = mmap(NULL, FILE_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE, pf, 0);
    MUST(priv != MAP_FAILED);
    close(pf);
    fill(priv + 3 * PG, PG, 7);           /* one page modified */
    (void)*(volatile char *)(priv + 5 * PG); /* one page only read */

    /* shared file mapping, written */
    int sf = open(sharedpath, O_RDWR | O_CREAT | O_TRUNC, 0644);
    MUST(sf >= 0 && write_full(sf, filebuf, FILE_LEN) == FILE_LEN);
    char *shared = mmap(NULL, FILE_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, sf, 0);
    MUST(shared != MAP_FAILED);
    close(sf);
    memcpy(shared + 2 * PG, "written-before-checkpoint", 25);
    MUST(msync(shared, FILE_LEN, MS_SYNC) == 0);
    /* its last page read-only for now: a region of its own that may be made writable again */
    char *shared_ro = shared + FILE_LEN - PG;
    MUST(mprotect(shared_ro, PG, PROT_READ) == 0);

    /* shared anonymous memory */
    char *shanon = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    MUST(shanon != MAP_FAILED);
    fill(shanon, 8 * PG, 8);

    /* time through the vDSO */
    unsigned long vdso_aux = getauxval(AT_SYSINFO_EHDR);
    struct timespec mono0;
    clock_gettime(CLOCK_MONOTONIC, &mono0);

    say("SPARSE %lx %lx %zu", (unsigned long)sparse, (unsigned long)(sparse + SPARSE_LEN), NTOUCH);
    say("READY");
    e2e_wait_usr1();

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_segv;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    long bad;
    char perms[5];

    for (size_t i = 0; i < sizeof stackbuf; i++)
        if (stackbuf[i] != (char)pat(i, 1)) { CHECK(0, "stack data differs at %zu", i); break; }
    for (int i = 0; i < NSMALL; i++)
        CHECK((bad = check_fill(small[i], 24 + i, 100 + i)) < 0, "small heap block %d differs at %ld", i, bad);
    CHECK((bad = check_fill(large, LARGE_LEN, 2)) < 0, "large heap block differs at %ld", bad);
    /* the heap still works */
    for (int i = 0; i < NSMALL; i += 2) free(small[i]);
    void *more = malloc(1 << 16);
    CHECK(more != NULL, "malloc after restart failed");
    if (more) { fill(more, 1 << 16, 9); CHECK(check_fill(more, 1 << 16, 9) < 0, "new heap block"); free(more); }
    free(large);

    CHECK(sbrk(0) == brk1, "brk is %p, was %p", sbrk(0), (void *)brk1);
    CHECK((bad = check_fill(brk0, 1 << 20, 3)) < 0, "brk area differs at %ld", bad);
    char *b2 = sbrk(1 << 16);
    CHECK(b2 != (void *)-1, "brk cannot grow after restart: %s", strerror(errno));
    if (b2 != (void *)-1) { memset(b2, 0x77, 1 << 16); CHECK(sbrk(0) == b2 + (1 << 16), "brk growth"); }

    for (size_t i = 0; i < BIG_LEN; i += 8)
        if (*(uint64_t *)(big + i) != i * 0x9E3779B97F4A7C15ull) { CHECK(0, "big mapping differs at offset %zu", i); break; }

    for (size_t k = 0; k < NTOUCH; k++)
        CHECK((bad = check_fill(sparse + sparse_touch[k] * PG, PG, 1000 + k)) < 0, "sparse page %zu differs at %ld", sparse_touch[k], bad);
    static const size_t untouched[] = { 2, 100, 262145, 999999, (SPARSE_LEN / PG) - 2 };
    for (size_t k = 0; k < sizeof untouched / sizeof *untouched; k++) {
        const uint64_t *q = (const uint64_t *)(sparse + untouched[k] * PG);
        for (size_t j = 0; j < PG / 8; j++) if (q[j]) { CHECK(0, "untouched sparse page %zu is not zero", untouched[k]); break; }
    }
    maps_perms(sparse, perms);
    CHECK(strcmp(perms, "rw-p") == 0, "sparse region is %s", perms);

    maps_perms(guard + PG, perms);
    CHECK(strcmp(perms, "---p") == 0, "guard page is %s, expected ---p", perms);
    maps_perms(guard, perms);
    CHECK(strcmp(perms, "rw-p") == 0, "page before guard is %s", perms);
    CHECK(faults(guard + PG + 10, 0), "reading the guard page did not fault");
    CHECK(!faults(guard + 10, 1), "writing the page before the guard faulted");
    CHECK(mprotect(guard + PG, PG, PROT_READ) == 0, "mprotect guard: %s", strerror(errno));
    CHECK((bad = check_fill(guard, 3 * PG, 4)) < 0, "guard area data differs at %ld", bad);

    maps_perms(ro, perms);
    CHECK(strcmp(perms, "r--p") == 0, "read-only region is %s", perms);
    CHECK((bad = check_fill(ro, 4 * PG, 5)) < 0, "read-only data differs at %ld", bad);
    CHECK(faults(ro + 100, 1), "writing the read-only region did not fault");

    maps_perms(code, perms);
    CHECK(strcmp(perms, "r-xp") == 0, "code region is %s", perms);
    CHECK(f42() == 42, "generated function returned something else");

    maps_perms(priv, perms);
    CHECK(strcmp(perms, "rw-p") == 0, "private file mapping is %s", perms);
    for (int p = 0; p < 16; p++) {
        if (p == 3) CHECK((bad = check_fill(priv + 3 * PG, PG, 7)) < 0, "modified private page differs at %ld", bad);
        else CHECK(memcmp(priv + p * PG, filebuf + p * PG, PG) == 0, "private file page %d differs from the file", p);
    }
    file_content(privpath, check, FILE_LEN);
    CHECK(memcmp(check, filebuf, FILE_LEN) == 0, "private.dat changed: copy-on-write data reached the file");
    priv[0] = 'X';
    file_content(privpath, check, FILE_LEN);
    CHECK(check[0] == filebuf[0], "a write to the private mapping after restart reached the file");

    maps_perms(shared, perms);
    CHECK(strcmp(perms, "rw-s") == 0, "shared file mapping is %s", perms);
    CHECK(memcmp(shared + 2 * PG, "written-before-checkpoint", 25) == 0, "shared mapping lost data written before the checkpoint");
    CHECK(memcmp(shared + 4 * PG, filebuf + 4 * PG, PG) == 0, "shared mapping page 4 differs from the file");
    memcpy(shared + 7 * PG + 100, "written-after-restart", 21);
    file_content(sharedpath, check, FILE_LEN);
    CHECK(memcmp(check + 7 * PG + 100, "written-after-restart", 21) == 0, "a write to the shared mapping after restart did not reach the file");
    CHECK(memcmp(check + 2 * PG, "written-before-checkpoint", 25) == 0, "shared.dat lost data written before the checkpoint");
    maps_perms(shared_ro, perms);
    CHECK(strcmp(perms, "r--s") == 0, "the read-only page of the shared file mapping is %s", perms);
    CHECK(mprotect(shared_ro, PG, PROT_READ | PROT_WRITE) == 0, "the read-only page of the shared file mapping cannot be made writable again: %s", strerror(errno));
    if (!faults(shared_ro + 10, 1)) {
        memcpy(shared_ro + 20, "writable-again", 14);
        file_content(sharedpath, check, FILE_LEN);
        CHECK(memcmp(check + FILE_LEN - PG + 20, "writable-again", 14) == 0, "a write to the page made writable again did not reach the file");
    }

    maps_perms(shanon, perms);
    CHECK(strcmp(perms, "rw-s") == 0, "shared anonymous mapping is %s", perms);
    CHECK((bad = check_fill(shanon, 8 * PG, 8)) < 0, "shared anonymous data differs at %ld", bad);
    pid_t child = fork();
    if (child == 0) { shanon[5] = 0x5a; _exit(0); }
    int st;
    CHECK(child > 0 && waitpid(child, &st, 0) == child, "fork/wait after restart");
    CHECK(shanon[5] == 0x5a, "shared anonymous mapping is not shared with a child any more");

    /* the stack still grows down */
    char stackperms[5];
    maps_perms((void *)&stackbuf[0], stackperms);
    CHECK(strcmp(stackperms, "rw-p") == 0, "stack is %s", stackperms);
    deep_stack(2048);
    say("stack grew by 2 MiB");

    /* the vDSO: at the same place, and giving sane time */
    CHECK(vdso_in_maps() == vdso_aux, "vdso at %lx, auxv says %lx", vdso_in_maps(), vdso_aux);
    struct timespec mono1, sys1, real1;
    struct timeval tv;
    CHECK(clock_gettime(CLOCK_MONOTONIC, &mono1) == 0, "clock_gettime");
    syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &sys1);
    double dv = (sys1.tv_sec - mono1.tv_sec) + (sys1.tv_nsec - mono1.tv_nsec) / 1e9;
    CHECK(dv >= 0 && dv < 1, "vDSO monotonic clock is off by %f s from the syscall", dv);
    CHECK(mono1.tv_sec > mono0.tv_sec || (mono1.tv_sec == mono0.tv_sec && mono1.tv_nsec >= mono0.tv_nsec), "monotonic clock went back");
    CHECK(gettimeofday(&tv, NULL) == 0, "gettimeofday");
    syscall(SYS_clock_gettime, CLOCK_REALTIME, &real1);
    double dr = real1.tv_sec + real1.tv_nsec / 1e9 - (tv.tv_sec + tv.tv_usec / 1e6);
    CHECK(dr >= -0.001 && dr < 1, "gettimeofday is off by %f s", dr);
    CHECK(labs((long)time(NULL) - (long)real1.tv_sec) <= 1, "time() is off");

    return e2e_finish();
}
