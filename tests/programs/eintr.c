/* eintr: threads blocked in calls that the kernel ends with EINTR when their thread is stopped (and not
 * restarted: signal(7)), which a checkpoint must not let them see: epoll_wait, sigwaitinfo, semop, and
 * recv on a socket with a receive timeout. After SIGUSR1 the main thread makes each call's event come
 * (eventfd write, SIGUSR2, semaphore post, a byte); each must return that event, not EINTR. */
#include "e2e.h"
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/socket.h>

static int ep, efd, sem, sv[2];
static long got[4];
static int err[4];

static void *t_epoll(void *a) { (void)a; struct epoll_event e; got[0] = epoll_wait(ep, &e, 1, -1); err[0] = errno; return NULL; }
static void *t_sigwait(void *a) { (void)a; sigset_t s; sigemptyset(&s); sigaddset(&s, SIGUSR2); got[1] = sigwaitinfo(&s, NULL); err[1] = errno; return NULL; }
static void *t_semop(void *a) { (void)a; struct sembuf b = { 0, -1, 0 }; got[2] = semop(sem, &b, 1); err[2] = errno; return NULL; }
static void *t_recv(void *a) { (void)a; char c; got[3] = recv(sv[0], &c, 1, 0); err[3] = errno; return NULL; }

int main(void)
{
    e2e_init();
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    MUST(sigprocmask(SIG_BLOCK, &usr2, NULL) == 0);   /* every thread: SIGUSR2 waits for sigwaitinfo */
    ep = epoll_create1(0);
    efd = eventfd(0, 0);
    struct epoll_event ev = { .events = EPOLLIN };
    MUST(ep >= 0 && efd >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) == 0);
    sem = semget(IPC_PRIVATE, 1, 0600);
    MUST(sem >= 0);
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    struct timeval tv = { 120, 0 };
    MUST(setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    void *(*fn[4])(void *) = { t_epoll, t_sigwait, t_semop, t_recv };
    pthread_t t[4];
    for (int i = 0; i < 4; i++) MUST(pthread_create(&t[i], NULL, fn[i], NULL) == 0);
    sleep_full(0.2);   /* every thread in its call */
    say("READY");
    e2e_wait_usr1();
    MUST(write(efd, &(uint64_t){ 1 }, 8) == 8);
    MUST(kill(getpid(), SIGUSR2) == 0);
    struct sembuf post = { 0, 1, 0 };
    MUST(semop(sem, &post, 1) == 0);
    MUST(send(sv[1], "x", 1, 0) == 1);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    semctl(sem, 0, IPC_RMID);
    const char *name[4] = { "epoll_wait", "sigwaitinfo", "semop", "recv" };
    long want[4] = { 1, SIGUSR2, 0, 1 };
    for (int i = 0; i < 4; i++)
        CHECK(got[i] == want[i], "%s returned %ld (%s), expected %ld", name[i], got[i], got[i] < 0 ? strerror(err[i]) : "-", want[i]);
    return e2e_finish();
}
