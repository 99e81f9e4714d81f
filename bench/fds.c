/* fds N READYFILE: a process of N fds in equal parts: a file opened again and again (each its own
 * description, at its own offset), dups of one of them, read ends of pipes whose write end was closed
 * (with a byte left in each), /dev/null, and unix socket pairs with one end closed. Prints READY to
 * READYFILE. Used by bench/run.sh for the many-fds case (a server with thousands of connections, a
 * build holding many pipes): the cost per fd, and no search of the machine per end whose peer is gone. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>

int main(int argc, char **argv)
{
    if (argc != 3) { fprintf(stderr, "usage: fds N READYFILE\n"); return 2; }
    syscall(SYS_close_range, 3, ~0U, 0);   /* nothing inherited beyond stdio */
    int n = atoi(argv[1]);
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < (rlim_t)n + 64) {
        r.rlim_cur = (rlim_t)n + 64 <= r.rlim_max ? (rlim_t)n + 64 : r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
    int first = -1;
    for (int i = 0; i < n; i++) {
        int fd = -1, p[2];
        switch (i % 5) {
        case 0:
            fd = open(argv[0], O_RDONLY);
            if (fd >= 0) lseek(fd, i % 4096, SEEK_SET);
            if (first < 0) first = fd;
            break;
        case 1: fd = dup(first); break;
        case 2:
            if (pipe(p) == 0) { if (write(p[1], "x", 1) != 1) return 1; close(p[1]); fd = p[0]; }
            break;
        case 3: fd = open("/dev/null", O_WRONLY); break;
        default:
            if (socketpair(AF_UNIX, SOCK_STREAM, 0, p) == 0) { close(p[1]); fd = p[0]; }
        }
        if (fd < 0) { perror("fds"); return 1; }
    }
    FILE *f = fopen(argv[2], "w");
    if (!f) return 1;
    fprintf(f, "READY\n");
    fclose(f);
    for (;;) pause();
}
