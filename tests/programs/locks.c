/* locks DIR: file locks held across a restart: a flock write lock on DIR/a (held by a description the
 * process shares with a child), POSIX locks on DIR/b (write on bytes 10-19, read from 100 to EOF,
 * through a dup'd fd too), an OFD write lock on bytes 5-7 of DIR/c, a read lease on DIR/d and a write
 * lease on DIR/e, and two leases being broken at the checkpoint (DIR/f: read, broken to none; DIR/g:
 * write, brought down to read). After the restart another process (forked then) must find each lock held exactly as
 * before (an open that breaks a lease waits for it: non-blocking, it fails with EWOULDBLOCK and the
 * holder gets SIGIO), and the holder can still release them. */
#include "e2e.h"
#include <sys/file.h>
#include <sys/wait.h>

static volatile sig_atomic_t breaks;
static void on_sigio(int sig) { (void)sig; breaks++; }
/* breaks of the leases being broken at the checkpoint (F_SETSIG: SIGRTMIN+1, with the fd) */
static volatile sig_atomic_t rt_breaks, rt_fd = -1;
static void on_rt(int sig, siginfo_t *si, void *uc) { (void)sig; (void)uc; rt_breaks++; rt_fd = si->si_fd; }

static int plock(int fd, int cmd, short type, off_t start, off_t len, struct flock *out)
{
    struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
    int r = fcntl(fd, cmd, &fl);
    if (out) *out = fl;
    return r;
}

int main(int argc, char **argv)
{
    e2e_init();
    MUST(argc == 2);
    char a[256], b[256], c[256], d[256], e[256];
    snprintf(a, sizeof a, "%s/a", argv[1]);
    snprintf(b, sizeof b, "%s/b", argv[1]);
    snprintf(c, sizeof c, "%s/c", argv[1]);
    snprintf(d, sizeof d, "%s/d", argv[1]);
    snprintf(e, sizeof e, "%s/e", argv[1]);
    MUST(signal(SIGIO, on_sigio) != SIG_ERR);
    close(open(d, O_RDWR | O_CREAT, 0600));
    int fd_ = open(d, O_RDONLY), fe = open(e, O_RDWR | O_CREAT, 0600);
    MUST(fd_ >= 0 && fe >= 0);
    MUST(fcntl(fd_, F_SETLEASE, F_RDLCK) == 0 && fcntl(fe, F_SETLEASE, F_WRLCK) == 0);
    int fa = open(a, O_RDWR | O_CREAT, 0600), fb = open(b, O_RDWR | O_CREAT, 0600), fc = open(c, O_RDWR | O_CREAT, 0600);
    MUST(fa >= 0 && fb >= 0 && fc >= 0);
    MUST(flock(fa, LOCK_EX) == 0);
    MUST(plock(fb, F_SETLK, F_WRLCK, 10, 10, NULL) == 0 && plock(fb, F_SETLK, F_RDLCK, 100, 0, NULL) == 0);
    int fb2 = dup(fb);
    MUST(fb2 >= 0);
    MUST(plock(fc, F_OFD_SETLK, F_WRLCK, 5, 3, NULL) == 0);
    /* leases being broken at the checkpoint: a read lease on DIR/f broken by an open for writing (to
     * none), a write lease on DIR/g broken by an open for reading (to read); each break signalled once */
    char fpath[256], gpath[256];
    snprintf(fpath, sizeof fpath, "%s/f", argv[1]);
    snprintf(gpath, sizeof gpath, "%s/g", argv[1]);
    struct sigaction rt;
    memset(&rt, 0, sizeof rt);
    rt.sa_sigaction = on_rt;
    rt.sa_flags = SA_SIGINFO;
    MUST(sigaction(SIGRTMIN + 1, &rt, NULL) == 0);
    close(open(fpath, O_RDWR | O_CREAT, 0600));
    int ff = open(fpath, O_RDONLY), fg = open(gpath, O_RDWR | O_CREAT, 0600);
    MUST(ff >= 0 && fg >= 0);
    MUST(fcntl(ff, F_SETLEASE, F_RDLCK) == 0 && fcntl(ff, F_SETSIG, SIGRTMIN + 1) == 0);
    MUST(fcntl(fg, F_SETLEASE, F_WRLCK) == 0 && fcntl(fg, F_SETSIG, SIGRTMIN + 1) == 0);
    MUST(open(fpath, O_WRONLY | O_NONBLOCK) < 0 && errno == EWOULDBLOCK);
    MUST(open(gpath, O_RDONLY | O_NONBLOCK) < 0 && errno == EWOULDBLOCK);
    for (int i = 0; i < 1000 && rt_breaks < 2; i++) usleep(1000);
    MUST(rt_breaks == 2);
    MUST(fcntl(ff, F_GETLEASE) == F_UNLCK && fcntl(fg, F_GETLEASE) == F_RDLCK);
    int sync[2];
    MUST(pipe(sync) == 0);
    pid_t sharer = fork();   /* holds fa's description too (and so the flock) */
    MUST(sharer >= 0);
    if (sharer == 0) { char x; close(sync[1]); _exit(read(sync[0], &x, 1) == 1 ? 0 : 3); }
    close(sync[0]);
    say("READY");
    e2e_wait_usr1();
    CHECK(fcntl(fd_, F_GETLEASE) == F_RDLCK && fcntl(fe, F_GETLEASE) == F_WRLCK, "leases %d and %d instead of a read and a write lease", fcntl(fd_, F_GETLEASE), fcntl(fe, F_GETLEASE));
    /* the leases being broken: still breaking to the same types, no second signal, their signal kept */
    usleep(20000);
    CHECK(rt_breaks == 2, "%d break signals for the leases being broken (2 before the checkpoint)", (int)rt_breaks);
    CHECK(fcntl(ff, F_GETLEASE) == F_UNLCK && fcntl(fg, F_GETLEASE) == F_RDLCK, "leases being broken at the checkpoint: %d and %d instead of %d and %d",
          fcntl(ff, F_GETLEASE), fcntl(fg, F_GETLEASE), F_UNLCK, F_RDLCK);
    CHECK(fcntl(ff, F_GETSIG) == SIGRTMIN + 1 && fcntl(fg, F_GETSIG) == SIGRTMIN + 1, "the break signal of the leases being broken is lost");
    CHECK(open(gpath, O_WRONLY | O_NONBLOCK) < 0 && errno == EWOULDBLOCK, "the write lease being brought down to read no longer stops a writer");
    CHECK(fcntl(ff, F_SETLEASE, F_UNLCK) == 0 && fcntl(fg, F_SETLEASE, F_UNLCK) == 0, "cannot give up the leases being broken: %s", strerror(errno));

    pid_t me = getpid(), child = fork();
    MUST(child >= 0);
    if (child == 0) {
        int bad = 0;
        int ga = open(a, O_RDWR), gb = open(b, O_RDWR), gc = open(c, O_RDWR);
        if (ga < 0 || gb < 0 || gc < 0) _exit(10);
        if (flock(ga, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK) { say("FAIL: the flock lock is gone"); bad++; }
        struct flock fl;
        if (plock(gb, F_GETLK, F_WRLCK, 10, 10, &fl) != 0 || fl.l_type != F_WRLCK || fl.l_pid != me || fl.l_start != 10 || fl.l_len != 10) { say("FAIL: POSIX write lock: type %d pid %d range %ld+%ld", fl.l_type, fl.l_pid, (long)fl.l_start, (long)fl.l_len); bad++; }
        if (plock(gb, F_GETLK, F_WRLCK, 150, 10, &fl) != 0 || fl.l_type != F_RDLCK || fl.l_pid != me || fl.l_start != 100 || fl.l_len != 0) { say("FAIL: POSIX read lock: type %d range %ld+%ld", fl.l_type, (long)fl.l_start, (long)fl.l_len); bad++; }
        if (plock(gb, F_GETLK, F_RDLCK, 150, 10, &fl) != 0 || fl.l_type != F_UNLCK) { say("FAIL: a read lock conflicts with the read lock"); bad++; }
        if (plock(gb, F_GETLK, F_WRLCK, 30, 50, &fl) != 0 || fl.l_type != F_UNLCK) { say("FAIL: bytes 30-79 are locked (type %d)", fl.l_type); bad++; }
        int od = open(d, O_WRONLY | O_NONBLOCK), oe = open(e, O_RDONLY | O_NONBLOCK);
        if (od >= 0 || errno != EWOULDBLOCK) { say("FAIL: opening %s for writing does not break a read lease (%s)", d, od >= 0 ? "opened" : strerror(errno)); bad++; }
        if (oe >= 0 || errno != EWOULDBLOCK) { say("FAIL: opening %s for reading does not break a write lease (%s)", e, oe >= 0 ? "opened" : strerror(errno)); bad++; }
        if (plock(gc, F_OFD_GETLK, F_WRLCK, 0, 20, &fl) != 0 || fl.l_type != F_WRLCK || fl.l_start != 5 || fl.l_len != 3) { say("FAIL: OFD lock: type %d range %ld+%ld", fl.l_type, (long)fl.l_start, (long)fl.l_len); bad++; }
        _exit(bad);
    }
    int st;
    CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the locks differ (status 0x%x)", st);
    for (int i = 0; i < 200 && breaks == 0; i++) usleep(10000);
    CHECK(breaks > 0, "no lease break signal");   /* SIGIO is not queued: the two breaks may give one */
    CHECK(fcntl(fd_, F_GETLEASE) == F_UNLCK && fcntl(fe, F_GETLEASE) == F_RDLCK, "leases being broken: %d and %d instead of %d and %d", fcntl(fd_, F_GETLEASE), fcntl(fe, F_GETLEASE), F_UNLCK, F_RDLCK);
    /* the holder can release them: another process can then take them */
    CHECK(fcntl(fd_, F_SETLEASE, F_UNLCK) == 0 && fcntl(fe, F_SETLEASE, F_UNLCK) == 0, "cannot give the leases up: %s", strerror(errno));
    CHECK(plock(fb2, F_SETLK, F_UNLCK, 0, 0, NULL) == 0, "cannot release the POSIX locks: %s", strerror(errno));
    CHECK(plock(fc, F_OFD_SETLK, F_UNLCK, 0, 0, NULL) == 0, "cannot release the OFD lock: %s", strerror(errno));
    MUST(write(sync[1], "x", 1) == 1);
    CHECK(waitpid(sharer, &st, 0) == sharer && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child sharing the flock description ended with 0x%x", st);
    CHECK(flock(fa, LOCK_UN) == 0, "cannot release the flock lock");
    child = fork();
    if (child == 0) {
        int ga = open(a, O_RDWR), gb = open(b, O_RDWR);
        _exit(ga >= 0 && gb >= 0 && flock(ga, LOCK_EX | LOCK_NB) == 0 && plock(gb, F_SETLK, F_WRLCK, 0, 0, NULL) == 0 ? 0 : 1);
    }
    CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the locks cannot be taken once released");
    return e2e_finish();
}
