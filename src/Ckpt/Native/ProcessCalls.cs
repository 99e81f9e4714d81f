using System.Runtime.InteropServices;

namespace Ckpt.Native;

/// <summary>Process-level calls: signals, pidfds, kcmp, priorities, limits, identity.</summary>
public static unsafe partial class ProcessCalls
{
    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int sig);

    /// <summary>setns(2): moves the calling thread into the namespace <paramref name="fd"/> refers to.</summary>
    [LibraryImport("libc", EntryPoint = "setns", SetLastError = true)]
    public static partial int Setns(int fd, int nstype);

    /// <summary>Moves the calling thread into process <paramref name="pid"/>'s namespace of kind <paramref name="kind"/> (/proc/PID/ns/KIND, CLONE_NEW* <paramref name="nstype"/>); throws naming the call.</summary>
    public static void JoinNamespace(int pid, string kind, int nstype)
    {
        int fd = FileCalls.Open($"/proc/{pid}/ns/{kind}", FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0);
        if (fd < 0) throw SyscallException.Last($"open ns/{kind}", pid);
        try { if (Setns(fd, nstype) != 0) throw SyscallException.Last($"setns(ns/{kind})", pid); }
        finally { FileCalls.Close(fd); }
    }

    [LibraryImport("libc", EntryPoint = "getpid")]
    public static partial int GetPid();

    [LibraryImport("libc", EntryPoint = "getppid")]
    public static partial int GetPPid();

    /// <summary>getpgid(2): the process group of <paramref name="pid"/> (0: the caller's).</summary>
    [LibraryImport("libc", EntryPoint = "getpgid", SetLastError = true)]
    public static partial int GetPgid(int pid);

    /// <summary>getsid(2): the session of <paramref name="pid"/> (0: the caller's).</summary>
    [LibraryImport("libc", EntryPoint = "getsid", SetLastError = true)]
    public static partial int GetSid(int pid);

    [LibraryImport("libc", EntryPoint = "gettid")]
    public static partial int GetTid();

    [LibraryImport("libc", EntryPoint = "sched_getcpu")]
    public static partial int GetCpu();

    [LibraryImport("libc", EntryPoint = "geteuid")]
    public static partial uint GetEuid();

    [LibraryImport("libc", EntryPoint = "getpriority", SetLastError = true)]
    public static partial int GetPriority(int which, int who);

    [LibraryImport("libc", EntryPoint = "setpriority", SetLastError = true)]
    public static partial int SetPriority(int which, int who, int prio);

    /// <summary>The scheduling policy of a task (a tid: per thread on Linux), SCHED_RESET_ON_FORK included; -1 on error.</summary>
    [LibraryImport("libc", EntryPoint = "sched_getscheduler", SetLastError = true)]
    public static partial int SchedGetScheduler(int tid);

    private const int IOPRIO_WHO_PROCESS = 1;

    /// <summary>The I/O priority of thread <paramref name="tid"/> (class in bits 13-15, level below), or -1 (errno set).</summary>
    public static int IoprioGet(int tid) => (int)Sys.Call(Nr.ioprio_get, IOPRIO_WHO_PROCESS, tid);

    /// <summary>Sets the I/O priority of thread <paramref name="tid"/>; false on failure (errno set).</summary>
    public static bool IoprioSet(int tid, int ioprio) => Sys.Call(Nr.ioprio_set, IOPRIO_WHO_PROCESS, tid, ioprio) == 0;

    /// <summary>sched_getparam: <paramref name="priority"/> receives sched_priority (struct sched_param is one int).</summary>
    [LibraryImport("libc", EntryPoint = "sched_getparam", SetLastError = true)]
    public static partial int SchedGetParam(int tid, int* priority);

    [LibraryImport("libc", EntryPoint = "sched_setscheduler", SetLastError = true)]
    public static partial int SchedSetScheduler(int tid, int policy, int* priority);

    public const int SCHED_OTHER = 0, SCHED_FIFO = 1, SCHED_RR = 2, SCHED_BATCH = 3, SCHED_IDLE = 5, SCHED_DEADLINE = 6,
        SCHED_RESET_ON_FORK = 0x40000000;

    [LibraryImport("libc", EntryPoint = "prlimit", SetLastError = true)]
    public static partial int Prlimit(int pid, int resource, RLimit* newLimit, RLimit* oldLimit);

    [LibraryImport("libc", EntryPoint = "prctl", SetLastError = true)]
    public static partial int Prctl(int option, nint a2, nint a3, nint a4, nint a5);

    public static int PidfdOpen(int pid) => (int)Sys.Check("pidfd_open", pid, Nr.pidfd_open, pid, 0);

    /// <summary>Duplicates fd <paramref name="targetFd"/> of the process behind <paramref name="pidfd"/> into this process.</summary>
    public static int PidfdGetfd(int pidfd, int targetFd, int pid)
        => (int)Sys.Check("pidfd_getfd", pid, Nr.pidfd_getfd, pidfd, targetFd, 0);

    public const int KCMP_FILE = 0, KCMP_VM = 1, KCMP_FILES = 2, KCMP_FS = 3, KCMP_SIGHAND = 4, KCMP_IO = 5, KCMP_SYSVSEM = 6;

    /// <summary>kcmp: 0 equal, 1/2 ordering, -1 error.</summary>
    public static long Kcmp(int pid1, int pid2, int type, long idx1, long idx2)
        => Sys.Call(Nr.kcmp, pid1, pid2, type, idx1, idx2);

    public const int PR_SET_CHILD_SUBREAPER = 36, PR_SET_PDEATHSIG = 1;

    /// <summary>The CPU affinity of a task (0: the calling thread), as a bitmask of up to 1024 CPUs.</summary>
    public static ulong[] GetAffinity(int tid)
    {
        var mask = new ulong[16];
        fixed (ulong* m = mask)
            if (Sys.Call(Nr.sched_getaffinity, tid, mask.Length * 8, (long)m) < 0) throw SyscallException.Last("sched_getaffinity", tid);
        return mask;
    }

    public static bool SetAffinity(int tid, ulong[] mask)
    {
        fixed (ulong* m = mask) return Sys.Call(Nr.sched_setaffinity, tid, mask.Length * 8, (long)m) == 0;
    }

    /// <summary>The CPUs that are online on this machine (/sys/devices/system/cpu/online), as an affinity mask.</summary>
    public static ulong[] OnlineCpus()
    {
        var mask = new ulong[16];
        foreach (var part in Native.FileCalls.ReadText("/sys/devices/system/cpu/online").Trim().Split(',', StringSplitOptions.RemoveEmptyEntries))
        {
            var ends = part.Split('-');
            int lo = int.Parse(ends[0]), hi = ends.Length > 1 ? int.Parse(ends[1]) : lo;
            for (int c = lo; c <= hi && c < 64 * mask.Length; c++) mask[c / 64] |= 1UL << (c % 64);
        }
        return mask;
    }

    /// <summary>A CPU mask as a list: "0-3,6".</summary>
    public static string CpuList(ReadOnlySpan<ulong> mask)
    {
        var parts = new List<string>();
        int n = mask.Length * 64;
        for (int c = 0; c < n; c++)
        {
            if ((mask[c / 64] & (1UL << (c % 64))) == 0) continue;
            int end = c;
            while (end + 1 < n && (mask[(end + 1) / 64] & (1UL << ((end + 1) % 64))) != 0) end++;
            parts.Add(end == c ? $"{c}" : $"{c}-{end}");
            c = end;
        }
        return parts.Count == 0 ? "none" : string.Join(",", parts);
    }

    // The closer's machine code: gcc -O2 -fno-stack-protector -fcf-protection=none of this C (checked with
    // objdump: the children touch no stack; the pushes are the parent's, which pops them):
    //   static inline long sys3(long n, long a, long b, long c)
    //   { long r; asm volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory"); return r; }
    //   long closer(void *a, unsigned long size, long fd, void *b, long rd)
    //   {
    //       long pid = sys3(435, (long)a, size, 0);                  // clone3 a: CLONE_VM | CLONE_FILES | CLONE_VFORK
    //       if (pid != 0) return pid;                                // the caller: pid of a, or -errno
    //       long pb = sys3(435, (long)b, size, 0);                   // a: clone3 b: CLONE_VM (a copy of the fd table)
    //       if (pb == 0) {                                           // b: every fd closed but fd and rd
    //           long lo = fd < rd ? fd : rd, hi = fd < rd ? rd : fd;
    //           if (lo > 0) sys3(436, 0, lo - 1, 0);                 // close_range
    //           if (hi > lo + 1) sys3(436, lo + 1, hi - 1, 0);
    //           sys3(436, hi + 1, ~0u, 0);
    //           sys3(0, rd, (long)b, 1);                             // read: returns at the pipe's end (nothing is written)
    //           sys3(3, rd, 0, 0); sys3(3, fd, 0, 0); sys3(60, 0, 0, 0);   // close, close (the last reference), exit
    //       }
    //       if (pb < 0) sys3(60, 1, 0, 0);                           // a: exit(1), fd left open
    //       sys3(3, fd, 0, 0); sys3(60, 0, 0, 0);                    // a: close in the shared table, exit(0)
    //   }
    // (then ud2)
    private static ReadOnlySpan<byte> CloserCode =>
    [
        0x41, 0xb9, 0xb3, 0x01, 0x00, 0x00, 0x41, 0x54, 0x49, 0x89, 0xca, 0x55, 0x4c, 0x89, 0xc8, 0x53, 0x48, 0x89, 0xd3, 0x31,
        0xd2, 0x0f, 0x05, 0x48, 0x89, 0xc2, 0x48, 0x85, 0xc0, 0x75, 0x41, 0x4c, 0x89, 0xc8, 0x4c, 0x89, 0xd7, 0x0f, 0x05, 0x49,
        0x89, 0xc1, 0x48, 0x85, 0xc0, 0x74, 0x36, 0x78, 0x1f, 0xb8, 0x03, 0x00, 0x00, 0x00, 0x48, 0x89, 0xdf, 0x48, 0x89, 0xd6,
        0x0f, 0x05, 0xb8, 0x3c, 0x00, 0x00, 0x00, 0x48, 0x89, 0xd7, 0x0f, 0x05, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00,
        0xb8, 0x3c, 0x00, 0x00, 0x00, 0xbf, 0x01, 0x00, 0x00, 0x00, 0x48, 0x89, 0xd6, 0x0f, 0x05, 0x90, 0x5b, 0x5d, 0x41, 0x5c,
        0xc3, 0x4c, 0x39, 0xc3, 0x4c, 0x89, 0xc5, 0x4d, 0x89, 0xc4, 0x48, 0x0f, 0x4e, 0xeb, 0x4c, 0x0f, 0x4d, 0xe3, 0x48, 0x85,
        0xed, 0x7e, 0x11, 0x48, 0x8d, 0x75, 0xff, 0xb8, 0xb4, 0x01, 0x00, 0x00, 0x4c, 0x89, 0xcf, 0x4c, 0x89, 0xca, 0x0f, 0x05,
        0x48, 0x8d, 0x7d, 0x01, 0x4c, 0x39, 0xe7, 0x7d, 0x0e, 0x49, 0x8d, 0x74, 0x24, 0xff, 0xb8, 0xb4, 0x01, 0x00, 0x00, 0x31,
        0xd2, 0x0f, 0x05, 0x45, 0x31, 0xc9, 0x49, 0x8d, 0x7c, 0x24, 0x01, 0xb8, 0xb4, 0x01, 0x00, 0x00, 0xbe, 0xff, 0xff, 0xff,
        0xff, 0x4c, 0x89, 0xca, 0x0f, 0x05, 0xba, 0x01, 0x00, 0x00, 0x00, 0x4c, 0x89, 0xc8, 0x4c, 0x89, 0xc7, 0x4c, 0x89, 0xd6,
        0x0f, 0x05, 0x41, 0xba, 0x03, 0x00, 0x00, 0x00, 0x4c, 0x89, 0xce, 0x4c, 0x89, 0xca, 0x4c, 0x89, 0xd0, 0x0f, 0x05, 0x4c,
        0x89, 0xd0, 0x48, 0x89, 0xdf, 0x0f, 0x05, 0xb8, 0x3c, 0x00, 0x00, 0x00, 0x4c, 0x89, 0xcf, 0x0f, 0x05, 0x0f, 0x0b,
    ];

    private static nint s_closer;
    private static readonly Lock s_closerLock = new();

    /// <summary>
    /// Closes <paramref name="fd"/> so that a release that waits holds up neither ckpt nor its exit: a
    /// NETLINK_NETFILTER socket that deleted an nf_tables table waits in its release for nf_tables'
    /// destroy work, an RCU grace period (12-17 ms on this machine). The last reference goes to a
    /// process that shares ckpt's memory and runs no managed code (a few bytes of machine code): a child
    /// <c>a</c> (clone3 CLONE_VM | CLONE_FILES | CLONE_VFORK: ckpt's calling thread waits until it exits)
    /// makes <c>b</c> (CLONE_VM: a copy of the fd table, so a reference to the file), closes the fd in the
    /// table it shares with ckpt and exits; <c>b</c> closes every other fd (a pipe to ckpt's caller must
    /// see its end when ckpt exits) but the read end of a pipe of the caller's, whose end it waits for:
    /// the caller closes the write end once <c>a</c> has exited, so <c>b</c>'s close of the fd comes after
    /// <c>a</c>'s and is the last (had <c>b</c> been first, <c>a</c> would have waited, and the caller
    /// with it: CloseAsideTests saw it once in a loaded test run). <c>b</c> then waits there and exits
    /// (reparented, reaped by ckpt's subreaper or pid 1). They start with every signal blocked; their
    /// stack is a page of their own, which they do not touch. Falls back to a plain close when a clone fails.
    /// </summary>
    public static void CloseAside(int fd)
    {
        nint code;
        lock (s_closerLock)
        {
            if (s_closer == 0)
            {
                // the code page, and below it the children's stack page
                nint p = MemoryCalls.Mmap(0, 8192, MemoryCalls.PROT_READ | MemoryCalls.PROT_WRITE,
                    MemoryCalls.MAP_PRIVATE | MemoryCalls.MAP_ANONYMOUS, -1, 0);
                if (p != -1)
                {
                    CloserCode.CopyTo(new Span<byte>((void*)(p + 4096), 4096));
                    if (Sys.Call(Nr.mprotect, p + 4096, 4096, MemoryCalls.PROT_READ | MemoryCalls.PROT_EXEC) == 0) s_closer = p + 4096;
                    else MemoryCalls.Munmap(p, 8192);
                }
            }
            code = s_closer;
        }
        if (code != 0)
        {
            ulong stack = (ulong)(code - 4096);
            var a = new CloneArgs { Flags = CLONE_VM | CLONE_FILES | CLONE_VFORK, ExitSignal = 17 /* SIGCHLD */, Stack = stack, StackSize = 4096 };
            var b = new CloneArgs { Flags = CLONE_VM, ExitSignal = 17, Stack = stack, StackSize = 4096 };
            var fn = (delegate* unmanaged<CloneArgs*, ulong, long, CloneArgs*, long, long>)code;
            int* p = stackalloc int[2];
            if (FileCalls.Pipe2(p, FileCalls.O_CLOEXEC) != 0) { FileCalls.Close(fd); return; }
            // the children start with every signal blocked (they inherit this thread's mask): a handler of
            // ckpt's would run on their page of stack, and a job-control stop of a would hold this thread
            // in the vfork as long as it lasts
            ulong all = ~0UL, old = 0;
            Sys.Call(Nr.rt_sigprocmask, 2 /* SIG_SETMASK */, (long)&all, (long)&old, 8);
            long pid;
            try { pid = fn(&a, (ulong)sizeof(CloneArgs), fd, &b, p[0]); }
            finally { Sys.Call(Nr.rt_sigprocmask, 2 /* SIG_SETMASK */, (long)&old, 0, 8); }
            // a has exited (CLONE_VFORK): b may close its reference now
            FileCalls.Close(p[1]);
            FileCalls.Close(p[0]);
            if (pid > 0)
            {
                // status 0 when a closed the fd, 1 when b could not be made; reaped by another thread's
                // wait meanwhile (a restart waiting for its children): taken as done
                int st;
                try { st = Ptrace.Wait((int)pid); }
                catch (SyscallException) { return; }
                if (Ptrace.Exited(st) && Ptrace.ExitCode(st) == 0) return;
            }
        }
        FileCalls.Close(fd);
    }

    private const ulong CLONE_VM = 0x100, CLONE_FILES = 0x400, CLONE_VFORK = 0x4000;

    public static ulong[] SingleCpu(int cpu)
    {
        var mask = new ulong[16];
        mask[cpu / 64] = 1UL << (cpu % 64);
        return mask;
    }
}

[StructLayout(LayoutKind.Sequential)]
public struct RLimit
{
    public ulong Cur;
    public ulong Max;
}
