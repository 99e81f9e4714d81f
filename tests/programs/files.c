/* files DIR: regular files with offsets and flags, shared descriptions (dup, F_DUPFD), close-on-exec,
 * an unlinked-while-open file (fds and a region by three of its names), one removed under its name
 * but linked under another, devices, a directory fd, the working directory and the umask. */
#include "e2e.h"
#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#define MAXFD 128
struct fdsnap { int open, fdflags, flflags; off_t pos; dev_t dev; ino_t ino; };
static struct fdsnap before[MAXFD];

static void snapshot(struct fdsnap *s)
{
    for (int fd = 0; fd < MAXFD; fd++) {
        struct stat st;
        s[fd].open = fstat(fd, &st) == 0;
        if (!s[fd].open) continue;
        s[fd].fdflags = fcntl(fd, F_GETFD);
        s[fd].flflags = fcntl(fd, F_GETFL);
        s[fd].pos = lseek(fd, 0, SEEK_CUR);
        s[fd].dev = st.st_dev;
        s[fd].ino = st.st_ino;
    }
}

static off_t pos(int fd) { return lseek(fd, 0, SEEK_CUR); }

static int ends_with(const char *s, const char *end)
{
    size_t n = strlen(s), m = strlen(end);
    return n >= m && strcmp(s + n - m, end) == 0;
}

static int count_entries(const char *dir, char *names, size_t len)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    names[0] = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        n++;
        strncat(names, e->d_name, len - strlen(names) - 2);
        strncat(names, " ", len - strlen(names) - 1);
    }
    closedir(d);
    return n;
}

int main(int argc, char **argv)
{
    e2e_init();
    MUST(argc == 2);
    char cwd[1024], buf[1 << 16];
    snprintf(cwd, sizeof cwd, "%s/cwd", argv[1]);
    MUST(mkdir(cwd, 0755) == 0 && chdir(cwd) == 0);
    umask(027);

    static char content[10000];
    fill(content, sizeof content, 21);
    int fa = open("a.dat", O_RDWR | O_CREAT | O_TRUNC, 0644);
    MUST(fa >= 0 && write_full(fa, content, sizeof content) == sizeof content);
    MUST(lseek(fa, 1234, SEEK_SET) == 1234);
    int fa_dup = dup(fa);
    int fa100 = fcntl(fa, F_DUPFD, 100);
    int fa_cx = fcntl(fa, F_DUPFD_CLOEXEC, 50);
    MUST(fa_dup >= 0 && fa100 == 100 && fa_cx == 50);

    int fb = open("b.log", O_WRONLY | O_APPEND | O_CREAT | O_TRUNC, 0600);
    MUST(fb >= 0 && write(fb, "line1\n", 6) == 6);

    int fc = open("a.dat", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    MUST(fc >= 0 && lseek(fc, 5000, SEEK_SET) == 5000);

    int fd_ = open("d.dat", O_WRONLY | O_CREAT | O_TRUNC | O_SYNC, 0640);
    MUST(fd_ >= 0 && write_full(fd_, content, 500) == 500);

    /* unlinked while open: 20000 bytes, a hole, 100 bytes at 1 MiB; two descriptions of it */
    static char gone[20000];
    fill(gone, sizeof gone, 22);
    int fu = open("gone.dat", O_RDWR | O_CREAT | O_TRUNC, 0600);
    MUST(fu >= 0 && write_full(fu, gone, sizeof gone) == sizeof gone);
    MUST(fchmod(fu, 0664) == 0);   /* a mode the umask of whoever recreates it could change */
    MUST(pwrite(fu, gone, 100, 1 << 20) == 100);
    MUST(ftruncate(fu, (1 << 21)) == 0);   /* and a trailing hole: the size is 2 MiB */
    /* the second description by a second name (a hard link), and a region mapping it by a third */
    MUST(link("gone.dat", "gone2.dat") == 0 && link("gone.dat", "gone3.dat") == 0);
    int fu_ro = open("gone2.dat", O_RDONLY | O_CLOEXEC);
    MUST(fu_ro >= 0);
    int fu_map = open("gone3.dat", O_RDONLY | O_CLOEXEC);
    MUST(fu_map >= 0);
    char *gone_map = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fu_map, 0);
    MUST(gone_map != MAP_FAILED && close(fu_map) == 0);   /* (mmap sets the access time: before futimens) */
    struct timespec gone_times[2] = { { 1000000, 5 }, { 123456, 789 } };   /* atime, mtime of long ago */
    MUST(futimens(fu, gone_times) == 0);
    MUST(lseek(fu, 777, SEEK_SET) == 777 && lseek(fu_ro, 888, SEEK_SET) == 888);
    MUST(unlink("gone.dat") == 0 && unlink("gone2.dat") == 0 && unlink("gone3.dat") == 0);

    /* an O_TMPFILE file: never had a name */
    int ft = open(".", O_TMPFILE | O_RDWR, 0600);
    MUST(ft >= 0 && write_full(ft, "tmpfile data", 12) == 12 && lseek(ft, 3, SEEK_SET) == 3);

    int fnull = open("/dev/null", O_WRONLY);
    int fzero = open("/dev/zero", O_RDONLY);
    int frand = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    int fdir = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    MUST(fnull >= 0 && fzero >= 0 && frand >= 0 && fdir >= 0);
    /* an O_PATH fd of a symbolic link itself (O_NOFOLLOW) */
    char sympath[1200];
    snprintf(sympath, sizeof sympath, "%s.link", argv[1]);   /* beside the work directory, whose entries are counted */
    unlink(sympath);
    MUST(symlink("a.dat", sympath) == 0);
    int fsym = open(sympath, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    MUST(fsym >= 0);
    /* and one of a link removed since */
    char gonesym[1200];
    snprintf(gonesym, sizeof gonesym, "%s.gone-link", argv[1]);
    unlink(gonesym);
    MUST(symlink("b.log", gonesym) == 0);
    int fgsym = open(gonesym, O_PATH | O_NOFOLLOW);
    MUST(fgsym >= 0 && unlink(gonesym) == 0);
    /* a node of /dev/zero's device made here and removed while open (a chroot's or container's /dev) */
    MUST(mknod("zero.node", S_IFCHR | 0640, makedev(1, 5)) == 0 && chmod("zero.node", 0640) == 0);
    int fznode = open("zero.node", O_RDONLY | O_CLOEXEC);
    MUST(fznode >= 0 && unlink("zero.node") == 0);

    /* removed under one name, still there under another (a hard link beside it) */
    char linked[1200], other[1200];
    snprintf(linked, sizeof linked, "%s/linked.dat", argv[1]);
    snprintf(other, sizeof other, "%s/linked.other", argv[1]);
    int fl = open(linked, O_RDWR | O_CREAT | O_TRUNC, 0600);
    MUST(fl >= 0 && write_full(fl, "linked data", 11) == 11 && link(linked, other) == 0 && unlink(linked) == 0);
    MUST(lseek(fl, 4, SEEK_SET) == 4);
    struct stat lst;
    MUST(fstat(fl, &lst) == 0 && lst.st_nlink == 1);

    say("READY");
    snapshot(before);   /* after READY: the offset of stdout moved */
    e2e_wait_usr1();

    static struct fdsnap after[MAXFD];
    snapshot(after);
    for (int fd = 0; fd < MAXFD; fd++) {
        struct fdsnap *b = &before[fd], *a = &after[fd];
        CHECK(a->open == b->open, "fd %d is %s after restart", fd, a->open ? "open" : "closed");
        if (!a->open || !b->open) continue;
        CHECK(a->fdflags == b->fdflags, "fd %d: F_GETFD 0x%x, was 0x%x", fd, a->fdflags, b->fdflags);
        /* O_TMPFILE is how the file was made, not a way to open it again: only it may be gone */
        int tmpbits = fd == ft ? O_TMPFILE : 0;
        CHECK((a->flflags & ~tmpbits) == (b->flflags & ~tmpbits), "fd %d: F_GETFL 0%o, was 0%o", fd, a->flflags, b->flflags);
        CHECK(a->pos == b->pos, "fd %d: offset %ld, was %ld", fd, (long)a->pos, (long)b->pos);
        if (fd != fu && fd != fu_ro && fd != ft && fd != fznode && fd != fgsym)   /* files (and device nodes) without a name are made again */
            CHECK(a->dev == b->dev && a->ino == b->ino, "fd %d: another file (ino %lu, was %lu)", fd, (unsigned long)a->ino, (unsigned long)b->ino);
    }
    CHECK((fcntl(fa_cx, F_GETFD) & FD_CLOEXEC) && (fcntl(fc, F_GETFD) & FD_CLOEXEC) && !(fcntl(fa, F_GETFD) & FD_CLOEXEC),
          "close-on-exec flags");

    /* one description behind fa, fa_dup, 100 and 50: one offset */
    MUST(lseek(fa, 4321, SEEK_SET) == 4321);
    CHECK(pos(fa_dup) == 4321 && pos(fa100) == 4321 && pos(fa_cx) == 4321,
          "dup'ed fds no longer share the offset: %ld %ld %ld", (long)pos(fa_dup), (long)pos(fa100), (long)pos(fa_cx));
    CHECK(read(fa100, buf, 100) == 100 && memcmp(buf, content + 4321, 100) == 0, "read through fd 100");
    CHECK(pos(fa) == 4421, "offset after a read through fd 100 is %ld", (long)pos(fa));
    CHECK(pos(fc) == 5000, "the other description of a.dat moved: %ld", (long)pos(fc));
    CHECK(read(fc, buf, 10) == 10 && memcmp(buf, content + 5000, 10) == 0, "read through the O_RDONLY fd");
    CHECK(write(fc, "x", 1) < 0 && errno == EBADF, "the O_RDONLY fd can write");
    CHECK(write(fa, "Z", 1) == 1, "write through the O_RDWR fd: %s", strerror(errno));

    /* O_APPEND */
    MUST(lseek(fb, 0, SEEK_SET) == 0);
    CHECK(write(fb, "line2\n", 6) == 6, "write to the O_APPEND fd: %s", strerror(errno));
    int chk = open("b.log", O_RDONLY);
    ssize_t n = read(chk, buf, sizeof buf);
    close(chk);
    CHECK(n == 12 && memcmp(buf, "line1\nline2\n", 12) == 0, "b.log holds '%.*s'", (int)(n > 0 ? n : 0), buf);
    CHECK(write(fd_, "tail", 4) == 4 && pos(fd_) == 504, "write to the O_SYNC fd");
    CHECK(read(fd_, buf, 1) < 0 && errno == EBADF, "the O_WRONLY fd can read");

    /* the unlinked file */
    struct stat st;
    CHECK(fstat(fu, &st) == 0 && st.st_nlink == 0, "unlinked file has %lu links", (unsigned long)st.st_nlink);
    CHECK(st.st_size == (1 << 21), "unlinked file size %ld (a trailing hole was lost?)", (long)st.st_size);
    CHECK((st.st_mode & 07777) == 0664, "unlinked file mode 0%o", st.st_mode & 0777);
    CHECK(st.st_mtim.tv_sec == 123456 && st.st_mtim.tv_nsec == 789 && st.st_atim.tv_sec == 1000000,
          "unlinked file times: mtime %ld.%09ld atime %ld", (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, (long)st.st_atim.tv_sec);
    CHECK(pread(fu, buf, sizeof gone < sizeof buf ? sizeof gone : sizeof buf, 0) > 0 && check_fill(buf, 20000, 22) < 0,
          "unlinked file content differs");
    static char zeros[4096];
    CHECK(pread(fu, buf, 4096, 500000) == 4096 && memcmp(buf, zeros, 4096) == 0, "hole of the unlinked file is not zero");
    CHECK(pread(fu, buf, 200, 1 << 20) == 200 && check_fill(buf, 100, 22) < 0 && memcmp(buf + 100, zeros, 100) == 0, "data after the hole differs");
    char link[1100], lpath[64];
    snprintf(lpath, sizeof lpath, "/proc/self/fd/%d", fu);
    ssize_t ll = readlink(lpath, link, sizeof link - 1);
    link[ll > 0 ? ll : 0] = 0;
    CHECK(ll > 0 && ends_with(link, "/gone.dat (deleted)"), "fd %d of the unlinked file links to '%s'", fu, link);
    snprintf(lpath, sizeof lpath, "/proc/self/fd/%d", fu_ro);
    ll = readlink(lpath, link, sizeof link - 1);
    link[ll > 0 ? ll : 0] = 0;
    CHECK(ll > 0 && ends_with(link, "/gone2.dat (deleted)"), "fd %d of the unlinked file, opened by its second name, links to '%s'", fu_ro, link);
    snprintf(lpath, sizeof lpath, "/proc/self/map_files/%lx-%lx", (unsigned long)gone_map, (unsigned long)gone_map + 4096);
    ll = readlink(lpath, link, sizeof link - 1);
    link[ll > 0 ? ll : 0] = 0;
    CHECK(ll > 0 && ends_with(link, "/gone3.dat (deleted)"), "the region of the unlinked file, mapped by its third name, shows '%s'", link);
    CHECK(memcmp(gone_map, gone, 4096) == 0, "the region of the unlinked file holds other data");
    struct stat st2;
    CHECK(fstat(fu_ro, &st2) == 0 && st2.st_ino == st.st_ino && st2.st_dev == st.st_dev,
          "the two descriptions of the unlinked file are different files now (ino %lu and %lu)",
          (unsigned long)st.st_ino, (unsigned long)st2.st_ino);
    CHECK(pwrite(fu, "NEW", 3, 10) == 3, "write to the unlinked file");
    CHECK(pread(fu_ro, buf, 3, 10) == 3 && memcmp(buf, "NEW", 3) == 0, "a write through one description of the unlinked file is not seen through the other");
    CHECK(read(fu, buf, 10) == 10 && memcmp(buf, gone + 777, 10) == 0, "read at the unlinked file's offset");
    char names[2048];
    int entries = count_entries(cwd, names, sizeof names);
    CHECK(entries == 3, "the directory holds %d entries: %s(expected a.dat b.log d.dat)", entries, names);
    entries = count_entries(argv[1], names, sizeof names);
    CHECK(strstr(names, "gone") == NULL, "the unlinked file reappeared: %s", names);

    CHECK(fstat(ft, &st) == 0 && st.st_nlink == 0 && st.st_size == 12, "O_TMPFILE file: %lu links, %ld bytes", (unsigned long)st.st_nlink, (long)st.st_size);
    CHECK(read(ft, buf, 9) == 9 && memcmp(buf, "file data", 9) == 0, "O_TMPFILE file content or offset differs");

    /* devices */
    CHECK(write(fnull, buf, 100) == 100, "/dev/null write");
    memset(buf, 1, 64);
    CHECK(read(fzero, buf, 64) == 64 && memcmp(buf, zeros, 64) == 0, "/dev/zero read");
    CHECK(read(frand, buf, 16) == 16, "/dev/urandom read");
    snprintf(lpath, sizeof lpath, "/proc/self/fd/%d", fzero);
    ll = readlink(lpath, link, sizeof link - 1);
    link[ll > 0 ? ll : 0] = 0;
    CHECK(strcmp(link, "/dev/zero") == 0, "fd %d links to %s", fzero, link);
    {
        struct stat ls;
        char target[64] = "";
        CHECK(fstatat(fsym, "", &ls, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(ls.st_mode), "the O_PATH fd of a symbolic link is not one (%s)", strerror(errno));
        CHECK(readlinkat(fsym, "", target, sizeof target - 1) == 5 && !strcmp(target, "a.dat"), "the O_PATH fd of a symbolic link reads '%s'", target);
        CHECK((fcntl(fsym, F_GETFL) & O_PATH) != 0, "the fd of a symbolic link lost O_PATH");
        memset(target, 0, sizeof target);
        CHECK(fstatat(fgsym, "", &ls, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(ls.st_mode) && ls.st_nlink == 0, "the O_PATH fd of a removed symbolic link is not one (%s)", strerror(errno));
        CHECK(readlinkat(fgsym, "", target, sizeof target - 1) == 5 && !strcmp(target, "b.log"), "the removed symbolic link reads '%s'", target);
        CHECK(access(gonesym, F_OK) != 0 && errno == ENOENT, "the removed symbolic link has a name again");
    }
    memset(buf, 1, 64);
    CHECK(read(fznode, buf, 64) == 64 && memcmp(buf, zeros, 64) == 0, "a removed node of /dev/zero's device: read");
    CHECK(fstat(fznode, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 5) && (st.st_mode & 07777) == 0640,
          "a removed node of /dev/zero's device is not that device, or lost its mode (0%o)", st.st_mode & 07777);

    {
        struct stat now_l, now_o;
        CHECK(fstat(fl, &now_l) == 0 && now_l.st_ino == lst.st_ino && stat(other, &now_o) == 0 && now_o.st_ino == lst.st_ino,
              "the file removed under one name is not the one of its other name");
        CHECK(read(fl, buf, 4) == 4 && memcmp(buf, "ed d", 4) == 0, "the file removed under one name: offset or content");
        CHECK(access(linked, F_OK) != 0 && errno == ENOENT, "the removed name is back");
        CHECK(pwrite(fl, "L", 1, 0) == 1, "write to the file removed under one name");
        int fo = open(other, O_RDONLY);
        CHECK(fo >= 0 && read(fo, buf, 1) == 1 && buf[0] == 'L', "a write does not show through the other name");
        if (fo >= 0) close(fo);
    }

    /* directory fd, cwd, umask */
    CHECK(fstat(fdir, &st) == 0 && S_ISDIR(st.st_mode), "directory fd");
    CHECK(faccessat(fdir, "cwd/a.dat", R_OK, 0) == 0, "lookup through the directory fd: %s", strerror(errno));
    char now[1024];
    CHECK(getcwd(now, sizeof now) && strcmp(now, cwd) == 0, "cwd is %s, expected %s", now, cwd);
    mode_t um = umask(022);
    CHECK(um == 027, "umask is 0%o, expected 027", um);
    return e2e_finish();
}
