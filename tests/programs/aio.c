/* Linux AIO contexts (io_setup) across a restart.
 *   aio DIR   three contexts: A (io_setup 128) has gone around its ring more than once and holds 5
 *             completed events not read yet (its head is not its tail); B (io_setup 4) holds 1 event
 *             not read, at the very start of its ring; C (io_setup 1) was never used.
 * After SIGUSR1: each context id still works (the ring is at the same address), the unread events come
 * back with their data and results, new requests complete (and wrap around A's ring), and io_destroy
 * of each id succeeds. */
#include "e2e.h"
#include <linux/aio_abi.h>
#include <sys/mman.h>
#include <sys/stat.h>

static long io_setup(unsigned n, aio_context_t *c) { return syscall(SYS_io_setup, n, c); }
static long io_submit(aio_context_t c, long n, struct iocb **p) { return syscall(SYS_io_submit, c, n, p); }
static long io_getevents(aio_context_t c, long min, long n, struct io_event *e)
{
    struct timespec t = { 1, 0 };
    return syscall(SYS_io_getevents, c, min, n, e, &t);
}
static long io_destroy(aio_context_t c) { return syscall(SYS_io_destroy, c); }

#define BLK 512
#define NBLK 128
static int fd;
static char bufs[NBLK][BLK];
static struct iocb cbs[NBLK];
static struct iocb *ptrs[NBLK];

/* n reads of block (first + i) % NBLK into bufs[i], with aio_data tag + i */
static long submit_reads(aio_context_t c, int n, int first, uint64_t tag)
{
    for (int i = 0; i < n; i++) {
        memset(&cbs[i], 0, sizeof cbs[i]);
        cbs[i].aio_data = tag + i;
        cbs[i].aio_lio_opcode = IOCB_CMD_PREAD;
        cbs[i].aio_fildes = fd;
        cbs[i].aio_buf = (uint64_t)(uintptr_t)bufs[i];
        cbs[i].aio_nbytes = BLK;
        cbs[i].aio_offset = (int64_t)((first + i) % NBLK) * BLK;
        ptrs[i] = &cbs[i];
    }
    long done = 0;
    while (done < n) {
        long k = io_submit(c, n - done, ptrs + done);
        if (k <= 0) return k;
        done += k;
    }
    return done;
}

static int block_ok(const char *b, int blk) { return b[0] == (char)('A' + blk % 26) && b[BLK - 1] == (char)('a' + blk % 26); }

/* reads n events from c and checks them against reads tagged tag.. of blocks first.. */
static void reap(aio_context_t c, int n, int first, uint64_t tag, const char *what)
{
    struct io_event ev[NBLK];
    int got = 0, bad = 0;
    while (got < n) {
        long k = io_getevents(c, 1, n - got, ev + got);
        if (k <= 0) break;
        got += (int)k;
    }
    for (int i = 0; i < got; i++) {
        uint64_t j = ev[i].data - tag;
        if (j >= (uint64_t)n || ev[i].res != BLK || ev[i].obj != (uint64_t)(uintptr_t)&cbs[j] || !block_ok(bufs[j], (first + (int)j) % NBLK)) bad++;
    }
    CHECK(got == n && bad == 0, "%s: %d of %d events, %d wrong", what, got, n, bad);
}

int main(int argc, char **argv)
{
    e2e_init();
    MUST(argc > 1);
    char path[4096];
    snprintf(path, sizeof path, "%s/aio-data", argv[1]);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    MUST(fd >= 0);
    for (int b = 0; b < NBLK; b++) {
        char blk[BLK];
        memset(blk, 'A' + b % 26, BLK / 2);
        memset(blk + BLK / 2, 'a' + b % 26, BLK / 2);
        MUST(write(fd, blk, BLK) == BLK);
    }
    aio_context_t a = 0, b = 0, c = 0;
    MUST(io_setup(128, &a) == 0 && io_setup(4, &b) == 0 && io_setup(1, &c) == 0);
    /* A: around its ring (383 events here) once and more, then 5 events left unread */
    for (int round = 0; round < 5; round++) {
        MUST(submit_reads(a, 100, round * 7, 1000 * (round + 1)) == 100);
        reap(a, 100, round * 7, 1000 * (round + 1), "setup");
        MUST(e2e_failures == 0);
    }
    MUST(submit_reads(a, 5, 40, 77000) == 5);
    /* B: one unread event */
    static char bbuf[BLK];
    struct iocb bcb = { .aio_data = 4242, .aio_lio_opcode = IOCB_CMD_PREAD, .aio_fildes = (uint32_t)fd,
                        .aio_buf = (uint64_t)(uintptr_t)bbuf, .aio_nbytes = BLK, .aio_offset = 3 * BLK };
    struct iocb *bp = &bcb;
    MUST(io_submit(b, 1, &bp) == 1);
    say("READY");
    e2e_wait_usr1();

    reap(a, 5, 40, 77000, "A's unread events");
    struct io_event ev;
    CHECK(io_getevents(b, 1, 1, &ev) == 1 && ev.data == 4242 && ev.res == BLK && block_ok(bbuf, 3), "B's unread event");
    for (int round = 0; round < 6; round++) {
        CHECK(submit_reads(a, 120, round * 11, 500000 + 1000 * round) == 120, "A: submit after restart");
        reap(a, 120, round * 11, 500000 + 1000 * round, "A after restart");
    }
    CHECK(submit_reads(b, 10, 9, 900) == 10, "B: submit after restart");
    reap(b, 10, 9, 900, "B after restart");
    CHECK(submit_reads(c, 1, 17, 300) == 1, "C: submit after restart");
    reap(c, 1, 17, 300, "C after restart");
    CHECK(io_destroy(a) == 0 && io_destroy(b) == 0 && io_destroy(c) == 0, "io_destroy: %s", strerror(errno));
    return e2e_finish();
}
