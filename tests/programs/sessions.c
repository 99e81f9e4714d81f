/* sessions: sessions and process groups the tree cannot make by forking each process from its parent
 * the usual way. The root R (a session leader and a child subreaper) has:
 *   A: forked B, then called setsid: B is in R's session, its parent A in A's own
 *   D: forked E, called setsid, forked F: D's children are in two sessions
 *   H: called setsid, forked K and K2 (K2 leads its own group), and exited: K and K2 are R's now, in the
 *      session of a leader that is gone (K also in its group)
 *   G: led its own group, forked M and M2, and exited: M and M2 are R's, in a group whose leader is gone
 *   L: called setsid, forked X, which forked Y and exited: Y is R's, in L's session (not R's)
 *   P: as zdtm's session02 builds it: P forked Q, which called setsid, forked Q3 for P (CLONE_PARENT)
 *      and exited; Q3 forked Q4, which forked Q5, which forked Q6 and Z; Z called setsid, forked Z8 and
 *      Z9 for Q5 and exited; Z9 forked Z10 and exited while P was a subreaper (Z10 is P's); Q4 exited
 *      (Q5 is R's); then Q5 and P called setsid. So Q3 (P's) and Q6 (Q5's) are in the session of Q,
 *      which exited, Z8 (Q5's) and Z10 (P's) in that of Z, which exited, and Q5 was born in Q's.
 * Each of the 17 processes reports itself (pid, parent, group, session it must have) before READY; after
 * SIGUSR1 each checks itself and sends its verdict, and R reaps its 10 children (no helper of the restart
 * may be left among them). */
#include "e2e.h"
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sched.h>
#include <sys/syscall.h>

static int rep[2], res[2];
#define MEMBERS 17

static void member(pid_t ppid, pid_t pgid, pid_t sid)
{
    int v[4] = { getpid(), ppid, pgid, sid };
    MUST(write(rep[1], v, sizeof v) == sizeof v);
    e2e_child_wait_usr1();
    char bad = '0';
    if (getppid() != ppid) { say("FAIL: pid %d: parent %d, want %d", getpid(), getppid(), ppid); bad = '1'; }
    if (getpgid(0) != pgid) { say("FAIL: pid %d: group %d, want %d", getpid(), getpgid(0), pgid); bad = '1'; }
    if (getsid(0) != sid) { say("FAIL: pid %d: session %d, want %d", getpid(), getsid(0), sid); bad = '1'; }
    MUST(write(res[1], &bad, 1) == 1);
    while (wait(NULL) > 0) { }
    _exit(0);
}

/* fork for the caller's parent (CLONE_PARENT) */
static pid_t fork_for_parent(void)
{
    return (pid_t)syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
}

/* waits (up to 5 s) until pid's parent is ppid */
static void wait_parent(pid_t pid, pid_t ppid)
{
    for (int t = 0; t < 5000; t++) {
        char path[64], buf[256];
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
        int fd = open(path, O_RDONLY);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
        if (fd >= 0) close(fd);
        int got = 0;
        if (n > 0) { buf[n] = 0; sscanf(strrchr(buf, ')') + 2, "%*c %d", &got); }
        if (got == ppid) return;
        usleep(1000);
    }
    MUST(!"the orphan was not adopted");
}

static void session02(pid_t r)
{
    int z9go[2], q4go[2], z10pid[2], q5pid[2];
    MUST(pipe(z9go) == 0 && pipe(q4go) == 0 && pipe(z10pid) == 0 && pipe(q5pid) == 0);
    pid_t p = getpid();
    pid_t q = fork();
    MUST(q >= 0);
    if (q == 0) {
        MUST(setsid() > 0);
        pid_t qs = getpid();
        pid_t q3 = fork_for_parent();
        MUST(q3 >= 0);
        if (q3 > 0) _exit(0);
        pid_t q4 = fork();
        MUST(q4 >= 0);
        if (q4 == 0) {
            pid_t q5 = fork();
            MUST(q5 >= 0);
            if (q5 == 0) {
                pid_t me = getpid();
                MUST(write(q5pid[1], &me, sizeof me) == sizeof me);
                if (fork() == 0) member(me, qs, qs);   /* Q6 */
                pid_t z = fork();
                MUST(z >= 0);
                if (z == 0) {
                    MUST(setsid() > 0);
                    pid_t zs = getpid();
                    if (fork_for_parent() == 0) member(me, zs, zs);   /* Z8 */
                    pid_t z9 = fork_for_parent();
                    MUST(z9 >= 0);
                    if (z9 == 0) {
                        pid_t z10 = fork();
                        MUST(z10 >= 0);
                        if (z10 == 0) {
                            pid_t mine = getpid();
                            MUST(write(z10pid[1], &mine, sizeof mine) == sizeof mine);
                            member(p, zs, zs);
                        }
                        char c;
                        MUST(read(z9go[0], &c, 1) == 1);
                        _exit(0);
                    }
                    _exit(0);
                }
                /* Z, then Z9 (once P is a subreaper), exit: Q5 reaps them; then it is R's, and leads a session */
                MUST(waitpid(z, NULL, 0) == z);
                wait_parent(me, r);
                while (waitpid(-1, NULL, WNOHANG) > 0) { }   /* (Z9 exited before Q4) */
                MUST(setsid() > 0);
                member(r, me, me);
            }
            char c;
            MUST(read(q4go[0], &c, 1) == 1);
            _exit(0);
        }
        MUST(waitpid(q4, NULL, 0) == q4);
        member(p, qs, qs);   /* Q3 */
    }
    MUST(waitpid(q, NULL, 0) == q);
    pid_t z10, q5;
    MUST(read_full(z10pid[0], &z10, sizeof z10) == sizeof z10 && read_full(q5pid[0], &q5, sizeof q5) == sizeof q5);
    /* Z9 exits while P is a subreaper: Z10 is P's */
    MUST(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
    MUST(write(z9go[1], "x", 1) == 1);
    wait_parent(z10, p);
    MUST(prctl(PR_SET_CHILD_SUBREAPER, 0) == 0);
    /* Q4 exits: Q5 is R's */
    MUST(write(q4go[1], "x", 1) == 1);
    wait_parent(q5, r);
    MUST(setsid() > 0);
    member(r, p, p);
}

int main(void)
{
    e2e_init();
    MUST(setsid() > 0 || getsid(0) == getpid());
    MUST(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
    pid_t r = getpid();
    MUST(pipe(rep) == 0 && pipe(res) == 0);
    e2e_block_usr1(1);

    pid_t a = fork();
    MUST(a >= 0);
    if (a == 0) {
        if (fork() == 0) member(getppid(), r, r);
        MUST(setsid() > 0);
        member(r, getpid(), getpid());
    }
    pid_t d = fork();
    MUST(d >= 0);
    if (d == 0) {
        pid_t me = getpid();
        if (fork() == 0) member(me, r, r);
        MUST(setsid() > 0);
        if (fork() == 0) member(me, me, me);
        member(r, me, me);
    }
    pid_t h = fork();
    MUST(h >= 0);
    if (h == 0) {
        pid_t me = getpid();
        MUST(setsid() > 0);
        if (fork() == 0) member(r, me, me);
        if (fork() == 0) { MUST(setpgid(0, 0) == 0); member(r, getpid(), me); }
        _exit(0);
    }
    pid_t g = fork();
    MUST(g >= 0);
    if (g == 0) {
        pid_t me = getpid();
        MUST(setpgid(0, 0) == 0);
        if (fork() == 0) member(r, me, r);
        if (fork() == 0) member(r, me, r);
        _exit(0);
    }
    pid_t l = fork();
    MUST(l >= 0);
    if (l == 0) {
        pid_t me = getpid();
        MUST(setsid() > 0);
        pid_t x = fork();
        MUST(x >= 0);
        if (x == 0) {
            if (fork() == 0) member(r, me, me);
            _exit(0);
        }
        MUST(waitpid(x, NULL, 0) == x);
        member(r, me, me);
    }
    pid_t s2 = fork();
    MUST(s2 >= 0);
    if (s2 == 0) session02(r);
    int st;
    MUST(waitpid(h, &st, 0) == h && waitpid(g, &st, 0) == g);
    int who[MEMBERS][4];
    for (int i = 0; i < MEMBERS; i++) MUST(read_full(rep[0], who[i], sizeof who[i]) == sizeof who[i]);
    /* the orphans are R's once their parent has exited */
    for (int i = 0; i < MEMBERS; i++)
        if (who[i][1] == r) wait_parent(who[i][0], r);
    say("SESSIONS %d %d %d %d %d", a, d, h, g, l);
    say("READY");
    e2e_wait_usr1();

    for (int i = 0; i < MEMBERS; i++) kill(who[i][0], SIGUSR1);
    for (int i = 0; i < MEMBERS; i++) {
        char c = 0;
        CHECK(read(res[0], &c, 1) == 1 && c == '0', "a process found itself wrong (%c)", c);
    }
    int reaped = 0;
    pid_t p;
    while ((p = waitpid(-1, &st, 0)) > 0) {
        reaped++;
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d ended with status 0x%x", p, st);
    }
    CHECK(reaped == 10, "R reaped %d children, want 10 (A, D, K, K2, M, M2, L, Y, P, Q5)", reaped);
    return e2e_finish();
}
