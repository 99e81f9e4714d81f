/* tcphalf: half-closed TCP connections over loopback, both ends held: one whose client sent "bye" and
 * closed its end (the server end is in CLOSE_WAIT with "bye" unread: the client end is gone), and one
 * whose server end shut its writing down (FIN_WAIT2, the client end in CLOSE_WAIT). After the restart
 * the server end of the first reads "bye" then end of file; on the second, the client end reads end of
 * file, can still send to the server end, and its close ends the server end's reading. */
#include "e2e.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static int state(int fd)
{
    struct tcp_info ti;
    socklen_t l = sizeof ti;
    return getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0 ? ti.tcpi_state : -1;
}

int main(void)
{
    e2e_init();
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof a;
    int lst = socket(AF_INET, SOCK_STREAM, 0);
    MUST(lst >= 0 && bind(lst, (struct sockaddr *)&a, sizeof a) == 0 && listen(lst, 4) == 0 && getsockname(lst, (struct sockaddr *)&a, &l) == 0);
    int c1 = socket(AF_INET, SOCK_STREAM, 0);
    MUST(c1 >= 0 && connect(c1, (struct sockaddr *)&a, sizeof a) == 0);
    int s1 = accept(lst, NULL, NULL);
    MUST(s1 >= 0 && write(c1, "bye", 3) == 3);
    close(c1);
    int c2 = socket(AF_INET, SOCK_STREAM, 0);
    MUST(c2 >= 0 && connect(c2, (struct sockaddr *)&a, sizeof a) == 0);
    int s2 = accept(lst, NULL, NULL);
    MUST(s2 >= 0 && shutdown(s2, SHUT_WR) == 0);
    usleep(100000);
    MUST(state(s1) == TCP_CLOSE_WAIT && state(s2) == TCP_FIN_WAIT2 && state(c2) == TCP_CLOSE_WAIT);
    say("READY");
    e2e_wait_usr1();

    char buf[16] = { 0 };
    CHECK(read(s1, buf, sizeof buf) == 3 && !memcmp(buf, "bye", 3), "the CLOSE_WAIT end lost its unread data ('%s')", buf);
    CHECK(read(s1, buf, sizeof buf) == 0, "the CLOSE_WAIT end does not see the end of file");
    CHECK(read(c2, buf, sizeof buf) == 0, "the client end of the second connection does not see the server's FIN");
    CHECK(write(c2, "late", 4) == 4, "the client end cannot send any more: %s", strerror(errno));
    memset(buf, 0, sizeof buf);
    CHECK(read_full(s2, buf, 4) == 4 && !memcmp(buf, "late", 4), "the FIN_WAIT2 end did not get the data ('%s')", buf);
    close(c2);
    CHECK(read(s2, buf, sizeof buf) == 0, "the FIN_WAIT2 end does not see the end of file after the client closed");
    return e2e_finish();
}
