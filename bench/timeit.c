/* Runs one command and reports its wall time and peak RSS, with a time limit. Used by bench/run.sh so
 * that short commands are timed without a shell or timeout(1) in the measurement.
 * Usage: timeit SECONDS REPORT_FILE command [args...]
 * Writes "wall_us max_rss_kib status" to REPORT_FILE, where status is the exit code, 128+signal when
 * killed by a signal, or 124 when the time limit killed it; exits with that status. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pid_t child;
static volatile sig_atomic_t timed_out;
static void on_alarm(int s) { (void)s; timed_out = 1; if (child > 0) kill(child, SIGKILL); }
static void on_term(int s) { if (child > 0) kill(child, SIGKILL); signal(s, SIG_DFL); raise(s); }

int main(int argc, char **argv)
{
    if (argc < 4) { fprintf(stderr, "usage: timeit SECONDS REPORT_FILE command [args...]\n"); return 2; }
    unsigned limit = (unsigned)atoi(argv[1]);
    FILE *rep = fopen(argv[2], "w");
    if (!rep) { perror(argv[2]); return 2; }
    struct sigaction sa = { .sa_handler = on_alarm };
    sigaction(SIGALRM, &sa, NULL);
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    child = fork();
    if (child < 0) { perror("fork"); return 2; }
    if (child == 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        execvp(argv[3], argv + 3);
        perror(argv[3]);
        _exit(127);
    }
    alarm(limit);
    int st;
    struct rusage ru;
    while (wait4(child, &st, 0, &ru) < 0)
        if (errno != EINTR) { perror("wait4"); return 2; }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    alarm(0);
    long long us = (t1.tv_sec - t0.tv_sec) * 1000000LL + (t1.tv_nsec - t0.tv_nsec) / 1000;
    int status = timed_out ? 124 : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    fprintf(rep, "%lld %ld %d\n", us, ru.ru_maxrss, status);
    fclose(rep);
    return status;
}
