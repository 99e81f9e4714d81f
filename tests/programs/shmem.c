/* shmem DIR: memory whose backing is not a named file, as the .NET runtime uses it.
 * - a sealed memfd (1 MiB, with a hole) mapped twice, RW and RX at another offset (the "doublemapper"),
 *   kept open at fd 42 with a file position, and mapped MAP_PRIVATE with a copy-on-write page;
 * - MAP_SHARED|MAP_ANONYMOUS memory;
 * - a deleted file mapped shared (no fd left), and another deleted file mapped private and open at fd 43
 *   (opened with O_NOFOLLOW);
 * - a SysV segment (IPC_PRIVATE, removed: it lives as long as it is attached) when argv[2] is "sysv",
 *   attached twice: whole, and in parts (a page unmapped, the last two made read-only).
 * After the restart: contents, sharing between the mappings and the fds, the private page, seals,
 * names in /proc/self/maps. */
#include "e2e.h"
#include <sys/wait.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>

#define K 1024
#define M (1024 * 1024)
#define MEMFD_NAME "ckpt-shmem-test"

/* the permissions and file offset of the mapping at p, from /proc/self/maps */
static int map_perms(void *p, char perms[8], unsigned long *off)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return 0;
    char line[512];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx %7s %lx", &s, &e, perms, off) == 4 && (unsigned long)p >= s && (unsigned long)p < e) found = 1;
    }
    fclose(f);
    if (!found) strcpy(perms, "none");
    return found;
}

static ino_t map_ino(void *p)
{
    /* the inode of the object mapped at p, from /proc/self/maps */
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return 0;
    char line[512];
    ino_t ino = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e, off, in;
        char perms[8], dev[16];
        if (sscanf(line, "%lx-%lx %7s %lx %15s %lu", &s, &e, perms, &off, dev, &in) == 6
            && (unsigned long)p >= s && (unsigned long)p < e) { ino = in; break; }
    }
    fclose(f);
    return ino;
}

static int maps_has(const char *needle)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return 0;
    char line[512];
    int found = 0;
    while (fgets(line, sizeof line, f)) if (strstr(line, needle)) found = 1;
    fclose(f);
    return found;
}

static int zero(const uint8_t *p, size_t n) { for (size_t i = 0; i < n; i++) if (p[i]) return 0; return 1; }

int main(int argc, char **argv)
{
    e2e_init();
    MUST(argc >= 2);
    int sysv = argc > 2 && !strcmp(argv[2], "sysv");
    static uint8_t buf[M];
    char path[1024], link[1024];

    /* the memfd: data in [0, 512K) and [768K, 1M), a hole between */
    int mfd = memfd_create(MEMFD_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    MUST(mfd >= 0 && ftruncate(mfd, M) == 0);
    fill(buf, M, 1);
    MUST(pwrite(mfd, buf, 512 * K, 0) == 512 * K);
    MUST(pwrite(mfd, buf + 768 * K, 256 * K, 768 * K) == 256 * K);
    MUST(fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) == 0);
    MUST(dup3(mfd, 42, O_CLOEXEC) == 42 && close(mfd) == 0);
    MUST(lseek(42, 12345, SEEK_SET) == 12345);
    uint8_t *rw = mmap(NULL, M, PROT_READ | PROT_WRITE, MAP_SHARED, 42, 0);
    uint8_t *rx = mmap(NULL, 256 * K, PROT_READ | PROT_EXEC, MAP_SHARED, 42, 256 * K);
    uint8_t *priv = mmap(NULL, 64 * K, PROT_READ | PROT_WRITE, MAP_PRIVATE, 42, 0);
    MUST(rw != MAP_FAILED && rx != MAP_FAILED && priv != MAP_FAILED);
    MUST(priv[0] == pat(0, 1));              /* page 0 read: a file page */
    fill(priv + 4096, 4096, 3);              /* page 1 written: private (copy-on-write) */
    rw[4096] ^= 0xff;                        /* the shared side of page 1 changes after the copy */

    /* a memfd holding a script, run from its fd (execveat): its description must not count as a writer
     * after the restart (ETXTBSY); O_APPEND set on it */
    int xfd = memfd_create("script", 0);
    MUST(xfd >= 0 && write(xfd, "#!/bin/true\n", 12) == 12);
    /* mapped shared and writable too (the mapping holds the file: it must not count as a writer either) */
    char *xmap = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, xfd, 0);
    MUST(xmap != MAP_FAILED && xmap[0] == '#');
    MUST(fcntl(xfd, F_SETFL, O_APPEND) == 0);

    /* shared anonymous memory, 2 MiB, the first 1 MiB written */
    uint8_t *sa = mmap(NULL, 2 * M, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    MUST(sa != MAP_FAILED);
    fill(sa, M, 4);

    /* a deleted file mapped shared, no fd left */
    snprintf(path, sizeof path, "%s/mapped.dat", argv[1]);
    int df = open(path, O_RDWR | O_CREAT | O_TRUNC, 0640);
    MUST(df >= 0 && ftruncate(df, 256 * K) == 0);
    uint8_t *dm = mmap(NULL, 256 * K, PROT_READ | PROT_WRITE, MAP_SHARED, df, 0);
    MUST(dm != MAP_FAILED);
    fill(dm, 200 * K, 5);
    MUST(unlink(path) == 0 && close(df) == 0);

    /* a deleted file mapped private (read-only), also open at fd 43, opened with O_NOFOLLOW as shm_open
     * does (an MPI library's shared segment) */
    snprintf(path, sizeof path, "%s/both.dat", argv[1]);
    int bf = open(path, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600);
    MUST(bf >= 0);
    fill(buf, 64 * K, 6);
    MUST(write_full(bf, buf, 64 * K) == 64 * K);
    MUST(dup2(bf, 43) == 43 && close(bf) == 0);
    uint8_t *bm = mmap(NULL, 64 * K, PROT_READ, MAP_PRIVATE, 43, 0);
    MUST(bm != MAP_FAILED && bm[100] == pat(100, 6));
    MUST(unlink(path) == 0);

    /* SysV: IPC_PRIVATE, marked for removal once detached */
    int shmid = -1;
    uint8_t *sv = NULL, *sv2 = NULL;
    if (sysv) {
        shmid = shmget(IPC_PRIVATE, 3 * 4096 + 100, IPC_CREAT | 0600);
        MUST(shmid >= 0);
        sv = shmat(shmid, NULL, 0);
        MUST(sv != (void *)-1);
        fill(sv, 3 * 4096 + 100, 7);
        /* attached again, in parts: its second page unmapped, its last two read-only */
        sv2 = shmat(shmid, NULL, 0);
        MUST(sv2 != (void *)-1);
        MUST(munmap(sv2 + 4096, 4096) == 0 && mprotect(sv2 + 2 * 4096, 2 * 4096, PROT_READ) == 0);
        MUST(shmctl(shmid, IPC_RMID, NULL) == 0);
    }

    ino_t memfd_ino = map_ino(rw), dm_ino = map_ino(dm), bm_ino = map_ino(bm);
    say("READY");
    e2e_wait_usr1();

    CHECK((fcntl(xfd, F_GETFL) & (O_ACCMODE | O_APPEND)) == (O_RDWR | O_APPEND), "the script memfd's flags are 0%o", fcntl(xfd, F_GETFL));
    pid_t xp = fork();
    MUST(xp >= 0);
    if (xp == 0) {
        char *xargv[] = { "true", NULL }, *xenv[] = { NULL };
        syscall(SYS_execveat, xfd, "", xargv, xenv, AT_EMPTY_PATH);
        say("FAIL: execveat of the script memfd: %s", strerror(errno));
        _exit(1);
    }
    int xst = 0;
    CHECK(waitpid(xp, &xst, 0) == xp && WIFEXITED(xst) && WEXITSTATUS(xst) == 0, "the script memfd did not run (status 0x%x)", xst);

    /* the memfd: contents, one object behind the three mappings and the fd */
    struct stat st;
    CHECK(fstat(42, &st) == 0, "fstat 42: %s", strerror(errno));
    CHECK(st.st_size == M, "memfd size %ld", (long)st.st_size);
    CHECK(map_ino(rw) == st.st_ino && map_ino(rx) == st.st_ino && map_ino(priv) == st.st_ino,
          "fd 42 (ino %lu) is not what is mapped (%lu %lu %lu)", (unsigned long)st.st_ino,
          (unsigned long)map_ino(rw), (unsigned long)map_ino(rx), (unsigned long)map_ino(priv));
    (void)memfd_ino;
    fill(buf, M, 1);
    buf[4096] ^= 0xff;
    CHECK(memcmp(rw, buf, 512 * K) == 0, "memfd [0, 512K) differs");
    CHECK(zero(rw + 512 * K, 256 * K), "memfd hole is not zero");
    CHECK(memcmp(rw + 768 * K, buf + 768 * K, 256 * K) == 0, "memfd [768K, 1M) differs");
    CHECK(memcmp(rx, rw + 256 * K, 256 * K) == 0, "the RX mapping differs from the RW one at 256K");
    rw[300 * K] = 0x5a; rw[300 * K + 1] = 0xa5;
    CHECK(rx[300 * K - 256 * K] == 0x5a && rx[300 * K - 256 * K + 1] == 0xa5, "a write through RW does not show in RX");
    uint8_t two[2] = { 0, 0 };
    CHECK(pread(42, two, 2, 300 * K) == 2 && two[0] == 0x5a && two[1] == 0xa5, "a write through RW does not show through fd 42");
    CHECK(pwrite(42, "QQ", 2, 320 * K) == 2 && rx[64 * K] == 'Q', "a write through fd 42 does not show in RX");
    CHECK(lseek(42, 0, SEEK_CUR) == 12345, "fd 42 position %ld", (long)lseek(42, 0, SEEK_CUR));
    int seals = fcntl(42, F_GET_SEALS);
    CHECK(seals == (F_SEAL_SHRINK | F_SEAL_GROW), "seals %#x", seals);
    CHECK(ftruncate(42, 2 * M) != 0 && errno == EPERM, "the memfd can grow: the seals are not applied");
    CHECK((fcntl(42, F_GETFD) & FD_CLOEXEC) != 0, "fd 42 lost close-on-exec");
    CHECK((fcntl(42, F_GETFL) & O_ACCMODE) == O_RDWR, "fd 42 is not O_RDWR");
    ssize_t n = readlink("/proc/self/fd/42", link, sizeof link - 1);
    link[n > 0 ? n : 0] = 0;
    CHECK(!strcmp(link, "/memfd:" MEMFD_NAME " (deleted)"), "fd 42 is %s", link);
    CHECK(maps_has("/memfd:" MEMFD_NAME " (deleted)"), "/proc/self/maps does not show the memfd name");

    /* the private mapping: page 0 still the file's, page 1 private, page 2 follows the file */
    CHECK(priv[0] == pat(0, 1), "private page 0 lost the file data");
    CHECK(check_fill(priv + 4096, 4096, 3) < 0, "the private copy-on-write page lost its data");
    rw[2 * 4096 + 7] = 0x77;
    CHECK(priv[2 * 4096 + 7] == 0x77, "an unwritten private page does not follow the file");
    priv[5] = 0x11;
    CHECK(rw[5] == pat(5, 1), "a write to the private mapping reached the memfd");

    /* shared anonymous */
    CHECK(check_fill(sa, M, 4) < 0, "shared anonymous data differs at %ld", check_fill(sa, M, 4));
    CHECK(zero(sa + M, M), "shared anonymous second half is not zero");
    CHECK(maps_has("/dev/zero (deleted)"), "no /dev/zero (deleted) in maps");

    /* deleted files */
    CHECK(check_fill(dm, 200 * K, 5) < 0, "deleted shared file data differs");
    CHECK(zero(dm + 200 * K, 56 * K), "deleted shared file tail is not zero");
    CHECK(maps_has("/mapped.dat (deleted)"), "maps does not show mapped.dat (deleted)");
    CHECK(check_fill(bm, 64 * K, 6) < 0, "deleted private file mapping differs");
    CHECK(fstat(43, &st) == 0 && st.st_ino == map_ino(bm) && st.st_nlink == 0 && st.st_size == 64 * K,
          "fd 43 is not the mapped deleted file (ino %lu vs %lu, nlink %lu)", (unsigned long)st.st_ino,
          (unsigned long)map_ino(bm), (unsigned long)st.st_nlink);
    CHECK((st.st_mode & 0777) == 0600, "deleted file mode %o", st.st_mode & 0777);
    CHECK(pread(43, buf, 100, 1000) == 100 && buf[0] == pat(1000, 6) && buf[99] == pat(1099, 6),
          "fd 43 content differs");
    CHECK(lseek(43, 0, SEEK_CUR) == 64 * K, "fd 43 position %ld", (long)lseek(43, 0, SEEK_CUR));
    (void)dm_ino; (void)bm_ino;

    if (sysv) {
        CHECK(check_fill(sv, 3 * 4096 + 100, 7) < 0, "SysV segment data differs");
        struct shmid_ds ds;
        CHECK(shmctl(shmid, IPC_STAT, &ds) == 0, "shmctl IPC_STAT %d: %s", shmid, strerror(errno));
        CHECK(ds.shm_segsz == 3 * 4096 + 100, "SysV size %zu", ds.shm_segsz);
        /* (one attach whole, one in two parts: a count per mapping) */
        CHECK(ds.shm_nattch == 3, "SysV nattch %lu", (unsigned long)ds.shm_nattch);
        char perms[8];
        unsigned long off;
        CHECK(map_perms(sv2, perms, &off) && !strcmp(perms, "rw-s") && off == 0, "the second attach's first page: %s at %lu", perms, off);
        CHECK(map_perms(sv2 + 2 * 4096, perms, &off) && !strcmp(perms, "r--s") && off == 2 * 4096, "the second attach's read-only part: %s at %lu", perms, off);
        unsigned char vec;
        CHECK(mincore(sv2 + 4096, 4096, &vec) == -1 && errno == ENOMEM, "the second attach's unmapped page is mapped");
        CHECK(sv2[10] == sv[10] && memcmp(sv2 + 2 * 4096, sv + 2 * 4096, 4096 + 100) == 0, "the second attach's parts differ from the first");
        sv2[20] = 0x3c;
        CHECK(sv[20] == 0x3c, "a write through the second attach does not show in the first");
        CHECK(map_ino(sv2) == (ino_t)shmid && map_ino(sv2 + 2 * 4096) == (ino_t)shmid, "the second attach maps another segment");
        CHECK(ds.shm_perm.mode & SHM_DEST, "SysV segment is no longer marked for removal");
        CHECK(map_ino(sv) == (ino_t)shmid, "SysV mapping inode %lu, shmid %d", (unsigned long)map_ino(sv), shmid);
        CHECK(shmdt(sv) == 0, "shmdt");
    }
    return e2e_finish();
}
