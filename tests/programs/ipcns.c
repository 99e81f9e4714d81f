/* ipcns [objects|mq]: a tree (parent and child) in an IPC namespace of its own (made by the program:
 * unshare(CLONE_NEWIPC)).
 *   (no argument) the namespace is empty: after the restart both are in one IPC namespace, still empty,
 *                 and a SysV semaphore set made in it then is seen there alone (id 0, the first of a new
 *                 namespace), not among the machine's; the script checks it is not ckpt's namespace
 *   objects       the namespace holds SysV objects, made with gaps in their ids: a keyed message queue
 *                 (mode 0640) with three messages of different types and sizes, a private empty queue,
 *                 a semaphore set of three with values 1 2 3, a keyed segment the parent attaches and a
 *                 private one no process attaches, both with data; its msgmax limit was raised. After
 *                 the restart each object has its id, key, mode and contents, in the parent and the child
 *   mq            the namespace holds a POSIX message queue the parent has open: the checkpoint must
 *                 refuse (the program checks the queue is intact afterwards) */
#include "e2e.h"
#include <mqueue.h>
#include <sched.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>

struct ids { int q, q2, sem, shm, shm2; char *at; };

static long limit(const char *name)
{
    char path[128], buf[64] = { 0 };
    snprintf(path, sizeof path, "/proc/sys/kernel/%s", name);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    return n > 0 ? atol(buf) : -1;
}

static void set_limit(const char *name, long v)
{
    char path[128], buf[64];
    snprintf(path, sizeof path, "/proc/sys/kernel/%s", name);
    int fd = open(path, O_WRONLY);
    MUST(fd >= 0);
    int n = snprintf(buf, sizeof buf, "%ld", v);
    MUST(write(fd, buf, n) == n);
    close(fd);
}

static struct { long type; char text[9000]; } msg;

static void send(int q, long type, size_t len, int seed)
{
    msg.type = type;
    for (size_t i = 0; i < len; i++) msg.text[i] = (char)(seed + i * 7);
    MUST(msgsnd(q, &msg, len, 0) == 0);
}

static int received(int q, long type, size_t len, int seed)
{
    ssize_t n = msgrcv(q, &msg, sizeof msg.text, 0, IPC_NOWAIT);
    if (n != (ssize_t)len || msg.type != type) { say("FAIL: message: %zd bytes of type %ld, want %zu of type %ld (%s)", n, msg.type, len, type, n < 0 ? strerror(errno) : ""); return 0; }
    for (size_t i = 0; i < len; i++) if (msg.text[i] != (char)(seed + i * 7)) { say("FAIL: message of type %ld differs at byte %zu", type, i); return 0; }
    return 1;
}

static void make_objects(struct ids *o)
{
    set_limit("msgmax", 9000);
    /* gaps in the ids: objects made then removed */
    int gap = msgget(IPC_PRIVATE, 0600);
    MUST(gap >= 0);
    o->q = msgget(0x4242, IPC_CREAT | 0640);
    MUST(o->q >= 0 && msgctl(gap, IPC_RMID, NULL) == 0);
    o->q2 = msgget(IPC_PRIVATE, 0600);
    MUST(o->q2 >= 0);
    send(o->q, 1, 5, 1);
    send(o->q, 7, 8500, 2);   /* above the default msgmax */
    send(o->q, 2, 0, 3);
    int sgap = semget(IPC_PRIVATE, 1, 0600);
    o->sem = semget(IPC_PRIVATE, 3, 0600);
    MUST(sgap >= 0 && o->sem >= 0 && semctl(sgap, 0, IPC_RMID) == 0);
    unsigned short v[3] = { 1, 2, 3 };
    MUST(semctl(o->sem, 0, SETALL, v) == 0);
    o->shm = shmget(0x5151, 65536, IPC_CREAT | 0600);
    o->shm2 = shmget(IPC_PRIVATE, 10000, 0604);
    MUST(o->shm >= 0 && o->shm2 >= 0);
    o->at = shmat(o->shm, NULL, 0);
    char *p2 = shmat(o->shm2, NULL, 0);
    MUST(o->at != (void *)-1 && p2 != (void *)-1);
    fill(o->at, 65536, 31);
    fill(p2, 10000, 32);
    MUST(shmdt(p2) == 0);
}

/* the objects as they should be after the restart; `all`: the messages too (read once, by the parent) */
static void check_objects(struct ids *o, int all)
{
    CHECK(limit("msgmax") == 9000, "msgmax is %ld, want 9000", limit("msgmax"));
    CHECK(msgget(0x4242, 0) == o->q, "the queue with key 0x4242 has id %d, want %d", msgget(0x4242, 0), o->q);
    struct msqid_ds qs;
    CHECK(msgctl(o->q, IPC_STAT, &qs) == 0 && (qs.msg_perm.mode & 0777) == 0640 && qs.msg_qnum == 3, "queue %d: mode 0%o, %ld messages", o->q, qs.msg_perm.mode & 0777, (long)qs.msg_qnum);
    CHECK(msgctl(o->q2, IPC_STAT, &qs) == 0 && qs.msg_perm.__key == IPC_PRIVATE && qs.msg_qnum == 0, "the private queue %d is not there (%s)", o->q2, strerror(errno));
    unsigned short v[3] = { 0 };
    CHECK(semctl(o->sem, 0, GETALL, v) == 0 && v[0] == 1 && v[1] == 2 && v[2] == 3, "semaphore set %d: values %d %d %d", o->sem, v[0], v[1], v[2]);
    CHECK(shmget(0x5151, 0, 0) == o->shm, "the segment with key 0x5151 has id %d, want %d", shmget(0x5151, 0, 0), o->shm);
    CHECK(check_fill(o->at, 65536, 31) < 0, "the attached segment's data differs");
    struct shmid_ds ss;
    CHECK(shmctl(o->shm2, IPC_STAT, &ss) == 0 && ss.shm_segsz == 10000 && (ss.shm_perm.mode & 0777) == 0604 && ss.shm_nattch == 0,
          "the unattached segment %d: %zu bytes, mode 0%o, %ld attaches (%s)", o->shm2, (size_t)ss.shm_segsz, ss.shm_perm.mode & 0777, (long)ss.shm_nattch, strerror(errno));
    char *p2 = shmat(o->shm2, NULL, SHM_RDONLY);
    CHECK(p2 != (void *)-1 && check_fill(p2, 10000, 32) < 0, "the unattached segment's data differs");
    if (p2 != (void *)-1) shmdt(p2);
    if (all) {
        CHECK(received(o->q, 1, 5, 1) && received(o->q, 7, 8500, 2) && received(o->q, 2, 0, 3), "the messages differ");
        CHECK(msgrcv(o->q, &msg, sizeof msg.text, 0, IPC_NOWAIT) < 0 && errno == ENOMSG, "more messages in the queue");
    }
}

static int objects(const char *file)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/sysvipc/%s", file);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = -1;   /* the header line */
    while (fgets(line, sizeof line, f)) n++;
    fclose(f);
    return n;
}

int main(int argc, char **argv)
{
    e2e_init();
    const char *mode = argc > 1 ? argv[1] : "";
    int objects_mode = strcmp(mode, "objects") == 0, mq_mode = strcmp(mode, "mq") == 0;
    MUST(unshare(CLONE_NEWIPC) == 0);
    struct ids o = { 0 };
    if (objects_mode) make_objects(&o);
    mqd_t mq = (mqd_t)-1;
    if (mq_mode) {
        struct mq_attr a = { .mq_maxmsg = 4, .mq_msgsize = 16 };
        mq = mq_open("/ckpt-ipcns", O_CREAT | O_RDWR, 0600, &a);
        MUST(mq != (mqd_t)-1 && mq_send(mq, "kept", 4, 1) == 0);
    }
    e2e_block_usr1(1);   /* the child waits in sigsuspend: nothing may be lost before */
    pid_t c = fork();
    MUST(c >= 0);
    if (c == 0) {
        e2e_wait_usr1();
        if (objects_mode) check_objects(&o, 0);
        else CHECK(objects("shm") == 0 && objects("msg") == 0, "child: the namespace holds objects");
        _exit(e2e_failures ? 1 : 0);
    }
    e2e_block_usr1(0);
    say("READY");
    e2e_wait_usr1();
    if (mq_mode) {
        char b[16];
        CHECK(mq_receive(mq, b, sizeof b, NULL) == 4 && memcmp(b, "kept", 4) == 0, "the message queue is not intact after the refused checkpoint: %s", strerror(errno));
    } else if (objects_mode) {
        kill(c, SIGUSR1);   /* the child checks first: the parent then reads the messages out */
        e2e_child_verdict(c, "the child");
        c = -1;
        check_objects(&o, 1);
    } else {
        CHECK(objects("shm") == 0 && objects("sem") == 0 && objects("msg") == 0, "the namespace holds objects after the restart");
        int s2 = semget(IPC_PRIVATE, 1, 0600);
        CHECK(s2 == 0, "a new semaphore set in the namespace has id %d, want 0 (the first of a new namespace)", s2);
        CHECK(objects("sem") == 1, "%d semaphore sets in the namespace, want the one just made", objects("sem"));
        if (s2 >= 0) semctl(s2, 0, IPC_RMID);
    }
    char mine[64], its[64];
    ns_link(getpid(), "ipc", mine, sizeof mine);
    say("NS %s", mine);
    if (c > 0) {
        ns_link(c, "ipc", its, sizeof its);
        CHECK(strcmp(mine, its) == 0, "the child is in IPC namespace %s, the parent in %s", its, mine);
        kill(c, SIGUSR1);
        e2e_child_verdict(c, "the child");
    }
    if (mq != (mqd_t)-1) mq_unlink("/ckpt-ipcns");
    return e2e_finish();
}
