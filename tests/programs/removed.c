/* removed: directories removed while in use. The process works in a directory that was then removed
 * (its cwd), holds an fd of another removed directory (mode 0751), and has a child whose cwd is the
 * same removed directory as its own. After the restart: both are still directories with no links, the
 * cwd cannot be named (getcwd fails) and nothing can be created in it, the mode is kept, and the child
 * and the parent are still in one and the same directory. Usage: removed DIR */
#include "e2e.h"
#include <sys/stat.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
    e2e_init();
    MUST(argc > 1);
    char cwd[4096], fdd[4096];
    snprintf(cwd, sizeof cwd, "%s/gone-cwd", argv[1]);
    snprintf(fdd, sizeof fdd, "%s/gone-fd", argv[1]);
    MUST(mkdir(cwd, 0755) == 0 && mkdir(fdd, 0751) == 0 && chmod(fdd, 0751) == 0);
    int dfd = open(fdd, O_RDONLY | O_DIRECTORY);
    MUST(dfd >= 0 && chdir(cwd) == 0);
    pid_t child = fork();
    MUST(child >= 0);
    if (child == 0) { for (;;) pause(); }
    MUST(rmdir(cwd) == 0 && rmdir(fdd) == 0);
    say("READY");
    e2e_wait_usr1();
    struct stat here, theirs, d;
    CHECK(stat(".", &here) == 0 && S_ISDIR(here.st_mode) && here.st_nlink == 0, "the cwd is no longer a removed directory (nlink %ld)", (long)here.st_nlink);
    char buf[4096];
    CHECK(getcwd(buf, sizeof buf) == NULL && errno == ENOENT, "getcwd of the removed cwd gave %s", buf);
    ssize_t n = readlink("/proc/self/cwd", buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    CHECK(n > 0 && strstr(buf, "gone-cwd (deleted)") != NULL, "/proc/self/cwd is %s", buf);
    CHECK(open("new-file", O_CREAT | O_WRONLY, 0644) < 0 && errno == ENOENT, "a file could be made in the removed cwd");
    CHECK(fstat(dfd, &d) == 0 && S_ISDIR(d.st_mode) && d.st_nlink == 0, "the fd no longer refers to a removed directory");
    CHECK((d.st_mode & 07777) == 0751, "the removed directory's mode is %o, not 751", d.st_mode & 07777);
    char link[64];
    snprintf(link, sizeof link, "/proc/%d/cwd", (int)child);
    CHECK(stat(link, &theirs) == 0 && theirs.st_dev == here.st_dev && theirs.st_ino == here.st_ino,
          "the child is no longer in the same removed directory as its parent");
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    if (e2e_failures) return 1;
    say("PASS");
    return 0;
}
