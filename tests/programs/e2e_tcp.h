/* tcp_loopback_pair: a TCP connection on 127.0.0.1 whose two ends this process holds, each end's send and
 * receive buffers set to `buf` bytes (the client's before it connects); returns the listener it was
 * accepted from (the caller closes it or keeps it). For the TCP test programs that fill both ends' queues. */
#ifndef E2E_TCP_H
#define E2E_TCP_H
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int tcp_loopback_pair(int buf, int *client, int *server)
{
    struct sockaddr_in lo = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) }, la;
    socklen_t l = sizeof la;
    int lst = socket(AF_INET, SOCK_STREAM, 0);
    MUST(lst >= 0 && bind(lst, (struct sockaddr *)&lo, sizeof lo) == 0 && listen(lst, 1) == 0 && getsockname(lst, (struct sockaddr *)&la, &l) == 0);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    MUST(c >= 0 && setsockopt(c, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf) == 0 && setsockopt(c, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf) == 0);
    MUST(connect(c, (struct sockaddr *)&la, sizeof la) == 0);
    int s = accept(lst, NULL, NULL);
    MUST(s >= 0 && setsockopt(s, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf) == 0 && setsockopt(s, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf) == 0);
    *client = c;
    *server = s;
    return lst;
}
#endif
