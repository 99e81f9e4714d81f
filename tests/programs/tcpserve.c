/* tcpserve MIB: a TCP server on 127.0.0.1 (a port of its own, printed: PORT N) answering each connection with "ok" (accept, read the
 * request, answer, close), holding MIB MiB of touched memory (so that a checkpoint of it takes a while).
 * Clients outside the tree keep connecting while it is checkpointed: the kernel completes handshakes for
 * a frozen listener, and a connection that came into its accept queue while the tree was read could not
 * be saved. Ends with PASS after SIGUSR1, having served at least one connection. */
#include "e2e.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
    e2e_init();
    MUST(argc == 2);
    size_t len = (size_t)atoi(argv[1]) << 20;
    char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MUST(mem != MAP_FAILED);
    fill(mem, len, 7);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    MUST(l >= 0 && setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof a;
    MUST(bind(l, (struct sockaddr *)&a, sizeof a) == 0 && listen(l, 64) == 0 && getsockname(l, (struct sockaddr *)&a, &alen) == 0);
    say("PORT %d", ntohs(a.sin_port));
    say("READY");
    long served = 0;
    while (!e2e_go) {
        int c = accept(l, NULL, NULL);
        if (c < 0) { if (errno == EINTR) continue; CHECK(0, "accept: %s", strerror(errno)); break; }
        char req[64];
        if (read(c, req, sizeof req) > 0 && write(c, "ok", 2) == 2) served++;
        close(c);
    }
    say("served %ld", served);
    CHECK(served > 0, "no connection was served");
    CHECK(check_fill(mem, len, 7) < 0, "the memory changed");
    return e2e_finish();
}
