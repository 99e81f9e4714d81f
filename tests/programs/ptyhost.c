/* ptyhost: a terminal window for the end-to-end tests. Runs CMD on a new pseudo-terminal of COLSxROWS as
 * the leader of a session whose controlling terminal it is (forkpty), as a terminal emulator runs a
 * shell; appends what CMD writes to OUT, and types into the terminal what is appended to the file IN
 * (created empty if missing). Ends when CMD ends, with its status (128 + signal when one killed it).
 * Usage: ptyhost COLS ROWS OUT IN CMD [ARGS...]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 6) { fprintf(stderr, "usage: ptyhost COLS ROWS OUT IN CMD [ARGS...]\n"); return 2; }
    struct winsize ws = { .ws_row = (unsigned short)atoi(argv[2]), .ws_col = (unsigned short)atoi(argv[1]) };
    int out = open(argv[3], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int in = open(argv[4], O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
    if (out < 0 || in < 0) { perror("ptyhost: open"); return 2; }
    int master;
    pid_t child = forkpty(&master, NULL, NULL, &ws);
    if (child < 0) { perror("ptyhost: forkpty"); return 2; }
    if (child == 0) {
        execvp(argv[5], argv + 5);
        perror("ptyhost: exec");
        _exit(127);
    }
    char buf[4096];
    int status = 0, ended = 0;
    for (;;) {
        struct pollfd p = { .fd = master, .events = POLLIN };
        int n = poll(&p, 1, ended ? 0 : 50);
        if (n > 0 && (p.revents & POLLIN)) {
            ssize_t r = read(master, buf, sizeof buf);
            if (r > 0) { if (write(out, buf, (size_t)r) != r) return 2; continue; }
        }
        if (ended) break;
        ssize_t r = read(in, buf, sizeof buf);   /* what was appended to IN since */
        if (r > 0 && write(master, buf, (size_t)r) != r) perror("ptyhost: write");
        if (waitpid(child, &status, WNOHANG) == child) ended = 1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
