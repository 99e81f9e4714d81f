/* Cgroup membership across a restart.
 *   cgroups DIR...   joins each cgroup directory DIR (writes its pid to DIR/cgroup.procs), notes
 *                    /proc/self/cgroup, READY; after SIGUSR1 /proc/self/cgroup must read the same
 *                    (the test removes the directories while the process is down: the restart makes
 *                    them again). */
#include "e2e.h"

static void read_cgroups(char *buf, size_t size)
{
    int fd = open("/proc/self/cgroup", O_RDONLY);
    MUST(fd >= 0);
    ssize_t n = read(fd, buf, size - 1);
    MUST(n > 0);
    buf[n] = 0;
    close(fd);
}

int main(int argc, char **argv)
{
    e2e_init();
    for (int i = 1; i < argc; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/cgroup.procs", argv[i]);
        int fd = open(path, O_WRONLY);
        MUST(fd >= 0 && dprintf(fd, "%d\n", getpid()) > 0);
        close(fd);
    }
    static char before[8192], after[8192];
    read_cgroups(before, sizeof before);
    for (int i = 1; i < argc; i++) {
        const char *name = strrchr(argv[i], '/');
        MUST(name && strstr(before, name));   /* joined */
    }
    say("READY");
    e2e_wait_usr1();
    read_cgroups(after, sizeof after);
    CHECK(strcmp(before, after) == 0, "cgroups before:\n%s\nafter:\n%s", before, after);
    return e2e_finish();
}
