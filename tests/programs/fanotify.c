/* fanotify DIR: fanotify groups across a restart. DIR (made here, on the test's filesystem) gets a tmpfs
 * mounted on DIR/m for the marks that see a whole mount or filesystem, so that nothing but this program
 * makes events for them.
 *   group A (FAN_CLASS_NOTIF, non-blocking, event files O_RDONLY): an inode mark on DIR (modify and
 *     close-write, on its children too), an ignore mask for modify on DIR/quiet (surviving modification),
 *     a mount mark on DIR/m (close-write);
 *   group B (FAN_REPORT_FID, blocking): a filesystem mark on the tmpfs (create, directories too).
 * After the restart: the fdinfo of both groups (flags and every mark: inode, device, mount id, masks) is
 * what it was, and each mark still reports what it should: DIR/file modified (A, with an event file
 * naming it), DIR/quiet modified but not reported, DIR/m/x closed after writing (A, mount mark), a
 * directory made in DIR/m (B: FAN_CREATE, no event file). */
#include "e2e.h"
#include <poll.h>
#include <sys/fanotify.h>
#include <sys/mount.h>
#include <sys/stat.h>

static char marks_a[4096], marks_b[4096];

/* the "fanotify " lines of the fdinfo of fd */
static void fdinfo_marks(int fd, char *out, size_t n)
{
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(path, "r");
    MUST(f != NULL);
    out[0] = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "fanotify ", 9) == 0) strncat(out, line, n - strlen(out) - 1);
    fclose(f);
}

static void touch(const char *dir, const char *name, const char *data)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    MUST(fd >= 0);
    MUST(write(fd, data, strlen(data)) == (ssize_t)strlen(data));
    close(fd);
}

struct seen { uint64_t mask; char path[4096]; };

/* reads group A's events (each with an event file) for up to `ms` after the first; returns how many */
static int read_a(int g, struct seen *out, int max, int ms)
{
    int n = 0;
    struct pollfd p = { g, POLLIN, 0 };
    while (n < max && poll(&p, 1, ms) == 1) {
        char buf[8192] __attribute__((aligned(8)));
        ssize_t len = read(g, buf, sizeof buf);
        if (len <= 0) break;
        for (struct fanotify_event_metadata *m = (void *)buf; FAN_EVENT_OK(m, len) && n < max; m = FAN_EVENT_NEXT(m, len)) {
            char link[64];
            out[n].mask = m->mask;
            out[n].path[0] = 0;
            if (m->fd >= 0) {
                snprintf(link, sizeof link, "/proc/self/fd/%d", m->fd);
                ssize_t l = readlink(link, out[n].path, sizeof out[n].path - 1);
                out[n].path[l > 0 ? l : 0] = 0;
                close(m->fd);
            }
            n++;
        }
    }
    return n;
}

static int has(struct seen *s, int n, uint64_t bit, const char *path)
{
    for (int i = 0; i < n; i++)
        if ((s[i].mask & bit) && strcmp(s[i].path, path) == 0) return 1;
    return 0;
}

int main(int argc, char **argv)
{
    e2e_init();
    MUST(argc == 2);
    const char *dir = argv[1];
    char m[4096], quiet[4096], file[4096], mx[4096];
    snprintf(m, sizeof m, "%s/m", dir);
    snprintf(quiet, sizeof quiet, "%s/quiet", dir);
    snprintf(file, sizeof file, "%s/file", dir);
    snprintf(mx, sizeof mx, "%s/x", m);
    MUST(mkdir(dir, 0755) == 0 && mkdir(m, 0755) == 0);
    MUST(mount("fantest", m, "tmpfs", 0, "size=1m") == 0);
    touch(dir, "quiet", "q");
    touch(dir, "file", "f");

    int a = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK | FAN_CLOEXEC, O_RDONLY | O_LARGEFILE);
    int b = fanotify_init(FAN_CLASS_NOTIF | FAN_REPORT_FID, O_RDONLY);
    MUST(a >= 0 && b >= 0);
    MUST(fanotify_mark(a, FAN_MARK_ADD, FAN_MODIFY | FAN_CLOSE_WRITE | FAN_EVENT_ON_CHILD, AT_FDCWD, dir) == 0);
    MUST(fanotify_mark(a, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_MODIFY, AT_FDCWD, quiet) == 0);
    MUST(fanotify_mark(a, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_CLOSE_WRITE, AT_FDCWD, m) == 0);
    MUST(fanotify_mark(b, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_CREATE | FAN_ONDIR, AT_FDCWD, m) == 0);
    fdinfo_marks(a, marks_a, sizeof marks_a);
    fdinfo_marks(b, marks_b, sizeof marks_b);
    say("READY");
    e2e_wait_usr1();

    char now[4096];
    fdinfo_marks(a, now, sizeof now);
    CHECK(strcmp(now, marks_a) == 0, "group A's marks differ:\n%s-- instead of --\n%s", now, marks_a);
    fdinfo_marks(b, now, sizeof now);
    CHECK(strcmp(now, marks_b) == 0, "group B's marks differ:\n%s-- instead of --\n%s", now, marks_b);
    CHECK((fcntl(a, F_GETFL) & O_NONBLOCK) && !(fcntl(b, F_GETFL) & O_NONBLOCK), "O_NONBLOCK of the groups changed");
    CHECK((fcntl(a, F_GETFD) & FD_CLOEXEC) && (fcntl(b, F_GETFD) & FD_CLOEXEC) == 0, "close-on-exec of the groups changed");

    touch(dir, "quiet", "qq");
    touch(dir, "file", "ff");
    touch(m, "x", "x");
    static struct seen s[64];
    int n = read_a(a, s, 64, 1000);
    CHECK(has(s, n, FAN_MODIFY, file), "no FAN_MODIFY event for %s (%d events)", file, n);
    CHECK(has(s, n, FAN_CLOSE_WRITE, quiet), "no FAN_CLOSE_WRITE event for %s (%d events)", quiet, n);
    CHECK(!has(s, n, FAN_MODIFY, quiet), "a FAN_MODIFY event for %s, whose ignore mask should hide it", quiet);
    CHECK(has(s, n, FAN_CLOSE_WRITE, mx), "no FAN_CLOSE_WRITE event for %s from the mount mark (%d events)", mx, n);
    for (int i = 0; i < n; i++) CHECK(s[i].mask & (FAN_MODIFY | FAN_CLOSE_WRITE), "unexpected event 0x%llx on %s", (unsigned long long)s[i].mask, s[i].path);

    char sub[4096];
    snprintf(sub, sizeof sub, "%s/sub", m);
    MUST(mkdir(sub, 0755) == 0);
    struct pollfd p = { b, POLLIN, 0 };
    CHECK(poll(&p, 1, 2000) == 1, "the filesystem mark reports nothing");
    char buf[4096] __attribute__((aligned(8)));
    ssize_t len = p.revents ? read(b, buf, sizeof buf) : 0;
    struct fanotify_event_metadata *e = (void *)buf;
    CHECK(len > 0 && FAN_EVENT_OK(e, len) && (e->mask & FAN_CREATE) && e->fd == FAN_NOFD,
          "group B's event: %zd bytes, mask 0x%llx, fd %d", len, len > 0 ? (unsigned long long)e->mask : 0ULL, len > 0 ? e->fd : 0);

    umount2(m, MNT_DETACH);
    return e2e_finish();
}
