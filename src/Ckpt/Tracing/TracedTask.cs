using System.Runtime.InteropServices;
using Ckpt.Native;

namespace Ckpt.Tracing;

/// <summary>
/// One traced task (thread): seize, interrupt, registers, signal state, syscall injection, release.
/// Used by both checkpoint and restart. All methods must be called on the tracer thread.
/// </summary>
public sealed unsafe class TracedTask
{
    public const int SIGTRAP = 5, SIGSTOP = 19, SIGKILL = 9, SIGCONT = 18;
    public const ulong NoSyscall = ulong.MaxValue;

    public int Tid { get; }
    /// <summary>Address of a <c>syscall</c> instruction in the task used for injection.</summary>
    public ulong SyscallGadget { get; set; }
    public bool Attached { get; private set; }

    /// <summary>Signals that arrived while we held the task; re-delivered when it is released.</summary>
    public List<int> DeferredSignals { get; } = new();

    private TracedTask(int tid) { Tid = tid; }

    private static void RequireTracer()
    {
        if (!TracerThread.IsCurrent) throw new InvalidOperationException("ptrace used off the tracer thread");
    }

    /// <summary>PTRACE_SEIZE, then PTRACE_INTERRUPT and wait for the stop.</summary>
    public static TracedTask SeizeAndStop(int tid, int options = Ptrace.O_TRACESYSGOOD)
    {
        RequireTracer();
        Ptrace.Call(Ptrace.SEIZE, tid, 0, options, "SEIZE");
        var t = new TracedTask(tid) { Attached = true };
        t.Interrupt();
        return t;
    }

    /// <summary>
    /// PTRACE_SEIZE and PTRACE_INTERRUPT without waiting for the stop (a task of a frozen cgroup only
    /// stops once thawed); <see cref="WaitForInterrupt"/> waits for it.
    /// </summary>
    public static TracedTask SeizeNoWait(int tid, int options = Ptrace.O_TRACESYSGOOD)
    {
        RequireTracer();
        Ptrace.Call(Ptrace.SEIZE, tid, 0, options, "SEIZE");
        var t = new TracedTask(tid) { Attached = true };
        Ptrace.Call(Ptrace.INTERRUPT, tid, 0, 0, "INTERRUPT");
        return t;
    }

    /// <summary>Waits for the interrupt stop requested by <see cref="SeizeNoWait"/>.</summary>
    public void WaitForInterrupt() => WaitStop(expectEventStop: true);

    /// <summary>A task attached automatically (PTRACE_O_TRACECLONE): waits for its first stop.</summary>
    public static TracedTask Adopt(int tid)
    {
        RequireTracer();
        var t = new TracedTask(tid) { Attached = true };
        t.WaitStop(expectEventStop: true);
        return t;
    }

    /// <summary>Stops a seized task at an interrupt (event) stop.</summary>
    public void Interrupt()
    {
        Ptrace.Call(Ptrace.INTERRUPT, Tid, 0, 0, "INTERRUPT");
        WaitStop(expectEventStop: true);
    }

    /// <summary>Waits for the next stop; signal-delivery stops are suppressed and remembered.</summary>
    private int WaitStop(bool expectEventStop = false, bool expectSyscall = false)
    {
        while (true)
        {
            int st = Ptrace.Wait(Tid);
            if (!Ptrace.Stopped(st))
            {
                Attached = false;
                string how = Ptrace.Exited(st) ? $"exited with status {Ptrace.ExitCode(st)}" : $"was killed by signal {Ptrace.TermSig(st)}";
                throw new TaskGoneException(Tid, how);
            }
            int sig = Ptrace.StopSig(st), ev = Ptrace.Event(st);
            if (expectSyscall && sig == (SIGTRAP | 0x80)) return st;
            if (ev == Ptrace.EVENT_STOP)
            {
                if (expectEventStop) return st;
                // a group-stop or a stray interrupt stop while injecting: keep going
                Ptrace.Call(expectSyscall ? Ptrace.SYSCALL : Ptrace.CONT, Tid, 0, 0, "resume");
                continue;
            }
            if (ev != 0) { Ptrace.Call(expectSyscall ? Ptrace.SYSCALL : Ptrace.CONT, Tid, 0, 0, "resume"); continue; }
            // signal-delivery stop: hold the signal back, give it back on release
            if (sig != SIGSTOP && sig != SIGTRAP) DeferredSignals.Add(sig);
            if (expectEventStop)
            {
                // an interrupt is still pending; resume so that it is taken
                Ptrace.Call(Ptrace.CONT, Tid, 0, 0, "CONT");
                continue;
            }
            Ptrace.Call(Ptrace.SYSCALL, Tid, 0, 0, "SYSCALL");
        }
    }

    public UserRegs GetRegs()
    {
        UserRegs r;
        var io = new Iovec { Base = (nint)(&r), Len = (nuint)sizeof(UserRegs) };
        Ptrace.Call(Ptrace.GETREGSET, Tid, Ptrace.NT_PRSTATUS, (nint)(&io), "GETREGSET NT_PRSTATUS");
        return r;
    }

    public void SetRegs(in UserRegs regs)
    {
        UserRegs r = regs;
        var io = new Iovec { Base = (nint)(&r), Len = (nuint)sizeof(UserRegs) };
        Ptrace.Call(Ptrace.SETREGSET, Tid, Ptrace.NT_PRSTATUS, (nint)(&io), "SETREGSET NT_PRSTATUS");
    }

    public byte[] GetXState()
    {
        var buf = new byte[16384];
        fixed (byte* p = buf)
        {
            var io = new Iovec { Base = (nint)p, Len = (nuint)buf.Length };
            Ptrace.Call(Ptrace.GETREGSET, Tid, Ptrace.NT_X86_XSTATE, (nint)(&io), "GETREGSET NT_X86_XSTATE");
            Array.Resize(ref buf, (int)io.Len);
        }
        return buf;
    }

    public void SetXState(byte[] xstate)
    {
        fixed (byte* p = xstate)
        {
            var io = new Iovec { Base = (nint)p, Len = (nuint)xstate.Length };
            Ptrace.Call(Ptrace.SETREGSET, Tid, Ptrace.NT_X86_XSTATE, (nint)(&io), "SETREGSET NT_X86_XSTATE");
        }
    }

    public ulong GetSigMask()
    {
        ulong m;
        Ptrace.Call(Ptrace.GETSIGMASK, Tid, 8, (nint)(&m), "GETSIGMASK");
        return m;
    }

    public void SetSigMask(ulong mask)
    {
        Ptrace.Call(Ptrace.SETSIGMASK, Tid, 8, (nint)(&mask), "SETSIGMASK");
    }

    /// <summary>All queued siginfos (128 bytes each) of the private or the shared queue, without dequeuing.</summary>
    public List<byte[]> PeekSiginfo(bool shared)
    {
        var list = new List<byte[]>();
        var buf = new byte[128 * 32];
        while (true)
        {
            var args = new PeekSiginfoArgs { Off = (ulong)list.Count, Flags = shared ? (uint)Ptrace.PEEKSIGINFO_SHARED : 0, Nr = 32 };
            long n;
            fixed (byte* p = buf) n = Ptrace.Call(Ptrace.PEEKSIGINFO, Tid, (nint)(&args), (nint)p, "PEEKSIGINFO");
            for (int i = 0; i < n; i++) list.Add(buf.AsSpan(i * 128, 128).ToArray());
            if (n < 32) return list;
        }
    }

    public RseqConfiguration GetRseq()
    {
        RseqConfiguration c = default;
        Ptrace.Call(Ptrace.GET_RSEQ_CONFIGURATION, Tid, sizeof(RseqConfiguration), (nint)(&c), "GET_RSEQ_CONFIGURATION");
        return c;
    }

    /// <summary>
    /// Runs one system call inside the stopped task and returns its raw result (-errno on failure).
    /// The task's registers are left as the injection set them; the caller restores the saved set
    /// through <see cref="RestoreRegsAfterInjection"/> or replaces them before release.
    /// </summary>
    public long Inject(long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0)
    {
        RequireTracer();
        if (SyscallGadget == 0) throw new InvalidOperationException("no syscall gadget in the task");
        var r = _injectBase ??= GetRegs();
        var regs = r;
        regs.Rip = SyscallGadget;
        regs.Rax = (ulong)nr;
        regs.OrigRax = NoSyscall;
        regs.Rdi = (ulong)a1; regs.Rsi = (ulong)a2; regs.Rdx = (ulong)a3; regs.R10 = (ulong)a4; regs.R8 = (ulong)a5; regs.R9 = (ulong)a6;
        SetRegs(regs);
        Ptrace.Call(Ptrace.SYSCALL, Tid, 0, 0, "SYSCALL");
        WaitStop(expectSyscall: true);   // syscall-enter
        Ptrace.Call(Ptrace.SYSCALL, Tid, 0, 0, "SYSCALL");
        WaitStop(expectSyscall: true);   // syscall-exit
        return (long)GetRegs().Rax;
    }

    private UserRegs? _injectBase;

    /// <summary>Injects and throws a <see cref="SyscallException"/> naming the call on failure.</summary>
    public long InjectChecked(string name, long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0)
    {
        long r = Inject(nr, a1, a2, a3, a4, a5, a6);
        if (r < 0 && r > -4096) throw new SyscallException($"{name} (injected)", (int)-r, Tid);
        return r;
    }

    /// <summary>
    /// After injections, brings the task to a fresh interrupt stop and puts <paramref name="saved"/>
    /// back, so that a syscall it was stopped in is restarted by the kernel as usual.
    /// </summary>
    public void RestoreRegsAfterInjection(in UserRegs saved)
    {
        if (_injectBase != null)
        {
            Ptrace.Call(Ptrace.INTERRUPT, Tid, 0, 0, "INTERRUPT");
            Ptrace.Call(Ptrace.CONT, Tid, 0, 0, "CONT");
            WaitStop(expectEventStop: true);
            _injectBase = null;
        }
        SetRegs(saved);
    }

    /// <summary>Releases the task, giving back any held-back signal (or stopping it with SIGSTOP).</summary>
    public void Detach(int signal = 0)
    {
        if (!Attached) return;
        int sig = signal != 0 ? signal : DeferredSignals.Count > 0 ? DeferredSignals[0] : 0;
        Ptrace.Call(Ptrace.DETACH, Tid, 0, sig, "DETACH");
        Attached = false;
        foreach (var s in DeferredSignals.Skip(signal != 0 ? 0 : 1)) ProcessCalls.Kill(Tid, s);
    }

    /// <summary>Best-effort detach for cleanup paths; never throws.</summary>
    public void TryDetach()
    {
        try { Detach(); } catch (Exception) { Attached = false; }
    }

    public void Kill()
    {
        ProcessCalls.Kill(Tid, SIGKILL);
    }
}

public sealed class TaskGoneException(int tid, string how) : Exception($"task {tid} {how} while it was being traced")
{
    public int Tid { get; } = tid;
}
