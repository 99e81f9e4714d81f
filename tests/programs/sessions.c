/* sessions: sessions and process groups the tree cannot make by forking each process from its parent
 * the usual way. The root R (a session leader and a child subreaper) has:
 *   A: forked B, then called setsid: B is in R's session, its parent A in A's own
 *   D: forked E, called setsid, forked F: D's children are in two sessions
 *   H: called setsid, forked K and K2 (K2 leads its own group), and exited: K and K2 are R's now, in the
 *      session of a leader that is gone (K also in its group)
 *   G: led its own group, forked M and M2, and exited: M and M2 are R's, in a group whose leader is gone
 *   L: called setsid, forked X, which forked Y and exited: Y is R's, in L's session (not R's)
 * Each of the 11 processes reports itself (pid, parent, group, session it must have) before READY; after
 * SIGUSR1 each checks itself and sends its verdict, and R reaps its 8 children (no helper of the restart
 * may be left among them). */
#include "e2e.h"
#include <sys/prctl.h>
#include <sys/wait.h>

static int rep[2], res[2];
#define MEMBERS 11

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
    int st;
    MUST(waitpid(h, &st, 0) == h && waitpid(g, &st, 0) == g);
    int who[MEMBERS][4];
    for (int i = 0; i < MEMBERS; i++) MUST(read_full(rep[0], who[i], sizeof who[i]) == sizeof who[i]);
    /* the orphans are R's once their parent has exited */
    for (int i = 0; i < MEMBERS; i++)
        for (int t = 0; t < 2000 && who[i][1] == r; t++) {
            char path[64], buf[256];
            snprintf(path, sizeof path, "/proc/%d/stat", who[i][0]);
            int fd = open(path, O_RDONLY);
            ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
            if (fd >= 0) close(fd);
            int ppid = 0;
            if (n > 0) { buf[n] = 0; sscanf(strrchr(buf, ')') + 2, "%*c %d", &ppid); }
            if (ppid == r) break;
            usleep(1000);
        }
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
    CHECK(reaped == 8, "R reaped %d children, want 8 (A, D, K, K2, M, M2, L, Y)", reaped);
    return e2e_finish();
}
