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

    // long closer(clone_args *a, size_t size, int fd, clone_args *b)
    //  0: 49 89 c8            mov r8, rcx
    //  3: b8 b3 01 00 00      mov eax, 435 (clone3 a: CLONE_VM | CLONE_FILES | CLONE_VFORK)
    //  8: 0f 05               syscall
    //  a: 48 85 c0            test rax, rax
    //  d: 74 01               je child_a
    //  f: c3                  ret                      (parent: rax = pid of a or -errno)
    //     child_a:
    // 10: 41 89 d4            mov r12d, edx
    // 13: 4c 89 c7            mov rdi, r8
    // 16: b8 b3 01 00 00      mov eax, 435 (clone3 b: CLONE_VM, a copy of the fd table)
    // 1b: 0f 05               syscall
    // 1d: 48 85 c0            test rax, rax
    // 20: 74 21               je child_b
    // 22: 78 13               js fail_b
    // 24: 44 89 e7            mov edi, r12d            close(fd): in the table a shares with ckpt
    // 27: b8 03 00 00 00      mov eax, 3
    // 2c: 0f 05               syscall
    // 2e: 31 ff               xor edi, edi
    // 30: b8 3c 00 00 00      mov eax, 60              exit(0)
    // 35: 0f 05               syscall
    //     fail_b:
    // 37: bf 01 00 00 00      mov edi, 1
    // 3c: b8 3c 00 00 00      mov eax, 60              exit(1)
    // 41: 0f 05               syscall
    //     child_b:
    // 43: 45 85 e4            test r12d, r12d
    // 46: 74 10               je high
    // 48: 31 ff               xor edi, edi             close_range(0, fd - 1, 0)
    // 4a: 41 8d 74 24 ff      lea esi, [r12 - 1]
    // 4f: 31 d2               xor edx, edx
    // 51: b8 b4 01 00 00      mov eax, 436
    // 56: 0f 05               syscall
    //     high:
    // 58: 41 8d 7c 24 01      lea edi, [r12 + 1]       close_range(fd + 1, ~0, 0)
    // 5d: be ff ff ff ff      mov esi, 0xffffffff
    // 62: 31 d2               xor edx, edx
    // 64: b8 b4 01 00 00      mov eax, 436
    // 69: 0f 05               syscall
    // 6b: 44 89 e7            mov edi, r12d            close(fd): the last reference
    // 6e: b8 03 00 00 00      mov eax, 3
    // 73: 0f 05               syscall
    // 75: 31 ff               xor edi, edi
    // 77: b8 3c 00 00 00      mov eax, 60              exit(0)
    // 7c: 0f 05               syscall
    // 7e: 0f 0b               ud2
    private static ReadOnlySpan<byte> CloserCode =>
    [
        0x49, 0x89, 0xc8, 0xb8, 0xb3, 0x01, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x85, 0xc0, 0x74, 0x01, 0xc3,
        0x41, 0x89, 0xd4, 0x4c, 0x89, 0xc7, 0xb8, 0xb3, 0x01, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x85, 0xc0, 0x74, 0x21, 0x78, 0x13,
        0x44, 0x89, 0xe7, 0xb8, 0x03, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x31, 0xff, 0xb8, 0x3c, 0x00, 0x00, 0x00, 0x0f, 0x05,
        0xbf, 0x01, 0x00, 0x00, 0x00, 0xb8, 0x3c, 0x00, 0x00, 0x00, 0x0f, 0x05,
        0x45, 0x85, 0xe4, 0x74, 0x10, 0x31, 0xff, 0x41, 0x8d, 0x74, 0x24, 0xff, 0x31, 0xd2, 0xb8, 0xb4, 0x01, 0x00, 0x00, 0x0f, 0x05,
        0x41, 0x8d, 0x7c, 0x24, 0x01, 0xbe, 0xff, 0xff, 0xff, 0xff, 0x31, 0xd2, 0xb8, 0xb4, 0x01, 0x00, 0x00, 0x0f, 0x05,
        0x44, 0x89, 0xe7, 0xb8, 0x03, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x31, 0xff, 0xb8, 0x3c, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x0f, 0x0b,
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
    /// see its end when ckpt exits), then this one, waits there and exits (reparented, reaped by ckpt's
    /// subreaper or pid 1). They start with every signal blocked; their stack is a page of their own.
    /// Falls back to a plain close when a clone fails.
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
            var fn = (delegate* unmanaged<CloneArgs*, ulong, int, CloneArgs*, long>)code;
            // the children start with every signal blocked (they inherit this thread's mask): a handler of
            // ckpt's would run on their page of stack, and a job-control stop of a would hold this thread
            // in the vfork as long as it lasts
            ulong all = ~0UL, old = 0;
            Sys.Call(Nr.rt_sigprocmask, 2 /* SIG_SETMASK */, (long)&all, (long)&old, 8);
            long pid;
            try { pid = fn(&a, (ulong)sizeof(CloneArgs), fd, &b); }
            finally { Sys.Call(Nr.rt_sigprocmask, 2 /* SIG_SETMASK */, (long)&old, 0, 8); }
            if (pid > 0)
            {
                // a has exited (CLONE_VFORK): status 0 when it closed the fd, 1 when b could not be made;
                // reaped by another thread's wait meanwhile (a restart waiting for its children): taken as done
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
