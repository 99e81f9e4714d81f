/* membarrier: the address space's membarrier registrations survive a restart.
 * The program registers for private expedited barriers with sync-core, for their rseq variant and for
 * global expedited ones (not private expedited alone: ckpt's own runtime registers for that one, and
 * the restart's fresh process inherits it). After the restart, the same registrations are there
 * (MEMBARRIER_CMD_GET_REGISTRATIONS) and the barriers they allow work instead of failing with EPERM. */
#include "e2e.h"
#include <linux/membarrier.h>

#ifndef MEMBARRIER_CMD_GET_REGISTRATIONS
#define MEMBARRIER_CMD_GET_REGISTRATIONS (1 << 9)
#endif

static long mb(int cmd, unsigned flags) { return syscall(SYS_membarrier, cmd, flags, 0); }

int main(void)
{
    e2e_init();
    long query = mb(MEMBARRIER_CMD_QUERY, 0);
    MUST(query >= 0);
    long want = MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE | MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ
              | MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED;
    MUST((query & want) == want);
    MUST(mb(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, 0) == 0);
    MUST(mb(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0) == 0);
    MUST(mb(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0) == 0);
    long before = mb(MEMBARRIER_CMD_GET_REGISTRATIONS, 0);
    MUST(before >= 0 && (before & want) == want);
    MUST(mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0) == 0);
    say("READY registrations 0x%lx", before);
    e2e_wait_usr1();

    long after = mb(MEMBARRIER_CMD_GET_REGISTRATIONS, 0);
    CHECK(after >= 0 && (after & before) == before, "registrations 0x%lx after the restart, 0x%lx before", after, before);
    CHECK(mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0) == 0, "private expedited sync-core barrier: %s", strerror(errno));
    CHECK(mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, 0) == 0, "private expedited rseq barrier: %s", strerror(errno));
    CHECK(mb(MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0) == 0, "global expedited barrier: %s", strerror(errno));
    return e2e_finish();
}
