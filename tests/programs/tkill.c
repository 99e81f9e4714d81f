/* tkill TID SIG: sends SIG to thread TID alone (the tkill system call; pthread_kill does that within a process). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>

int main(int argc, char **argv)
{
    if (argc != 3) { fprintf(stderr, "usage: tkill TID SIG\n"); return 2; }
    if (syscall(SYS_tkill, atoi(argv[1]), atoi(argv[2])) != 0) { perror("tkill"); return 1; }
    return 0;
}
