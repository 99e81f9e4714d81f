/* rseqcs: two threads (the main one and another) spin inside an rseq critical section of glibc's rseq
 * registration, as a per-CPU operation of tcmalloc or librseq does: the kernel sends a thread that is
 * preempted (or stopped) in the section to its abort handler. A checkpoint (leaving the process running,
 * or before a restart) must not let a thread go on inside its section without that protection: the
 * section checks in its loop that its rseq_cs is still armed (the kernel clears it when the thread
 * returns to user space outside the section, as an injected system call does). After SIGUSR1 each
 * thread reports how its sections ended: none may have lost its protection. */
#include "e2e.h"
#include <pthread.h>
#include <sys/rseq.h>

/* One run of the section: 0 the stop flag was seen inside it, 2 aborted by the kernel, 3 its rseq_cs
 * was cleared while it was inside (its protection lost). */
static int section(volatile __u64 *armed, volatile sig_atomic_t *stop)
{
    int state;
    __asm__ volatile(
        ".pushsection __rseq_cs, \"aw\"\n"
        ".balign 32\n"
        "9: .long 0, 0\n"                 /* struct rseq_cs: version, flags, */
        "   .quad 1f, (2f - 1f), 4f\n"    /* start, post-commit offset, abort handler */
        ".popsection\n"
        "   leaq 9b(%%rip), %%rax\n"
        "   movq %%rax, (%[armed])\n"     /* rseq->rseq_cs = &cs */
        "1: cmpq %%rax, (%[armed])\n"     /* the section starts: still armed? */
        "   jne 6f\n"
        "   cmpl $0, (%[stop])\n"
        "   je 1b\n"
        "   movl $0, %[state]\n"
        "2: movq $0, (%[armed])\n"        /* committed */
        "   jmp 7f\n"
        "   .long 0x53053053\n"           /* RSEQ_SIG, just before the abort handler */
        "4: movl $2, %[state]\n"
        "   jmp 7f\n"
        "6: movl $3, %[state]\n"
        "7:\n"
        : [state] "=&r"(state)
        : [armed] "r"(armed), [stop] "r"(stop)
        : "rax", "memory", "cc");
    return state;
}

struct counts { long runs, aborted, lost; };

static void spin(struct counts *c)
{
    struct rseq *rs = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
    while (!e2e_go) {
        int s = section(&rs->rseq_cs, &e2e_go);
        c->runs++;
        if (s == 2) c->aborted++;
        else if (s == 3) c->lost++;
    }
}

static struct counts other_counts;
static volatile int other_started;
static void *other(void *arg)
{
    (void)arg;
    other_started = 1;
    spin(&other_counts);
    return NULL;
}

int main(void)
{
    e2e_init();
    MUST(__rseq_size >= 20);   /* (the size of the features in use: 20 with glibc 2.35+) */
    struct rseq *rs = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
    MUST(rs->cpu_id != (uint32_t)RSEQ_CPU_ID_REGISTRATION_FAILED);
    pthread_t t;
    MUST(pthread_create(&t, NULL, other, NULL) == 0);
    while (!other_started) usleep(1000);
    say("READY");
    struct counts mine = {0};
    spin(&mine);
    MUST(pthread_join(t, NULL) == 0);
    say("main: %ld sections, %ld aborted, %ld lost; other: %ld sections, %ld aborted, %ld lost",
        mine.runs, mine.aborted, mine.lost, other_counts.runs, other_counts.aborted, other_counts.lost);
    CHECK(mine.lost == 0, "the main thread went on inside its rseq critical section without its protection %ld time(s)", mine.lost);
    CHECK(other_counts.lost == 0, "the other thread went on inside its rseq critical section without its protection %ld time(s)", other_counts.lost);
    return e2e_finish();
}
