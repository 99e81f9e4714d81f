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
}

[StructLayout(LayoutKind.Sequential)]
public struct RLimit
{
    public ulong Cur;
    public ulong Max;
}
