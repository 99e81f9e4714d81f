using System.Runtime.InteropServices;

namespace Ckpt.Native;

/// <summary>ptrace(2) and waitpid(2). Every call for one trace must come from the thread that attached.</summary>
public static unsafe partial class Ptrace
{
    public const int TRACEME = 0, PEEKDATA = 2, POKEDATA = 5, CONT = 7, KILL = 8, SINGLESTEP = 9, DETACH = 17,
        SYSCALL = 24, SETOPTIONS = 0x4200, GETEVENTMSG = 0x4201, GETSIGINFO = 0x4202, SETSIGINFO = 0x4203,
        GETREGSET = 0x4204, SETREGSET = 0x4205, SEIZE = 0x4206, INTERRUPT = 0x4207, LISTEN = 0x4208,
        PEEKSIGINFO = 0x4209, GETSIGMASK = 0x420a, SETSIGMASK = 0x420b, SECCOMP_GET_FILTER = 0x420c,
        SECCOMP_GET_METADATA = 0x420d, GET_RSEQ_CONFIGURATION = 0x420f;

    public const int O_TRACESYSGOOD = 1, O_TRACEFORK = 2, O_TRACEVFORK = 4, O_TRACECLONE = 8, O_TRACEEXEC = 0x10,
        O_EXITKILL = 0x100000, O_SUSPEND_SECCOMP = 0x200000;

    public const int EVENT_FORK = 1, EVENT_VFORK = 2, EVENT_CLONE = 3, EVENT_EXEC = 4, EVENT_STOP = 128;

    public const int NT_PRSTATUS = 1, NT_X86_XSTATE = 0x202;
    public const int PEEKSIGINFO_SHARED = 1;
    public const int WALL = 0x40000000, WNOHANG = 1;

    [LibraryImport("libc", EntryPoint = "ptrace", SetLastError = true)]
    private static partial long ptrace(long request, int pid, nint addr, nint data);

    [LibraryImport("libc", EntryPoint = "waitpid", SetLastError = true)]
    private static partial int waitpid(int pid, int* status, int options);

    public static long Raw(int request, int pid, nint addr, nint data) => ptrace(request, pid, addr, data);

    public static long Call(int request, int pid, nint addr, nint data, string what)
    {
        long r = ptrace(request, pid, addr, data);
        if (r == -1)
        {
            int e = Marshal.GetLastPInvokeError();
            if (e != 0) throw new SyscallException($"ptrace({what})", e, pid);
        }
        return r;
    }

    /// <summary>Blocking waitpid with __WALL, retried on EINTR. Returns the raw status.</summary>
    public static int Wait(int pid, bool noHang = false)
    {
        int st;
        while (true)
        {
            int r = waitpid(pid, &st, WALL | (noHang ? WNOHANG : 0));
            if (r > 0) return st;
            if (r == 0) return -1;
            int e = Marshal.GetLastPInvokeError();
            if (e == Errors.EINTR) continue;
            throw new SyscallException("waitpid", e, pid);
        }
    }

    /// <summary>waitpid for any child (used by restart to reap its own children).</summary>
    public static int WaitAny(out int status, int options)
    {
        int st;
        while (true)
        {
            int r = waitpid(-1, &st, options);
            if (r >= 0) { status = st; return r; }
            int e = Marshal.GetLastPInvokeError();
            status = 0;
            return -e;
        }
    }

    public static bool Exited(int st) => (st & 0x7f) == 0;
    public static int ExitCode(int st) => (st >> 8) & 0xff;
    public static bool Signaled(int st) => ((st & 0x7f) + 1) >> 1 > 0 && (st & 0x7f) != 0x7f && (st & 0x7f) != 0;
    public static int TermSig(int st) => st & 0x7f;
    public static bool Stopped(int st) => (st & 0xff) == 0x7f;
    public static int StopSig(int st) => (st >> 8) & 0xff;
    public static int Event(int st) => (st >> 16) & 0xff;
}
