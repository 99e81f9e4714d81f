/* Memory bandwidth reference for bench/run.sh: memcpy of a MiB-sized buffer (default 1024) several
 * times; prints "best_GBps median_GBps first_touch_GBps populate_GBps parallel_fill_GBps" (GB = 1e9
 * bytes per second). The last three are what new memory costs: memset of freshly mapped memory (one
 * page fault per page), mmap(MAP_POPULATE) (the kernel allocates and zeroes the pages itself, as it
 * does for a restart's process_vm_writev or a tmpfs write), and freshly mapped memory filled by one
 * thread per CPU copying from a 1 MiB buffer: the most a restart, which must fill that much new memory
 * with the image's pages, could reach here. Usage: memcpy [MiB] [reps] */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static char fill_src[1 << 20];
static char *fill_dst;
static size_t fill_part;

static void *fill_run(void *arg)
{
    char *d = fill_dst + (size_t)arg * fill_part;
    for (size_t o = 0; o + sizeof fill_src <= fill_part; o += sizeof fill_src) memcpy(d + o, fill_src, sizeof fill_src);
    return NULL;
}

/* GB/s of n bytes of new memory filled by one thread per CPU (at most 64), or 0 when it cannot be mapped. */
static double parallel_fill(size_t n)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = cpus < 1 ? 1 : cpus > 64 ? 64 : (int)cpus;
    memset(fill_src, 0x3c, sizeof fill_src);
    fill_dst = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (fill_dst == MAP_FAILED) return 0;
    fill_part = n / threads / sizeof fill_src * sizeof fill_src;
    pthread_t t[64];
    double t0 = now();
    for (long i = 0; i < threads; i++) pthread_create(&t[i], NULL, fill_run, (void *)i);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    double gbps = fill_part * threads / (now() - t0) / 1e9;
    munmap(fill_dst, n);
    return gbps;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 1024;
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    if (reps < 1 || reps > 100) reps = 5;
    size_t n = mib << 20;
    char *src = aligned_alloc(4096, n), *dst = aligned_alloc(4096, n);
    if (!src || !dst) { perror("aligned_alloc"); return 1; }
    double f0 = now();
    memset(src, 0x5a, n);                  /* fault both buffers in before timing the copies */
    double first_touch = n / (now() - f0) / 1e9;
    memset(dst, 0xa5, n);
    double gbps[100];
    unsigned sink = 0;
    for (int r = 0; r < reps; r++) {
        src[(size_t)r * 4096 % n] = (char)r;
        double t0 = now();
        memcpy(dst, src, n);
        double t1 = now();
        sink += (unsigned char)dst[(size_t)r * 4096 % n];
        gbps[r] = n / (t1 - t0) / 1e9;
    }
    qsort(gbps, reps, sizeof gbps[0], cmp);
    double p0 = now();
    void *pop = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    double populate = n / (now() - p0) / 1e9;
    if (pop == MAP_FAILED) populate = 0;
    else munmap(pop, n);
    double fill = parallel_fill(n);
    printf("%.2f %.2f %.2f %.2f %.2f\n", gbps[reps - 1], gbps[reps / 2], first_touch, populate, fill);
    return sink == 0xffffffff;             /* keeps the copies observable */
}
