/* userns: a process tree inside a user namespace (started under `unshare --user ...`). It notes how its
 * namespace looks from inside: the uid and gid maps, setgroups, its ids, groups and capabilities, which
 * of its other namespaces its user namespace owns (NS_GET_USERNS), and what it may do with that (set the
 * host name of a UTS namespace it owns, bring lo up in a network namespace it owns); a child (its ids
 * changed inside when the map allows) and two threads (their tids) do the same, and it holds an fd of its
 * user namespace open. After the restart all of it must be as it was: same maps, same ids as the namespace
 * sees them, same owners, same privileges, the fd naming its namespace.
 *
 * With the argument "wide" (run as root) it makes its namespaces itself, as a rootless container engine
 * does: a user namespace mapping 0-65535 to 100000-165535 of the host (setgroups allowed), owning new pid,
 * mount, network and UTS namespaces, with a proc of its own; the program proper runs as uid 0 there, as
 * the init (pid 1) of that pid namespace, a grandchild of the one started ("wide PROGRAM ARGS...": that
 * program instead).
 *
 * build: userns -pthread
 */
#include "e2e.h"
#include <grp.h>
#include <pthread.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <linux/capability.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>

#define NKINDS 7
static const char *kinds[NKINDS] = { "uts", "ipc", "net", "mnt", "cgroup", "pid", "time" };

struct view {
    char uid_map[256], gid_map[256], setgroups[16];
    uid_t ru, eu, su; gid_t rg, eg, sg;
    int ngroups; gid_t groups[16];
    uint32_t eff[2], prm[2];
    int owned[NKINDS];
    pid_t pid, tid;
    int dumpable;
};

static void read_text(const char *path, char *out, size_t n)
{
    out[0] = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    ssize_t len = read(fd, out, n - 1);
    out[len < 0 ? 0 : len] = 0;
    close(fd);
}

/* Whether the namespace of kind `kind` is owned by the caller's own user namespace. */
static int owned_by_mine(const char *kind)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/thread-self/ns/%s", kind);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    int owner = ioctl(fd, NS_GET_USERNS);
    close(fd);
    if (owner < 0) return errno == EPERM ? 0 : -2;   /* EPERM: owned by an ancestor of ours */
    struct stat a, b;
    int r = fstat(owner, &a) == 0 && stat("/proc/thread-self/ns/user", &b) == 0 && a.st_ino == b.st_ino;
    close(owner);
    return r;
}

static void look(struct view *v)
{
    memset(v, 0, sizeof *v);
    read_text("/proc/self/uid_map", v->uid_map, sizeof v->uid_map);
    read_text("/proc/self/gid_map", v->gid_map, sizeof v->gid_map);
    read_text("/proc/self/setgroups", v->setgroups, sizeof v->setgroups);
    getresuid(&v->ru, &v->eu, &v->su);
    getresgid(&v->rg, &v->eg, &v->sg);
    v->ngroups = getgroups(16, v->groups);
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    syscall(SYS_capget, &h, d);
    v->eff[0] = d[0].effective; v->eff[1] = d[1].effective;
    v->prm[0] = d[0].permitted; v->prm[1] = d[1].permitted;
    for (int i = 0; i < NKINDS; i++) v->owned[i] = owned_by_mine(kinds[i]);
    v->pid = getpid();
    v->tid = (pid_t)syscall(SYS_gettid);
    v->dumpable = prctl(PR_GET_DUMPABLE);
}

static void compare(const char *who, const struct view *a, const struct view *b)
{
    CHECK(strcmp(a->uid_map, b->uid_map) == 0, "%s: uid_map '%s', was '%s'", who, b->uid_map, a->uid_map);
    CHECK(strcmp(a->gid_map, b->gid_map) == 0, "%s: gid_map '%s', was '%s'", who, b->gid_map, a->gid_map);
    CHECK(strcmp(a->setgroups, b->setgroups) == 0, "%s: setgroups '%s', was '%s'", who, b->setgroups, a->setgroups);
    CHECK(a->ru == b->ru && a->eu == b->eu && a->su == b->su, "%s: uids %d %d %d, were %d %d %d", who, b->ru, b->eu, b->su, a->ru, a->eu, a->su);
    CHECK(a->rg == b->rg && a->eg == b->eg && a->sg == b->sg, "%s: gids %d %d %d, were %d %d %d", who, b->rg, b->eg, b->sg, a->rg, a->eg, a->sg);
    CHECK(a->ngroups == b->ngroups && memcmp(a->groups, b->groups, sizeof a->groups) == 0, "%s: %d groups (first %d), were %d (first %d)",
          who, b->ngroups, b->ngroups > 0 ? (int)b->groups[0] : -1, a->ngroups, a->ngroups > 0 ? (int)a->groups[0] : -1);
    CHECK(memcmp(a->eff, b->eff, sizeof a->eff) == 0 && memcmp(a->prm, b->prm, sizeof a->prm) == 0,
          "%s: capabilities eff %x:%x prm %x:%x, were eff %x:%x prm %x:%x", who, b->eff[1], b->eff[0], b->prm[1], b->prm[0], a->eff[1], a->eff[0], a->prm[1], a->prm[0]);
    for (int i = 0; i < NKINDS; i++)
        CHECK(a->owned[i] == b->owned[i], "%s: its %s namespace %s owned by its user namespace, it was%s", who, kinds[i],
              b->owned[i] == 1 ? "is" : "is not", a->owned[i] == 1 ? "" : " not");
    CHECK(a->dumpable == b->dumpable, "%s: dumpable %d, was %d", who, b->dumpable, a->dumpable);
    CHECK(a->pid == b->pid && a->tid == b->tid, "%s: pid/tid %d/%d, were %d/%d", who, b->pid, b->tid, a->pid, a->tid);
}

/* What its namespaces let it do: set the host name where it owns its UTS namespace, bring lo up where it
 * owns its network namespace. */
static void privileged(const char *who, const struct view *v)
{
    if (v->owned[0] == 1 && (v->eff[0] & (1u << CAP_SYS_ADMIN))) {
        CHECK(sethostname("restored", 8) == 0, "%s: sethostname in its own UTS namespace: %s", who, strerror(errno));
    } else if (v->owned[0] == 0) {
        CHECK(sethostname("restored", 8) != 0, "%s: sethostname worked in a UTS namespace it does not own", who);
    }
    if (v->owned[2] == 1 && (v->eff[0] & (1u << CAP_NET_ADMIN))) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        strcpy(ifr.ifr_name, "lo");
        CHECK(s >= 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0, "%s: SIOCGIFFLAGS: %s", who, strerror(errno));
        ifr.ifr_flags |= IFF_UP;
        CHECK(ioctl(s, SIOCSIFFLAGS, &ifr) == 0, "%s: lo up in its own network namespace: %s", who, strerror(errno));
        close(s);
    }
}

static struct view thread_before[2], thread_after[2];
static volatile int go;

static void *thread_main(void *arg)
{
    int i = (int)(long)arg;
    look(&thread_before[i]);
    while (!go) usleep(1000);
    look(&thread_after[i]);
    return NULL;
}

/* "wide": the namespaces made as a rootless container engine would, the program run as their init. */
static int wide(char *self, char **prog)
{
    int go[2], made[2];
    MUST(pipe(go) == 0 && pipe(made) == 0);
    pid_t c = fork();
    MUST(c >= 0);
    if (c == 0) {
        char x;
        MUST(unshare(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS) == 0);
        MUST(write(made[1], "x", 1) == 1);
        MUST(read(go[0], &x, 1) == 1);
        MUST(setresgid(0, 0, 0) == 0 && setgroups(0, NULL) == 0 && setresuid(0, 0, 0) == 0);
        pid_t init = fork();
        MUST(init >= 0);
        if (init == 0) {
            MUST(mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0);
            MUST(mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0);
            if (prog[0]) execv(prog[0], prog);   /* another program in its place */
            else execl(self, self, (char *)NULL);
            _exit(127);
        }
        int st;
        waitpid(init, &st, 0);
        _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    }
    char x, path[64];
    MUST(read(made[0], &x, 1) == 1);
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "/proc/%d/%s", (int)c, i ? "gid_map" : "uid_map");
        int fd = open(path, O_WRONLY);
        MUST(fd >= 0 && write(fd, "0 100000 65536", 14) == 14);
        close(fd);
    }
    MUST(write(go[1], "x", 1) == 1);
    int st;
    waitpid(c, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

int main(int argc, char **argv)
{
    e2e_init();
    if (argc > 1 && strcmp(argv[1], "wide") == 0) return wide(argv[0], argv + 2);
    struct view before, after;
    /* with a map wide enough, groups of its own (where setgroups is allowed) */
    look(&before);
    if (strncmp(before.setgroups, "allow", 5) == 0 && before.eu == 0) {
        gid_t g[] = { 5, 6 };
        MUST(setgroups(2, g) == 0);
    }
    /* a child that changes its ids inside the namespace where the map has them */
    e2e_block_usr1(1);
    pid_t child = fork();
    MUST(child >= 0);
    if (child == 0) {
        struct view cb, ca;
        uid_t id = strstr(before.uid_map, "65536") ? 1000 : before.ru;
        if (id != before.ru) {
            MUST(setresgid(id, id, id) == 0);
            MUST(setresuid(id, id, id) == 0);
        }
        look(&cb);
        e2e_child_wait_usr1();
        look(&ca);
        compare("child", &cb, &ca);
        exit(e2e_failures == 0 ? 0 : 1);
    }
    e2e_block_usr1(0);
    pthread_t th[2];
    for (long i = 0; i < 2; i++) MUST(pthread_create(&th[i], NULL, thread_main, (void *)i) == 0);
    while (thread_before[0].tid == 0 || thread_before[1].tid == 0) usleep(1000);
    look(&before);
    int ufd = open("/proc/self/ns/user", O_RDONLY);   /* held open: the same namespace after the restart */
    MUST(ufd >= 0);
    say("READY maps '%s' owned uts %d net %d mnt %d pid %d", before.uid_map, before.owned[0], before.owned[2], before.owned[3], before.owned[5]);
    e2e_wait_usr1();
    go = 1;
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    look(&after);
    compare("main", &before, &after);
    struct stat held, now;
    CHECK(fstat(ufd, &held) == 0 && stat("/proc/self/ns/user", &now) == 0 && held.st_ino == now.st_ino,
          "the user namespace fd held names another namespace than its own");
    for (int i = 0; i < 2; i++) compare(i ? "thread 2" : "thread 1", &thread_before[i], &thread_after[i]);
    privileged("main", &after);
    kill(child, SIGUSR1);
    e2e_child_verdict(child, "the child");
    return e2e_finish();
}
