/* clonefiles: a child created with clone(CLONE_FILES | CLONE_FS) (not a thread: its own memory)
 * shares its parent's fd table and cwd. After restart the child opens a file and changes directory
 * (when told with SIGUSR1); the parent must see the new fd and the new cwd. */
#include "e2e.h"
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>

static sigset_t usr1;
static char dir[256];

static int child_main(void *arg)
{
    (void)arg;
    int sig;
    sigwait(&usr1, &sig);
    int fd = open("/dev/null", O_RDONLY);
    if (fd < 0 || dup2(fd, 77) != 77) _exit(2);
    if (chdir(dir) != 0) _exit(3);
    _exit(0);
}

int main(int argc, char **argv)
{
    e2e_init();
    MUST(argc == 2);
    snprintf(dir, sizeof dir, "%s", argv[1]);
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    MUST(sigprocmask(SIG_BLOCK, &usr1, NULL) == 0);
    static char stack[256 * 1024];
    pid_t child = clone(child_main, stack + sizeof stack, CLONE_FILES | CLONE_FS | SIGCHLD, NULL);
    MUST(child > 0);
    int keep = open("/dev/zero", O_RDONLY);   /* opened after the clone: the child has it too */
    MUST(keep >= 0);
    e2e_block_usr1(0);
    say("CHILD %d", child);
    say("READY");
    e2e_wait_usr1();

    CHECK(fcntl(77, F_GETFD) < 0, "fd 77 exists before the child made it");
    kill(child, SIGUSR1);
    e2e_child_verdict(child, "the child");
    CHECK(fcntl(77, F_GETFD) >= 0, "fd 77 made by the child is not in the parent's fd table: the table is not shared");
    char cwd[256];
    CHECK(getcwd(cwd, sizeof cwd) && strcmp(cwd, dir) == 0, "cwd is '%s', the child changed it to '%s': fs not shared", cwd, dir);
    CHECK(fcntl(keep, F_GETFD) >= 0, "fd %d is gone", keep);
    return e2e_finish();
}
