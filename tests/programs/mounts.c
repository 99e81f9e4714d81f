/* mounts D: a process in a mount namespace of its own (made by the program: unshare(CLONE_NEWNS), all
 * private) with mounts of its own under the directory D (which the script made, with D/host/hostfile, the
 * empty directories D/t, D/t2, D/sys, D/gone and a tmpfs of the script's mounted on D/gone):
 *   D/t       a tmpfs (size=8m, mode=751) holding files of every kind: data with a hole, a large file,
 *             modes with set-id bits, owners, a symbolic link, a hard link, a fifo, a directory with a
 *             second tmpfs mounted on it (D/t/sub, holding D/t/sub/inner), extended attributes;
 *   D/t/hb    a read-only bind mount of D/host (a directory of the host), D/t/fb one of D/host/hostfile;
 *   D/t2      a bind mount of D/t/dir (a part of its own tmpfs), nosuid;
 *   D/sys     a sysfs of its own;
 *   D/gone    the script's tmpfs, removed in its namespace;
 *   D/flg     the script's tmpfs, remounted read-only and nosuid in its namespace;
 *   D/cov     a tmpfs over the script's directory D/cov, whose file D/cov/under it opened before.
 * It holds a file of its tmpfs open at an offset, a shared mapping of another, its cwd in the tmpfs and
 * a file through the read-only bind mount. After the restart it checks all of that from inside, and that
 * what it writes through its fd and mapping reaches its tmpfs. */
#include "e2e.h"
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#define BIG (2u << 20)
static char D[512];

static const char *at(const char *rel)
{
    static char buf[4][1024];
    static int n;
    char *b = buf[n++ % 4];
    snprintf(b, 1024, "%s/%s", D, rel);
    return b;
}

static void put(const char *rel, const char *text, mode_t mode)
{
    int fd = open(at(rel), O_WRONLY | O_CREAT | O_TRUNC, mode);
    MUST(fd >= 0);
    MUST(write_full(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
}

static void expect_text(const char *rel, const char *text)
{
    char buf[256] = "";
    int fd = open(at(rel), O_RDONLY);
    CHECK(fd >= 0, "%s: %s", rel, strerror(errno));
    if (fd < 0) return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    CHECK(n == (ssize_t)strlen(text) && memcmp(buf, text, n) == 0, "%s holds '%.*s', want '%s'", rel, (int)(n > 0 ? n : 0), buf, text);
}

/* the line of /proc/self/mountinfo whose mount point is PATH (the last one: the one on top) */
static int mountinfo(const char *path, char *out, size_t n)
{
    FILE *f = fopen("/proc/self/mountinfo", "r");
    char line[2048];
    int found = 0;
    while (f && fgets(line, sizeof line, f)) {
        char mp[1024];
        if (sscanf(line, "%*d %*d %*s %*s %1023s", mp) == 1 && strcmp(mp, path) == 0) { snprintf(out, n, "%s", line); found = 1; }
    }
    if (f) fclose(f);
    return found;
}

int main(int argc, char **argv)
{
    e2e_init();
    MUST(argc == 2 && realpath(argv[1], D) != NULL);
    MUST(unshare(CLONE_NEWNS) == 0);
    MUST(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0);

    MUST(mount("ckpt-t", at("t"), "tmpfs", 0, "size=8m,mode=751") == 0);
    MUST(mkdir(at("t/dir"), 0755) == 0);
    put("t/dir/b", "bee", 0640);
    MUST(chown(at("t/dir/b"), 1000, 1001) == 0);
    put("t/a", "alpha-0123456789", 0644);
    int a = open(at("t/a"), O_RDWR);
    MUST(a >= 0);
    MUST(pwrite(a, "tail", 4, 3 << 20) == 4);               /* a hole of 3 MiB, then 4 bytes */
    MUST(lseek(a, 6, SEEK_SET) == 6);
    struct timespec times[2] = { { 1000000000, 5 }, { 1200000000, 123456789 } };
    put("t/suid", "#!/bin/sh\n", 0755);
    MUST(chmod(at("t/suid"), 04755) == 0);
    MUST(symlink("dir/b", at("t/link")) == 0);
    MUST(link(at("t/a"), at("t/hard")) == 0);
    MUST(mkfifo(at("t/fifo"), 0620) == 0 && chmod(at("t/fifo"), 0620) == 0);
    /* extended attributes: a user one on a file (and so on its hard link), an overlay's opaque mark on a
     * directory, a trusted one on a symbolic link, a user one on the tmpfs's root */
    MUST(setxattr(at("t/a"), "user.color", "blue", 4, 0) == 0);
    MUST(setxattr(at("t/dir"), "trusted.overlay.opaque", "y", 1, 0) == 0);
    MUST(lsetxattr(at("t/link"), "trusted.note", "sym", 3, 0) == 0);
    MUST(setxattr(at("t"), "user.root", "r", 1, 0) == 0);
    MUST(mkdir(at("t/sub"), 0700) == 0);
    MUST(mount("ckpt-sub", at("t/sub"), "tmpfs", MS_NOSUID, "size=1m") == 0);
    put("t/sub/inner", "inside", 0600);
    /* a large file, mapped shared */
    int bf = open(at("t/big"), O_RDWR | O_CREAT, 0600);
    MUST(bf >= 0 && ftruncate(bf, BIG) == 0);
    uint8_t *big = mmap(NULL, BIG, PROT_READ | PROT_WRITE, MAP_SHARED, bf, 0);
    MUST(big != MAP_FAILED);
    fill(big, BIG, 7);
    MUST(msync(big, BIG, MS_SYNC) == 0);
    close(bf);
    /* bind mounts: a host directory (read-only), a host file, a part of the tmpfs (nosuid) */
    MUST(mkdir(at("t/hb"), 0755) == 0);
    MUST(mount(at("host"), at("t/hb"), NULL, MS_BIND, NULL) == 0);
    MUST(mount(NULL, at("t/hb"), NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) == 0);
    put("t/fb", "", 0644);
    MUST(mount(at("host/hostfile"), at("t/fb"), NULL, MS_BIND, NULL) == 0);
    MUST(mount(at("t/dir"), at("t2"), NULL, MS_BIND, NULL) == 0);
    MUST(mount(NULL, at("t2"), NULL, MS_REMOUNT | MS_BIND | MS_NOSUID, NULL) == 0);
    MUST(mount("sysfs", at("sys"), "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0);
    MUST(umount2(at("gone"), 0) == 0);
    MUST(mount(NULL, at("flg"), NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID, NULL) == 0);
    int under = open(at("cov/under"), O_RDONLY);
    MUST(under >= 0);
    MUST(mount("ckpt-cov", at("cov"), "tmpfs", 0, NULL) == 0);
    int hf = open(at("t/hb/hostfile"), O_RDONLY);
    MUST(hf >= 0);
    MUST(chdir(at("t/dir")) == 0);
    /* times last: every entry made */
    MUST(utimensat(AT_FDCWD, at("t/a"), times, 0) == 0);
    MUST(utimensat(AT_FDCWD, at("t/dir"), times, 0) == 0);
    struct stat ta, tt, tsub;
    MUST(stat(at("t"), &tt) == 0 && stat(at("t/sub"), &tsub) == 0);

    say("READY");
    e2e_wait_usr1();

    /* the tmpfs: its options, its files */
    char line[2048];
    CHECK(mountinfo(at("t"), line, sizeof line) && strstr(line, " - tmpfs ckpt-t ") && strstr(line, "size=8192k") && strstr(line, "mode=751"), "the tmpfs on t: %s", line);
    CHECK(!strstr(line, "shared:"), "t propagates: %s", line);
    CHECK(mountinfo(at("t/sub"), line, sizeof line) && strstr(line, " - tmpfs ckpt-sub ") && strstr(line, "nosuid") && strstr(line, "size=1024k"), "the tmpfs on t/sub: %s", line);
    struct stat st, st2;
    CHECK(stat(at("t"), &st) == 0 && (st.st_mode & 07777) == 0751, "t mode %o", st.st_mode & 07777);
    CHECK(stat(at("t/sub"), &st2) == 0 && st2.st_dev != st.st_dev, "t/sub is no mount of its own");
    expect_text("t/sub/inner", "inside");
    CHECK(stat(at("t/a"), &ta) == 0 && ta.st_size == (3 << 20) + 4 && ta.st_blocks < 64, "t/a: size %ld, %ld blocks (its hole)", (long)ta.st_size, (long)ta.st_blocks);
    CHECK(ta.st_mtim.tv_sec == 1200000000 && ta.st_mtim.tv_nsec == 123456789, "t/a mtime %ld.%09ld", (long)ta.st_mtim.tv_sec, ta.st_mtim.tv_nsec);
    CHECK(ta.st_nlink == 2 && stat(at("t/hard"), &st) == 0 && st.st_ino == ta.st_ino, "t/hard is no hard link of t/a (nlink %ld)", (long)ta.st_nlink);
    CHECK(stat(at("t/dir/b"), &st) == 0 && (st.st_mode & 07777) == 0640 && st.st_uid == 1000 && st.st_gid == 1001, "t/dir/b: mode %o owner %d:%d", st.st_mode & 07777, st.st_uid, st.st_gid);
    CHECK(stat(at("t/dir"), &st) == 0 && st.st_mtim.tv_sec == 1200000000, "t/dir mtime %ld", (long)st.st_mtim.tv_sec);
    CHECK(stat(at("t/suid"), &st) == 0 && (st.st_mode & 07777) == 04755, "t/suid mode %o", st.st_mode & 07777);
    char target[64] = "";
    CHECK(readlink(at("t/link"), target, sizeof target - 1) == 5 && strcmp(target, "dir/b") == 0, "t/link -> '%s'", target);
    expect_text("t/link", "bee");
    char xv[16];
    ssize_t xn;
    xn = getxattr(at("t/hard"), "user.color", xv, sizeof xv);
    CHECK(xn == 4 && memcmp(xv, "blue", 4) == 0, "t/hard (t/a): user.color %zd bytes", xn);
    xn = getxattr(at("t/dir"), "trusted.overlay.opaque", xv, sizeof xv);
    CHECK(xn == 1 && xv[0] == 'y', "t/dir: trusted.overlay.opaque %zd bytes", xn);
    xn = lgetxattr(at("t/link"), "trusted.note", xv, sizeof xv);
    CHECK(xn == 3 && memcmp(xv, "sym", 3) == 0, "t/link: trusted.note %zd bytes", xn);
    xn = getxattr(at("t"), "user.root", xv, sizeof xv);
    CHECK(xn == 1 && xv[0] == 'r', "t: user.root %zd bytes", xn);
    CHECK(lstat(at("t/fifo"), &st) == 0 && S_ISFIFO(st.st_mode) && (st.st_mode & 0777) == 0620, "t/fifo: mode %o", st.st_mode);
    /* the open file: its offset, its data, and it is the file of the tmpfs */
    char buf[32] = "";
    CHECK(read(a, buf, 4) == 4 && memcmp(buf, "0123", 4) == 0, "fd of t/a read '%.4s' at its offset", buf);
    CHECK(fstat(a, &st) == 0 && st.st_ino == ta.st_ino && st.st_dev == ta.st_dev, "the fd of t/a is another file");
    CHECK(pread(a, buf, 4, 3 << 20) == 4 && memcmp(buf, "tail", 4) == 0, "t/a after its hole: '%.4s'", buf);
    CHECK(write(a, "WXYZ", 4) == 4, "write");
    char check[32] = "";
    int a2 = open(at("t/a"), O_RDONLY);
    CHECK(a2 >= 0 && pread(a2, check, 16, 0) == 16 && memcmp(check, "alpha-0123WXYZ89", 16) == 0, "t/a after a write: '%.16s'", check);
    close(a2);
    /* the shared mapping of t/big: its data, and a write reaches the file */
    CHECK(check_fill(big, BIG, 7) < 0, "t/big's mapping differs at %ld", check_fill(big, BIG, 7));
    big[100] ^= 0xff;
    int b2 = open(at("t/big"), O_RDONLY);
    uint8_t c = 0;
    CHECK(b2 >= 0 && pread(b2, &c, 1, 100) == 1 && c == (uint8_t)(pat(100, 7) ^ 0xff), "a write to t/big's mapping did not reach the file");
    close(b2);
    /* cwd */
    char cwd[1024] = "";
    CHECK(getcwd(cwd, sizeof cwd) && strcmp(cwd, at("t/dir")) == 0, "cwd '%s'", cwd);
    int bfd = open("b", O_RDONLY);   /* relative to its cwd */
    CHECK(bfd >= 0 && read(bfd, buf, 3) == 3 && memcmp(buf, "bee", 3) == 0, "b in its cwd: '%.3s'", buf);
    if (bfd >= 0) close(bfd);
    /* bind mounts */
    expect_text("t/hb/hostfile", "from host");
    CHECK(read(hf, buf, 9) == 9 && memcmp(buf, "from host", 9) == 0, "fd of hostfile read '%.9s'", buf);
    errno = 0;
    CHECK(open(at("t/hb/new"), O_WRONLY | O_CREAT, 0600) < 0 && errno == EROFS, "t/hb is writable (errno %d)", errno);
    CHECK(mountinfo(at("t/hb"), line, sizeof line) && strstr(line, " ro,"), "t/hb: %s", line);
    expect_text("t/fb", "from host");
    CHECK(stat(at("t2/b"), &st) == 0 && stat(at("t/dir/b"), &st2) == 0 && st.st_ino == st2.st_ino && st.st_dev == st2.st_dev, "t2/b is not t/dir/b");
    CHECK(mountinfo(at("t2"), line, sizeof line) && strstr(line, "nosuid"), "t2: %s", line);
    CHECK(mountinfo(at("sys"), line, sizeof line) && strstr(line, " - sysfs ") && access(at("sys/kernel"), F_OK) == 0, "sys: %s", line);
    CHECK(!mountinfo(at("gone"), line, sizeof line), "gone is mounted again: %s", line);
    CHECK(mountinfo(at("flg"), line, sizeof line) && strstr(line, " ro,nosuid,") && strstr(line, " - tmpfs ckpt-flg "), "flg: %s", line);
    errno = 0;
    CHECK(open(at("flg/new"), O_WRONLY | O_CREAT, 0600) < 0 && errno == EROFS, "flg is writable (errno %d)", errno);
    CHECK(read(under, buf, 5) == 5 && memcmp(buf, "below", 5) == 0, "the fd of the covered cov/under read '%.5s'", buf);
    CHECK(access(at("cov/under"), F_OK) != 0, "cov/under is not covered");
    say("TMPFS %s", mountinfo(at("t"), line, sizeof line) ? "yes" : "no");
    (void)tt; (void)tsub;
    return e2e_finish();
}
