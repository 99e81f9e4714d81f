/* iouring: an io_uring instance (io_uring_setup, no liburing), which ckpt refuses by name.
 *   iouring mapped   its rings mapped as liburing maps them (the usual case)
 *   iouring fd       only the fd (rings unmapped)
 * Prints "FD n", READY; after SIGUSR1 submits a NOP and reaps its completion (the ring still works: the
 * refused checkpoint left the process as it was). */
#include "e2e.h"
#include <linux/io_uring.h>
#include <sys/mman.h>

int main(int argc, char **argv)
{
    e2e_init();
    int mapped = argc > 1 && strcmp(argv[1], "mapped") == 0;
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int fd = (int)syscall(SYS_io_uring_setup, 8, &p);
    MUST(fd >= 0);
    size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned), cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    size_t ring_len = sq_len > cq_len ? sq_len : cq_len;
    char *ring = mmap(NULL, ring_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    struct io_uring_sqe *sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    MUST(ring != MAP_FAILED && sqes != MAP_FAILED);
    if (!mapped) {
        MUST(munmap(ring, ring_len) == 0 && munmap(sqes, p.sq_entries * sizeof(struct io_uring_sqe)) == 0);
        ring = NULL;
    }
    say("FD %d", fd);
    say("READY");
    e2e_wait_usr1();
    if (ring) {
        unsigned *tail = (unsigned *)(ring + p.sq_off.tail), *array = (unsigned *)(ring + p.sq_off.array);
        unsigned mask = *(unsigned *)(ring + p.sq_off.ring_mask), t = *tail;
        memset(&sqes[t & mask], 0, sizeof sqes[0]);
        sqes[t & mask].opcode = IORING_OP_NOP;
        sqes[t & mask].user_data = 42;
        array[t & mask] = t & mask;
        __atomic_store_n(tail, t + 1, __ATOMIC_RELEASE);
        CHECK(syscall(SYS_io_uring_enter, fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) == 1, "io_uring_enter: %s", strerror(errno));
        unsigned head = *(unsigned *)(ring + p.cq_off.head), cmask = *(unsigned *)(ring + p.cq_off.ring_mask);
        struct io_uring_cqe *cqes = (struct io_uring_cqe *)(ring + p.cq_off.cqes);
        CHECK(cqes[head & cmask].user_data == 42, "no completion of the NOP");
    }
    return e2e_finish();
}
