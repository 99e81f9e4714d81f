/* mlocked: a region locked with mlock (every page resident and locked) and one locked with
 * MLOCK_ONFAULT (only the touched pages resident). After the restart both are locked as before: the
 * same VmFlags (lo; lo and lf), the same Locked size, the same data.
 * "mlocked future" / "mlocked onfault": mlockall(MCL_FUTURE [| MCL_ONFAULT]) was called too: a region
 * mapped after the restart is locked (VmFlags lo, and lf with MCL_ONFAULT). */
#include "e2e.h"
#include <sys/mman.h>

#define LEN (64 * 1024)

int main(int argc, char **argv)
{
    e2e_init();
    int future = argc > 1 ? (!strcmp(argv[1], "onfault") ? MCL_FUTURE | MCL_ONFAULT : MCL_FUTURE) : 0;
    char *raw = mmap(NULL, 5 * LEN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MUST(raw != MAP_FAILED);
    char *a = raw + LEN, *b = raw + 3 * LEN;   /* apart: they do not merge */
    MUST(mprotect(a, LEN, PROT_READ | PROT_WRITE) == 0 && mprotect(b, LEN, PROT_READ | PROT_WRITE) == 0);
    fill(a, LEN, 21);
    MUST(mlock(a, LEN) == 0);
    MUST(syscall(SYS_mlock2, b, LEN, 1 /* MLOCK_ONFAULT */) == 0);
    fill(b + 4096, 4096, 22);
    char fa[512], fb[512];
    long la, lb;
    region_info(a, fa, sizeof fa, &la);
    region_info(b, fb, sizeof fb, &lb);
    MUST(strstr(fa, " lo") && strstr(fb, " lf"));
    if (future) MUST(mlockall(future) == 0);
    say("READY");
    e2e_wait_usr1();

    char ga[512], gb[512];
    long ka, kb;
    region_info(a, ga, sizeof ga, &ka);
    region_info(b, gb, sizeof gb, &kb);
    CHECK(!strcmp(fa, ga), "mlock'ed region flags '%s', were '%s'", ga, fa);
    CHECK(!strcmp(fb, gb), "MLOCK_ONFAULT region flags '%s', were '%s'", gb, fb);
    CHECK(ka == la && kb == lb, "locked %ld and %ld kB, were %ld and %ld kB", ka, kb, la, lb);
    CHECK(check_fill(a, LEN, 21) < 0 && check_fill(b + 4096, 4096, 22) < 0, "locked data differs");
    char *later = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MUST(later != MAP_FAILED);
    char fl[512];
    long kl;
    region_info(later, fl, sizeof fl, &kl);
    if (!future) CHECK(!strstr(fl, " lo"), "a region mapped after the restart is locked ('%s')", fl);
    else CHECK(strstr(fl, " lo") && !strstr(fl, " lf") == !(future & MCL_ONFAULT), "a region mapped after the restart has flags '%s' (mlockall 0x%x)", fl, future);
    return e2e_finish();
}
