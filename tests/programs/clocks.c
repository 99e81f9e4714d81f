/* CLOCK_MONOTONIC and CLOCK_BOOTTIME across a restart, and the time namespace they come from.
 *   clocks [OFFSET]   prints PID, reads both clocks (with OFFSET seconds: they must be past it, the program
 *                     being started in a time namespace with that offset), READY, then sleeps until 1.5 s
 *                     past its first reading (an absolute CLOCK_MONOTONIC deadline: the checkpoint comes
 *                     meanwhile) and prints WOKE. After SIGUSR1: both clocks went on from the first
 *                     reading (no jump back, no jump of more than a minute), the sleep did not last much
 *                     more than asked, and with OFFSET the clocks are still past it. */
#include "e2e.h"

static double clock_s(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    e2e_init();
    double offset = argc > 1 ? atof(argv[1]) : 0;
    say("PID %d", getpid());
    double mono0 = clock_s(CLOCK_MONOTONIC), boot0 = clock_s(CLOCK_BOOTTIME);
    MUST(mono0 > offset && boot0 > offset);
    say("READY");
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_nsec += 500000000;
    deadline.tv_sec += 1 + deadline.tv_nsec / 1000000000;
    deadline.tv_nsec %= 1000000000;
    int r;
    while ((r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, NULL)) == EINTR) {}
    CHECK(r == 0, "clock_nanosleep: %s", strerror(r));
    double woke = clock_s(CLOCK_MONOTONIC);
    say("WOKE after %.3f s", woke - mono0);
    e2e_wait_usr1();
    double mono1 = clock_s(CLOCK_MONOTONIC), boot1 = clock_s(CLOCK_BOOTTIME);
    CHECK(mono1 >= mono0 && mono1 - mono0 < 60, "CLOCK_MONOTONIC went from %.3f to %.3f", mono0, mono1);
    CHECK(boot1 >= boot0 && boot1 - boot0 < 60, "CLOCK_BOOTTIME went from %.3f to %.3f", boot0, boot1);
    CHECK(woke - mono0 >= 1.5 && woke - mono0 < 30, "the absolute sleep of 1.5 s ended after %.3f s", woke - mono0);
    CHECK(mono1 > offset && boot1 > offset, "the clocks are no longer past the offset %.0f", offset);
    return e2e_finish();
}
