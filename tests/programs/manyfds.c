/* Thousands of fds: 1500 descriptions of one file (each at its own offset), dups of every tenth at
 * high numbers, 300 pipes holding data and 300 socket pairs holding data. After restart every fd
 * must still refer to its own description (the dups share it), and the data must be there. */
#define _GNU_SOURCE
#include "e2e.h"
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>

#define NFILES 1500
#define NPIPES 300
#define NPAIRS 300

int main(int argc, char **argv)
{
    e2e_init();
    MUST(argc == 2);
    struct rlimit rl = { 8192, 8192 };
    MUST(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    static int f[NFILES], dupd[NFILES], p[NPIPES][2], s[NPAIRS][2];
    for (int i = 0; i < NFILES; i++) {
        f[i] = open(argv[1], O_RDONLY);
        MUST(f[i] >= 0 && lseek(f[i], i, SEEK_SET) == i);
        dupd[i] = -1;
        if (i % 10 == 0) MUST((dupd[i] = fcntl(f[i], F_DUPFD, 6000 + i)) >= 0);
    }
    for (int i = 0; i < NPIPES; i++) {
        MUST(pipe(p[i]) == 0);
        MUST(write(p[i][1], &i, sizeof i) == sizeof i);
    }
    for (int i = 0; i < NPAIRS; i++) {
        MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, s[i]) == 0);
        MUST(write(s[i][0], &i, sizeof i) == sizeof i);
    }
    say("READY");
    e2e_wait_usr1();

    int wrong = 0, unshared = 0, lost = 0;
    for (int i = 0; i < NFILES; i++) {
        if (lseek(f[i], 0, SEEK_CUR) != i) wrong++;
        if (dupd[i] >= 0) {
            lseek(dupd[i], 100000 + i, SEEK_SET);   /* moves f[i] too when it is still shared */
            if (lseek(f[i], 0, SEEK_CUR) != 100000 + i) unshared++;
        }
    }
    for (int i = 0; i < NFILES; i += 10) if (i + 1 < NFILES && lseek(f[i + 1], 0, SEEK_CUR) != i + 1) wrong++;
    for (int i = 0; i < NPIPES; i++) {
        int v = -1;
        if (read(p[i][0], &v, sizeof v) != sizeof v || v != i) lost++;
    }
    for (int i = 0; i < NPAIRS; i++) {
        int v = -1;
        if (read(s[i][1], &v, sizeof v) != sizeof v || v != i) lost++;
    }
    CHECK(wrong == 0, "%d descriptions at the wrong offset", wrong);
    CHECK(unshared == 0, "%d dup'ed fds no longer share their description", unshared);
    CHECK(lost == 0, "%d pipes or socket pairs lost their data", lost);
    return e2e_finish();
}
