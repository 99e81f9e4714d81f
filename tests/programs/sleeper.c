/* sleeper: sleeps 2 s then 1 s in nanosleep, then 1 s in clock_nanosleep (relative), then until an absolute
 * CLOCK_MONOTONIC deadline, and checks that no call failed (no spurious EINTR or restart code leaking
 * out) and that each sleep lasted at least what was asked. Checkpointed and killed mid-sleep; the
 * restart is waited for and its exit status checked (no SIGUSR1 in this test). */
#include "e2e.h"

int main(void)
{
    e2e_init();
    say("READY");
    double t0 = now_mono();
    struct timespec one = { 1, 0 }, rem = { 0, 0 };
    for (int i = 0; i < 2; i++) {
        struct timespec want = { 2 - i, 0 };   /* the checkpoint is taken during the first, longer one */
        double s = now_mono();
        int r = nanosleep(&want, &rem);
        CHECK(r == 0, "nanosleep #%d returned %d: %s", i, r, strerror(errno));
        CHECK(now_mono() - s >= want.tv_sec - 0.001, "nanosleep #%d lasted only %.3f s", i, now_mono() - s);
        say("slept %d", i);
    }
    double s = now_mono();
    int r = clock_nanosleep(CLOCK_MONOTONIC, 0, &one, &rem);
    CHECK(r == 0, "clock_nanosleep (relative) returned %s", strerror(r));
    CHECK(now_mono() - s >= 0.999, "clock_nanosleep lasted only %.3f s", now_mono() - s);
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += 1;
    r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, NULL);
    CHECK(r == 0, "clock_nanosleep (absolute) returned %s", strerror(r));
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    CHECK(now.tv_sec > deadline.tv_sec || (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec),
          "woke before the absolute deadline");
    CHECK(now_mono() - t0 >= 4.99, "all sleeps together lasted only %.3f s", now_mono() - t0);
    return e2e_finish();
}
