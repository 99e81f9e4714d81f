/* threads: a second thread counting (multi-threaded processes are refused; the process must go on).
 *
 * build: threads -pthread
 */
#include "e2e.h"
#include <pthread.h>

static volatile long counter;
static void *count(void *arg) { (void)arg; for (;;) { counter++; usleep(1000); } return NULL; }

int main(void)
{
    e2e_init();
    pthread_t th;
    MUST(pthread_create(&th, NULL, count, NULL) == 0);
    say("READY");
    e2e_wait_usr1();
    long c0 = counter;
    sleep_full(0.1);
    CHECK(counter > c0, "the second thread stopped counting");
    return e2e_finish();
}
