using System.Runtime.InteropServices;

namespace Ckpt.Native;

/// <summary>Process-level calls: signals, pidfds, kcmp, priorities, limits, identity.</summary>
public static unsafe partial class ProcessCalls
{
    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int sig);

    [LibraryImport("libc", EntryPoint = "getpid")]
    public static partial int GetPid();

    [LibraryImport("libc", EntryPoint = "gettid")]
    public static partial int GetTid();

    [LibraryImport("libc", EntryPoint = "sched_getcpu")]
    public static partial int GetCpu();

    [LibraryImport("libc", EntryPoint = "geteuid")]
    public static partial uint GetEuid();

    [LibraryImport("libc", EntryPoint = "getpriority", SetLastError = true)]
    public static partial int GetPriority(int which, int who);

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
