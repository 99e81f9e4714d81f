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
