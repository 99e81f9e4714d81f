/* sockets: a process holding a socket ckpt does not support (a SOCK_PACKET packet socket: the checkpoint must
 * refuse, naming the fd, and leave the process unharmed), and a UDP socket with a datagram queued to
 * itself (which must still be there after the refused checkpoint). A pipe with data
 * comes first in fd order, so the refusal happens after memory and pipes were already read by
 * injection. Prints "SOCKFD n" for the socket fd. */
#include "e2e.h"
#include <netinet/in.h>
#include <linux/if_packet.h>
#include <sys/socket.h>

int main(void)
{
    e2e_init();
    int p[2], u;
    MUST(pipe(p) == 0);
    MUST(write(p[1], "queued", 6) == 6);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    MUST((u = socket(AF_INET, SOCK_DGRAM, 0)) >= 0);
    MUST(bind(u, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(u, (struct sockaddr *)&a, &al) == 0);
    MUST(connect(u, (struct sockaddr *)&a, sizeof a) == 0);
    MUST(send(u, "in-socket", 9, 0) == 9);
    static char heap_pattern[1 << 20];
    fill(heap_pattern, sizeof heap_pattern, 51);
    sigset_t mask_before;
    sigemptyset(&mask_before);
    sigaddset(&mask_before, SIGWINCH);
    sigprocmask(SIG_BLOCK, &mask_before, NULL);
    sigprocmask(SIG_BLOCK, NULL, &mask_before);
    int nl = socket(AF_PACKET, SOCK_PACKET, 0);   /* the obsolete kind of packet socket */
    MUST(nl >= 0);
    say("SOCKFD %d", nl);
    say("READY");
    e2e_wait_usr1();

    char buf[32] = { 0 };
    CHECK(recv(u, buf, sizeof buf, MSG_DONTWAIT) == 9 && memcmp(buf, "in-socket", 9) == 0, "socket data: '%s'", buf);
    CHECK(send(u, "back", 4, 0) == 4 && recv(u, buf, 4, 0) == 4 && memcmp(buf, "back", 4) == 0, "socket round trip");
    CHECK(read(p[0], buf, sizeof buf) == 6 && memcmp(buf, "queued", 6) == 0, "pipe data was consumed or changed");
    CHECK(check_fill(heap_pattern, sizeof heap_pattern, 51) < 0, "memory changed");
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    CHECK(memcmp(&now, &mask_before, 8) == 0, "signal mask changed");
    int fds = 0;
    for (int fd = 0; fd < 64; fd++) if (fcntl(fd, F_GETFD) >= 0) fds++;
    CHECK(fds == 7, "%d fds open, expected 7 (no leftover from the checkpoint)", fds);
    return e2e_finish();
}
