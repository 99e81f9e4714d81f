/* hugetlb: anonymous memory on huge pages (MAP_HUGETLB; the script gives the machine a pool).
 *   a  private, 8 MiB, huge pages 0 and 2 written (1 and 3 never touched), so 4 MiB resident
 *   b  private, 4 MiB with MAP_NORESERVE, never touched
 *   s  shared with a child, 6 MiB, huge pages 0 and 2 written
 *   v  a SysV segment on huge pages (SHM_HUGETLB, marked for removal), 4 MiB, its first huge page written
 *   f, g  (with DIR, a hugetlbfs mount) a file DIR/f mapped shared (f, 4 MiB, written) and private (g, its
 *      first huge page, written after f was: a private copy)
 * After the restart all are still on 2 MiB huge pages (KernelPageSize, VmFlags ht), a holds its data
 * with the same huge pages resident (Private_ and Shared_Hugetlb), b still has none, and both can be written; s
 * holds its data and is still shared: what the child writes after the restart, the parent reads. */
#include "e2e.h"
#include <sys/mman.h>
#include <sys/shm.h>

#define HP (2UL << 20)

/* the smaps fields of the region starting at addr */
static void region(void *addr, long *kps, long *hugetlb_kb, int *ht)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0;
    *kps = *hugetlb_kb = -1;
    *ht = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) { in = s == (unsigned long)addr; continue; }
        if (!in) continue;
        sscanf(line, "KernelPageSize: %ld kB", kps);
        long v;
        /* shared with the child by fork before the checkpoint, each its own after the restart */
        if (sscanf(line, "Private_Hugetlb: %ld kB", &v) == 1 || sscanf(line, "Shared_Hugetlb: %ld kB", &v) == 1) *hugetlb_kb = (*hugetlb_kb < 0 ? 0 : *hugetlb_kb) + v;
        if (!strncmp(line, "VmFlags:", 8)) { *ht = strstr(line, " ht") != NULL; break; }
    }
    if (f) fclose(f);
}

int main(int argc, char **argv)
{
    e2e_init();
    char *f = NULL, *g = NULL;
    if (argc > 1) {
        char path[4096];
        snprintf(path, sizeof path, "%s/f", argv[1]);
        int fd = open(path, O_CREAT | O_RDWR, 0600);
        MUST(fd >= 0);
        f = mmap(NULL, 2 * HP, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        g = mmap(NULL, HP, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        MUST(f != MAP_FAILED && g != MAP_FAILED);
        close(fd);
        strcpy(f, "in the file");
        strcpy(g + 100, "a private copy");
    }
    char *a = mmap(NULL, 4 * HP, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    char *b = mmap(NULL, 2 * HP, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_NORESERVE, -1, 0);
    char *sh = mmap(NULL, 3 * HP, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    MUST(a != MAP_FAILED && b != MAP_FAILED && sh != MAP_FAILED);
    fill(a, HP, 41);
    fill(a + 2 * HP, HP, 42);
    fill(sh, HP, 43);
    fill(sh + 2 * HP, HP, 44);
    int shmid = shmget(IPC_PRIVATE, 2 * HP, IPC_CREAT | SHM_HUGETLB | 0600);
    MUST(shmid >= 0);
    char *v = shmat(shmid, NULL, 0);
    MUST(v != (void *)-1 && shmctl(shmid, IPC_RMID, NULL) == 0);
    fill(v, HP, 45);
    e2e_block_usr1(1);
    pid_t child = fork();
    MUST(child >= 0);
    if (child == 0) {
        e2e_child_wait_usr1();
        strcpy(sh + HP, "written by the child after the restart");
        _exit(0);
    }
    e2e_block_usr1(0);
    long kps, kb;
    int ht;
    region(a, &kps, &kb, &ht);
    MUST(kps == 2048 && kb == 4096 && ht);
    say("READY");
    e2e_wait_usr1();

    region(a, &kps, &kb, &ht);
    CHECK(kps == 2048 && ht, "region a: pages of %ld kB, ht %d", kps, ht);
    CHECK(kb == 4096, "region a: %ld kB of huge pages resident, want 4096", kb);
    CHECK(check_fill(a, HP, 41) < 0 && check_fill(a + 2 * HP, HP, 42) < 0, "region a: data differs");
    region(b, &kps, &kb, &ht);
    CHECK(kps == 2048 && ht && kb == 0, "region b: pages of %ld kB, ht %d, %ld kB resident", kps, ht, kb);
    a[3 * HP] = 1;   /* (reading an untouched huge page would allocate it too: there is no zero page) */
    b[0] = 1;
    region(a, &kps, &kb, &ht);
    CHECK(kb == 6144, "region a: %ld kB resident after one more page written", kb);
    CHECK(a[HP + 7] == 0, "region a: an untouched huge page holds data");
    long skb;
    region(sh, &kps, &skb, &ht);
    CHECK(kps == 2048 && ht, "region s: pages of %ld kB, ht %d", kps, ht);
    CHECK(check_fill(sh, HP, 43) < 0 && check_fill(sh + 2 * HP, HP, 44) < 0, "region s: data differs");
    if (f) {
        CHECK(strcmp(f, "in the file") == 0 && f[100] == 0, "the hugetlbfs file holds '%.20s' / '%.20s'", f, f + 100);
        CHECK(strcmp(g, "in the file") == 0 && strcmp(g + 100, "a private copy") == 0, "the private mapping of the hugetlbfs file holds '%.20s' / '%.20s'", g, g + 100);
        region(f, &kps, &skb, &ht);
        CHECK(kps == 2048 && ht, "hugetlbfs file mapping: pages of %ld kB, ht %d", kps, ht);
    }
    region(v, &kps, &skb, &ht);
    CHECK(kps == 2048 && ht, "SysV segment: pages of %ld kB, ht %d", kps, ht);
    CHECK(check_fill(v, HP, 45) < 0, "SysV segment: data differs");
    kill(child, SIGUSR1);
    e2e_child_verdict(child, "the child");
    CHECK(strcmp(sh + HP, "written by the child after the restart") == 0, "region s is no longer shared with the child ('%.20s')", sh + HP);
    return e2e_finish();
}
