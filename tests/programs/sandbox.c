/* sandbox D: as bubblewrap's first process, the way it stays in its sandbox: a mount namespace of its own
 * whose root is a new tmpfs (made on D/root, then pivot_root, the old root removed). Its executable and
 * its libraries are files of the host that its namespace no longer shows. After the restart it still runs
 * its code (the restart mapped those files from ckpt's namespace), its root is that tmpfs with the file it
 * wrote there, the host's files are still out of its sight, and its memory is as it was. */
#include "e2e.h"
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>

static char buf[1 << 20];

int main(int argc, char **argv)
{
    e2e_init();
    MUST(argc == 2);
    char root[1024];
    snprintf(root, sizeof root, "%s/root", argv[1]);
    MUST(mkdir(root, 0755) == 0 || errno == EEXIST);
    MUST(unshare(CLONE_NEWNS) == 0);
    MUST(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0);
    MUST(mount("ckpt-sandbox", root, "tmpfs", 0, "size=1m,mode=755") == 0);
    MUST(chdir(root) == 0 && mkdir("old", 0755) == 0);
    int fd = open("marker", O_WRONLY | O_CREAT, 0644);
    MUST(fd >= 0 && write(fd, "inside", 6) == 6 && close(fd) == 0);
    MUST(syscall(SYS_pivot_root, ".", "old") == 0);
    MUST(umount2("/old", MNT_DETACH) == 0 && rmdir("/old") == 0 && chdir("/") == 0);
    MUST(access("/usr", F_OK) != 0);
    fill(buf, sizeof buf, 9);

    say("READY");
    e2e_wait_usr1();

    char got[16] = "";
    fd = open("/marker", O_RDONLY);
    CHECK(fd >= 0 && read(fd, got, sizeof got) == 6 && memcmp(got, "inside", 6) == 0, "/marker holds '%s'", got);
    CHECK(access("/usr", F_OK) != 0, "the host's /usr is in sight after the restart");
    long at = check_fill(buf, sizeof buf, 9);
    CHECK(at < 0, "memory differs after the restart at byte %ld", at);
    return e2e_finish();
}
