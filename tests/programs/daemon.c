/* daemon: a daemon that forked twice. The program forks A, which calls setsid, forks B and exits: B (the
 * daemon) is in the session and process group of A, a process that exited (a zombie its parent does
 * not reap until it is killed), and is taken in by the subreaper. B forks C (same session and group). B prints "DAEMON B A" and READY; after SIGUSR1 each
 * checks its session, group and parent, and B reaps C and prints PASS (exit 0) or FAIL.
 * "daemon hold PID": keeps pid PID taken by a process that sleeps (made with clone3 and set_tid) until
 * it is killed; prints "HELD PID". */
#include "e2e.h"
#include <linux/sched.h>

static int check_self(pid_t sid, pid_t ppid, const char *who)
{
    CHECK(getsid(0) == sid, "%s: session %d, want %d", who, getsid(0), sid);
    CHECK(getpgid(0) == sid, "%s: process group %d, want %d", who, getpgid(0), sid);
    if (ppid) CHECK(getppid() == ppid, "%s: parent %d, want %d", who, getppid(), ppid);
    return e2e_failures;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "hold") == 0) {
        pid_t want = atoi(argv[2]);
        struct clone_args ca;
        memset(&ca, 0, sizeof ca);
        ca.exit_signal = SIGCHLD;
        ca.set_tid = (uint64_t)(uintptr_t)&want;
        ca.set_tid_size = 1;
        long r;
        /* (the pid stays taken while killed processes that had it as their session id are not reaped yet) */
        for (int i = 0; i < 500; i++) {
            r = syscall(SYS_clone3, &ca, sizeof ca);
            if (r >= 0 || errno != EEXIST) break;
            usleep(10000);
        }
        if (r == 0) { for (;;) pause(); }
        MUST(r == want);
        say("HELD %ld", r);
        return 0;
    }
    e2e_init();
    int p[2];
    MUST(pipe(p) == 0);
    pid_t a = fork();
    MUST(a >= 0);
    if (a > 0) {
        /* A stays a zombie (its leader's pid taken) while this process lives: until it is killed */
        close(p[1]);
        pid_t got;
        MUST(read(p[0], &got, sizeof got) == sizeof got);
        for (;;) pause();
    }
    MUST(setsid() > 0);
    pid_t sid = getpid();
    e2e_block_usr1(1);
    pid_t b = fork();
    MUST(b >= 0);
    if (b > 0) _exit(0);
    b = getpid();
    pid_t c = fork();
    MUST(c >= 0);
    if (c == 0) {
        e2e_child_wait_usr1();
        _exit(check_self(sid, b, "child") ? 1 : 0);
    }
    /* (A is gone before READY: the subreaper took B in) */
    while (getppid() == sid) usleep(1000);
    say("DAEMON %d %d", b, sid);
    say("READY");
    MUST(write(p[1], &b, sizeof b) == sizeof b);
    close(p[0]);
    close(p[1]);
    e2e_wait_usr1();
    check_self(sid, 0, "daemon");
    MUST(kill(c, SIGUSR1) == 0);
    e2e_child_verdict(c, "the daemon's child");
    return e2e_finish();
}
