/* fifo: named pipes (FIFOs) through a restart. fifo1: the parent reads, its child writes, with bytes
 * in flight; fifo2: opened read-write by the parent alone, holding bytes. After SIGUSR1 the child writes
 * more and exits; the parent must read everything in order, then end-of-file; fifo2 gives its bytes.
 * fifo3: opened read-write and write-only by the parent, holding bytes, then its name removed: after the
 * restart both descriptions still reach one pipe (bytes written through one are read through the other
 * after the old ones), with no name (link count 0, its fd link still "DIR/fifo3 (deleted)"). fifo4: a
 * control FIFO, two read ends opened O_NONBLOCK before any writer came: the kernel holds back POLLHUP for
 * them (a program polling it would spin otherwise), also after the restart, until a writer has come and
 * gone. fifo5: a read end that saw its writer leave reports POLLHUP, and still gives its byte. */
#include "e2e.h"
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/ioctl.h>
#include <poll.h>

static int hangup(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    return poll(&p, 1, 0) > 0 && (p.revents & POLLHUP);
}

int main(int argc, char **argv)
{
    e2e_init();
    MUST(argc == 2);
    char f1[512], f2[512], f3[512], f4[512], f5[512];
    snprintf(f1, sizeof f1, "%s/fifo1", argv[1]);
    snprintf(f2, sizeof f2, "%s/fifo2", argv[1]);
    snprintf(f3, sizeof f3, "%s/fifo3", argv[1]);
    snprintf(f4, sizeof f4, "%s/fifo4", argv[1]);
    snprintf(f5, sizeof f5, "%s/fifo5", argv[1]);
    MUST(mkfifo(f1, 0600) == 0 && mkfifo(f2, 0600) == 0);
    int rd = open(f1, O_RDONLY | O_NONBLOCK);
    MUST(rd >= 0);
    MUST(fcntl(rd, F_SETFL, 0) == 0);   /* blocking reads from here on */
    int both = open(f2, O_RDWR);
    MUST(both >= 0 && write(both, "kept", 4) == 4);
    MUST(mkfifo(f3, 0600) == 0);
    int gone = open(f3, O_RDWR), gonew = open(f3, O_WRONLY);
    MUST(gone >= 0 && gonew >= 0 && write(gone, "gone", 4) == 4 && unlink(f3) == 0);

    MUST(mkfifo(f4, 0600) == 0 && mkfifo(f5, 0600) == 0);
    int ctl = open(f4, O_RDONLY | O_NONBLOCK), ctl2 = open(f4, O_RDONLY | O_NONBLOCK);
    int left = open(f5, O_RDONLY | O_NONBLOCK), w5 = open(f5, O_WRONLY);
    MUST(ctl >= 0 && ctl2 >= 0 && left >= 0 && w5 >= 0 && write(w5, "z", 1) == 1 && close(w5) == 0);
    MUST(fcntl(ctl2, F_SETFL, 0) == 0);
    MUST(!hangup(ctl) && !hangup(ctl2) && hangup(left));

    e2e_block_usr1(1);
    pid_t child = fork();
    MUST(child >= 0);
    if (child == 0) {
        close(rd); close(both);
        int wr = open(f1, O_WRONLY);
        if (wr < 0 || write(wr, "hello ", 6) != 6) _exit(2);
        e2e_child_wait_usr1();
        if (write(wr, "world", 5) != 5) _exit(3);
        _exit(0);
    }
    e2e_block_usr1(0);
    /* the child's first bytes are in the FIFO before READY */
    int n = 0;
    for (int i = 0; i < 2000 && (ioctl(rd, FIONREAD, &n) != 0 || n < 6); i++) usleep(1000);
    MUST(n == 6);
    say("CHILD %d", child);
    say("READY");
    e2e_wait_usr1();

    kill(child, SIGUSR1);
    char buf[64] = {0};
    size_t got = 0;
    ssize_t k;
    while ((k = read(rd, buf + got, sizeof buf - 1 - got)) > 0) got += k;
    CHECK(strcmp(buf, "hello world") == 0, "fifo1 gave '%s'", buf);
    CHECK(k == 0, "fifo1 did not end: %s", strerror(errno));
    int st;
    CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child failed: 0x%x", st);
    char b2[8] = {0};
    CHECK(read(both, b2, sizeof b2) == 4 && memcmp(b2, "kept", 4) == 0, "fifo2 gave '%s'", b2);
    char b3[16] = {0}, proc[64], link[600], want[600];
    CHECK(write(gonew, "!", 1) == 1, "cannot write to the removed fifo3: %s", strerror(errno));
    CHECK(read(gone, b3, sizeof b3) == 5 && memcmp(b3, "gone!", 5) == 0, "fifo3 gave '%s'", b3);
    struct stat s3;
    CHECK(fstat(gone, &s3) == 0 && S_ISFIFO(s3.st_mode) && s3.st_nlink == 0, "fifo3 is not a removed FIFO (mode 0%o, %ld links)", s3.st_mode, (long)s3.st_nlink);
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", gone);
    ssize_t ll = readlink(proc, link, sizeof link - 1);
    if (ll >= 0) link[ll] = 0;
    snprintf(want, sizeof want, "%s (deleted)", f3);
    CHECK(ll > 0 && strcmp(link, want) == 0, "fifo3's fd names '%s'", ll > 0 ? link : "?");
    CHECK(!hangup(ctl) && !hangup(ctl2), "the control FIFO reports POLLHUP (%d %d): never had a writer", hangup(ctl), hangup(ctl2));
    CHECK((fcntl(ctl, F_GETFL) & O_NONBLOCK) && !(fcntl(ctl2, F_GETFL) & O_NONBLOCK), "the control FIFO's ends lost their flags");
    CHECK(hangup(left), "fifo5 does not report POLLHUP: its writer left");
    char b5[4] = {0};
    CHECK(read(left, b5, sizeof b5) == 1 && b5[0] == 'z' && read(left, b5, sizeof b5) == 0, "fifo5 did not give its byte, then end of file");
    int w4 = open(f4, O_WRONLY | O_NONBLOCK);
    CHECK(w4 >= 0 && write(w4, "c", 1) == 1 && close(w4) == 0, "cannot write to the control FIFO: %s", strerror(errno));
    char b4[4] = {0};
    CHECK(read(ctl, b4, sizeof b4) == 1 && b4[0] == 'c', "the control FIFO gave '%s'", b4);
    CHECK(hangup(ctl) && hangup(ctl2), "the control FIFO does not report POLLHUP after its writer left");
    return e2e_finish();
}
