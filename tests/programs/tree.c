/* tree: a process tree whose relations must survive a restart.
 *   root (session and group leader)
 *   ├── c1: leader of its own process group; writes through a file description shared with root
 *   │   └── g: grandchild, in c1's group; checks its parent is still c1
 *   ├── c2: leader of its own session; reads a pipe whose write end root holds, with data in flight
 *   ├── z1: zombie, exited with status 3
 *   ├── z2: zombie, killed by SIGTERM
 *   └── z3: zombie, killed by SIGKILL (whose action cannot be set: the restart must not try)
 * root also holds the read end of a pipe whose write end no one holds any more (data, then EOF).
 * Signal actions differ between parent and child: root catches SIGUSR2 and ignores SIGHUP; c1 catches SIGUSR2
 * with another handler and takes SIGHUP's default; g, c1's child, catches SIGUSR2 with root's handler again;
 * c2 keeps root's SIGUSR2 and takes SIGHUP's default (g and c2, forked late at restart, differ from the parent
 * they are forked from). Each checks its own.
 * After SIGUSR1, root checks groups, sessions and zombies, then tells each child to check itself
 * (SIGUSR1) and collects their exit statuses. */
#include "e2e.h"
#include <sys/wait.h>

static int check_self(pid_t want_ppid, pid_t want_pgid, pid_t want_sid)
{
    int bad = 0;
    if (getppid() != want_ppid) { say("FAIL: pid %d: parent %d, want %d", getpid(), getppid(), want_ppid); bad = 1; }
    if (getpgid(0) != want_pgid) { say("FAIL: pid %d: group %d, want %d", getpid(), getpgid(0), want_pgid); bad = 1; }
    if (getsid(0) != want_sid) { say("FAIL: pid %d: session %d, want %d", getpid(), getsid(0), want_sid); bad = 1; }
    return bad;
}

static void on_usr2_root(int sig) { (void)sig; }
static void on_usr2_c1(int sig) { (void)sig; }

/* 1 (and says why) when SIGUSR2's handler or SIGHUP's action is not the one wanted */
static int check_actions(void (*usr2)(int), void (*hup)(int))
{
    struct sigaction a, h;
    MUST(sigaction(SIGUSR2, NULL, &a) == 0 && sigaction(SIGHUP, NULL, &h) == 0);
    int bad = 0;
    if (a.sa_handler != usr2) { say("FAIL: pid %d: SIGUSR2 handler %p, want %p", getpid(), (void *)a.sa_handler, (void *)usr2); bad = 1; }
    if (h.sa_handler != hup) { say("FAIL: pid %d: SIGHUP action %p, want %p", getpid(), (void *)h.sa_handler, (void *)hup); bad = 1; }
    return bad;
}

int main(void)
{
    e2e_init();
    MUST(setsid() > 0 || getsid(0) == getpid());
    pid_t root = getpid();
    char path[] = "/tmp/ckpt-tree-XXXXXX";
    int shared = mkstemp(path);
    MUST(shared >= 0);
    unlink(path);
    MUST(write(shared, "0123456789", 10) == 10);   /* offset 10, shared with every child */
    int p[2], gone[2];
    MUST(pipe(p) == 0 && pipe(gone) == 0);
    MUST(write(gone[1], "bye", 3) == 3);
    close(gone[1]);   /* the write end is held by no one */

    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    MUST(sigprocmask(SIG_BLOCK, &usr1, NULL) == 0);   /* children wait for it with sigwait */
    MUST(signal(SIGUSR2, on_usr2_root) != SIG_ERR && signal(SIGHUP, SIG_IGN) != SIG_ERR);

    pid_t c1 = fork();
    MUST(c1 >= 0);
    if (c1 == 0) {
        close(p[0]); close(p[1]); close(gone[0]);
        MUST(setpgid(0, 0) == 0);
        MUST(signal(SIGUSR2, on_usr2_c1) != SIG_ERR && signal(SIGHUP, SIG_DFL) != SIG_ERR);
        pid_t me = getpid();
        pid_t g = fork();
        MUST(g >= 0);
        if (g == 0) {
            MUST(signal(SIGUSR2, on_usr2_root) != SIG_ERR);
            int sig;
            sigwait(&usr1, &sig);
            _exit(check_self(me, me, root) | check_actions(on_usr2_root, SIG_DFL) ? 1 : 0);
        }
        int sig;
        sigwait(&usr1, &sig);
        int bad = check_self(root, me, root) | check_actions(on_usr2_c1, SIG_DFL);
        if (write(shared, "abc", 3) != 3) { say("FAIL: c1: write to the shared file: %s", strerror(errno)); bad = 1; }
        kill(g, SIGUSR1);
        int st;
        if (waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st) != 0) { say("FAIL: c1: the grandchild %d failed (status 0x%x)", g, st); bad = 1; }
        _exit(bad);
    }
    pid_t c2 = fork();
    MUST(c2 >= 0);
    if (c2 == 0) {
        close(p[1]); close(gone[0]);
        MUST(setsid() > 0);
        MUST(signal(SIGHUP, SIG_DFL) != SIG_ERR);
        int sig;
        sigwait(&usr1, &sig);
        int bad = check_self(root, getpid(), getpid()) | check_actions(on_usr2_root, SIG_DFL);
        char buf[64];
        size_t got = 0;
        ssize_t n;
        while ((n = read(p[0], buf + got, sizeof buf - 1 - got)) > 0) got += n;
        buf[got] = 0;
        if (strcmp(buf, "hello world") != 0) { say("FAIL: c2: read '%s' from the pipe, want 'hello world'", buf); bad = 1; }
        _exit(bad);
    }
    close(p[0]);
    MUST(write(p[1], "hello ", 6) == 6);   /* in flight through the checkpoint */
    pid_t z1 = fork();
    MUST(z1 >= 0);
    if (z1 == 0) _exit(3);
    pid_t z2 = fork();
    MUST(z2 >= 0);
    if (z2 == 0) { for (;;) pause(); }
    kill(z2, SIGTERM);
    pid_t z3 = fork();
    MUST(z3 >= 0);
    if (z3 == 0) { for (;;) pause(); }
    kill(z3, SIGKILL);
    siginfo_t si;
    MUST(waitid(P_PID, z1, &si, WEXITED | WNOWAIT) == 0);
    MUST(waitid(P_PID, z2, &si, WEXITED | WNOWAIT) == 0);
    MUST(waitid(P_PID, z3, &si, WEXITED | WNOWAIT) == 0);
    /* c1's group must exist before READY */
    for (int i = 0; i < 1000 && getpgid(c1) != c1; i++) usleep(1000);
    for (int i = 0; i < 1000 && getsid(c2) != c2; i++) usleep(1000);
    say("TREE %d %d %d %d %d %d", root, c1, c2, z1, z2, z3);
    MUST(sigprocmask(SIG_UNBLOCK, &usr1, NULL) == 0);
    say("READY");
    e2e_wait_usr1();

    CHECK(getsid(0) == root && getpgid(0) == root, "root: session %d group %d", getsid(0), getpgid(0));
    CHECK(check_actions(on_usr2_root, SIG_IGN) == 0, "root: signal actions (above)");
    CHECK(getpgid(c1) == c1, "c1 is in group %d, want its own", getpgid(c1));
    CHECK(getsid(c1) == root, "c1 is in session %d, want %d", getsid(c1), root);
    CHECK(getsid(c2) == c2, "c2 is in session %d, want its own", getsid(c2));
    int st;
    CHECK(waitpid(z1, &st, WNOHANG) == z1 && WIFEXITED(st) && WEXITSTATUS(st) == 3, "zombie z1: status 0x%x (%s)", st, strerror(errno));
    CHECK(waitpid(z2, &st, WNOHANG) == z2 && WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, "zombie z2: status 0x%x (%s)", st, strerror(errno));
    CHECK(waitpid(z3, &st, WNOHANG) == z3 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "zombie z3: status 0x%x (%s)", st, strerror(errno));
    char buf[16] = {0};
    CHECK(read(gone[0], buf, sizeof buf) == 3 && memcmp(buf, "bye", 3) == 0, "the pipe with no writer: '%s'", buf);
    CHECK(read(gone[0], buf, sizeof buf) == 0, "the pipe with no writer did not end");
    off_t before = lseek(shared, 0, SEEK_CUR);
    CHECK(before == 10, "the shared offset is %ld, want 10", (long)before);

    kill(c1, SIGUSR1);
    CHECK(waitpid(c1, &st, 0) == c1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "c1 failed: status 0x%x", st);
    CHECK(lseek(shared, 0, SEEK_CUR) == 13, "after c1 wrote 3 bytes, the shared offset is %ld, want 13", (long)lseek(shared, 0, SEEK_CUR));
    MUST(write(p[1], "world", 5) == 5);
    close(p[1]);
    kill(c2, SIGUSR1);
    CHECK(waitpid(c2, &st, 0) == c2 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "c2 failed: status 0x%x", st);
    CHECK(waitpid(-1, &st, WNOHANG) < 0 && errno == ECHILD, "a child is left");
    return e2e_finish();
}
