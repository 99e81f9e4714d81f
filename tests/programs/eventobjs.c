/* eventobjs: anon-inode event objects across a restart.
 *   eventobjs DIR     eventfds (a plain one with a count, a semaphore one, one above 2^32), timerfds
 *                     (periodic with a long interval, disarmed, expired with an unread tick, absolute
 *                     CLOCK_REALTIME), a signalfd with signals pending for it, an epoll watching a pipe
 *                     (EPOLLET) and an eventfd (EPOLLONESHOT) with custom data, an inotify instance
 *                     watching DIR and DIR/sub2 with a gap in its wds (DIR/sub1 was watched then removed).
 *                     After the restart each is checked through its own system calls.
 *   eventobjs closed  an epoll whose watched fd was closed after being added (the file is still open
 *                     through another fd), then the number reused for a pipe watched too: after the
 *                     restart both report, each under that number; prints "EPFD n" and "TFD m".
 *   eventobjs closedother  the same, the file then held by a child only: the checkpoint must refuse.
 *   eventobjs slowwatch DIR  an inotify instance that reads its events late (see slowwatch_mode).
 *   eventobjs watchdir DIR   an inotify instance watching the directory of ckpt's image and log.
 *   eventobjs rotated DIR    an inotify instance watching a log file that was then removed while still
 *                            open (a log rotated under `tail -F`), and DIR: after the restart a write
 *                            to the removed file is reported under its wd, a new file in DIR under its.
 */
#include "e2e.h"
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>

static int closed_mode(int other)
{
    int efd = eventfd(0, 0), ep = epoll_create1(0);
    MUST(efd >= 0 && ep >= 0);
    int pp[2] = { -1, -1 };
    if (!other) MUST(pipe(pp) == 0);
    int d = dup(efd);
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 1 };
    MUST(epoll_ctl(ep, EPOLL_CTL_ADD, d, &ev) == 0);
    close(d);
    pid_t child = -1;
    if (!other) {
        /* the number reused for a pipe and added again: two watches of fd d, one of a closed fd */
        MUST(dup2(pp[0], d) == d);
        close(pp[0]);
        struct epoll_event ev2 = { .events = EPOLLIN, .data.u64 = 2 };
        MUST(epoll_ctl(ep, EPOLL_CTL_ADD, d, &ev2) == 0);
    }
    if (other) {
        /* the watched file is then held by a child only */
        e2e_block_usr1(1);
        child = fork();
        MUST(child >= 0);
        if (child == 0) {
            close(ep);
            e2e_child_wait_usr1();
            _exit(write(efd, &(uint64_t){ 1 }, 8) == 8 ? 0 : 1);
        }
        close(efd);
    }
    say("EPFD %d", ep);
    say("TFD %d", d);
    say("READY");
    e2e_wait_usr1();
    if (other) {
        kill(child, SIGUSR1);
        e2e_child_verdict(child, "the child");
    } else {
        /* fd d is the pipe again, and only the pipe's watch reports */
        CHECK(fcntl(d, F_GETFD) == 0 && write(pp[1], "p", 1) == 1, "fd %d is not the pipe's read end", d);
        CHECK(epoll_wait(ep, &ev, 1, 0) == 1 && ev.data.u64 == 2, "the pipe's watch under fd %d does not report (%lu)", d, (unsigned long)ev.data.u64);
        char c;
        MUST(read(d, &c, 1) == 1);
        MUST(write(efd, &(uint64_t){ 1 }, 8) == 8);
    }
    /* (with the child gone, so is the file, and its watch with it) */
    if (!other) CHECK(epoll_wait(ep, &ev, 1, 0) == 1 && ev.data.u64 == 1, "the epoll no longer reports the file of the closed fd");
    if (!other) {
        /* that watch is keyed by the file and the closed fd's number: adding the file again under that
         * number finds it (EEXIST), under another number it is a new watch */
        MUST(dup2(efd, d) == d);
        CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, d, &ev) < 0 && errno == EEXIST, "the watch is not keyed by fd %d (%s)", d, strerror(errno));
        int d3 = fcntl(efd, F_DUPFD, d + 10);
        CHECK(d3 >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, d3, &ev) == 0, "the file cannot be watched under another fd: %s", strerror(errno));
    }
    return e2e_finish();
}

/* makes DIR/after and checks that the inotify instance `in` (watching DIR for IN_CREATE) reports it */
static void new_file_reported(int in, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/after", dir);
    int f = open(path, O_CREAT | O_WRONLY, 0644);
    MUST(f >= 0);
    close(f);
    struct pollfd p = { in, POLLIN, 0 };
    CHECK(poll(&p, 1, 2000) == 1, "the watch no longer reports new files");
}

/* "slowwatch DIR": an inotify instance watching DIR that reads its events 300 ms after they come; a
 * checkpoint taken right after a file is made in DIR finds them queued. After SIGUSR1: the event was
 * read (IN_CREATE of "made"), and the watch still reports a new file. */
static int slowwatch_mode(const char *dir)
{
    int in = inotify_init1(0);
    MUST(in >= 0 && inotify_add_watch(in, dir, IN_CREATE) >= 0);
    say("READY");
    char buf[4096] __attribute__((aligned(8)));
    int seen = 0;
    while (!seen) {
        struct pollfd p = { in, POLLIN, 0 };
        if (poll(&p, 1, -1) != 1) { MUST(errno == EINTR); continue; }
        sleep_full(0.3);
        ssize_t n = read(in, buf, sizeof buf);
        MUST(n > 0);
        for (char *q = buf; q < buf + n;) {
            struct inotify_event *e = (struct inotify_event *)q;
            if (e->len && strcmp(e->name, "made") == 0) seen = 1;
            q += sizeof *e + e->len;
        }
    }
    say("SEEN");
    e2e_wait_usr1();
    new_file_reported(in, dir);
    return e2e_finish();
}

/* "watchdir DIR": an inotify instance watching DIR for new and written files, read as soon as events
 * come (a web server's file watcher); ckpt's image and log are written in DIR. After SIGUSR1: the watch
 * still reports a new file. */
static int rotated_mode(const char *dir)
{
    char log[4096];
    snprintf(log, sizeof log, "%s/app.log", dir);
    int lf = open(log, O_CREAT | O_WRONLY | O_APPEND, 0644);
    MUST(lf >= 0 && write(lf, "line 1\n", 7) == 7);
    int in = inotify_init1(IN_NONBLOCK);
    MUST(in >= 0);
    int wd_dir = inotify_add_watch(in, dir, IN_CREATE);
    int wd_log = inotify_add_watch(in, log, IN_MODIFY);
    MUST(wd_dir >= 0 && wd_log >= 0);
    MUST(unlink(log) == 0);   /* rotated away: the watch stays while the file is open */
    char buf[4096] __attribute__((aligned(8)));
    while (read(in, buf, sizeof buf) > 0) { }   /* the events so far (the log's creation) */
    say("READY");
    e2e_wait_usr1();
    MUST(write(lf, "line 2\n", 7) == 7);
    struct pollfd p = { in, POLLIN, 0 };
    CHECK(poll(&p, 1, 2000) == 1, "no event for the write to the removed log");
    ssize_t n = read(in, buf, sizeof buf);
    const struct inotify_event *e = (const void *)buf;
    CHECK(n >= (ssize_t)sizeof *e && e->wd == wd_log && (e->mask & IN_MODIFY), "the write to the removed log: %zd bytes, wd %d (want %d), mask 0x%x", n, n > 0 ? e->wd : -1, wd_log, n > 0 ? e->mask : 0);
    char made[4096];
    snprintf(made, sizeof made, "%s/app.log.1", dir);
    int f = open(made, O_CREAT | O_WRONLY, 0644);
    MUST(f >= 0);
    close(f);
    CHECK(poll(&p, 1, 2000) == 1 && read(in, buf, sizeof buf) > 0 && e->wd == wd_dir && (e->mask & IN_CREATE), "no IN_CREATE in the directory under wd %d", wd_dir);
    return e2e_finish();
}

static int watchdir_mode(const char *dir)
{
    int in = inotify_init1(0);
    MUST(in >= 0 && inotify_add_watch(in, dir, IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE) >= 0);
    say("READY");
    char buf[4096] __attribute__((aligned(8)));
    while (!e2e_go) {
        struct pollfd p = { in, POLLIN, 0 };
        if (poll(&p, 1, -1) == 1) MUST(read(in, buf, sizeof buf) > 0);
        else MUST(errno == EINTR);
    }
    fcntl(in, F_SETFL, O_NONBLOCK);
    while (read(in, buf, sizeof buf) > 0) {}   /* whatever came meanwhile */
    new_file_reported(in, dir);
    ssize_t n = read(in, buf, sizeof buf);
    int seen = 0;
    for (char *q = buf; n > 0 && q < buf + n;) {
        struct inotify_event *e = (struct inotify_event *)q;
        if (e->len && strcmp(e->name, "after") == 0 && (e->mask & IN_CREATE)) seen = 1;
        q += sizeof *e + e->len;
    }
    CHECK(seen, "no IN_CREATE of the new file");
    return e2e_finish();
}

static double ts(struct timespec t) { return t.tv_sec + t.tv_nsec / 1e9; }

int main(int argc, char **argv)
{
    e2e_init();
    if (argc > 1 && strcmp(argv[1], "closed") == 0) return closed_mode(0);
    if (argc > 1 && strcmp(argv[1], "closedother") == 0) return closed_mode(1);
    if (argc > 2 && strcmp(argv[1], "slowwatch") == 0) return slowwatch_mode(argv[2]);
    if (argc > 2 && strcmp(argv[1], "watchdir") == 0) return watchdir_mode(argv[2]);
    if (argc > 2 && strcmp(argv[1], "rotated") == 0) return rotated_mode(argv[2]);
    MUST(argc > 1);
    const char *dir = argv[1];

    /* eventfds */
    int efd = eventfd(5, EFD_NONBLOCK);
    MUST(efd >= 0 && write(efd, &(uint64_t){ 7 }, 8) == 8);   /* count 12 */
    int esem = eventfd(3, EFD_SEMAPHORE | EFD_CLOEXEC);
    MUST(esem >= 0);
    int ebig = eventfd(0, EFD_NONBLOCK);
    MUST(ebig >= 0 && write(ebig, &(uint64_t){ 0x100000005ull }, 8) == 8);

    /* timerfds */
    int tper = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    MUST(tper >= 0);
    struct itimerspec its = { .it_interval = { 500, 0 }, .it_value = { 1000, 0 } };
    MUST(timerfd_settime(tper, 0, &its, NULL) == 0);
    int toff = timerfd_create(CLOCK_REALTIME, 0);
    MUST(toff >= 0);
    int ttick = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    MUST(ttick >= 0);
    struct itimerspec once = { .it_value = { 0, 1000000 } };
    MUST(timerfd_settime(ttick, 0, &once, NULL) == 0);
    int tabs = timerfd_create(CLOCK_REALTIME, 0);
    MUST(tabs >= 0);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct itimerspec abs = { .it_value = { now.tv_sec + 3600, now.tv_nsec } };
    MUST(timerfd_settime(tabs, TFD_TIMER_ABSTIME, &abs, NULL) == 0);
    double abs_deadline = ts(abs.it_value);

    /* signalfd: SIGUSR2 (thread-directed) and SIGRTMIN+2 with a value (process-directed) pending */
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR2);
    sigaddset(&m, SIGRTMIN + 2);
    MUST(sigprocmask(SIG_BLOCK, &m, NULL) == 0);
    int sfd = signalfd(-1, &m, SFD_NONBLOCK);
    MUST(sfd >= 0);
    MUST(raise(SIGUSR2) == 0);
    MUST(sigqueue(getpid(), SIGRTMIN + 2, (union sigval){ .sival_int = 42 }) == 0);

    /* epoll: a pipe's read end (edge-triggered) and an eventfd (one-shot), custom data; a dup of the epoll fd */
    int p[2];
    MUST(pipe(p) == 0);
    int ewatch = eventfd(0, EFD_NONBLOCK);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    MUST(ewatch >= 0 && ep >= 0);
    struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.u64 = 0xdeadbeefcafe0001ull };
    MUST(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) == 0);
    ev = (struct epoll_event){ .events = EPOLLIN | EPOLLONESHOT, .data.u64 = 77 };
    MUST(epoll_ctl(ep, EPOLL_CTL_ADD, ewatch, &ev) == 0);
    int epdup = dup(ep);
    MUST(epdup >= 0);

    /* inotify: wds 1 (DIR) and 3 (DIR/sub2); wd 2 (DIR/sub1) was removed */
    char sub1[4096], sub2[4096], path[8300];
    snprintf(sub1, sizeof sub1, "%s/sub1", dir);
    snprintf(sub2, sizeof sub2, "%s/sub2", dir);
    MUST(mkdir(sub1, 0755) == 0 && mkdir(sub2, 0755) == 0);
    int in = inotify_init1(IN_NONBLOCK);
    MUST(in >= 0);
    int wd1 = inotify_add_watch(in, dir, IN_CREATE);
    int wd2 = inotify_add_watch(in, sub1, IN_CREATE);
    MUST(wd1 == 1 && wd2 == 2 && inotify_rm_watch(in, wd2) == 0);
    int wd3 = inotify_add_watch(in, sub2, IN_CREATE | IN_DELETE);
    MUST(wd3 == 3);
    char evbuf[4096] __attribute__((aligned(8)));
    MUST(read(in, evbuf, sizeof evbuf) > 0);   /* the IN_IGNORED of wd 2: the queue must be empty */
    /* a second inotify instance with 20 watches: wds 10 and up (the kernel shows wds in hex) */
    int in2 = inotify_init1(IN_NONBLOCK);
    MUST(in2 >= 0);
    for (int i = 0; i < 20; i++) {
        snprintf(path, sizeof path, "%s/w%d", dir, i);
        MUST(mkdir(path, 0755) == 0 && inotify_add_watch(in2, path, IN_CREATE) == i + 1);
    }
    /* a third one watching a symbolic link itself (IN_DONT_FOLLOW) to DIR/sub2 */
    char lnk[8300];
    snprintf(lnk, sizeof lnk, "%s/sub2.link", dir);
    MUST(symlink(sub2, lnk) == 0);
    int in3 = inotify_init1(IN_NONBLOCK);
    MUST(in3 >= 0 && inotify_add_watch(in3, lnk, IN_ATTRIB | IN_DONT_FOLLOW) == 1);
    while (read(in, evbuf, sizeof evbuf) > 0) {}   /* the first instance saw the mkdirs: empty it again */

    sleep_full(0.02);   /* ttick expires: one unread tick */
    say("READY");
    e2e_wait_usr1();

    uint64_t v = 0;
    /* eventfds */
    CHECK(read(efd, &v, 8) == 8 && v == 12, "eventfd count %llu, expected 12", (unsigned long long)v);
    CHECK(read(efd, &v, 8) < 0 && errno == EAGAIN, "eventfd not non-blocking or not empty after a read");
    CHECK(read(esem, &v, 8) == 8 && v == 1, "semaphore eventfd read %llu, expected 1", (unsigned long long)v);
    CHECK(read(esem, &v, 8) == 8 && read(esem, &v, 8) == 8 && v == 1, "semaphore eventfd lost its count of 3");
    fcntl(esem, F_SETFL, O_NONBLOCK);
    CHECK(read(esem, &v, 8) < 0 && errno == EAGAIN, "semaphore eventfd had more than 3");
    CHECK((fcntl(esem, F_GETFD) & FD_CLOEXEC) && !(fcntl(efd, F_GETFD) & FD_CLOEXEC), "eventfd close-on-exec flags");
    v = 0;
    CHECK(read(ebig, &v, 8) == 8 && v == 0x100000005ull, "big eventfd count %llx", (unsigned long long)v);

    /* timerfds */
    struct itimerspec g;
    CHECK(timerfd_gettime(tper, &g) == 0 && g.it_interval.tv_sec == 500 && g.it_interval.tv_nsec == 0,
          "periodic timerfd interval %ld.%09ld", (long)g.it_interval.tv_sec, g.it_interval.tv_nsec);
    CHECK(ts(g.it_value) > 900 && ts(g.it_value) <= 1000, "periodic timerfd value %f", ts(g.it_value));
    CHECK(read(tper, &v, 8) < 0 && errno == EAGAIN, "periodic timerfd expired or lost O_NONBLOCK");
    CHECK(timerfd_gettime(toff, &g) == 0 && ts(g.it_value) == 0 && ts(g.it_interval) == 0, "disarmed timerfd is armed");
    CHECK((fcntl(toff, F_GETFL) & O_NONBLOCK) == 0, "disarmed timerfd became non-blocking");
    v = 0;
    CHECK(read(ttick, &v, 8) == 8 && v == 1, "expired timerfd: read gave %llu ticks (%s), expected 1", (unsigned long long)v, strerror(errno));
    CHECK(timerfd_gettime(tabs, &g) == 0, "timerfd_gettime abs");
    clock_gettime(CLOCK_REALTIME, &now);
    {
        double left = ts(g.it_value), want = abs_deadline - ts(now);
        CHECK(left > want - 0.5 && left < want + 0.5, "absolute timerfd: %f s left, expected %f (its deadline moved)", left, want);
    }

    /* signalfd */
    struct signalfd_siginfo si[2];
    memset(si, 0, sizeof si);
    ssize_t r = read(sfd, si, sizeof si);
    CHECK(r == 2 * (ssize_t)sizeof si[0], "signalfd read %zd bytes, expected two signals", r);
    int got_usr2 = 0, got_rt = 0;
    for (int i = 0; i < r / (ssize_t)sizeof si[0]; i++) {
        if (si[i].ssi_signo == SIGUSR2) got_usr2 = 1;
        if (si[i].ssi_signo == (uint32_t)SIGRTMIN + 2 && si[i].ssi_int == 42) got_rt = 1;
    }
    CHECK(got_usr2 && got_rt, "signalfd did not return SIGUSR2 and SIGRTMIN+2 (value 42)");
    CHECK(read(sfd, si, sizeof si) < 0 && errno == EAGAIN, "signalfd: more signals, or blocking");

    /* epoll */
    struct epoll_event out[4];
    int n = epoll_wait(ep, out, 4, 0);
    CHECK(n == 0, "epoll reports %d events before anything is ready", n);
    MUST(write(p[1], "x", 1) == 1);
    n = epoll_wait(epdup, out, 4, 0);
    CHECK(n == 1 && out[0].data.u64 == 0xdeadbeefcafe0001ull && (out[0].events & EPOLLIN), "epoll after a pipe write: %d events, data %llx",
          n, n > 0 ? (unsigned long long)out[0].data.u64 : 0ull);
    n = epoll_wait(ep, out, 4, 0);
    CHECK(n == 0, "edge-triggered watch reported %d events twice for one write", n);
    MUST(write(ewatch, &(uint64_t){ 1 }, 8) == 8);
    n = epoll_wait(ep, out, 4, 0);
    CHECK(n == 1 && out[0].data.u64 == 77, "epoll after an eventfd write: %d events", n);
    MUST(write(ewatch, &(uint64_t){ 1 }, 8) == 8);
    n = epoll_wait(ep, out, 4, 0);
    CHECK(n == 0, "one-shot watch fired %d times more", n);
    CHECK(fcntl(ep, F_GETFD) & FD_CLOEXEC, "epoll lost EPOLL_CLOEXEC");

    /* inotify */
    CHECK(read(in, evbuf, sizeof evbuf) < 0 && errno == EAGAIN, "inotify has events queued after restart");
    snprintf(path, sizeof path, "%s/newfile", dir);
    int nf = open(path, O_CREAT | O_WRONLY, 0644);
    MUST(nf >= 0);
    close(nf);
    snprintf(path, sizeof path, "%s/other", sub2);
    MUST(mkdir(path, 0755) == 0);
    MUST(rmdir(path) == 0);
    r = read(in, evbuf, sizeof evbuf);
    int seen_create = 0, seen_sub2 = 0, seen_del = 0, bad = 0;
    for (char *e = evbuf; r > 0 && e < evbuf + r;) {
        struct inotify_event *ie = (struct inotify_event *)e;
        if (ie->wd == 1 && (ie->mask & IN_CREATE) && strcmp(ie->name, "newfile") == 0) seen_create = 1;
        else if (ie->wd == 3 && (ie->mask & IN_CREATE) && strcmp(ie->name, "other") == 0) seen_sub2 = 1;
        else if (ie->wd == 3 && (ie->mask & IN_DELETE) && strcmp(ie->name, "other") == 0) seen_del = 1;
        else { bad = 1; say("unexpected inotify event wd %d mask %x name %s", ie->wd, ie->mask, ie->len ? ie->name : ""); }
        e += sizeof *ie + ie->len;
    }
    CHECK(seen_create, "inotify: no IN_CREATE of newfile on wd 1");
    CHECK(seen_sub2 && seen_del, "inotify: no IN_CREATE/IN_DELETE on wd 3");
    CHECK(!bad, "inotify: unexpected events");
    CHECK(inotify_rm_watch(in, 2) < 0 && errno == EINVAL, "inotify wd 2 exists");
    /* the link's watch: an attribute change of the link is seen, one of its target is not */
    MUST(utimensat(AT_FDCWD, sub2, NULL, 0) == 0);
    CHECK(read(in3, evbuf, sizeof evbuf) < 0 && errno == EAGAIN, "inotify: the watch of a symbolic link follows it to its target");
    MUST(utimensat(AT_FDCWD, lnk, NULL, AT_SYMLINK_NOFOLLOW) == 0);
    r = read(in3, evbuf, sizeof evbuf);
    CHECK(r > 0 && ((struct inotify_event *)evbuf)->wd == 1 && (((struct inotify_event *)evbuf)->mask & IN_ATTRIB),
          "inotify: no IN_ATTRIB on the watch of a symbolic link (%zd)", r);
    for (int i = 0; i < 20; i++) {
        snprintf(path, sizeof path, "%s/w%d/f", dir, i);
        int f = open(path, O_CREAT | O_WRONLY, 0644);
        MUST(f >= 0);
        close(f);
        r = read(in2, evbuf, sizeof evbuf);
        struct inotify_event *ie = (struct inotify_event *)evbuf;
        CHECK(r > 0 && ie->wd == i + 1 && (ie->mask & IN_CREATE), "inotify: a file made in w%d gave wd %d, expected %d", i, r > 0 ? ie->wd : -1, i + 1);
    }
    return e2e_finish();
}
