/* twothreads: the main thread and another one, both waiting; prints the other's tid (THREAD TID) and
 * READY; after SIGUSR1 the other thread is joined and the program ends with 0. */
#include "e2e.h"
#include <pthread.h>

static void *other(void *arg)
{
    (void)arg;
    say("THREAD %d", (int)gettid());
    while (!e2e_go) pause();
    return NULL;
}

int main(void)
{
    e2e_init();
    pthread_t t;
    MUST(pthread_create(&t, NULL, other, NULL) == 0);
    usleep(100000);
    say("READY");
    e2e_wait_usr1();
    pthread_kill(t, SIGUSR1);
    MUST(pthread_join(t, NULL) == 0);
    return e2e_finish();
}
