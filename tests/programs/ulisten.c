/* ulisten DIR: a unix stream listener bound to DIR/sock that has not accepted a connection a client outside
 * the tree made and sent a request through (a backend whose workers were all busy). Checkpointed with
 * --skip-in-flight, that connection is left out. After SIGUSR1 the restarted listener still serves: it
 * has nothing waiting (non-blocking accept: EAGAIN), then a new client of its own connects and a byte
 * goes each way. */
#include "e2e.h"
#include <sys/socket.h>
#include <sys/un.h>

int main(int argc, char **argv)
{
    e2e_init();
    MUST(argc == 2);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof a.sun_path, "%s/sock", argv[1]);
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    MUST(l >= 0 && bind(l, (struct sockaddr *)&a, sizeof a) == 0 && listen(l, 16) == 0);
    say("READY");
    e2e_wait_usr1();

    int flags = fcntl(l, F_GETFL);
    MUST(fcntl(l, F_SETFL, flags | O_NONBLOCK) == 0);
    int none = accept(l, NULL, NULL);
    CHECK(none < 0 && errno == EAGAIN, "the listener had a connection waiting after the restart (fd %d, %s): it was to be left out", none, strerror(errno));
    MUST(fcntl(l, F_SETFL, flags) == 0);
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(c >= 0 && connect(c, (struct sockaddr *)&a, sizeof a) == 0, "a new client cannot connect: %s", strerror(errno));
    int s = accept(l, NULL, NULL);
    char b = 0;
    CHECK(s >= 0 && write(c, "q", 1) == 1 && read(s, &b, 1) == 1 && b == 'q', "the new connection does not carry a byte to the listener");
    CHECK(s >= 0 && write(s, "r", 1) == 1 && read(c, &b, 1) == 1 && b == 'r', "the new connection does not carry a byte back");
    return e2e_finish();
}
