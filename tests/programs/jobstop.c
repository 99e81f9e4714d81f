/* jobstop: a child in a process group of its own, stopped by job control's SIGTSTP (as a shell's
 * background job that read the terminal, or ^Z), not yet waited for. After the restart it is stopped
 * again, and its parent's wait reports the signal that stopped it: SIGTSTP, not SIGSTOP. */
#include "e2e.h"
#include <sys/wait.h>

static char state_of(pid_t p)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)p);
    int fd = open(path, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0) close(fd);
    if (n <= 0) return '?';
    buf[n] = 0;
    char *rp = strrchr(buf, ')');
    return rp ? rp[2] : '?';
}

int main(void)
{
    e2e_init();
    pid_t c = fork();
    MUST(c >= 0);
    if (c == 0) {
        MUST(setpgid(0, 0) == 0);
        for (;;) pause();
    }
    for (int i = 0; i < 1000 && getpgid(c) != c; i++) usleep(1000);
    MUST(getpgid(c) == c);
    MUST(kill(c, SIGTSTP) == 0);
    for (int i = 0; i < 1000 && state_of(c) != 'T'; i++) usleep(1000);
    MUST(state_of(c) == 'T');
    say("CHILD %d", c);
    say("READY");
    e2e_wait_usr1();
    CHECK(state_of(c) == 'T', "the child is not stopped after the restart (state %c)", state_of(c));
    siginfo_t si;
    memset(&si, 0, sizeof si);
    CHECK(waitid(P_PID, c, &si, WSTOPPED | WNOHANG) == 0 && si.si_pid == c && si.si_code == CLD_STOPPED && si.si_status == SIGTSTP,
          "wait reports the child stopped by signal %d (code %d), want SIGTSTP (%d)", si.si_status, si.si_code, SIGTSTP);
    kill(c, SIGKILL);
    int st;
    MUST(waitpid(c, &st, 0) == c);
    return e2e_finish();
}
