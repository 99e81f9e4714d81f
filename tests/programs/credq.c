/* credq: messages queued in unix sockets whose receiver reads their senders' credentials (SO_PASSCRED,
 * as journald or a D-Bus daemon does) keep them through a restart: datagrams from a child that lives on
 * with its own uid and gid, and from a child that has exited since (its pid then belongs to no process),
 * and a stream written by two writers in turn (each piece with its writer's credentials: the kernel
 * never glues them for such a receiver). */
#include "e2e.h"
#include <sys/socket.h>
#include <sys/wait.h>

static int recv_cred(int fd, char *buf, size_t n, struct ucred *who)
{
    char ctl[CMSG_SPACE(sizeof(struct ucred))];
    struct iovec iov = { buf, n - 1 };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl };
    ssize_t got = recvmsg(fd, &mh, MSG_DONTWAIT);
    if (got < 0) return -1;
    buf[got] = 0;
    memset(who, 0, sizeof *who);
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) memcpy(who, CMSG_DATA(c), sizeof *who);
    return (int)got;
}

int main(void)
{
    e2e_init();
    int dg[2], st[2], one = 1, sync[2];
    MUST(socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) == 0 && socketpair(AF_UNIX, SOCK_STREAM, 0, st) == 0 && pipe(sync) == 0);
    MUST(setsockopt(dg[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one) == 0);
    MUST(setsockopt(st[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one) == 0);

    e2e_block_usr1(1);
    pid_t a = fork();
    MUST(a >= 0);
    if (a == 0) {
        if (setresgid(4321, 4321, 4321) != 0 || setresuid(1234, 1234, 1234) != 0) _exit(2);
        if (send(dg[1], "from-a", 6, 0) != 6 || write(st[1], "aaa", 3) != 3 || write(sync[1], "x", 1) != 1) _exit(3);
        e2e_child_wait_usr1();
        _exit(0);
    }
    e2e_block_usr1(0);
    char x;
    MUST(read(sync[0], &x, 1) == 1);
    MUST(write(st[1], "ppp", 3) == 3);
    pid_t b = fork();
    MUST(b >= 0);
    if (b == 0) _exit(send(dg[1], "from-b", 6, 0) == 6 ? 0 : 1);
    int status;
    MUST(waitpid(b, &status, 0) == b && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    say("CHILD %d", (int)a);
    say("READY");
    e2e_wait_usr1();

    char buf[64];
    struct ucred who;
    CHECK(recv_cred(dg[0], buf, sizeof buf, &who) == 6 && strcmp(buf, "from-a") == 0, "first datagram: '%s'", buf);
    CHECK(who.pid == a && who.uid == 1234 && who.gid == 4321, "the live child's datagram came from pid %d uid %u gid %u (want %d 1234 4321)", who.pid, who.uid, who.gid, (int)a);
    CHECK(recv_cred(dg[0], buf, sizeof buf, &who) == 6 && strcmp(buf, "from-b") == 0, "second datagram: '%s'", buf);
    CHECK(who.pid == b && who.uid == 0 && who.gid == 0, "the ended child's datagram came from pid %d uid %u gid %u (want %d 0 0)", who.pid, who.uid, who.gid, (int)b);
    CHECK(recv_cred(st[0], buf, sizeof buf, &who) == 3 && strcmp(buf, "aaa") == 0, "the stream's first piece: '%s' (glued to the next?)", buf);
    CHECK(who.pid == a && who.uid == 1234 && who.gid == 4321, "the stream's first piece came from pid %d uid %u gid %u (want %d 1234 4321)", who.pid, who.uid, who.gid, (int)a);
    CHECK(recv_cred(st[0], buf, sizeof buf, &who) == 3 && strcmp(buf, "ppp") == 0, "the stream's second piece: '%s'", buf);
    CHECK(who.pid == getpid() && who.uid == 0 && who.gid == 0, "the stream's second piece came from pid %d uid %u gid %u (want %d 0 0)", who.pid, who.uid, who.gid, (int)getpid());
    kill(a, SIGUSR1);
    e2e_child_verdict(a, "the child that sent as uid 1234");
    return e2e_finish();
}
