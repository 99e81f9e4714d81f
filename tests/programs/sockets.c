/* sockets: a process holding sockets (not supported: the checkpoint must refuse, naming the fd, and
 * leave the process unharmed). A pipe with data comes first in fd order, so the refusal happens after
 * memory and pipes were already read by injection. Prints "SOCKFD n" for the first socket fd. */
#include "e2e.h"
#include <sys/socket.h>

int main(void)
{
    e2e_init();
    int p[2], sv[2];
    MUST(pipe(p) == 0);
    MUST(write(p[1], "queued", 6) == 6);
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    MUST(write(sv[0], "in-socket", 9) == 9);
    static char heap_pattern[1 << 20];
    fill(heap_pattern, sizeof heap_pattern, 51);
    sigset_t mask_before;
    sigemptyset(&mask_before);
    sigaddset(&mask_before, SIGWINCH);
    sigprocmask(SIG_BLOCK, &mask_before, NULL);
    sigprocmask(SIG_BLOCK, NULL, &mask_before);
    say("SOCKFD %d", sv[0]);
    say("READY");
    e2e_wait_usr1();

    char buf[32] = { 0 };
    CHECK(read(sv[1], buf, sizeof buf) == 9 && memcmp(buf, "in-socket", 9) == 0, "socket data: '%s'", buf);
    CHECK(write(sv[1], "back", 4) == 4 && read(sv[0], buf, 4) == 4 && memcmp(buf, "back", 4) == 0, "socket round trip");
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
