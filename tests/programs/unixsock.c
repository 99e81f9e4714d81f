/* unixsock: unix domain sockets across a restart.
 *
 * Default mode: a stream pair with bytes queued both ways (one end non-blocking, with its own
 * SO_SNDBUF), a datagram pair with 3 messages of different sizes queued (boundaries checked) and one
 * the other way (SO_PASSCRED, SO_PASSSEC and a peek offset on the receiver), a seqpacket pair with 2
 * records (SO_PRIORITY, SO_RCVTIMEO and SO_RCVLOWAT on one end),
 * a stream pair shut down for writing one way, a stream socket whose peer was closed with data left
 * for it, a stream pair split between parent and child (fork) with data in flight from the child,
 * a listener bound to a relative path and one to an abstract name, a connection accepted from the
 * path listener with data both ways, a datagram socket bound to an abstract name with 2 messages
 * queued by an unbound sender, one bound to an absolute path whose file was removed with a message
 * queued, and an unconnected socket. After SIGUSR1 everything is checked and
 * more data is exchanged (parent and child both ways, new connections to both listeners).
 * Prints "CHILD pid".
 *
 * "outside" mode: one end of a socketpair is held by a process outside the tree (a grandchild whose
 * parent exited); prints "HOLDER pid" and "SOCKFD fd"; after SIGUSR1 the pair still works.
 * "rights DIR" mode: files in flight (SCM_RIGHTS) in datagram and stream queues (see rights_mode).
 * "dgramconn DIR" mode: datagram sockets connected to bound ones (see dgramconn_mode).
 * "pending" and "pendingdata" modes: connections waiting to be accepted (see pending_mode).
 * "slowaccept" mode: a connection accepted 300 ms after it came (see slowaccept_mode).
 * "replaced DIR" mode: sockets whose file another file took, or whose directory went, one with a client (see replaced_mode).
 */
#include "e2e.h"
#include <poll.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

static socklen_t abstract_addr(struct sockaddr_un *a, const char *name)
{
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    size_t n = strlen(name);
    memcpy(a->sun_path + 1, name, n);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

static socklen_t path_addr(struct sockaddr_un *a, const char *path)
{
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    strcpy(a->sun_path, path);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
}

static int sockopt(int fd, int name)
{
    int v = -12345;
    socklen_t l = sizeof v;
    if (getsockopt(fd, SOL_SOCKET, name, &v, &l) != 0) return -1;
    return v;
}

static int read_exact(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        got += r;
    }
    return 0;
}

/* Nothing more to read right now (a non-blocking peek says EAGAIN). */
static int queue_empty(int fd)
{
    char c;
    return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) < 0 && errno == EAGAIN;
}

static int outside_mode(void)
{
    int sv[2];
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    int hp[2];
    MUST(pipe(hp) == 0);
    pid_t c = fork();
    MUST(c >= 0);
    if (c == 0) {
        pid_t g = fork();
        if (g != 0) _exit(g > 0 ? 0 : 1);
        /* grandchild: echoes what it reads until EOF */
        close(sv[0]);
        pid_t me = getpid();
        if (write(hp[1], &me, sizeof me) != sizeof me) _exit(1);
        char b[64];
        ssize_t n;
        while ((n = read(sv[1], b, sizeof b)) > 0) if (write(sv[1], b, n) != n) break;
        _exit(0);
    }
    close(sv[1]);
    MUST(waitpid(c, NULL, 0) == c);
    pid_t holder;
    MUST(read(hp[0], &holder, sizeof holder) == sizeof holder);
    MUST(write(sv[0], "queued", 6) == 6);
    say("HOLDER %d", holder);
    say("SOCKFD %d", sv[0]);
    say("READY");
    e2e_wait_usr1();
    char b[16] = { 0 };
    CHECK(read_exact(sv[0], b, 6) == 0 && memcmp(b, "queued", 6) == 0, "echo: '%s'", b);
    close(sv[0]);
    return e2e_finish();
}

/* "dgramconn" mode: datagram sockets connected to bound ones that are not connected back: a client of a
 * server of this process (one message queued at the server), a socket bound to a path and connected to
 * itself (one message queued), and a client of a server outside the tree (a grandchild whose parent
 * exited, bound to an absolute path: a syslog-like daemon). Prints "HOLDER pid". After SIGUSR1 each
 * client still sends to its peer only, and the outside server echoes what the client sends. */
/* A listener bound to DIR/srv whose socket file was removed and replaced by a regular file (as when a
 * second instance of a server takes the path), and a datagram socket bound to DIR/gone/dg whose
 * directory was removed. After the restart both still have their names (getsockname), the regular file
 * is untouched, no directory DIR/gone came back, and the listener still listens (a connection made
 * through its fd's address family alone is not possible: it is checked with SO_ACCEPTCONN).
 * And three datagram sockets bound to DIR/twice one after the other, each of the first two with a client
 * connected to it before its file was removed and the next one bound (as zdtm's sk-unix01): after the
 * restart each client still sends to its own socket only.
 * And two datagram sockets bound by relative names in DIR, each with a client connected by that name,
 * whose files were removed (a FIFO took the first one's name), the process's cwd then changed to /
 * (as zdtm's fifo_upon_unix_socket01): after the restart both have their relative names, no file is at
 * the second's name, the FIFO is untouched, and each client still sends to its own socket. */
static int replaced_mode(const char *dir)
{
    char p1[200], d2[200], p2[220];
    snprintf(p1, sizeof p1, "%s/srv", dir);
    snprintf(d2, sizeof d2, "%s/gone", dir);
    snprintf(p2, sizeof p2, "%s/dg", d2);
    struct sockaddr_un a1, a2;
    socklen_t l1 = path_addr(&a1, p1), l2 = path_addr(&a2, p2);
    int ls = socket(AF_UNIX, SOCK_STREAM, 0), dg = socket(AF_UNIX, SOCK_DGRAM, 0);
    MUST(mkdir(d2, 0755) == 0);
    MUST(ls >= 0 && dg >= 0 && bind(ls, (struct sockaddr *)&a1, l1) == 0 && listen(ls, 5) == 0 && bind(dg, (struct sockaddr *)&a2, l2) == 0);
    /* a client of the datagram socket, connected to it by its name before the directory went */
    int dgc = socket(AF_UNIX, SOCK_DGRAM, 0);
    MUST(dgc >= 0 && connect(dgc, (struct sockaddr *)&a2, l2) == 0);
    MUST(unlink(p1) == 0 && unlink(p2) == 0 && rmdir(d2) == 0);
    int f = open(p1, O_WRONLY | O_CREAT | O_EXCL, 0644);
    MUST(f >= 0 && write(f, "occupant", 8) == 8);
    close(f);
    char p3[220];
    snprintf(p3, sizeof p3, "%s/twice", dir);
    struct sockaddr_un a3;
    socklen_t l3 = path_addr(&a3, p3);
    int tw[3], twc[2];
    for (int i = 0; i < 3; i++) {
        tw[i] = socket(AF_UNIX, SOCK_DGRAM, 0);
        MUST(tw[i] >= 0 && bind(tw[i], (struct sockaddr *)&a3, l3) == 0);
        if (i == 2) break;
        twc[i] = socket(AF_UNIX, SOCK_DGRAM, 0);
        MUST(twc[i] >= 0 && connect(twc[i], (struct sockaddr *)&a3, l3) == 0 && unlink(p3) == 0);
    }
    MUST(chdir(dir) == 0);
    struct sockaddr_un ra[2];
    socklen_t rl[2] = { path_addr(&ra[0], "rel1"), path_addr(&ra[1], "rel2") };
    int rs[2], rc[2];
    for (int i = 0; i < 2; i++) {
        rs[i] = socket(AF_UNIX, SOCK_DGRAM, 0);
        rc[i] = socket(AF_UNIX, SOCK_DGRAM, 0);
        MUST(rs[i] >= 0 && rc[i] >= 0 && bind(rs[i], (struct sockaddr *)&ra[i], rl[i]) == 0 && connect(rc[i], (struct sockaddr *)&ra[i], rl[i]) == 0);
        MUST(unlink(ra[i].sun_path) == 0);
    }
    MUST(mkfifo("rel1", 0600) == 0);
    MUST(chdir("/") == 0);
    say("READY");
    e2e_wait_usr1();
    struct sockaddr_un got;
    socklen_t gl = sizeof got;
    CHECK(getsockname(ls, (struct sockaddr *)&got, &gl) == 0 && strcmp(got.sun_path, p1) == 0, "the listener's name is '%s'", gl > 2 ? got.sun_path : "");
    gl = sizeof got;
    CHECK(getsockname(dg, (struct sockaddr *)&got, &gl) == 0 && strcmp(got.sun_path, p2) == 0, "the datagram socket's name is '%s'", gl > 2 ? got.sun_path : "");
    int acc = 0;
    socklen_t al = sizeof acc;
    CHECK(getsockopt(ls, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) == 0 && acc == 1, "the listener does not listen");
    struct stat st;
    char buf[16] = "";
    int rf = open(p1, O_RDONLY);
    CHECK(rf >= 0 && fstat(rf, &st) == 0 && S_ISREG(st.st_mode) && read(rf, buf, sizeof buf) == 8 && !memcmp(buf, "occupant", 8), "the file that took the listener's path changed");
    if (rf >= 0) close(rf);
    CHECK(access(d2, F_OK) != 0, "the removed directory %s came back", d2);
    gl = sizeof got;
    CHECK(getpeername(dgc, (struct sockaddr *)&got, &gl) == 0 && strcmp(got.sun_path, p2) == 0, "the client's peer is '%s'", gl > 2 ? got.sun_path : "");
    char b[8] = "";
    CHECK(send(dgc, "hi", 2, 0) == 2 && recv(dg, b, sizeof b, MSG_DONTWAIT) == 2 && !memcmp(b, "hi", 2), "the client cannot send to the datagram socket: %s", strerror(errno));
    for (int i = 0; i < 2; i++) {
        char m = 'a' + i, g = 0;
        CHECK(send(twc[i], &m, 1, 0) == 1, "client %d of %s cannot send: %s", i, p3, strerror(errno));
        for (int j = 0; j < 3; j++) {
            ssize_t n = recv(tw[j], &g, 1, MSG_DONTWAIT);
            if (j == i) CHECK(n == 1 && g == m, "socket %d bound to %s did not get its client's datagram", j, p3);
            else CHECK(n < 0 && errno == EAGAIN, "socket %d bound to %s got client %d's datagram", j, p3, i);
        }
        gl = sizeof got;
        CHECK(getsockname(tw[i], (struct sockaddr *)&got, &gl) == 0 && strcmp(got.sun_path, p3) == 0, "socket %d's name is '%s'", i, gl > 2 ? got.sun_path : "");
    }
    for (int i = 0; i < 2; i++) {
        char m = 'x' + i, g = 0;
        gl = sizeof got;
        CHECK(getsockname(rs[i], (struct sockaddr *)&got, &gl) == 0 && strcmp(got.sun_path, ra[i].sun_path) == 0, "the socket bound to %s is named '%s'", ra[i].sun_path, gl > 2 ? got.sun_path : "");
        CHECK(send(rc[i], &m, 1, 0) == 1 && recv(rs[i], &g, 1, MSG_DONTWAIT) == 1 && g == m, "the client of %s cannot send to it: %s", ra[i].sun_path, strerror(errno));
    }
    char rp[220];
    snprintf(rp, sizeof rp, "%s/rel1", dir);
    CHECK(lstat(rp, &st) == 0 && S_ISFIFO(st.st_mode), "the FIFO at %s is gone or changed", rp);
    snprintf(rp, sizeof rp, "%s/rel2", dir);
    CHECK(lstat(rp, &st) != 0, "a file is at %s (the socket's file was removed)", rp);
    CHECK(access("/rel1", F_OK) != 0 && access("/rel2", F_OK) != 0, "a socket file was made in /");
    return e2e_finish();
}

static int dgramconn_mode(const char *dir)
{
    struct sockaddr_un sa, selfa, outa;
    char p1[200], p2[200], p3[200];
    snprintf(p1, sizeof p1, "%s/dgram-server", dir);
    snprintf(p2, sizeof p2, "%s/dgram-self", dir);
    snprintf(p3, sizeof p3, "%s/dgram-outside", dir);
    socklen_t sl = path_addr(&sa, p1), selfl = path_addr(&selfa, p2), outl = path_addr(&outa, p3);
    int hp[2];
    MUST(pipe(hp) == 0);
    pid_t c = fork();
    MUST(c >= 0);
    if (c == 0) {
        pid_t g = fork();
        if (g != 0) _exit(g > 0 ? 0 : 1);
        /* grandchild, outside the tree: echoes each datagram back to its sender until "quit" */
        int o = socket(AF_UNIX, SOCK_DGRAM, 0);
        unlink(p3);
        if (o < 0 || bind(o, (struct sockaddr *)&outa, outl) != 0) _exit(1);
        pid_t me = getpid();
        if (write(hp[1], &me, sizeof me) != sizeof me) _exit(1);
        for (;;) {
            char b[64];
            struct sockaddr_un from;
            socklen_t fl = sizeof from;
            ssize_t n = recvfrom(o, b, sizeof b, 0, (struct sockaddr *)&from, &fl);
            if (n < 0 || (n == 4 && memcmp(b, "quit", 4) == 0)) break;
            if (sendto(o, b, n, 0, (struct sockaddr *)&from, fl) != n) break;
        }
        unlink(p3);
        _exit(0);
    }
    MUST(waitpid(c, NULL, 0) == c);
    pid_t holder;
    MUST(read(hp[0], &holder, sizeof holder) == sizeof holder);

    int srv = socket(AF_UNIX, SOCK_DGRAM, 0), cli = socket(AF_UNIX, SOCK_DGRAM, 0);
    unlink(p1);
    MUST(srv >= 0 && cli >= 0 && bind(srv, (struct sockaddr *)&sa, sl) == 0 && connect(cli, (struct sockaddr *)&sa, sl) == 0);
    MUST(write(cli, "first", 5) == 5);
    int self = socket(AF_UNIX, SOCK_DGRAM, 0);
    unlink(p2);
    MUST(self >= 0 && bind(self, (struct sockaddr *)&selfa, selfl) == 0 && connect(self, (struct sockaddr *)&selfa, selfl) == 0);
    MUST(write(self, "me", 2) == 2);
    /* the outside client is bound (autobind) so that the echo finds its way back */
    int oc = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un auto_a = { .sun_family = AF_UNIX };
    MUST(oc >= 0 && bind(oc, (struct sockaddr *)&auto_a, sizeof(sa_family_t)) == 0 && connect(oc, (struct sockaddr *)&outa, outl) == 0);
    say("HOLDER %d", holder);
    say("READY");
    e2e_wait_usr1();

    char b[16] = { 0 };
    CHECK(read(srv, b, sizeof b) == 5 && memcmp(b, "first", 5) == 0, "the server's queued datagram: '%s'", b);
    CHECK(write(cli, "second", 6) == 6, "the client cannot send to its server: %s", strerror(errno));
    memset(b, 0, sizeof b);
    CHECK(read(srv, b, sizeof b) == 6 && memcmp(b, "second", 6) == 0, "the server got '%s'", b);
    struct sockaddr_un got;
    socklen_t gl = sizeof got;
    CHECK(getpeername(cli, (struct sockaddr *)&got, &gl) == 0 && strcmp(got.sun_path, p1) == 0, "the client's peer is '%s'", gl > 2 ? got.sun_path : "");
    memset(b, 0, sizeof b);
    CHECK(read(self, b, sizeof b) == 2 && memcmp(b, "me", 2) == 0, "the self-connected socket's queue: '%s'", b);
    CHECK(write(self, "again", 5) == 5 && read(self, b, sizeof b) == 5 && memcmp(b, "again", 5) == 0, "the self-connected socket does not reach itself");
    /* a connected socket takes datagrams from its peer only */
    int stranger = socket(AF_UNIX, SOCK_DGRAM, 0);
    CHECK(sendto(stranger, "x", 1, MSG_DONTWAIT, (struct sockaddr *)&selfa, selfl) < 0 && errno == EPERM, "a stranger could send to the self-connected socket (%s)", strerror(errno));
    memset(b, 0, sizeof b);
    CHECK(write(oc, "echo", 4) == 4 && read(oc, b, sizeof b) == 4 && memcmp(b, "echo", 4) == 0, "the outside server's echo: '%s'", b);
    CHECK(write(oc, "quit", 4) == 4, "quit: %s", strerror(errno));
    unlink(p1);
    unlink(p2);
    return e2e_finish();
}

static void send_fds(int s, const char *data, const int *fds, int n)
{
    struct iovec iov = { (void *)data, strlen(data) };
    union { struct cmsghdr h; char buf[CMSG_SPACE(4 * sizeof(int))]; } u;
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (n > 0) {
        m.msg_control = u.buf;
        m.msg_controllen = CMSG_SPACE(n * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET; c->cmsg_type = SCM_RIGHTS; c->cmsg_len = CMSG_LEN(n * sizeof(int));
        memcpy(CMSG_DATA(c), fds, n * sizeof(int));
    }
    MUST(sendmsg(s, &m, 0) == (ssize_t)strlen(data));
}

/* receives one message (or stream piece) into b; returns its length, the fds it carried in fds/nfds */
static ssize_t recv_fds(int s, char *b, size_t len, int *fds, int *nfds)
{
    struct iovec iov = { b, len };
    union { struct cmsghdr h; char buf[CMSG_SPACE(4 * sizeof(int))]; } u;
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
    memset(b, 0, len);
    ssize_t n = recvmsg(s, &m, MSG_DONTWAIT);
    *nfds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            *nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            memcpy(fds, CMSG_DATA(c), *nfds * sizeof(int));
        }
    return n;
}

static int open_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 256; fd++) if (fcntl(fd, F_GETFD) >= 0) n++;
    return n;
}

/* "rights": files in flight (SCM_RIGHTS). A datagram pair holds: "m1" with a pipe's write end (also held
 * by the process) and a file only in flight (at offset 3); "m2" with nothing; "m3" with one end of a
 * stream pair (only in flight) that has "inner" queued in it. A stream pair holds "abc", then "D" with
 * an eventfd (count 7) only in flight, then "ef". After the restart every file arrives with its message,
 * is the same description as before (the pipe end shares its flags with the one held), and works.
 * A loop (zdtm scm06): two bound datagram sockets, each with both in flight in its queue. An epoll only
 * in flight (zdtm scm05) that watches a socket with data queued. The process then runs as another user
 * (nobody), which may not take files from root's ckpt (pidfd_getfd). */
static int rights_mode(const char *dir)
{
    int dg[2], st[2], in[2], p[2];
    MUST(socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) == 0 && socketpair(AF_UNIX, SOCK_STREAM, 0, st) == 0);
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, in) == 0 && pipe(p) == 0);
    char path[4096];
    snprintf(path, sizeof path, "%s/in-flight.txt", dir);
    int f = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    MUST(f >= 0 && write(f, "0123456789", 10) == 10 && lseek(f, 3, SEEK_SET) == 3);
    int ev = eventfd(7, 0);
    MUST(ev >= 0);
    int m1[2] = { p[1], f };
    send_fds(dg[0], "m1", m1, 2);
    send_fds(dg[0], "m2", NULL, 0);
    MUST(write(in[0], "inner", 5) == 5);
    send_fds(dg[0], "m3", &in[1], 1);
    send_fds(st[0], "abc", NULL, 0);
    send_fds(st[0], "D", &ev, 1);
    send_fds(st[0], "ef", NULL, 0);
    /* the loop: lp[i] bound to "\0ckpt-loop-PID-i", lp[0] holds (lp[0], lp[1]) and lp[1] holds (lp[0], lp[1]) */
    int lp[2];
    MUST(socketpair(AF_UNIX, SOCK_DGRAM, 0, lp) == 0);
    char lname[2][64];
    for (int i = 0; i < 2; i++) {
        struct sockaddr_un a;
        snprintf(lname[i], sizeof lname[i], "ckpt-loop-%d-%d", (int)getpid(), i);
        socklen_t al = abstract_addr(&a, lname[i]);
        MUST(bind(lp[i], (struct sockaddr *)&a, al) == 0);
    }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) send_fds(lp[1 - i], j ? "L1" : "L0", &lp[j], 1);
    /* the epoll only in flight in w[1]'s queue, which it watches; a byte queued after it */
    int w[2];
    MUST(socketpair(AF_UNIX, SOCK_DGRAM, 0, w) == 0);
    int ep = epoll_create1(0);
    struct epoll_event ee = { .events = EPOLLIN, .data.u64 = 77 };
    MUST(ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, w[1], &ee) == 0);
    send_fds(w[0], "E", &ep, 1);
    MUST(send(w[0], "x", 1, 0) == 1);
    close(ep);
    close(f);
    close(ev);
    close(in[1]);
    MUST(setresgid(65534, 65534, 65534) == 0 && setresuid(65534, 65534, 65534) == 0);
    int before = open_fds();
    say("SOCKFD %d", dg[1]);
    say("READY");
    e2e_wait_usr1();
    CHECK(open_fds() == before, "%d fds open, %d before the checkpoint (a leftover from it, or one lost)", open_fds(), before);
    char b[64];
    int fds[4], n;
    CHECK(recv_fds(dg[1], b, sizeof b, fds, &n) == 2 && strcmp(b, "m1") == 0 && n == 2, "m1: '%s' with %d fds", b, n);
    if (n == 2) {
        /* the pipe end: the same description as p[1] (a flag set on one shows on the other), and it reaches p[0] */
        MUST(fcntl(p[1], F_SETFL, O_NONBLOCK) == 0);
        CHECK(fcntl(fds[0], F_GETFL) & O_NONBLOCK, "the pipe end in flight is not the description the process holds");
        CHECK(write(fds[0], "P", 1) == 1 && read(p[0], b, 1) == 1 && b[0] == 'P', "the pipe end in flight does not reach the pipe");
        /* the file only in flight: its offset, its contents */
        CHECK(lseek(fds[1], 0, SEEK_CUR) == 3, "the file in flight is at offset %ld, not 3", (long)lseek(fds[1], 0, SEEK_CUR));
        memset(b, 0, sizeof b);
        CHECK(read(fds[1], b, 7) == 7 && strcmp(b, "3456789") == 0, "the file in flight reads '%s'", b);
    }
    CHECK(recv_fds(dg[1], b, sizeof b, fds, &n) == 2 && strcmp(b, "m2") == 0 && n == 0, "m2: '%s' with %d fds", b, n);
    CHECK(recv_fds(dg[1], b, sizeof b, fds, &n) == 2 && strcmp(b, "m3") == 0 && n == 1, "m3: '%s' with %d fds", b, n);
    if (n == 1) {
        char c[8] = { 0 };
        CHECK(read_exact(fds[0], c, 5) == 0 && strcmp(c, "inner") == 0, "the socket in flight holds '%s'", c);
        CHECK(write(fds[0], "back", 4) == 4 && read_exact(in[0], c, 4) == 0 && memcmp(c, "back", 4) == 0, "the socket in flight is no longer connected to its peer");
    }
    /* the stream: the eventfd comes with the byte it was sent with, not before */
    char all[8] = { 0 };
    int got = 0, evfd = -1;
    while (got < 6) {
        ssize_t k = recv_fds(st[1], b, 6 - got, fds, &n);
        if (k <= 0) break;
        /* a read gets the bytes before the piece with files glued to it: "abcD" with the eventfd */
        if (n == 1) { CHECK(evfd < 0 && got + k == 4, "the eventfd came with '%.*s' after %d bytes", (int)k, b, got); evfd = fds[0]; }
        memcpy(all + got, b, k);
        got += k;
    }
    CHECK(got == 6 && strcmp(all, "abcDef") == 0, "the stream holds '%s'", all);
    uint64_t v = 0;
    CHECK(evfd >= 0 && read(evfd, &v, 8) == 8 && v == 7, "the eventfd in flight: %s, count %lu", evfd < 0 ? "not received" : "received", (unsigned long)v);
    /* the loop: each socket's queue gives lp[0] then lp[1], each still bound to its name */
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            int got1 = -1;
            CHECK(recv_fds(lp[i], b, sizeof b, &got1, &n) == 2 && n == 1 && b[0] == 'L' && b[1] == '0' + j, "loop %d message %d: '%.2s' with %d fds", i, j, b, n);
            if (n != 1) continue;
            struct sockaddr_un a;
            socklen_t al = sizeof a;
            CHECK(getsockname(got1, (struct sockaddr *)&a, &al) == 0 && al == offsetof(struct sockaddr_un, sun_path) + 1 + strlen(lname[j])
                  && memcmp(a.sun_path + 1, lname[j], strlen(lname[j])) == 0, "loop %d message %d: the socket in flight is not lp[%d]", i, j, j);
            close(got1);
        }
    /* the epoll in flight still watches w[1] and sees its byte */
    CHECK(recv_fds(w[1], b, sizeof b, fds, &n) == 1 && b[0] == 'E' && n == 1, "the epoll's message: %d fds", n);
    if (n == 1) {
        struct epoll_event oe = { 0 };
        CHECK(epoll_wait(fds[0], &oe, 1, 0) == 1 && oe.data.u64 == 77 && (oe.events & EPOLLIN), "the epoll in flight does not report w[1] (data %lu)", (unsigned long)oe.data.u64);
    }
    return e2e_finish();
}

/* "pending" mode: connections waiting to be accepted across the restart (nothing accepts them before):
 * an abstract stream listener with two, the first from this process, the second from a child; a
 * seqpacket listener bound to a path whose file was then removed, with one. After SIGUSR1 they are
 * accepted in the order they came, the child's carries its credentials, data flows both ways, and the
 * removed file stays removed. Prints "CHILD pid".
 * "pendingdata" mode: a connection whose client sent data before it was accepted (that data sits where
 * no fd reaches): the checkpoint is refused; prints "SOCKFD fd" (the listener); after SIGUSR1 it is accepted. */
static int pending_mode(int withdata)
{
    struct sockaddr_un a, pa;
    char name[64], path[64];
    snprintf(name, sizeof name, "ckpt-unixsock-pending-%d", getpid());
    socklen_t al = abstract_addr(&a, name);
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    MUST(l >= 0 && bind(l, (struct sockaddr *)&a, al) == 0 && listen(l, 4) == 0);
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    MUST(c >= 0 && connect(c, (struct sockaddr *)&a, al) == 0);
    if (withdata) {
        MUST(write(c, "abc", 3) == 3);
        say("SOCKFD %d", l);
        say("READY");
        e2e_wait_usr1();
        int s = accept(l, NULL, NULL);
        char b[4];
        CHECK(s >= 0 && read_exact(s, b, 3) == 0 && memcmp(b, "abc", 3) == 0, "accept after the refused checkpoint");
        return e2e_finish();
    }
    e2e_block_usr1(1);
    int ready[2];
    MUST(pipe(ready) == 0);
    pid_t child = fork();
    MUST(child >= 0);
    if (child == 0) {
        close(ready[0]);
        int c2 = socket(AF_UNIX, SOCK_STREAM, 0);
        if (c2 < 0 || connect(c2, (struct sockaddr *)&a, al) != 0 || write(ready[1], "x", 1) != 1) _exit(2);
        close(ready[1]);
        e2e_child_wait_usr1();
        char b[4] = { 0 };
        _exit(write(c2, "two", 3) == 3 && read_exact(c2, b, 2) == 0 && memcmp(b, "ok", 2) == 0 ? 0 : 1);
    }
    /* the child's connection must wait behind ours before READY */
    close(ready[1]);
    char one;
    MUST(read(ready[0], &one, 1) == 1);
    close(ready[0]);
    snprintf(path, sizeof path, "/tmp/ckpt-unixsock-pending-%d", getpid());
    unlink(path);
    socklen_t pl = path_addr(&pa, path);
    int sl = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    MUST(sl >= 0 && bind(sl, (struct sockaddr *)&pa, pl) == 0 && listen(sl, 2) == 0);
    int sc = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    MUST(sc >= 0 && connect(sc, (struct sockaddr *)&pa, pl) == 0);
    MUST(unlink(path) == 0);
    say("CHILD %d", (int)child);
    say("READY");
    e2e_wait_usr1();

    struct sockaddr_un got;
    socklen_t gl = sizeof got;
    CHECK(getpeername(c, (struct sockaddr *)&got, &gl) == 0 && gl == al && memcmp(&got, &a, al) == 0, "the first client's peer name is lost");
    int s1 = accept(l, NULL, NULL);
    char b[8] = { 0 };
    CHECK(s1 >= 0 && write(c, "one", 3) == 3 && read_exact(s1, b, 3) == 0 && memcmp(b, "one", 3) == 0, "the first connection accepted is not ours: '%s'", b);
    CHECK(write(s1, "back", 4) == 4 && read_exact(c, b, 4) == 0 && memcmp(b, "back", 4) == 0, "no reply on the first connection");
    int s2 = accept(l, NULL, NULL);
    struct ucred cr = { 0 };
    socklen_t cl = sizeof cr;
    CHECK(s2 >= 0 && getsockopt(s2, SOL_SOCKET, SO_PEERCRED, &cr, &cl) == 0 && cr.pid == child, "the second connection's peer is pid %d, want the child %d", (int)cr.pid, (int)child);
    kill(child, SIGUSR1);
    memset(b, 0, sizeof b);
    CHECK(s2 >= 0 && read_exact(s2, b, 3) == 0 && memcmp(b, "two", 3) == 0 && write(s2, "ok", 2) == 2, "the child's connection holds '%s'", b);
    int s3 = accept(sl, NULL, NULL);
    memset(b, 0, sizeof b);
    CHECK(s3 >= 0 && send(sc, "rec", 3, 0) == 3 && recv(s3, b, sizeof b, 0) == 3 && memcmp(b, "rec", 3) == 0, "the seqpacket connection: '%s'", b);
    CHECK(access(path, F_OK) != 0, "the removed socket file %s is back", path);
    MUST(fcntl(l, F_SETFL, O_NONBLOCK) == 0);
    int none = accept(l, NULL, NULL);
    CHECK(none < 0 && errno == EAGAIN, "a third connection waited on the listener");
    e2e_child_verdict(child, "the child");
    return e2e_finish();
}

/* "slowaccept": a listener that accepts each connection 300 ms after it is waiting, and a child (in the
 * tree) that connects on SIGUSR2 and says "hello" (prints "CONNECTED"): a checkpoint taken right then
 * finds the connection waiting. After SIGUSR1 the connection must carry "hello" and a reply. */
static volatile sig_atomic_t usr2;
static void on_usr2(int sig) { (void)sig; usr2 = 1; }

static int slowaccept_mode(void)
{
    struct sockaddr_un a;
    char name[64];
    snprintf(name, sizeof name, "ckpt-unixsock-slow-%d", getpid());
    socklen_t al = abstract_addr(&a, name);
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    MUST(l >= 0 && bind(l, (struct sockaddr *)&a, al) == 0 && listen(l, 4) == 0);
    signal(SIGUSR2, on_usr2);
    pid_t child = fork();
    MUST(child >= 0);
    if (child == 0) {
        while (!usr2) pause();
        int c = socket(AF_UNIX, SOCK_STREAM, 0);
        if (c < 0 || connect(c, (struct sockaddr *)&a, al) != 0 || write(c, "hello", 5) != 5) _exit(2);
        say("CONNECTED");
        char b[8] = { 0 };
        _exit(read_exact(c, b, 5) == 0 && strcmp(b, "reply") == 0 ? 0 : 1);
    }
    say("CHILD %d", (int)child);
    say("READY");
    struct pollfd p = { l, POLLIN, 0 };
    while (poll(&p, 1, -1) != 1) { MUST(errno == EINTR); }
    sleep_full(0.3);
    int s = accept(l, NULL, NULL);
    MUST(s >= 0);
    e2e_wait_usr1();
    char b[8] = { 0 };
    CHECK(read_exact(s, b, 5) == 0 && strcmp(b, "hello") == 0, "the accepted connection holds '%s'", b);
    CHECK(write(s, "reply", 5) == 5, "write: %s", strerror(errno));
    int st = 0;
    CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child failed: 0x%x", st);
    return e2e_finish();
}

int main(int argc, char **argv)
{
    e2e_init();
    if (argc > 1 && strcmp(argv[1], "pending") == 0) return pending_mode(0);
    if (argc > 1 && strcmp(argv[1], "pendingdata") == 0) return pending_mode(1);
    if (argc > 1 && strcmp(argv[1], "slowaccept") == 0) return slowaccept_mode();
    if (argc > 1 && strcmp(argv[1], "outside") == 0) return outside_mode();
    if (argc > 2 && strcmp(argv[1], "dgramconn") == 0) return dgramconn_mode(argv[2]);
    if (argc > 2 && strcmp(argv[1], "replaced") == 0) return replaced_mode(argv[2]);
    if (argc > 2 && strcmp(argv[1], "rights") == 0) return rights_mode(argv[2]);

    static char big0[3000], big1[70000];
    fill(big0, sizeof big0, 1);
    fill(big1, sizeof big1, 2);

    /* stream pair: bytes queued both ways; s[0] non-blocking with its own send buffer */
    int s[2];
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, s) == 0);
    int sb = 65536;
    MUST(setsockopt(s[0], SOL_SOCKET, SO_SNDBUF, &sb, sizeof sb) == 0);
    int s0snd = sockopt(s[0], SO_SNDBUF);
    MUST(write(s[0], big0, sizeof big0) == sizeof big0);
    MUST(write(s[1], big1, 40000) == 40000);
    MUST(write(s[1], big1 + 40000, 30000) == 30000);
    MUST(fcntl(s[0], F_SETFL, O_NONBLOCK) == 0);

    /* datagram pair: 3 messages of different sizes one way, 1 the other; a peek offset on the receiver */
    int d[2];
    MUST(socketpair(AF_UNIX, SOCK_DGRAM, 0, d) == 0);
    static char m2[4000];
    fill(m2, sizeof m2, 3);
    MUST(send(d[0], "first-17-bytes-xx", 17, 0) == 17);
    MUST(send(d[0], m2, sizeof m2, 0) == sizeof m2);
    MUST(send(d[0], "third", 5, 0) == 5);
    MUST(send(d[1], "reply", 5, 0) == 5);
    int one = 1, zero = 0;
    MUST(setsockopt(d[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof one) == 0);
    MUST(setsockopt(d[1], SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof zero) == 0);
    MUST(setsockopt(d[1], SOL_SOCKET, SO_PASSSEC, &one, sizeof one) == 0);
    char pk[32];
    MUST(recv(d[1], pk, sizeof pk, MSG_PEEK) == 17);   /* the peek offset is now 17 */

    /* seqpacket pair: 2 records */
    int q[2];
    MUST(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, q) == 0);
    MUST(send(q[1], "record-one", 10, 0) == 10);
    MUST(send(q[1], "record-2", 8, 0) == 8);
    int prio = 5, lowat = 3;
    struct timeval tv = { 7, 500000 };
    MUST(setsockopt(q[0], SOL_SOCKET, SO_PRIORITY, &prio, sizeof prio) == 0 && setsockopt(q[0], SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat) == 0
         && setsockopt(q[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);

    /* stream pair shut down for writing by h[0], with data before the shutdown */
    int h[2];
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, h) == 0);
    MUST(write(h[0], "last words", 10) == 10);
    MUST(shutdown(h[0], SHUT_WR) == 0);

    /* a stream socket whose peer is closed, with data left for it */
    int c[2];
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, c) == 0);
    MUST(write(c[1], "bye", 3) == 3);
    close(c[1]);

    /* listeners: a relative path (in the cwd) and an abstract name */
    char absname[64];
    snprintf(absname, sizeof absname, "ckpt-unixsock-%d", getpid());
    unlink("unixsock.sock");
    struct sockaddr_un a;
    int lp = socket(AF_UNIX, SOCK_STREAM, 0);
    MUST(lp >= 0);
    MUST(bind(lp, (struct sockaddr *)&a, path_addr(&a, "unixsock.sock")) == 0);
    MUST(chmod("unixsock.sock", 0640) == 0);
    MUST(listen(lp, 7) == 0);
    int la = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    MUST(la >= 0);
    MUST(bind(la, (struct sockaddr *)&a, abstract_addr(&a, absname)) == 0);
    MUST(listen(la, 3) == 0);

    /* a connection accepted from the path listener, data both ways */
    int cl = socket(AF_UNIX, SOCK_STREAM, 0);
    MUST(cl >= 0);
    MUST(connect(cl, (struct sockaddr *)&a, path_addr(&a, "unixsock.sock")) == 0);
    int sv = accept(lp, NULL, NULL);
    MUST(sv >= 0);
    MUST(write(cl, "to-server", 9) == 9);
    MUST(write(sv, "to-client", 9) == 9);

    /* a datagram socket bound to an abstract name, 2 messages from an unbound sender */
    char dname[64];
    snprintf(dname, sizeof dname, "ckpt-unixsock-dgram-%d", getpid());
    int dr = socket(AF_UNIX, SOCK_DGRAM, 0);
    MUST(dr >= 0);
    socklen_t dl = abstract_addr(&a, dname);
    MUST(bind(dr, (struct sockaddr *)&a, dl) == 0);
    int ds = socket(AF_UNIX, SOCK_DGRAM, 0);
    MUST(ds >= 0);
    MUST(sendto(ds, "dg-1", 4, 0, (struct sockaddr *)&a, dl) == 4);
    /* and, between those, datagrams of bound senders, whose addresses the receiver gets: one that stays
     * (abstract name), one closed since (abstract), one closed and its file removed (path) */
    struct sockaddr_un sna, sca, spa;
    char sn[64], sc[64], sp[64];
    snprintf(sn, sizeof sn, "ckpt-unixsock-snd-%d", getpid());
    snprintf(sc, sizeof sc, "ckpt-unixsock-sndgone-%d", getpid());
    snprintf(sp, sizeof sp, "/tmp/ckpt-unixsock-sndpath-%d", getpid());
    socklen_t snl = abstract_addr(&sna, sn), scl = abstract_addr(&sca, sc), spl = path_addr(&spa, sp);
    int nsnd = socket(AF_UNIX, SOCK_DGRAM, 0), csnd = socket(AF_UNIX, SOCK_DGRAM, 0), psnd = socket(AF_UNIX, SOCK_DGRAM, 0);
    unlink(sp);
    MUST(nsnd >= 0 && csnd >= 0 && psnd >= 0 && bind(nsnd, (struct sockaddr *)&sna, snl) == 0 && bind(csnd, (struct sockaddr *)&sca, scl) == 0
         && bind(psnd, (struct sockaddr *)&spa, spl) == 0);
    MUST(sendto(nsnd, "from-named", 10, 0, (struct sockaddr *)&a, dl) == 10);
    MUST(sendto(csnd, "from-gone", 9, 0, (struct sockaddr *)&a, dl) == 9);
    MUST(sendto(psnd, "from-path", 9, 0, (struct sockaddr *)&a, dl) == 9);
    close(csnd);
    close(psnd);
    MUST(unlink(sp) == 0);
    MUST(sendto(ds, "dg-two", 6, 0, (struct sockaddr *)&a, dl) == 6);

    /* a datagram socket bound to an absolute path whose file was then removed, a message queued */
    char gone[4200];
    MUST(getcwd(gone, 4000) != NULL);
    strcat(gone, "/unixsock-gone.sock");
    MUST(strlen(gone) < sizeof a.sun_path);
    unlink(gone);
    int gr = socket(AF_UNIX, SOCK_DGRAM, 0);
    MUST(gr >= 0);
    socklen_t gl = path_addr(&a, gone);
    MUST(bind(gr, (struct sockaddr *)&a, gl) == 0);
    MUST(sendto(ds, "to-gone", 7, 0, (struct sockaddr *)&a, gl) == 7);
    MUST(unlink(gone) == 0);

    /* an unconnected, unbound socket */
    int un = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    MUST(un >= 0);

    /* parent and child: a pair split by fork, data in flight from the child */
    int f[2];
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, f) == 0);
    pid_t child = fork();
    MUST(child >= 0);
    if (child == 0) {
        close(f[0]);
        MUST(write(f[1], "from-child", 10) == 10);
        char b[8] = { 0 };
        if (read_exact(f[1], b, 4) != 0 || memcmp(b, "ping", 4) != 0) { say("FAIL: child read '%s'", b); _exit(1); }
        if (write(f[1], "pong", 4) != 4) _exit(1);
        _exit(0);
    }
    close(f[1]);
    char fc[16] = { 0 };
    MUST(recv(f[0], fc, 10, MSG_PEEK | MSG_WAITALL) == 10);   /* the child's data is in flight */
    say("CHILD %d", child);
    say("READY");
    e2e_wait_usr1();

    char b[80000];
    /* stream: both directions, exact bytes, then nothing more */
    CHECK(read_exact(s[1], b, sizeof big0) == 0 && check_fill(b, sizeof big0, 1) < 0, "stream s[1] data");
    CHECK(read_exact(s[0], b, sizeof big1) == 0 && check_fill(b, sizeof big1, 2) < 0, "stream s[0] data");
    CHECK(queue_empty(s[0]) && queue_empty(s[1]), "stream: more data than queued");
    CHECK((fcntl(s[0], F_GETFL) & O_NONBLOCK) && !(fcntl(s[1], F_GETFL) & O_NONBLOCK), "stream: O_NONBLOCK flags");
    CHECK(sockopt(s[0], SO_SNDBUF) == s0snd, "stream: SO_SNDBUF %d, want %d", sockopt(s[0], SO_SNDBUF), s0snd);
    CHECK(sockopt(s[0], SO_TYPE) == SOCK_STREAM, "stream: type");
    CHECK(write(s[0], "more", 4) == 4 && read_exact(s[1], b, 4) == 0 && memcmp(b, "more", 4) == 0, "stream: new data");

    /* datagrams: boundaries, order, peek offset, SO_PASSCRED */
    CHECK(sockopt(d[1], SO_PEEK_OFF) == 17, "dgram: SO_PEEK_OFF %d, want 17", sockopt(d[1], SO_PEEK_OFF));
    CHECK(sockopt(d[1], SO_PASSCRED) == 1 && sockopt(d[0], SO_PASSCRED) == 0, "dgram: SO_PASSCRED");
    CHECK(sockopt(d[1], SO_PASSSEC) == 1 && sockopt(d[0], SO_PASSSEC) == 0, "dgram: SO_PASSSEC");
    CHECK(sockopt(d[1], SO_TYPE) == SOCK_DGRAM, "dgram: type");
    ssize_t n = recv(d[1], b, sizeof b, 0);
    CHECK(n == 17 && memcmp(b, "first-17-bytes-xx", 17) == 0, "dgram 1: %zd bytes", n);
    n = recv(d[1], b, sizeof b, 0);
    CHECK(n == (ssize_t)sizeof m2 && check_fill(b, sizeof m2, 3) < 0, "dgram 2: %zd bytes", n);
    n = recv(d[1], b, sizeof b, 0);
    CHECK(n == 5 && memcmp(b, "third", 5) == 0, "dgram 3: %zd bytes", n);
    CHECK(queue_empty(d[1]), "dgram: more than 3 messages");
    n = recv(d[0], b, sizeof b, MSG_DONTWAIT);
    CHECK(n == 5 && memcmp(b, "reply", 5) == 0, "dgram reply: %zd bytes", n);
    CHECK(send(d[0], "new", 3, 0) == 3 && recv(d[1], b, sizeof b, 0) == 3, "dgram: new message");

    /* seqpacket */
    CHECK(sockopt(q[0], SO_TYPE) == SOCK_SEQPACKET, "seqpacket: type");
    CHECK(sockopt(q[0], SO_PRIORITY) == 5 && sockopt(q[0], SO_RCVLOWAT) == 3 && sockopt(q[1], SO_PRIORITY) == 0, "seqpacket: SO_PRIORITY %d, SO_RCVLOWAT %d", sockopt(q[0], SO_PRIORITY), sockopt(q[0], SO_RCVLOWAT));
    struct timeval rtv = { 0, 0 };
    socklen_t rl = sizeof rtv;
    CHECK(getsockopt(q[0], SOL_SOCKET, SO_RCVTIMEO, &rtv, &rl) == 0 && rtv.tv_sec == 7 && rtv.tv_usec == 500000, "seqpacket: SO_RCVTIMEO %ld.%06ld", (long)rtv.tv_sec, (long)rtv.tv_usec);
    n = recv(q[0], b, sizeof b, MSG_DONTWAIT);
    CHECK(n == 10 && memcmp(b, "record-one", 10) == 0, "seqpacket 1: %zd", n);
    n = recv(q[0], b, sizeof b, MSG_DONTWAIT);
    CHECK(n == 8 && memcmp(b, "record-2", 8) == 0, "seqpacket 2: %zd", n);
    CHECK(queue_empty(q[0]), "seqpacket: more than 2 records");
    CHECK(send(q[0], "back", 4, 0) == 4 && recv(q[1], b, sizeof b, 0) == 4, "seqpacket: new record");

    /* shutdown: h[1] reads the data then EOF; h[0] cannot write; h[1] still can */
    CHECK(read_exact(h[1], b, 10) == 0 && memcmp(b, "last words", 10) == 0, "shutdown: data");
    CHECK(read(h[1], b, 1) == 0, "shutdown: no EOF after the data");
    signal(SIGPIPE, SIG_IGN);
    CHECK(write(h[0], "x", 1) < 0 && errno == EPIPE, "shutdown: h[0] can still write");
    CHECK(write(h[1], "y", 1) == 1 && read(h[0], b, 1) == 1 && b[0] == 'y', "shutdown: h[1] cannot write");

    /* closed peer: the data, then EOF */
    CHECK(read_exact(c[0], b, 3) == 0 && memcmp(b, "bye", 3) == 0, "closed peer: data");
    CHECK(read(c[0], b, 1) == 0, "closed peer: no EOF");

    /* the accepted connection */
    CHECK(read_exact(sv, b, 9) == 0 && memcmp(b, "to-server", 9) == 0, "connection: server data");
    CHECK(read_exact(cl, b, 9) == 0 && memcmp(b, "to-client", 9) == 0, "connection: client data");
    CHECK(write(cl, "again", 5) == 5 && read_exact(sv, b, 5) == 0, "connection: new data");

    /* listeners: new connections */
    struct stat ls;
    CHECK(stat("unixsock.sock", &ls) == 0 && S_ISSOCK(ls.st_mode) && (ls.st_mode & 0777) == 0640, "path listener: socket file mode %o", ls.st_mode);
    int c2 = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(connect(c2, (struct sockaddr *)&a, path_addr(&a, "unixsock.sock")) == 0, "connect to the path listener: %s", strerror(errno));
    int a2 = accept(lp, NULL, NULL);
    CHECK(a2 >= 0 && write(c2, "hi", 2) == 2 && read_exact(a2, b, 2) == 0, "path listener: accept and talk");
    int c3 = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    CHECK(connect(c3, (struct sockaddr *)&a, abstract_addr(&a, absname)) == 0, "connect to the abstract listener: %s", strerror(errno));
    int a3 = accept(la, NULL, NULL);
    CHECK(a3 >= 0 && send(c3, "rec", 3, 0) == 3 && recv(a3, b, sizeof b, 0) == 3, "abstract listener: accept and talk");

    /* bound datagram receiver */
    n = recv(dr, b, sizeof b, MSG_DONTWAIT);
    CHECK(n == 4 && memcmp(b, "dg-1", 4) == 0, "bound dgram 1: %zd", n);
    {
        const char *want[] = { "from-named", "from-gone", "from-path" };
        const struct sockaddr_un *wa[] = { &sna, &sca, &spa };
        socklen_t wl[] = { snl, scl, spl };
        for (int i = 0; i < 3; i++) {
            struct sockaddr_un f;
            socklen_t fl = sizeof f;
            memset(&f, 0, sizeof f);
            n = recvfrom(dr, b, sizeof b, MSG_DONTWAIT, (struct sockaddr *)&f, &fl);
            CHECK(n == (ssize_t)strlen(want[i]) && memcmp(b, want[i], n) == 0 && fl == wl[i] && memcmp(&f, wa[i], fl) == 0,
                  "datagram %d from a bound sender: %zd bytes, its sender's address %d bytes '%s'", i, n, (int)fl, f.sun_path[0] ? f.sun_path : f.sun_path + 1);
        }
        CHECK(access(sp, F_OK) != 0, "the removed sender's socket file %s is back", sp);
        CHECK(sendto(nsnd, "again", 5, 0, (struct sockaddr *)&a, abstract_addr(&a, dname)) == 5, "the named sender cannot send: %s", strerror(errno));
        struct sockaddr_un f;
        socklen_t fl = sizeof f;
        n = recvfrom(dr, b, sizeof b, MSG_DONTWAIT, (struct sockaddr *)&f, &fl);
        CHECK(n == 6 && memcmp(b, "dg-two", 6) == 0, "bound dgram 2 (after the named senders'): %zd", n);
        fl = sizeof f;
        n = recvfrom(dr, b, sizeof b, MSG_DONTWAIT, (struct sockaddr *)&f, &fl);
        CHECK(n == 5 && fl == snl && memcmp(&f, &sna, snl) == 0, "a new datagram of the named sender: %zd", n);
    }
    CHECK(sendto(ds, "dg-3", 4, 0, (struct sockaddr *)&a, abstract_addr(&a, dname)) == 4 && recv(dr, b, sizeof b, MSG_DONTWAIT) == 4,
          "bound dgram: new message: %s", strerror(errno));

    CHECK(sockopt(un, SO_TYPE) == SOCK_SEQPACKET, "unconnected: type");

    /* names: as given to bind (relative stays relative); the removed one still removed */
    struct sockaddr_un got;
    socklen_t gotl = sizeof got;
    CHECK(getsockname(lp, (struct sockaddr *)&got, &gotl) == 0 && strcmp(got.sun_path, "unixsock.sock") == 0, "path listener: named '%s'", got.sun_path);
    gotl = sizeof got;
    CHECK(getsockname(gr, (struct sockaddr *)&got, &gotl) == 0 && strcmp(got.sun_path, gone) == 0, "removed-path socket: named '%s'", got.sun_path);
    CHECK(access(gone, F_OK) != 0 && errno == ENOENT, "the removed socket file %s is back", gone);
    n = recv(gr, b, sizeof b, MSG_DONTWAIT);
    CHECK(n == 7 && memcmp(b, "to-gone", 7) == 0, "removed-path socket: %zd bytes queued", n);

    /* parent and child */
    memset(fc, 0, sizeof fc);
    CHECK(read_exact(f[0], fc, 10) == 0 && memcmp(fc, "from-child", 10) == 0, "fork pair: child data '%s'", fc);
    CHECK(write(f[0], "ping", 4) == 4, "fork pair: ping");
    CHECK(read_exact(f[0], fc, 4) == 0 && memcmp(fc, "pong", 4) == 0, "fork pair: pong '%s'", fc);
    int st;
    CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child failed: 0x%x", st);
    unlink("unixsock.sock");
    return e2e_finish();
}
