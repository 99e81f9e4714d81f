/* tcppeer: a TCP server whose client is outside the tree, sending while the server is down.
 *
 * "server": listens on an ephemeral loopback port (prints "PORT n", then READY), accepts one client and
 * answers each line "msg N" with "ack N msg N" until the client closes; then waits for SIGUSR1 and
 * exits 0 if every line came in order.
 * "client PORT SECONDS": connects, sends "msg N" every 20 ms and checks each answer, for SECONDS; prints
 * "CLIENT OK n" and exits 0, or "CLIENT ERROR ..." (a reset: the server's host answered while it was
 * down) and exits 1.
 * "slowserver" and "burst PORT SECONDS": a server slower to accept than its clients connect (see below).
 * "server PORT" listens on that port; "connecting PORT": see connecting(); "pusher" and "sink PORT
 * SECONDS": see pusher(); "corked ROUNDS" and "collector PORT ROUNDS": see corked(). */
#include "e2e.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <poll.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>

static int read_line(int fd, char *b, int max)
{
    int n = 0;
    while (n < max - 1) {
        ssize_t r = read(fd, b + n, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return r < 0 ? -1 : n;
        if (b[n++] == '\n') break;
    }
    b[n] = 0;
    return n;
}

static int server(int port)
{
    e2e_init();
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof a;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    MUST(s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 && listen(s, 1) == 0);
    MUST(getsockname(s, (struct sockaddr *)&a, &l) == 0);
    say("PORT %d", ntohs(a.sin_port));
    say("READY");
    int c = accept(s, NULL, NULL);
    MUST(c >= 0);
    char line[128], ans[192];
    long n = 0;
    for (;;) {
        int k = read_line(c, line, sizeof line);
        if (k <= 0) { CHECK(k == 0, "read: %s", strerror(errno)); break; }
        n++;
        long got = -1;
        CHECK(sscanf(line, "msg %ld", &got) == 1 && got == n, "line %ld is '%s'", n, line);
        int m = snprintf(ans, sizeof ans, "ack %ld %s", n, line);
        CHECK(write(c, ans, m) == m, "write: %s", strerror(errno));
    }
    say("SERVED %ld", n);
    e2e_wait_usr1();
    return e2e_finish();
}

static int client(int port, double seconds)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) { say("CLIENT ERROR connect: %s", strerror(errno)); return 1; }
    double t0 = now_mono(), longest = 0;
    long i = 0;
    char msg[64], want[160], got[160];
    while (now_mono() - t0 < seconds) {
        i++;
        int m = snprintf(msg, sizeof msg, "msg %ld\n", i);
        double t = now_mono();
        if (write(s, msg, m) != m) { say("CLIENT ERROR write %ld: %s", i, strerror(errno)); return 1; }
        int k = read_line(s, got, sizeof got);
        if (k <= 0) { say("CLIENT ERROR read %ld: %s", i, k < 0 ? strerror(errno) : "end of stream"); return 1; }
        snprintf(want, sizeof want, "ack %ld msg %ld\n", i, i);
        if (strcmp(got, want) != 0) { say("CLIENT ERROR answer %ld is '%s'", i, got); return 1; }
        if (now_mono() - t > longest) longest = now_mono() - t;
        usleep(20000);
    }
    close(s);
    say("CLIENT OK %ld (longest wait %.2f s)", i, longest);
    return 0;
}

/* "slowserver": accepts one connection every 50 ms (prints "PORT n", READY), answers its line, closes it;
 * ends on SIGUSR1 (exit 0 if nothing failed). Clients that connect faster keep its accept queue full. */
static int slowserver(void)
{
    e2e_init();
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof a;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    MUST(s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 && listen(s, 64) == 0);
    MUST(getsockname(s, (struct sockaddr *)&a, &l) == 0);
    say("PORT %d", ntohs(a.sin_port));
    say("READY");
    long served = 0;
    while (!e2e_go) {
        int c = accept(s, NULL, NULL);
        if (c < 0) { CHECK(errno == EINTR, "accept: %s", strerror(errno)); continue; }
        char line[64];
        if (read_line(c, line, sizeof line) > 0) {
            CHECK(write(c, "ok\n", 3) == 3, "write: %s", strerror(errno));
            served++;
        }
        close(c);
        usleep(50000);
    }
    say("SERVED %ld", served);
    return e2e_finish();
}

/* "burst PORT SECONDS": 6 processes each connecting again and again (one line, one answer); exit 0 if
 * every exchange worked, else "CLIENT ERROR". */
static int burst(int port, double seconds)
{
    pid_t kids[6];
    for (int k = 0; k < 6; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            double t0 = now_mono();
            long n = 0;
            while (now_mono() - t0 < seconds) {
                struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
                int s = socket(AF_INET, SOCK_STREAM, 0);
                char got[16] = { 0 };
                if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0 || write(s, "hi\n", 3) != 3 || read_line(s, got, sizeof got) <= 0 || strcmp(got, "ok\n") != 0) {
                    say("CLIENT ERROR after %ld: %s", n, strerror(errno));
                    _exit(1);
                }
                close(s);
                n++;
            }
            _exit(0);
        }
    }
    int bad = 0;
    for (int k = 0; k < 6; k++) {
        int st = 0;
        if (waitpid(kids[k], &st, 0) != kids[k] || !WIFEXITED(st) || WEXITSTATUS(st) != 0) bad++;
    }
    if (bad) return 1;
    say("CLIENT OK");
    return 0;
}

/* "connecting PORT": a connection being opened (non-blocking connect) when READY is printed; SEEN once it
 * is established; after SIGUSR1 one line is answered through it. */
static int connecting(int port)
{
    e2e_init();
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    MUST(s >= 0);
    MUST(connect(s, (struct sockaddr *)&a, sizeof a) != 0 && errno == EINPROGRESS);
    say("READY");
    struct pollfd p = { s, POLLOUT, 0 };
    MUST(poll(&p, 1, 10000) == 1);
    int err = -1;
    socklen_t l = sizeof err;
    MUST(getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &l) == 0 && err == 0);
    say("SEEN");
    e2e_wait_usr1();
    fcntl(s, F_SETFL, 0);
    char got[64];
    CHECK(write(s, "msg 1\n", 6) == 6 && read_line(s, got, sizeof got) > 0 && strcmp(got, "ack 1 msg 1\n") == 0, "no answer through the connection");
    close(s);
    return e2e_finish();
}

/* "pusher": a server that writes to its one client, outside the tree, until its send queue is full (the
 * client does not read yet: most of it is not sent), then shuts the connection down for writing (its FIN
 * queued behind that data) and prints "PUSHED n" and READY; exits 0 after SIGUSR1.
 * "sink PORT SECONDS": connects, shuts its end for writing, reads nothing for SECONDS, then reads to the end (15 s at most) and
 * prints "SINK OK n" (n bytes, each right) or "SINK ERROR ...". */
static unsigned char pushed_byte(long i) { return (unsigned char)(i * 7 % 251); }

/* Reads s to its end, each byte checked against expect(offset); returns the count, or -1 after saying
 * "TAG ERROR ..." (nothing for 15 s, a read error, a byte that differs). */
static long read_checked(int s, const char *tag, unsigned char (*expect)(long))
{
    static unsigned char b[1 << 16];
    long n = 0;
    for (;;) {
        struct pollfd p = { s, POLLIN, 0 };
        if (poll(&p, 1, 15000) != 1) { say("%s ERROR nothing more after %ld bytes for 15 s", tag, n); return -1; }
        ssize_t k = read(s, b, sizeof b);
        if (k < 0) { say("%s ERROR read after %ld bytes: %s", tag, n, strerror(errno)); return -1; }
        if (k == 0) return n;
        for (ssize_t i = 0; i < k; i++)
            if (b[i] != expect(n + i)) { say("%s ERROR byte %ld is %d", tag, n + i, b[i]); return -1; }
        n += k;
    }
}

/* Listens on a loopback port the kernel picks, says "PORT N", and returns the first connection accepted
 * (or -1). */
static int accept_one(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof a;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    MUST(s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 && listen(s, 1) == 0);
    MUST(getsockname(s, (struct sockaddr *)&a, &l) == 0);
    say("PORT %d", ntohs(a.sin_port));
    return accept(s, NULL, NULL);
}

static int pusher(void)
{
    e2e_init();
    int c = accept_one();
    MUST(c >= 0 && fcntl(c, F_SETFL, O_NONBLOCK) == 0);
    static unsigned char b[1 << 16];
    long n = 0;
    for (;;) {
        for (int i = 0; i < (int)sizeof b; i++) b[i] = pushed_byte(n + i);
        ssize_t k = send(c, b, sizeof b, MSG_NOSIGNAL);
        if (k < 0 && errno == EAGAIN) {
            struct pollfd p = { c, POLLOUT, 0 };
            if (poll(&p, 1, 300) == 0) break;   /* nothing drained for 300 ms: the client's window is shut */
            continue;
        }
        MUST(k > 0);
        n += k;
    }
    MUST(shutdown(c, SHUT_WR) == 0);
    say("PUSHED %ld", n);
    say("READY");
    e2e_wait_usr1();
    return e2e_finish();
}

static int sink(int port, double seconds)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) { say("SINK ERROR connect: %s", strerror(errno)); return 1; }
    /* nothing to send: the server's end is half-closed by our FIN, then closes its own (LAST_ACK) */
    if (shutdown(s, SHUT_WR) != 0) { say("SINK ERROR shutdown: %s", strerror(errno)); return 1; }
    usleep((useconds_t)(seconds * 1e6));
    long n = read_checked(s, "SINK", pushed_byte);
    if (n < 0) return 1;
    say("SINK OK %ld", n);
    return 0;
}

/* "corked ROUNDS": a server (prints "PORT n") with a child writing to 1 GiB of memory (its pages make the
 * checkpoint of the tree last well over 200 ms after this process's connection was read). Each round it
 * corks the connection to its one client (TCP_CORK), writes CORK_CHUNK bytes, less than a segment (held
 * back: not sent), prints "CORKED r", and waits for SIGUSR1; then uncorks (they go out). After the last
 * round it closes the connection and exits 0 once its child ended.
 * The kernel sends corked bytes by itself 200 ms after they were written (the timer that also sends
 * window probes), whether the process runs, is frozen or is being checkpointed.
 * "collector PORT ROUNDS": connects and reads nothing until told: at each SIGUSR1, prints "RECEIVED r n",
 * the bytes that came so far (FIONREAD); after ROUNDS of them reads to the end, checks every byte and
 * prints "COLLECTED OK n" (exit 0) or "COLLECTED ERROR ..." (exit 1). */
#define CORK_CHUNK 1000
static unsigned char corked_byte(long i) { return (unsigned char)(i * 13 % 241); }

static int corked(int rounds)
{
    e2e_init();
    e2e_block_usr1(1);
    int ready[2];
    MUST(pipe(ready) == 0);
    pid_t kid = fork();
    MUST(kid >= 0);
    if (kid == 0) {
        /* every page written again and again (a restarted tree's checkpoint copies them all too); the
         * parent goes on once each was written */
        size_t n = 1ul << 30;
        char *m = malloc(n);
        MUST(m != NULL);
        close(ready[0]);
        e2e_block_usr1(0);
        for (char v = 1; !e2e_go; v++) {
            for (size_t i = 0; i < n; i += 4096) m[i] = v;
            if (ready[1] >= 0) { MUST(write(ready[1], "", 1) == 1); close(ready[1]); ready[1] = -1; }
            usleep(20000);
        }
        _exit(0);
    }
    e2e_block_usr1(0);
    close(ready[1]);
    char one;
    MUST(read(ready[0], &one, 1) == 1);
    close(ready[0]);
    int c = accept_one();
    MUST(c >= 0);
    unsigned char b[CORK_CHUNK];
    long sent = 0;
    for (int r = 1; r <= rounds; r++) {
        int on = 1, off = 0;
        MUST(setsockopt(c, IPPROTO_TCP, TCP_CORK, &on, sizeof on) == 0);
        for (int i = 0; i < CORK_CHUNK; i++) b[i] = corked_byte(sent + i);
        CHECK(write(c, b, sizeof b) == (ssize_t)sizeof b, "write: %s", strerror(errno));
        sent += CORK_CHUNK;
        say("CORKED %d", r);
        e2e_wait_usr1();
        e2e_go = 0;
        CHECK(setsockopt(c, IPPROTO_TCP, TCP_CORK, &off, sizeof off) == 0, "uncork: %s", strerror(errno));
    }
    close(c);
    kill(kid, SIGUSR1);
    e2e_child_verdict(kid, "the child holding memory");
    return e2e_finish();
}

static int collector(int port, int rounds)
{
    e2e_init();
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) { say("COLLECTED ERROR connect: %s", strerror(errno)); return 1; }
    for (int r = 1; r <= rounds; r++) {
        e2e_wait_usr1();
        e2e_go = 0;
        int n = -1;
        MUST(ioctl(s, FIONREAD, &n) == 0);
        say("RECEIVED %d %d", r, n);
    }
    long n = read_checked(s, "COLLECTED", corked_byte);
    if (n < 0) return 1;
    if (n != (long)rounds * CORK_CHUNK) { say("COLLECTED ERROR %ld bytes, not %d", n, rounds * CORK_CHUNK); return 1; }
    say("COLLECTED OK %ld", n);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "server") == 0) return server(argc > 2 ? atoi(argv[2]) : 0);
    if (argc > 2 && strcmp(argv[1], "connecting") == 0) return connecting(atoi(argv[2]));
    if (argc > 1 && strcmp(argv[1], "slowserver") == 0) return slowserver();
    if (argc > 1 && strcmp(argv[1], "pusher") == 0) return pusher();
    if (argc > 3 && strcmp(argv[1], "sink") == 0) return sink(atoi(argv[2]), atof(argv[3]));
    if (argc > 2 && strcmp(argv[1], "corked") == 0) return corked(atoi(argv[2]));
    if (argc > 3 && strcmp(argv[1], "collector") == 0) return collector(atoi(argv[2]), atoi(argv[3]));
    if (argc > 3 && strcmp(argv[1], "burst") == 0) return burst(atoi(argv[2]), atof(argv[3]));
    if (argc > 3 && strcmp(argv[1], "client") == 0) return client(atoi(argv[2]), atof(argv[3]));
    say("usage: tcppeer server | client PORT SECONDS");
    return 2;
}
