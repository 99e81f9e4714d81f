/* mqueue: a POSIX message queue opened twice (read-write, and write-only non-blocking) with two
 * messages of different priorities in it. After the restart both descriptions are open with their
 * flags, and the messages come out in priority order. */
#include "e2e.h"
#include <mqueue.h>

int main(void)
{
    e2e_init();
    char name[64];
    snprintf(name, sizeof name, "/ckpt-e2e-mq-%d", getpid());
    struct mq_attr a = { .mq_maxmsg = 8, .mq_msgsize = 64 };
    mqd_t q = mq_open(name, O_RDWR | O_CREAT | O_EXCL, 0600, &a);
    MUST(q != (mqd_t)-1);
    mqd_t w = mq_open(name, O_WRONLY | O_NONBLOCK);
    MUST(w != (mqd_t)-1);
    MUST(mq_send(q, "low", 3, 1) == 0 && mq_send(w, "high", 4, 7) == 0);
    say("READY");
    e2e_wait_usr1();

    struct mq_attr got;
    CHECK(mq_getattr(q, &got) == 0 && got.mq_curmsgs == 2 && got.mq_maxmsg == 8 && got.mq_msgsize == 64 && !(got.mq_flags & O_NONBLOCK),
          "queue attributes: %ld messages, max %ld of %ld bytes, flags 0x%lx", got.mq_curmsgs, got.mq_maxmsg, got.mq_msgsize, got.mq_flags);
    CHECK(mq_getattr(w, &got) == 0 && (got.mq_flags & O_NONBLOCK), "the write-only description lost O_NONBLOCK");
    char buf[64];
    unsigned prio = 0;
    ssize_t n = mq_receive(q, buf, sizeof buf, &prio);
    CHECK(n == 4 && prio == 7 && !memcmp(buf, "high", 4), "first message: %zd bytes, priority %u", n, prio);
    n = mq_receive(q, buf, sizeof buf, &prio);
    CHECK(n == 3 && prio == 1 && !memcmp(buf, "low", 3), "second message: %zd bytes, priority %u", n, prio);
    CHECK(mq_send(w, "again", 5, 2) == 0 && mq_receive(q, buf, sizeof buf, &prio) == 5 && prio == 2, "the queue does not carry new messages");
    errno = 0;
    CHECK(mq_receive(w, buf, sizeof buf, &prio) < 0 && errno == EBADF, "the write-only description can read (errno %d)", errno);
    mq_unlink(name);
    return e2e_finish();
}
