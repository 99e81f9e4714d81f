/* treeshare: objects shared between a parent and its child through fork must still be shared after
 * a restart: MAP_SHARED anonymous memory, a memfd mapping, a SysV segment, an eventfd, and a file
 * description (one offset). After SIGUSR1 the parent tells the child (SIGUSR1) to write into each;
 * the parent then sees the child's writes. */
#include "e2e.h"
#include <sys/eventfd.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/wait.h>

int main(void)
{
    e2e_init();
    char *anon = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    MUST(anon != MAP_FAILED);
    strcpy(anon + 4096, "anon-before");
    int mfd = memfd_create("treeshare", 0);
    MUST(mfd >= 0 && ftruncate(mfd, 65536) == 0);
    char *mem = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    MUST(mem != MAP_FAILED);
    strcpy(mem, "memfd-before");
    int shmid = shmget(IPC_PRIVATE, 8192, IPC_CREAT | 0600);
    MUST(shmid >= 0);
    char *sys = shmat(shmid, NULL, 0);
    MUST(sys != (void *)-1);
    shmctl(shmid, IPC_RMID, NULL);   /* gone once both detach */
    strcpy(sys, "sysv-before");
    MUST(lseek(mfd, 1000, SEEK_SET) == 1000);   /* the child writes there through the shared description */
    int efd = eventfd(5, 0);
    MUST(efd >= 0);

    e2e_block_usr1(1);
    pid_t child = fork();
    MUST(child >= 0);
    if (child == 0) {
        e2e_child_wait_usr1();
        int bad = 0;
        if (strcmp(anon + 4096, "anon-before") || strcmp(mem, "memfd-before") || strcmp(sys, "sysv-before")) { say("FAIL: child: contents lost"); bad = 1; }
        strcpy(anon + 4096, "anon-child");
        strcpy(mem, "memfd-child");
        strcpy(sys, "sysv-child");
        uint64_t one = 1;
        if (write(efd, &one, 8) != 8) { say("FAIL: child: eventfd write: %s", strerror(errno)); bad = 1; }
        if (write(mfd, "xyz", 3) != 3) { say("FAIL: child: memfd write: %s", strerror(errno)); bad = 1; }
        _exit(bad);
    }
    e2e_block_usr1(0);
    say("CHILD %d", child);
    say("READY");
    e2e_wait_usr1();

    off_t before = lseek(mfd, 0, SEEK_CUR);
    kill(child, SIGUSR1);
    e2e_child_verdict(child, "the child");
    CHECK(strcmp(anon + 4096, "anon-child") == 0, "shared anonymous memory: '%s'", anon + 4096);
    CHECK(strcmp(mem, "memfd-child") == 0, "memfd mapping: '%s'", mem);
    CHECK(strcmp(sys, "sysv-child") == 0, "SysV segment: '%s'", sys);
    uint64_t v = 0;
    CHECK(read(efd, &v, 8) == 8 && v == 6, "eventfd count %llu, want 6", (unsigned long long)v);
    CHECK(lseek(mfd, 0, SEEK_CUR) == before + 3, "memfd offset %ld, want %ld", (long)lseek(mfd, 0, SEEK_CUR), (long)before + 3);
    return e2e_finish();
}
