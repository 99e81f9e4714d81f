/* longsleep: two threads each in a 6 s relative sleep given a buffer for the time left (nanosleep, and
 * clock_nanosleep on CLOCK_MONOTONIC), checkpointed about 3.5 s in: after the restart each sleeps what
 * was left, not 6 s again. Checks that each sleep returned 0, lasted at least 6 s, and ended less than
 * 8.5 s after it began (a sleep started over would end past 9.5 s, plus the time the process was down). */
#include "e2e.h"
#include <pthread.h>

static double slept[2];
static int results[2];

static void *sleeper(void *arg)
{
    int which = (int)(intptr_t)arg;
    struct timespec req = { 6, 0 }, rem = { 0, 0 };
    double t0 = now_mono();
    int r;
    if (which == 0) r = nanosleep(&req, &rem) == 0 ? 0 : errno;
    else r = clock_nanosleep(CLOCK_MONOTONIC, 0, &req, &rem);
    slept[which] = now_mono() - t0;
    results[which] = r;
    return NULL;
}

int main(void)
{
    e2e_init();
    pthread_t t[2];
    for (int i = 0; i < 2; i++) MUST(pthread_create(&t[i], NULL, sleeper, (void *)(intptr_t)i) == 0);
    say("READY");
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    say("SLEPT %.3f %.3f", slept[0], slept[1]);
    e2e_wait_usr1();
    const char *name[2] = { "nanosleep", "clock_nanosleep" };
    for (int i = 0; i < 2; i++) {
        CHECK(results[i] == 0, "%s returned %s", name[i], strerror(results[i]));
        CHECK(slept[i] >= 5.999, "%s lasted only %.3f s", name[i], slept[i]);
        CHECK(slept[i] < 8.5, "%s lasted %.3f s: it started over after the restart", name[i], slept[i]);
    }
    return e2e_finish();
}
