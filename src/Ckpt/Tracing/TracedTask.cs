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

    /// <summary>Any 0f 05 (syscall) of process <paramref name="pid"/> in the vDSO or, failing that, in executable code of <paramref name="vmas"/>; 0 if none.</summary>
    public static ulong FindSyscallInstruction(int pid, IEnumerable<Proc.VmaInfo> vmas)
    {
        foreach (var v in vmas.Where(v => v.Exec && v.Path != "[vsyscall]").OrderBy(v => v.Path == "[vdso]" ? 0 : 1))
        {
            var buf = new byte[Math.Min(v.Length, 1UL << 20)];
            try { MemoryCalls.ReadRemote(pid, v.Start, buf); } catch (SyscallException) { continue; }
            for (int i = 0; i + 1 < buf.Length; i++)
                if (buf[i] == 0x0f && buf[i + 1] == 0x05) return v.Start + (ulong)i;
        }
        return 0;
    }
    public bool Attached { get; private set; }

    /// <summary>
    /// Signals that arrived while we held the task (taken at their signal-delivery stop, with their
    /// siginfo); given back when it is released (<see cref="Detach"/>).
    /// </summary>
    public List<(int Sig, byte[] Info)> DeferredSignals { get; } = new();

    /// <summary>si_code of a signal sent to one thread with tkill or tgkill (pthread_kill).</summary>
    public const int SI_TKILL = -6;

    /// <summary>Whether a held-back signal had been sent to its thread alone (tkill, tgkill: pthread_kill).</summary>
    public static bool SentToThread(byte[] info) => BitConverter.ToInt32(info, 8) == SI_TKILL;

    private TracedTask(int tid) { Tid = tid; }

    private static void RequireTracer()
    {
        if (!TracerThread.IsCurrent) throw new InvalidOperationException("ptrace used off the tracer thread");
    }

    /// <summary>
    /// The options of a seize: the injected calls of ckpt are not filtered by a seccomp filter of the
    /// task while it is traced (PTRACE_O_SUSPEND_SECCOMP; it ends with the trace).
    /// </summary>
    public const int DefaultOptions = Ptrace.O_TRACESYSGOOD | Ptrace.O_SUSPEND_SECCOMP;

    /// <summary>PTRACE_SEIZE; without O_SUSPEND_SECCOMP when that is refused (it needs CAP_SYS_ADMIN).</summary>
    private static void Seize(int tid, int options)
    {
        try { Ptrace.Call(Ptrace.SEIZE, tid, 0, options, "SEIZE"); }
        catch (SyscallException e) when (e.Errno == 1 /* EPERM */ && (options & Ptrace.O_SUSPEND_SECCOMP) != 0)
        {
            Ptrace.Call(Ptrace.SEIZE, tid, 0, options & ~Ptrace.O_SUSPEND_SECCOMP, "SEIZE");
        }
    }

    /// <summary>PTRACE_SETOPTIONS (the task is stopped).</summary>
    public void SetOptions(int options) => Ptrace.Call(Ptrace.SETOPTIONS, Tid, 0, options, "SETOPTIONS");

    /// <summary>PTRACE_SEIZE, then PTRACE_INTERRUPT and wait for the stop.</summary>
    public static TracedTask SeizeAndStop(int tid, int options = DefaultOptions)
    {
        RequireTracer();
        Seize(tid, options);
        var t = new TracedTask(tid) { Attached = true };
        t.Interrupt();
        return t;
    }

    /// <summary>
    /// PTRACE_SEIZE and PTRACE_INTERRUPT without waiting for the stop (a task of a frozen cgroup only
    /// stops once thawed); <see cref="WaitForInterrupt"/> waits for it.
    /// </summary>
    public static TracedTask SeizeNoWait(int tid, int options = DefaultOptions)
    {
        RequireTracer();
        Seize(tid, options);
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

    /// <summary>Whether <paramref name="sig"/> is one of job control's stop signals (SIGTSTP, SIGTTIN, SIGTTOU), which a process group orphaned ignores, unlike SIGSTOP.</summary>
    public static bool IsJobControlStop(int sig) => sig is 20 or 21 or 22;

    /// <summary>The id (in ckpt's pid namespace) of the last task this one forked or cloned while traced; 0 before any.</summary>
    public int LastNewTask { get; set; }

    /// <summary>The signal of the last event stop: a group-stop's stopping signal (a task seized while stopped by job control), or SIGTRAP.</summary>
    public int EventStopSignal { get; private set; }

    /// <summary>Stops a seized task at an interrupt (event) stop.</summary>
    public void Interrupt()
    {
        Ptrace.Call(Ptrace.INTERRUPT, Tid, 0, 0, "INTERRUPT");
        WaitStop(expectEventStop: true);
    }

    /// <summary>waitpid for this task; a task that exited or was killed instead of stopping throws <see cref="TaskGoneException"/>.</summary>
    private int WaitStopped()
    {
        int st = Ptrace.Wait(Tid);
        if (Ptrace.Stopped(st)) return st;
        Attached = false;
        string how = Ptrace.Exited(st) ? $"exited with status {Ptrace.ExitCode(st)}" : $"was killed by signal {Ptrace.TermSig(st)}";
        throw new TaskGoneException(Tid, how);
    }

    /// <summary>Waits for the next stop; signal-delivery stops are suppressed and remembered.</summary>
    private int WaitStop(bool expectEventStop = false, bool expectSyscall = false)
    {
        while (true)
        {
            int st = WaitStopped();
            int sig = Ptrace.StopSig(st), ev = Ptrace.Event(st);
            if (expectSyscall && sig == (SIGTRAP | 0x80)) return st;
            if (ev == Ptrace.EVENT_STOP)
            {
                // the signal of a group-stop (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU), SIGTRAP for an interrupt
                EventStopSignal = sig;
                if (expectEventStop) return st;
                // a group-stop or a stray interrupt stop while injecting: keep going
                Ptrace.Call(expectSyscall ? Ptrace.SYSCALL : Ptrace.CONT, Tid, 0, 0, "resume");
                continue;
            }
            if (ev != 0)
            {
                // a fork or clone the task made (an injected clone3): the new task's id as ckpt sees it (the
                // clone's result is the id in the task's own pid namespace)
                if (ev is Ptrace.EVENT_FORK or Ptrace.EVENT_VFORK or Ptrace.EVENT_CLONE)
                {
                    ulong msg = 0;
                    if (Ptrace.Raw(Ptrace.GETEVENTMSG, Tid, 0, (nint)(&msg)) == 0) LastNewTask = (int)msg;
                }
                Ptrace.Call(expectSyscall ? Ptrace.SYSCALL : Ptrace.CONT, Tid, 0, 0, "resume");
                continue;
            }
            // signal-delivery stop: hold the signal back, give it back on release (a SIGSTOP too: sent
            // while the task was held, or pending in a stopped task, dropped it would leave the task
            // running, or change a stopped one's pending signals)
            if (sig != SIGTRAP) DeferredSignals.Add((sig, GetSiginfo()));
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

    /// <summary>The thread's xstate (as many bytes as the kernel gives: its XSAVE layout's size).</summary>
    public byte[] GetXState()
    {
        // read into a buffer kept for the tracer thread, then copied at its size (a fresh 16 KiB array per
        // thread was new memory each time: page faults that cost more than the call)
        var buf = t_xstateBuffer ??= GC.AllocateUninitializedArray<byte>(16384);
        fixed (byte* p = buf)
        {
            var io = new Iovec { Base = (nint)p, Len = (nuint)buf.Length };
            Ptrace.Call(Ptrace.GETREGSET, Tid, Ptrace.NT_X86_XSTATE, (nint)(&io), "GETREGSET NT_X86_XSTATE");
            return buf.AsSpan(0, (int)io.Len).ToArray();
        }
    }
    [ThreadStatic] private static byte[]? t_xstateBuffer;

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
        var buf = stackalloc byte[128 * 32];
        while (true)
        {
            var args = new PeekSiginfoArgs { Off = (ulong)list.Count, Flags = shared ? (uint)Ptrace.PEEKSIGINFO_SHARED : 0, Nr = 32 };
            long n = Ptrace.Call(Ptrace.PEEKSIGINFO, Tid, (nint)(&args), (nint)buf, "PEEKSIGINFO");
            for (int i = 0; i < n; i++) list.Add(new ReadOnlySpan<byte>(buf + i * 128, 128).ToArray());
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

    // ------------------------------------------------------------ batched injection

    public const int SIGILL = 4, SIGBUS = 7, SIGFPE = 8, SIGSEGV = 11, SIGSYS = 31;

    /// <summary>One system call of a batch: number, six arguments, and whether an error result (-4095..-1) ends the batch.</summary>
    public readonly record struct BatchCall(long Nr, long A1 = 0, long A2 = 0, long A3 = 0, long A4 = 0, long A5 = 0, long A6 = 0, bool StopOnError = false);

    /// <summary>Size of one descriptor of a batch in the task's memory.</summary>
    public const int BatchDescriptorSize = 64;
    /// <summary>Result reported for a call of a batch that did not run (a call before it stopped the batch).</summary>
    public const long BatchNotRun = long.MinValue;

    /// <summary>
    /// The routine that runs a batch inside the task (position independent, 81 bytes; placed in an
    /// executable page of the task, see <see cref="InjectBatch"/>). rbx = the first descriptor, r12 = a
    /// 32-byte slot for SIGTRAP's action. A descriptor (64 bytes): dword nr (0xffffffff ends the array),
    /// dword flags (bit 0: stop at an error result), then rdi, rsi, rdx, r10, r8, r9 (8 bytes each) and
    /// the result slot at +56.
    /// </summary>
    //  0: 8b 03                mov eax, [rbx]               loop: nr (zero-extended into rax)
    //  2: 83 f8 ff             cmp eax, -1
    //  5: 74 32                je done (0x39)               the terminator
    //  7: 48 8b 7b 08          mov rdi, [rbx+8]
    //  b: 48 8b 73 10          mov rsi, [rbx+16]
    //  f: 48 8b 53 18          mov rdx, [rbx+24]
    // 13: 4c 8b 53 20          mov r10, [rbx+32]
    // 17: 4c 8b 43 28          mov r8, [rbx+40]
    // 1b: 4c 8b 4b 30          mov r9, [rbx+48]
    // 1f: 0f 05                syscall                      (clobbers rcx, r11 only)
    // 21: 48 89 43 38          mov [rbx+56], rax            the result
    // 25: f6 43 04 01          test byte [rbx+4], 1         stop at an error?
    // 29: 74 08                je next (0x33)
    // 2b: 48 3d 01 f0 ff ff    cmp rax, -4095
    // 31: 73 06                jae done (0x39)              -4095..-1: stop, rbx still on this descriptor
    // 33: 48 83 c3 40          add rbx, 64                  next:
    // 37: eb c7                jmp loop (0x00)
    // 39: b8 0d 00 00 00       mov eax, 13 (rt_sigaction)   done: SIGTRAP's action into [r12], read just
    // 3e: bf 05 00 00 00       mov edi, 5 (SIGTRAP)               before the trap (the kernel resets an
    // 43: 31 f6                xor esi, esi (act = NULL)          ignored SIGTRAP to SIG_DFL when it forces
    // 45: 4c 89 e2             mov rdx, r12 (oldact)              the int3 trap; the tracer puts it back)
    // 48: 41 ba 08 00 00 00    mov r10d, 8 (sigsetsize)
    // 4e: 0f 05                syscall
    // 50: cc                   int3                         SIGTRAP: the tracer takes over (rip = 0x51)
    public static ReadOnlySpan<byte> BatchCode =>
    [
        0x8b, 0x03, 0x83, 0xf8, 0xff, 0x74, 0x32,
        0x48, 0x8b, 0x7b, 0x08, 0x48, 0x8b, 0x73, 0x10, 0x48, 0x8b, 0x53, 0x18,
        0x4c, 0x8b, 0x53, 0x20, 0x4c, 0x8b, 0x43, 0x28, 0x4c, 0x8b, 0x4b, 0x30,
        0x0f, 0x05, 0x48, 0x89, 0x43, 0x38,
        0xf6, 0x43, 0x04, 0x01, 0x74, 0x08, 0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, 0x73, 0x06,
        0x48, 0x83, 0xc3, 0x40, 0xeb, 0xc7,
        0xb8, 0x0d, 0x00, 0x00, 0x00, 0xbf, 0x05, 0x00, 0x00, 0x00, 0x31, 0xf6, 0x4c, 0x89, 0xe2,
        0x41, 0xba, 0x08, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xcc,
    ];
    /// <summary>Offset in <see cref="BatchCode"/> of the instruction after the final int3 (rip at the trap).</summary>
    public const int BatchTrapOffset = 0x51;

    /// <summary>Whether a raw system call result is an error (-4095..-1).</summary>
    public static bool IsError(long result) => (ulong)result >= unchecked((ulong)-4095L);

    /// <summary>
    /// Runs <paramref name="calls"/> inside the stopped task with one PTRACE_CONT: the descriptors are
    /// written at <paramref name="descAddr"/> (64 bytes per call plus a 64-byte terminator, in writable
    /// memory of the task), the routine <see cref="BatchCode"/> placed beforehand at
    /// <paramref name="codeAddr"/> (executable) runs them in order and ends with int3. Fills
    /// <paramref name="results"/> (raw results, -errno on failure; <see cref="BatchNotRun"/> for calls
    /// after one that stopped the batch) and returns how many calls ran. Registers are left as for
    /// <see cref="Inject"/> (same saved base, so <see cref="RestoreRegsAfterInjection"/> applies).
    /// The task's signals must be blocked (as in every vessel): SIGTRAP is unblocked for the run only, so
    /// that the forced trap leaves its action alone (an ignored SIGTRAP, reset by the kernel, is put back);
    /// while a SIGTRAP is pending the calls are injected one by one instead. A fault in the routine (a
    /// descriptor area that went away, a call that unmapped the code) throws <see cref="InjectionFaultException"/>.
    /// </summary>
    public int InjectBatch(ulong codeAddr, ulong descAddr, ReadOnlySpan<BatchCall> calls, Span<long> results)
    {
        RequireTracer();
        if (codeAddr == 0 || descAddr == 0) throw new InvalidOperationException("no batch routine in the task");
        if (results.Length < calls.Length) throw new ArgumentException("results shorter than the batch", nameof(results));
        int n = calls.Length;
        results[..n].Fill(BatchNotRun);
        if (n == 0) return 0;
        if (SignalPending(SIGTRAP)) return InjectOneByOne(calls, results);

        var buf = new byte[(n + 1) * BatchDescriptorSize];
        for (int i = 0; i < n; i++)
        {
            var d = MemoryMarshal.Cast<byte, long>(buf.AsSpan(i * BatchDescriptorSize, BatchDescriptorSize));
            var c = calls[i];
            d[0] = (uint)c.Nr | (c.StopOnError ? 1L << 32 : 0);
            d[1] = c.A1; d[2] = c.A2; d[3] = c.A3; d[4] = c.A4; d[5] = c.A5; d[6] = c.A6;
            d[7] = BatchNotRun;
        }
        BitConverter.TryWriteBytes(buf.AsSpan(n * BatchDescriptorSize), -1L);   // terminator; its +8..+40: SIGTRAP's action
        MemoryCalls.WriteRemote(Tid, descAddr, buf);
        ulong actSlot = descAddr + (ulong)(n * BatchDescriptorSize + 8);

        var regs = _injectBase ??= GetRegs();
        regs.Rip = codeAddr;
        regs.Rbx = descAddr;
        regs.R12 = actSlot;
        regs.Rax = 0;
        regs.OrigRax = NoSyscall;
        SetRegs(regs);
        ulong mask = GetSigMask();
        const ulong TrapBit = 1UL << (SIGTRAP - 1);
        if ((mask & TrapBit) != 0) SetSigMask(mask & ~TrapBit);
        try { regs = RunToTrap(codeAddr, descAddr, calls); }
        finally { if ((mask & TrapBit) != 0 && Attached) SetSigMask(mask); }

        MemoryCalls.ReadRemote(Tid, descAddr, buf);
        ulong at = (regs.Rbx - descAddr) / BatchDescriptorSize;
        if (regs.Rbx < descAddr || at > (ulong)n) throw new InjectionFaultException(Tid, $"injected batch of {n} calls in task {Tid} ended with rbx 0x{regs.Rbx:x} outside its descriptors");
        int done = (int)at == n ? n : (int)at + 1;
        for (int i = 0; i < done; i++) results[i] = BitConverter.ToInt64(buf, i * BatchDescriptorSize + 56);
        if (BitConverter.ToUInt64(buf, n * BatchDescriptorSize + 8) == 1 /* SIG_IGN */)
            InjectChecked("rt_sigaction(SIGTRAP, SIG_IGN) after a batch", Nr.rt_sigaction, SIGTRAP, (long)actSlot, 0, 8);
        return done;
    }

    /// <summary>The batch run by single injections (a pending SIGTRAP would be taken by the batch's trap).</summary>
    private int InjectOneByOne(ReadOnlySpan<BatchCall> calls, Span<long> results)
    {
        for (int i = 0; i < calls.Length; i++)
        {
            var c = calls[i];
            results[i] = Inject(c.Nr, c.A1, c.A2, c.A3, c.A4, c.A5, c.A6);
            if (c.StopOnError && IsError(results[i])) return i + 1;
        }
        return calls.Length;
    }

    /// <summary>PTRACE_CONT, then waits for the batch routine's int3 (its SIGTRAP is suppressed, never delivered).</summary>
    private UserRegs RunToTrap(ulong codeAddr, ulong descAddr, ReadOnlySpan<BatchCall> calls)
    {
        ulong trap = codeAddr + BatchTrapOffset;
        Ptrace.Call(Ptrace.CONT, Tid, 0, 0, "CONT");
        while (true)
        {
            int st = WaitStopped();
            int sig = Ptrace.StopSig(st), ev = Ptrace.Event(st);
            if (ev != 0 || sig == (SIGTRAP | 0x80))
            {
                // a group-stop, a stray interrupt or event stop: keep going
                Ptrace.Call(Ptrace.CONT, Tid, 0, 0, "resume");
                continue;
            }
            // a signal-delivery stop: resuming with 0 suppresses the signal
            var regs = GetRegs();
            if (sig == SIGTRAP && regs.Rip == trap) return regs;
            var info = GetSiginfo();
            int code = BitConverter.ToInt32(info, 8);
            bool fault = sig is SIGSEGV or SIGBUS or SIGILL or SIGFPE or SIGSYS || (sig == SIGTRAP && code > 0);
            if (fault)
            {
                long i = regs.Rbx >= descAddr ? (long)((regs.Rbx - descAddr) / BatchDescriptorSize) : -1;
                string which = i >= 0 && i < calls.Length ? $"call {i} (syscall {calls[(int)i].Nr})" : $"rbx 0x{regs.Rbx:x}";
                string addr = sig is SIGSEGV or SIGBUS ? $", address 0x{BitConverter.ToUInt64(info, 16):x}" : "";
                throw new InjectionFaultException(Tid,
                    $"injected batch of {calls.Length} calls in task {Tid} faulted: signal {sig} (code {code}{addr}) at rip 0x{regs.Rip:x}, at {which}");
            }
            // a signal sent by someone else (only SIGTRAP is unblocked): hold it back like WaitStop does
            DeferredSignals.Add((sig, info));
            Ptrace.Call(Ptrace.CONT, Tid, 0, 0, "CONT");
        }
    }

    private byte[] GetSiginfo()
    {
        var b = new byte[128];
        fixed (byte* p = b) Ptrace.Call(Ptrace.GETSIGINFO, Tid, 0, (nint)p, "GETSIGINFO");
        return b;
    }

    /// <summary>Whether <paramref name="sig"/> is queued for the task (its own queue or its process's).</summary>
    private bool SignalPending(int sig)
    {
        var buf = stackalloc byte[128 * 16];
        foreach (bool shared in (ReadOnlySpan<bool>)[false, true])
        {
            for (ulong off = 0; ; off += 16)
            {
                var args = new PeekSiginfoArgs { Off = off, Flags = shared ? (uint)Ptrace.PEEKSIGINFO_SHARED : 0, Nr = 16 };
                long got = Ptrace.Call(Ptrace.PEEKSIGINFO, Tid, (nint)(&args), (nint)buf, "PEEKSIGINFO");
                for (int k = 0; k < got; k++) if (*(int*)(buf + k * 128) == sig) return true;
                if (got < 16) break;
            }
        }
        return false;
    }

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
        if (BeginFreshStop()) EndFreshStop();
        SetRegs(saved);
    }

    private bool _freshStopPending;

    /// <summary>
    /// The first half of <see cref="RestoreRegsAfterInjection"/>: after injections, asks the task for a
    /// fresh interrupt stop (it runs to reach it). Started for every thread of a process before any is
    /// waited for: a thread must be scheduled to stop, and one at a time, behind threads already let go
    /// on a busy machine, that cost a time slice per thread. False when no injection ran.
    /// </summary>
    public bool BeginFreshStop()
    {
        if (_injectBase == null || _freshStopPending) return _freshStopPending;
        Ptrace.Call(Ptrace.INTERRUPT, Tid, 0, 0, "INTERRUPT");
        Ptrace.Call(Ptrace.CONT, Tid, 0, 0, "CONT");
        return _freshStopPending = true;
    }

    /// <summary>Waits for the stop asked for by <see cref="BeginFreshStop"/>, if one was.</summary>
    public void EndFreshStop()
    {
        if (!_freshStopPending) return;
        WaitStop(expectEventStop: true);
        _freshStopPending = false;
        _injectBase = null;
    }

    /// <summary>
    /// Releases the task with <paramref name="signal"/> (a stop asked for by the caller), then gives back
    /// every held-back signal, sent again: the signal of a detach is dropped when the task is at an
    /// interrupt stop, as it is after injected calls (a SIGSTOP sent during a checkpoint left the process
    /// running). One sent to this thread alone (pthread_kill: a runtime that suspends a thread for its
    /// garbage collector waits for that very thread) goes to it again (tkill); one queued with its data
    /// (sigqueue, a POSIX timer, SIGIO) is queued again with its siginfo (rt_sigqueueinfo, which takes
    /// such codes from another process); the rest (kill, the kernel's) go to the process again (kill).
    /// </summary>
    public void Detach(int signal = 0)
    {
        if (!Attached) return;
        Ptrace.Call(Ptrace.DETACH, Tid, 0, signal, "DETACH");
        Attached = false;
        // a stop given with the detach is taken first: a SIGSTOP of theirs sent before it would be the one
        // taken (a second SIGSTOP pending is dropped), and none would stay pending as one was
        if (signal != 0 && DeferredSignals.Count > 0) WaitStopped(Tid);
        foreach (var (sig, info) in DeferredSignals)
        {
            if (SentToThread(info)) Sys.Call(Nr.tkill, Tid, sig);
            else if (BitConverter.ToInt32(info, 8) < 0)
            {
                fixed (byte* p = info)
                    if (Sys.Call(Nr.rt_sigqueueinfo, Tid, sig, (long)p) != 0) ProcessCalls.Kill(Tid, sig);
            }
            else ProcessCalls.Kill(Tid, sig);
        }
    }

    /// <summary>Waits (up to ~200 ms) until task <paramref name="pid"/> is stopped; false if it is not by then, or is gone.</summary>
    public static bool WaitStopped(int pid)
    {
        for (int i = 0; i < 200; i++)
        {
            try { if (Proc.ProcStat.Read(pid).State == 'T') return true; }
            catch (IOException) { return false; }
            Thread.Sleep(1);
        }
        return false;
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

/// <summary>The batch routine running in a task took a fault (the signal was not delivered; the task stays stopped and usable).</summary>
public sealed class InjectionFaultException(int tid, string message) : Exception(message)
{
    public int Tid { get; } = tid;
}

public sealed class TaskGoneException(int tid, string how) : Exception($"task {tid} {how} while it was being traced")
{
    public int Tid { get; } = tid;
}
