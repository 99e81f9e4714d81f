/* Peer credentials (SO_PEERCRED) of unix sockets, which name the process and the effective uid and gid
 * that made the connection, whoever holds the sockets now:
 *  - a datagram socketpair made by a child that shared the fd table (clone CLONE_FILES), had taken
 *    its memory and other ids and exited (reaped): both ends name that child's pid, uid 4321, gid 1234 (zdtm sock_peercred);
 *  - a stream socketpair made by the process itself (root): its own pid, 0, 0;
 *  - a stream connection accepted from an abstract listener: the accepted end names the client, a child
 *    running as uid 3000 gid 2000, which holds the other end naming the server (root);
 *  - a seqpacket socketpair made by a second child (uid 5000, gid 5001), which keeps one end and passed
 *    the other to the process (SCM_RIGHTS): both ends name that child.
 * Prints "CHILD pid" for each live child, then READY; after SIGUSR1 every end is checked and the
 * connections carry data; the children check theirs and exit 0. */
#include "e2e.h"
#include <sched.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static int dead_sv[2];
static pid_t self;

static int maker(void *arg)
{
    (void)arg;
    /* raw calls: glibc's would signal the threads of a process this child is not */
    if (syscall(SYS_setgid, 1234) != 0 || syscall(SYS_setuid, 4321) != 0) return 1;
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, dead_sv) != 0) return 2;
    return 0;
}

static void expect(int fd, pid_t pid, uid_t uid, gid_t gid, const char *what)
{
    struct ucred c;
    socklen_t len = sizeof c;
    CHECK(getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &len) == 0, "%s: getsockopt: %s", what, strerror(errno));
    CHECK(c.pid == pid && c.uid == uid && c.gid == gid, "%s: peer pid %d uid %u gid %u, want %d %u %u",
          what, (int)c.pid, c.uid, c.gid, (int)pid, uid, gid);
}

static int read_exact(int fd, void *buf, size_t n)
{
    for (size_t off = 0; off < n;) {
        ssize_t r = read(fd, (char *)buf + off, n - off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        off += r;
    }
    return 0;
}

int main(void)
{
    e2e_init();
    self = getpid();

    /* 1: made by a child that exited */
    static char stack[256 << 10];
    pid_t dead = clone(maker, stack + sizeof stack, CLONE_VM | CLONE_FILES | SIGCHLD, NULL);
    MUST(dead > 0);
    int st = 0;
    MUST(waitpid(dead, &st, 0) == dead && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    expect(dead_sv[0], dead, 4321, 1234, "setup: the dead child's pair");
    MUST(e2e_failures == 0);
    MUST(send(dead_sv[1], "dgram", 5, 0) == 5);

    /* 2: made by the process itself */
    int own[2];
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, own) == 0);

    /* 3: an accepted connection whose client is a child with other ids */
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "ckpt-peercred-%d", (int)self);
    socklen_t al = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(a.sun_path + 1);
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    MUST(l >= 0 && bind(l, (struct sockaddr *)&a, al) == 0 && listen(l, 4) == 0);
    int ready[2];
    MUST(pipe(ready) == 0);
    e2e_block_usr1(1);
    pid_t client = fork();
    MUST(client >= 0);
    if (client == 0) {
        close(l);
        if (setgid(2000) != 0 || setuid(3000) != 0) _exit(2);
        int c = socket(AF_UNIX, SOCK_STREAM, 0);
        if (c < 0 || connect(c, (struct sockaddr *)&a, al) != 0) _exit(3);
        if (write(ready[1], "c", 1) != 1) _exit(4);
        e2e_child_wait_usr1();
        expect(c, self, 0, 0, "the client's connection");
        char b[6] = { 0 };
        CHECK(write(c, "hello", 5) == 5 && read_exact(c, b, 5) == 0 && strcmp(b, "world") == 0, "the client read '%s'", b);
        _exit(e2e_failures == 0 ? 0 : 1);
    }
    char x;
    MUST(read(ready[0], &x, 1) == 1);
    int s = accept(l, NULL, NULL);
    MUST(s >= 0);
    close(l);
    expect(s, client, 3000, 2000, "setup: the accepted connection");
    MUST(e2e_failures == 0);

    /* 4: a pair made by another child, which passes one end to the process and keeps the other */
    int ctl[2];
    MUST(socketpair(AF_UNIX, SOCK_DGRAM, 0, ctl) == 0);
    pid_t keeper = fork();
    MUST(keeper >= 0);
    if (keeper == 0) {
        close(ctl[0]);
        if (setgid(5001) != 0 || setuid(5000) != 0) _exit(2);
        int p[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, p) != 0) _exit(3);
        char cm[CMSG_SPACE(sizeof(int))] = { 0 };
        struct iovec io = { "f", 1 };
        struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1, .msg_control = cm, .msg_controllen = sizeof cm };
        struct cmsghdr *h = CMSG_FIRSTHDR(&m);
        h->cmsg_level = SOL_SOCKET; h->cmsg_type = SCM_RIGHTS; h->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(h), &p[1], sizeof(int));
        if (sendmsg(ctl[1], &m, 0) != 1) _exit(4);
        close(p[1]);
        close(ctl[1]);
        e2e_child_wait_usr1();
        expect(p[0], getpid(), 5000, 5001, "the keeper's end");
        char b[4] = { 0 };
        CHECK(read(p[0], b, sizeof b) == 3 && strcmp(b, "seq") == 0, "the keeper read '%s'", b);
        _exit(e2e_failures == 0 ? 0 : 1);
    }
    close(ctl[1]);
    char cm[CMSG_SPACE(sizeof(int))];
    char f;
    struct iovec io = { &f, 1 };
    struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1, .msg_control = cm, .msg_controllen = sizeof cm };
    MUST(recvmsg(ctl[0], &m, 0) == 1 && CMSG_FIRSTHDR(&m) != NULL);
    int kept;
    memcpy(&kept, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
    close(ctl[0]);
    expect(kept, keeper, 5000, 5001, "setup: the keeper's pair");
    MUST(e2e_failures == 0);
    e2e_block_usr1(0);

    say("CHILD %d", (int)client);
    say("CHILD %d", (int)keeper);
    say("READY");
    e2e_wait_usr1();

    expect(dead_sv[0], dead, 4321, 1234, "the dead child's pair, end 0");
    expect(dead_sv[1], dead, 4321, 1234, "the dead child's pair, end 1");
    char b[8] = { 0 };
    CHECK(recv(dead_sv[0], b, sizeof b, 0) == 5 && strcmp(b, "dgram") == 0, "the dead child's pair held '%s'", b);
    expect(own[0], self, 0, 0, "the process's own pair, end 0");
    expect(own[1], self, 0, 0, "the process's own pair, end 1");
    CHECK(write(own[0], "own", 3) == 3 && read_exact(own[1], b, 3) == 0 && memcmp(b, "own", 3) == 0, "the own pair does not carry data");
    expect(s, client, 3000, 2000, "the accepted connection");
    expect(kept, keeper, 5000, 5001, "the end the keeper passed");
    CHECK(send(kept, "seq", 3, 0) == 3, "send to the keeper: %s", strerror(errno));
    kill(client, SIGUSR1);
    kill(keeper, SIGUSR1);
    memset(b, 0, sizeof b);
    CHECK(read_exact(s, b, 5) == 0 && strcmp(b, "hello") == 0, "the server read '%s'", b);
    CHECK(write(s, "world", 5) == 5, "write to the client: %s", strerror(errno));
    e2e_child_verdict(client, "the client");
    e2e_child_verdict(keeper, "the keeper");
    return e2e_finish();
}
