using System.Runtime.InteropServices;

namespace Ckpt.Native;

/// <summary>x86-64 system call numbers used by the engine (mostly for injection into a stopped task).</summary>
public static class Nr
{
    public const long read = 0, write = 1, open = 2, close = 3, fstat = 5, lseek = 8, mmap = 9, mprotect = 10,
        munmap = 11, brk = 12, rt_sigaction = 13, rt_sigprocmask = 14, pread64 = 17, pwrite64 = 18,
        madvise = 28, mincore = 27, mlockall = 151, dup = 32, dup2 = 33, pause = 34, getitimer = 36, setitimer = 38, getpid = 39, exit = 60,
        fcntl = 72, fchdir = 81, chdir = 80, umask = 95, setuid = 105, setgid = 106, setgroups = 116,
        setresuid = 117, setresgid = 119, capget = 125, capset = 126, rt_sigqueueinfo = 129,
        sigaltstack = 131, setpriority = 141, prctl = 157, arch_prctl = 158, chroot = 161,
        gettid = 186, set_tid_address = 218, restart_syscall = 219, exit_group = 231, tgkill = 234, tkill = 200,
        openat = 257, set_robust_list = 273, get_robust_list = 274, dup3 = 292, pipe2 = 293,
        rt_tgsigqueueinfo = 297, prlimit64 = 302, kcmp = 312, memfd_create = 319, rseq = 334, seccomp = 317, flock = 73, mlock2 = 325, mq_open = 240,
        pidfd_open = 434, clone3 = 435, close_range = 436, pidfd_getfd = 438, mremap = 25,
        getpriority = 140, sched_setaffinity = 203, sched_getaffinity = 204, fchmod = 91, setpgid = 109, setsid = 112,
        getpgid = 121, rt_sigtimedwait = 128, wait4 = 61, mount = 165, mkdir = 83,
        ioctl = 16, clock_gettime = 228, epoll_ctl = 233, inotify_add_watch = 254, inotify_rm_watch = 255,
        timerfd_create = 283, timerfd_settime = 286, timerfd_gettime = 287, signalfd4 = 289, eventfd2 = 290,
        epoll_create1 = 291, inotify_init1 = 294, fanotify_init = 300, fanotify_mark = 301, open_by_handle_at = 304,
        socket = 41, connect = 42, shutdown = 48, bind = 49, listen = 50, socketpair = 53, setsockopt = 54, accept4 = 288, recvmsg = 47,
        timer_create = 222, timer_settime = 223, timer_gettime = 224, timer_getoverrun = 225, timer_delete = 226,
        personality = 135, userfaultfd = 323, ioprio_set = 251, ioprio_get = 252, io_setup = 206, io_submit = 209, unshare = 272, setns = 308, membarrier = 324,
        uname = 63, move_mount = 429, fsopen = 430, fsconfig = 431, fsmount = 432, sethostname = 170, setdomainname = 171, setfsuid = 122, setfsgid = 123;
}

/// <summary>The raw syscall(2) entry of libc, for calls libc does not wrap.</summary>
public static partial class Sys
{
    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long syscall6(long nr, long a1, long a2, long a3, long a4, long a5, long a6);

    public static long Call(long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0)
        => syscall6(nr, a1, a2, a3, a4, a5, a6);

    /// <summary>Calls and throws a <see cref="SyscallException"/> on -1.</summary>
    public static long Check(string name, int pid, long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0)
    {
        long r = syscall6(nr, a1, a2, a3, a4, a5, a6);
        if (r == -1) throw SyscallException.Last(name, pid);
        return r;
    }
}
