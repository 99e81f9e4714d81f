using System.Runtime.InteropServices;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;
using Ckpt.Tracing;

namespace Ckpt.Kinds;

/// <summary>
/// Per-thread CPU and kernel state: general registers, fs/gs base, the full xstate (x87, SSE, AVX,
/// AVX-512), the blocked mask, private pending signals with their siginfo, sigaltstack, the rseq
/// registration, clear-child-tid and the robust futex list, its name, timer slack, parent-death
/// signal, scheduling policy and priority, nice value and CPU affinity (all per thread on Linux).
/// Restored last: the trampoline is removed, the registers loaded, and the task released by the
/// restorer, which sets the scheduling attributes and affinity (<see cref="Release"/>).
/// </summary>
public sealed class CpuState : IStateKind
{
    public static readonly CpuState Instance = new();
    public string Name => "cpu";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.Thread];
    public int FinishOrder => 100;

    public const long ERESTARTSYS = -512, ERESTARTNOINTR = -513, ERESTARTNOHAND = -514, ERESTART_RESTARTBLOCK = -516;
    private const ulong NrNanosleep = 35, NrClockNanosleep = 230, TIMER_ABSTIME = 1;

    private sealed class Saved
    {
        public int Tid;
        public UserRegs Regs;
        public byte[] XState = [];
        public ulong SigMask;
        public List<byte[]> Pending = new();
        public ulong RseqPtr; public uint RseqLen, RseqSig;
        public ulong TidAddress, RobustHead, RobustLen;
        public StackT AltStack;
        public string? Comm;
        /// <summary>Appended fields (absent in older images: null).</summary>
        public Extra? More;
        /// <summary>The thread's I/O priority (appended field after More's; null in older images).</summary>
        public int? Ioprio;
        /// <summary>The thread's own credentials, where they differ from the leader's (appended field; null: the leader's).</summary>
        public Credentials.ThreadCredentials? Credentials;
    }

    /// <summary>Timer slack (ns), parent-death signal, scheduling policy (SCHED_RESET_ON_FORK included) and priority, nice, CPU affinity (16 words).</summary>
    private sealed record Extra(ulong TimerSlack, int PdeathSig, int Policy, int Priority, int Nice, ulong[] Affinity);

    private const int PR_SET_PDEATHSIG = 1, PR_GET_PDEATHSIG = 2, PR_GET_TIMERSLACK = 30, PR_SET_TIMERSLACK = 29, PR_GET_NAME = 16;
    /// <summary>Where PR_GET_NAME puts a thread's name in the scratch output (after the tid address, stack_t and parent-death signal).</summary>
    private static readonly int NameAt = 8 + StackT.SizeOf + 8;
    private const int AffinityWords = 16;

    private sealed class SavedThreads { public readonly List<Saved> List = new(); public bool Created; }

    /// <summary>One Thread record per thread, the leader first.</summary>
    public void Checkpoint(CheckpointContext ctx)
    {
        var own = ctx.Threads.Count > 1 ? new ThreadCredentialsAhead(ctx.Pid, ctx.Threads.Select(t => t.Task.Tid).ToArray()) : null;
        int i = 0;
        foreach (var (task, regs, mask) in ctx.Threads) CheckpointThread(ctx, task, regs, mask, own, i++);
    }

    /// <summary>
    /// Each thread's own credentials (<see cref="Credentials.ThreadOwn"/>), read from /proc on a helper
    /// thread while the tracer thread injects into the threads one by one: reading a thread's status
    /// costs about 30 µs, 30 ms for a thousand threads.
    /// </summary>
    private sealed class ThreadCredentialsAhead
    {
        private readonly byte[]?[] _own;
        private int _done;
        private Exception? _error;
        private readonly object _lock = new();

        public ThreadCredentialsAhead(int pid, int[] tids)
        {
            _own = new byte[tids.Length][];
            TracerThread.StartHelper("ckpt-creds", () =>
            {
                try
                {
                    var lines = Credentials.CredentialLines(Native.FileCalls.ReadText($"/proc/{pid}/status")).ToArray();
                    for (int i = 0; i < tids.Length; i++)
                    {
                        var c = tids[i] == pid ? null : Credentials.ThreadOwn(pid, tids[i], lines);
                        lock (_lock) { _own[i] = c; _done = i + 1; Monitor.PulseAll(_lock); }
                    }
                }
                catch (Exception e) { lock (_lock) { _error = e; Monitor.PulseAll(_lock); } }
            });
        }

        /// <summary>Thread <paramref name="i"/>'s own credentials (null: the leader's), once read.</summary>
        public byte[]? Get(int i)
        {
            lock (_lock)
            {
                while (_done <= i && _error == null) Monitor.Wait(_lock);
                if (_done <= i) throw new IOException($"cannot read a thread's credentials: {_error!.Message}", _error);
                return _own[i];
            }
        }
    }

    private static unsafe void CheckpointThread(CheckpointContext ctx, TracedTask task, UserRegs regs, ulong sigmask, ThreadCredentialsAhead? creds, int index)
    {
        var rseq = task.GetRseq();
        var p = new PayloadWriter();
        p.I32(task.Tid);
        p.Raw(MmState.StructBytes(ref regs));
        p.Bytes(task.GetXState());
        p.U64(sigmask);
        var pending = task.PeekSiginfo(shared: false);
        // a signal sent to this thread alone that the checkpoint's calls took out of its queue (held back by
        // the tracer) is pending for it (SignalState saves the others with the process's)
        foreach (var (_, info) in task.DeferredSignals) if (Tracing.TracedTask.SentToThread(info)) pending.Add(info);
        p.U32((uint)pending.Count);
        foreach (var si in pending) p.Raw(si);
        p.U64(rseq.RseqAbiPointer).U32(rseq.RseqAbiSize).U32(rseq.Signature);
        const int PR_GET_TID_ADDRESS = 40;
        // the calls only the thread itself can make, in one round trip: clear-child-tid address,
        // sigaltstack, timer slack, parent-death signal
        const int O = CheckpointContext.OutOffset;
        long o = (long)ctx.Scratch + O;
        var res = ctx.InjectAll(task,
            ("prctl(PR_GET_TID_ADDRESS)", Nr.prctl, PR_GET_TID_ADDRESS, o, 0, true),
            ("sigaltstack", Nr.sigaltstack, 0, o + 8, 0, true),
            ("prctl(PR_GET_TIMERSLACK)", Nr.prctl, PR_GET_TIMERSLACK, 0, 0, true),
            ("prctl(PR_GET_PDEATHSIG)", Nr.prctl, PR_GET_PDEATHSIG, o + 8 + StackT.SizeOf, 0, true),
            ("prctl(PR_GET_NAME)", Nr.prctl, PR_GET_NAME, o + NameAt, 0, true));
        var outs = ctx.ReadScratch(O, NameAt + 16);
        p.U64(BitConverter.ToUInt64(outs));
        unsafe
        {
            ulong head = 0, len = 0;
            Sys.Check("get_robust_list", task.Tid, Nr.get_robust_list, task.Tid, (long)&head, (long)&len);
            p.U64(head).U64(len);
        }
        p.Raw(outs.AsSpan(8, StackT.SizeOf));
        // added in format 1: per-thread name (as /proc/PID/task/TID/comm shows it, read by the thread itself)
        var name = outs.AsSpan(NameAt, 16);
        int nul = name.IndexOf((byte)0);
        p.Str(System.Text.Encoding.UTF8.GetString(nul >= 0 ? name[..nul] : name));
        // appended fields: timer slack, parent-death signal (both only readable by the thread itself),
        // scheduling policy and priority, nice, CPU affinity (read by tid from ckpt)
        p.U64((ulong)res[2]);
        p.I32(BitConverter.ToInt32(outs.AsSpan(8 + StackT.SizeOf)));
        int policy = ProcessCalls.SchedGetScheduler(task.Tid);
        if (policy < 0) throw SyscallException.Last("sched_getscheduler", task.Tid);
        int prio = 0;
        if (ProcessCalls.SchedGetParam(task.Tid, &prio) < 0) throw SyscallException.Last("sched_getparam", task.Tid);
        Marshal.SetLastPInvokeError(0);
        int nice = ProcessCalls.GetPriority(0 /* PRIO_PROCESS: of a tid, that thread's */, task.Tid);
        if (nice == -1 && Marshal.GetLastPInvokeError() != 0) throw SyscallException.Last("getpriority", task.Tid);
        p.I32(policy).I32(prio).I32(nice);
        var mask = ProcessCalls.GetAffinity(task.Tid);
        int words = mask.Length;
        while (words > 1 && mask[words - 1] == 0) words--;
        p.Bytes(MemoryMarshal.AsBytes(mask.AsSpan(0, words)));
        int ioprio = ProcessCalls.IoprioGet(task.Tid);   // appended field: the I/O priority (ionice)
        if (ioprio < 0) throw SyscallException.Last("ioprio_get", task.Tid);
        p.I32(ioprio);
        // appended field: the thread's own credentials, when they are not the leader's
        var own = creds?.Get(index);
        p.Bool(own != null);
        if (own != null)
        {
            p.Raw(own);
            ctx.Log.Debug($"pid {ctx.Pid}: thread {task.Tid} has credentials of its own");
        }
        ctx.Image.Write(RecordKind.Thread, p);
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        var s = new Saved();
        s.Tid = r.I32();
        s.Regs = MmState.FromBytes<UserRegs>(r.Raw(UserRegs.Size));
        s.XState = r.Bytes().ToArray();
        s.SigMask = r.U64();
        uint n = r.U32();
        for (int i = 0; i < n; i++) s.Pending.Add(r.Raw(128).ToArray());
        s.RseqPtr = r.U64(); s.RseqLen = r.U32(); s.RseqSig = r.U32();
        s.TidAddress = r.U64(); s.RobustHead = r.U64(); s.RobustLen = r.U64();
        s.AltStack = MmState.FromBytes<StackT>(r.Raw(StackT.SizeOf));
        if (!r.AtEnd) s.Comm = r.Str();
        if (!r.AtEnd) s.More = new Extra(r.U64(), r.I32(), r.I32(), r.I32(), r.I32(), AffinityMask(r.Bytes(), rec));
        if (!r.AtEnd) s.Ioprio = r.I32();
        if (!r.AtEnd && r.Bool()) s.Credentials = Credentials.ReadThreadOwn(ref r);
        r.End();
        if (s.XState.Length != ctx.Header.XstateSize)
            throw new ImageFormatException($"Thread record at offset {rec.Offset}: xstate of {s.XState.Length} bytes, header says {ctx.Header.XstateSize}");
        var all = ctx.State<SavedThreads>().List;
        if (ctx.LeaderExited ? s.Tid == ctx.Pid : all.Count == 0 && s.Tid != ctx.Pid)
            throw new ImageFormatException(ctx.LeaderExited
                ? $"Thread record at offset {rec.Offset}: thread {s.Tid} is the main thread, which had exited"
                : $"Thread record at offset {rec.Offset}: the first thread is {s.Tid}, not the leader {ctx.Pid}");
        all.Add(s);
    }

    private static ulong[] AffinityMask(ReadOnlySpan<byte> b, Record rec)
    {
        if (b.Length == 0 || b.Length % 8 != 0 || b.Length > AffinityWords * 8)
            throw new ImageFormatException($"Thread record at offset {rec.Offset}: CPU affinity of {b.Length} bytes");
        var mask = new ulong[AffinityWords];
        b.CopyTo(MemoryMarshal.AsBytes(mask.AsSpan()));
        return mask;
    }

    private static string PolicyName(int policy)
    {
        string name = (policy & ~ProcessCalls.SCHED_RESET_ON_FORK) switch
        {
            ProcessCalls.SCHED_OTHER => "other", ProcessCalls.SCHED_FIFO => "fifo", ProcessCalls.SCHED_RR => "rr",
            ProcessCalls.SCHED_BATCH => "batch", ProcessCalls.SCHED_IDLE => "idle", ProcessCalls.SCHED_DEADLINE => "deadline",
            int p => p.ToString(),
        };
        return (policy & ProcessCalls.SCHED_RESET_ON_FORK) != 0 ? name + "|reset_on_fork" : name;
    }

    public void Finish(RestoreContext ctx)
    {
        var all = ctx.State<SavedThreads>().List;
        if (all.Count == 0) throw new ImageFormatException("image holds no thread");
        var leader = ctx.Vessel;
        CreateThreads(ctx);
        foreach (var s in all.Skip(ctx.LeaderExited ? 0 : 1)) RestoreThread(ctx, ctx.OtherThreads.First(t => t.Tid == s.Tid), s);
        if (ctx.LeaderExited) ExitAgain(ctx);
        else RestoreThread(ctx, leader, all[0], last: true);
    }

    /// <summary>
    /// A main thread that had exited while the other threads ran (a zombie leader): the vessel, which is
    /// that thread, makes its last calls, then is left to run only <c>exit(0)</c> from a syscall
    /// instruction of the process (its vDSO's, else its code's: the trampoline is gone by then) with every
    /// signal blocked: it exits as soon as ckpt lets it go, and is a zombie leader again.
    /// </summary>
    private static void ExitAgain(RestoreContext ctx)
    {
        var task = ctx.Vessel;
        ulong gadget = TracedTask.FindSyscallInstruction(ctx.Pid, ProcMaps.ReadMaps(ctx.Pid).Where(v => v.Start != ctx.Trampoline));
        ProcessAttributes.FinishDumpable(ctx);   // after the credentials, and after the last write through /proc
        if (gadget != 0) task.InjectChecked("munmap trampoline", Nr.munmap, (long)ctx.Trampoline, RestoreContext.TrampolineSize);
        else { gadget = ctx.Trampoline; ctx.Log.Info($"pid {ctx.Pid}: no syscall instruction to exit the main thread from; the trampoline stays mapped"); }
        var regs = task.GetRegs();
        regs.Rip = gadget;
        regs.Rax = (ulong)Nr.exit;
        regs.Rdi = 0;
        regs.OrigRax = ulong.MaxValue;
        task.SetSigMask(ulong.MaxValue);
        task.SetRegs(regs);
    }


    /// <summary>
    /// Creates the other threads of the process (once; later calls do nothing), with their saved tids and
    /// nothing else of their state. The other threads are cloned from the leader with their own tids
    /// (clone3 set_tid); traced from birth (PTRACE_O_TRACECLONE), they never run before their registers
    /// are loaded. Called by <see cref="Finish"/>, and earlier by a kind whose objects name a thread
    /// (a POSIX timer that signals one: <see cref="PosixTimers"/>).
    /// </summary>
    public static void CreateThreads(RestoreContext ctx)
    {
        var threads = ctx.State<SavedThreads>();
        if (threads.Created) return;
        threads.Created = true;
        // the seccomp filters all threads start with: in the leader first, inherited (shared) by each thread made
        if (threads.List.Count > 1) Seccomp.InstallShared(ctx);
        foreach (var s in threads.List.Skip(ctx.LeaderExited ? 0 : 1)) ctx.OtherThreads.Add(CreateThread(ctx, s.Tid));
    }

    /// <summary>Whether thread <paramref name="tid"/> has credentials of its own in the image (set on it by <see cref="Credentials.SetThreadOwn"/>).</summary>
    public static bool HasOwnCredentials(RestoreContext ctx, int tid) => ctx.State<SavedThreads>().List.Any(x => x.Tid == tid && x.Credentials != null);

    /// <summary>The tids of the image's threads of this process (the leader first), as read so far.</summary>
    public static IEnumerable<int> SavedTids(RestoreContext ctx) => ctx.State<SavedThreads>().List.Select(s => s.Tid);

    /// <summary>A thread of the vessel with tid <paramref name="tid"/>, traced and stopped; <paramref name="hint"/>: what to do when the tid is taken.</summary>
    internal static unsafe TracedTask CreateThread(RestoreContext ctx, int tid, string hint = "stop the process that holds it")
    {
        const ulong CLONE_VM = 0x100, CLONE_FS = 0x200, CLONE_FILES = 0x400, CLONE_SIGHAND = 0x800, CLONE_THREAD = 0x10000, CLONE_SYSVSEM = 0x40000;
        var args = new CloneArgs { Flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM };
        var t = Vessel.InjectClone(ctx.Vessel, ctx.Scratch, args, tid, "thread id", hint);
        t.SyscallGadget = ctx.Trampoline;
        return t;
    }

    /// <summary>Per-thread kernel state by injection into that thread, then its mask, xstate and registers.</summary>
    private static void RestoreThread(RestoreContext ctx, TracedTask task, Saved s, bool last = false)
    {
        // the thread's own calls in one batch (one ptrace round trip)
        var batch = task == ctx.Vessel ? ctx.Batch : ctx.BatchFor(task);
        var comm = s.Comm != null && task != ctx.Vessel ? System.Text.Encoding.UTF8.GetBytes(s.Comm + "\0") : null;
        batch.Reserve(5, StackT.SizeOf + 8 + (comm?.Length ?? 0));
        batch.AddChecked("set_tid_address", Nr.set_tid_address, (long)s.TidAddress);
        if (s.RobustLen != 0) batch.AddChecked("set_robust_list", Nr.set_robust_list, (long)s.RobustHead, (long)s.RobustLen);
        if ((s.AltStack.Flags & 2 /* SS_DISABLE */) == 0)
        {
            var ss = s.AltStack;
            ss.Flags &= ~1; // SS_ONSTACK is a report, not a setting
            ulong a = batch.AddData(MmState.StructBytes(ref ss));
            batch.AddChecked("sigaltstack", Nr.sigaltstack, (long)a, 0);
        }
        if (s.RseqPtr != 0) batch.AddChecked("rseq", Nr.rseq, (long)s.RseqPtr, s.RseqLen, 0, s.RseqSig);
        if (comm != null)
        {
            ulong name = batch.AddData(comm);
            batch.AddChecked("prctl(PR_SET_NAME)", Nr.prctl, 15 /* PR_SET_NAME */, (long)name);
        }
        batch.Flush();
        // its own credentials (before the parent-death signal, which a change of credentials clears)
        if (s.Credentials != null && task != ctx.Vessel) Credentials.SetThreadOwn(ctx, task, s.Credentials);
        if (s.More is { } m)
        {
            // 0 would mean "the default" (the slack inherited at creation); an RT thread has 0 and ignores it
            if (m.TimerSlack != 0)
            {
                long rc = task.Inject(Nr.prctl, PR_SET_TIMERSLACK, (long)m.TimerSlack);
                if (rc < 0) ctx.Log.Info($"thread {s.Tid}: timer slack {m.TimerSlack} ns could not be restored ({Errors.Describe((int)-rc)})");
            }
            // after the credentials (FinishOrder 70), whose change clears it
            if (m.PdeathSig != 0)
            {
                // the root's parent was outside the tree; its parent now is ckpt's tracer thread, which exits
                // at the end of the restart (or ckpt itself with --detach): the signal would come at once
                if (ctx.Session.Processes[0] == ctx)
                    ctx.Log.Info($"thread {s.Tid}: parent-death signal {m.PdeathSig} not restored: the root's parent was outside the tree (the signal would come as soon as ckpt lets go)");
                else
                {
                    long rc = task.Inject(Nr.prctl, PR_SET_PDEATHSIG, m.PdeathSig);
                    if (rc < 0) ctx.Log.Info($"thread {s.Tid}: parent-death signal {m.PdeathSig} could not be restored ({Errors.Describe((int)-rc)})");
                }
            }
        }
        // pending signals go in while everything is blocked (set when the vessel was seized)
        foreach (var si in s.Pending)
        {
            int sig = BitConverter.ToInt32(si);
            ulong a = ctx.PutScratch(0, si);
            task.InjectChecked("rt_tgsigqueueinfo", Nr.rt_tgsigqueueinfo, PidNamespace.Seen(task.Tid, ctx.Pid), PidNamespace.Seen(task.Tid, s.Tid), sig, (long)a);
        }
        // the thread's seccomp filters (suspended by the trace until ckpt lets it go)
        Seccomp.Install(ctx, task, s.Tid);
        // the very last injected call removes the trampoline it runs from; no thread executes there again
        if (last)
        {
            ProcessAttributes.FinishDumpable(ctx);   // after the credentials, and after the last write through /proc
            task.InjectChecked("munmap trampoline", Nr.munmap, (long)ctx.Trampoline, RestoreContext.TrampolineSize);
        }
        task.SetSigMask(s.SigMask);
        task.SetXState(ctx.Session.Xstate is { } plan ? XstateLayout.Relayout(s.XState, plan) : s.XState);
        task.SetRegs(ResumeRegs(s.Regs));
    }

    /// <summary>
    /// At release, from ckpt by tid (no injection): every thread's scheduling policy and priority, nice
    /// value and CPU affinity. During the restart the vessels run pinned to the tracer's CPU; a saved
    /// affinity is limited to the CPUs online here (all of them if none of its CPUs is). A thread of an
    /// older image, without these fields, gets back the affinity the vessel had before it was pinned.
    /// Whatever cannot be set (no permission, a CPU set outside the cpuset) is logged and left as it is.
    /// </summary>
    public static unsafe void Release(RestoreContext ctx)
    {
        ulong[]? online = null;
        foreach (var s in ctx.State<SavedThreads>().List)
        {
            int tid = s.Tid;
            if (s.More is not { } m)
            {
                if (ctx.VesselAffinity != null && !ProcessCalls.SetAffinity(tid, ctx.VesselAffinity))
                    ctx.Log.Info($"thread {tid}: CPU affinity {ProcessCalls.CpuList(ctx.VesselAffinity)} could not be restored ({Errors.Describe(Marshal.GetLastPInvokeError())})");
                continue;
            }
            if ((m.Policy & ~ProcessCalls.SCHED_RESET_ON_FORK) == ProcessCalls.SCHED_DEADLINE)
                ctx.Log.Info($"thread {tid}: scheduling policy deadline not restored (its runtime, deadline and period are not saved)");
            else
            {
                int prio = m.Priority;
                if (ProcessCalls.SchedSetScheduler(tid, m.Policy, &prio) != 0)
                    ctx.Log.Info($"thread {tid}: scheduling policy {PolicyName(m.Policy)} priority {m.Priority} could not be restored ({Errors.Describe(Marshal.GetLastPInvokeError())}; FIFO and RR need CAP_SYS_NICE or RLIMIT_RTPRIO)");
            }
            if (ProcessCalls.SetPriority(0 /* PRIO_PROCESS: a tid, per thread */, tid, m.Nice) != 0)
                ctx.Log.Info($"thread {tid}: nice {m.Nice} could not be restored ({Errors.Describe(Marshal.GetLastPInvokeError())})");
            online ??= ProcessCalls.OnlineCpus();
            var want = new ulong[AffinityWords];
            bool any = false;
            for (int i = 0; i < want.Length; i++) any |= (want[i] = m.Affinity[i] & online[i]) != 0;
            if (!any)
            {
                ctx.Log.Info($"thread {tid}: none of its CPUs ({ProcessCalls.CpuList(m.Affinity)}) is online here; it may run on all ({ProcessCalls.CpuList(online)})");
                want = online;
            }
            else if (!want.AsSpan().SequenceEqual(m.Affinity))
                ctx.Log.Info($"thread {tid}: CPU affinity {ProcessCalls.CpuList(m.Affinity)} limited to the CPUs online here: {ProcessCalls.CpuList(want)}");
            if (!ProcessCalls.SetAffinity(tid, want))
            {
                int err = Marshal.GetLastPInvokeError();
                var fallback = ctx.VesselAffinity ?? online;
                ctx.Log.Info($"thread {tid}: CPU affinity {ProcessCalls.CpuList(want)} could not be set ({Errors.Describe(err)}); it gets {ProcessCalls.CpuList(fallback)}");
                ProcessCalls.SetAffinity(tid, fallback);
            }
            // the I/O priority (ionice), when it is not what the thread has already (the default, or ckpt's)
            if (s.Ioprio is int io && ProcessCalls.IoprioGet(tid) != io && !ProcessCalls.IoprioSet(tid, io))
                ctx.Log.Info($"thread {tid}: I/O priority class {io >> 13} level {io & 0x1fff} could not be restored ({Errors.Describe(Marshal.GetLastPInvokeError())}; the realtime class needs CAP_SYS_ADMIN)");
        }
    }

    /// <summary>
    /// A task stopped in an interrupted syscall resumes by executing it again: rip back over the 2-byte
    /// syscall instruction, rax = the syscall number. For a restart_block syscall (nanosleep, poll...)
    /// the original call is re-executed, since the kernel's restart block did not survive: with its
    /// original arguments, except a relative nanosleep or clock_nanosleep given a buffer for the time
    /// remaining. The kernel wrote the time left into that buffer when the sleep was interrupted (it is
    /// in the saved memory), so the sleep resumes for what was left of it instead of starting over: the
    /// request argument is pointed at that buffer (argument registers are the caller's to lose across a
    /// call, and the request itself is left untouched).
    /// </summary>
    /// <summary>
    /// Calls the kernel ends with EINTR, instead of restarting them, when their thread is stopped, as the
    /// freeze stops it (signal(7): epoll_wait, sigtimedwait, semop, io_getevents, and socket calls under a
    /// timeout): x86-64 numbers.
    /// </summary>
    private static readonly HashSet<ulong> EndedByStop =
    [
        232 /* epoll_wait */, 281 /* epoll_pwait */, 441 /* epoll_pwait2 */, 128 /* rt_sigtimedwait */,
        65 /* semop */, 220 /* semtimedop */, 208 /* io_getevents */, 333 /* io_pgetevents */,
        45 /* recvfrom */, 47 /* recvmsg */, 299 /* recvmmsg */, 43 /* accept */, 288 /* accept4 */,
    ];

    /// <summary>
    /// The registers of a thread just frozen: a call in <see cref="EndedByStop"/> that is returning EINTR
    /// only because the freeze stopped its thread (no signal is pending, or held back by the tracer, that
    /// could have interrupted it)
    /// is made to run again instead, when the thread goes on (left running, or restarted): rip back over
    /// the syscall instruction, rax = its number. Without this, a mere checkpoint made epoll_wait,
    /// sigwaitinfo and the like fail with EINTR in the program. A timeout starts again.
    /// </summary>
    /// <summary>
    /// The registers of a thread just frozen, as it goes on from the freeze: see
    /// <see cref="RestartIfEndedByFreeze"/> and <see cref="LeaveRseqCriticalSection"/>. Read before any
    /// call is injected into the thread.
    /// </summary>
    public static UserRegs FrozenRegs(int pid, Tracing.TracedTask task, Log log)
        => LeaveRseqCriticalSection(pid, task, RestartIfEndedByFreeze(pid, task, task.GetRegs()), log);

    /// <summary>
    /// A thread frozen inside an rseq critical section (a per-CPU operation of tcmalloc, LTTng-UST or
    /// librseq, which the kernel restarts from its abort handler when the thread is preempted in it) is
    /// moved to the abort handler now, in the live thread too, as the kernel would move it when it goes
    /// on: a call injected into it returns to user space outside the section, and the kernel then clears
    /// the thread's rseq_cs, so that the section would go on unprotected afterwards (in the process left
    /// running as in the restarted one). The handler must carry the registration's signature in the 4
    /// bytes before it (the kernel kills the thread otherwise): a section whose handler does not is left
    /// as it is.
    /// </summary>
    public static UserRegs LeaveRseqCriticalSection(int pid, Tracing.TracedTask task, UserRegs regs, Log log)
    {
        var rseq = task.GetRseq();
        if (rseq.RseqAbiPointer == 0) return regs;
        static bool Read(int pid, ulong at, Span<byte> into)
        {
            try { MemoryCalls.ReadRemote(pid, at, into); return true; }
            catch (SyscallException) { return false; }
        }
        Span<byte> b = stackalloc byte[8];
        if (!Read(pid, rseq.RseqAbiPointer + 8, b)) return regs;
        ulong cs = BitConverter.ToUInt64(b);
        if (cs == 0) return regs;
        // struct rseq_cs: u32 version, u32 flags, u64 start_ip, u64 post_commit_offset, u64 abort_ip
        Span<byte> d = stackalloc byte[32];
        if (!Read(pid, cs, d)) return regs;
        ulong start = BitConverter.ToUInt64(d[8..]), len = BitConverter.ToUInt64(d[16..]), abort = BitConverter.ToUInt64(d[24..]);
        if (regs.Rip < start || regs.Rip - start >= len) return regs;
        Span<byte> sig = stackalloc byte[4];
        if (abort < 4 || !Read(pid, abort - 4, sig) || BitConverter.ToUInt32(sig) != rseq.Signature)
        {
            log.Info($"thread {task.Tid} stopped in an rseq critical section whose abort handler 0x{abort:x} lacks the signature 0x{rseq.Signature:x}; left as it is");
            return regs;
        }
        log.Info($"thread {task.Tid} stopped in an rseq critical section (0x{start:x}+{len}); it goes on at its abort handler 0x{abort:x}");
        var live = task.GetRegs();
        live.Rip = abort;
        task.SetRegs(live);
        regs.Rip = abort;
        return regs;
    }

    public static UserRegs RestartIfEndedByFreeze(int pid, Tracing.TracedTask task, UserRegs regs)
    {
        const long EINTR = -4;
        if ((long)regs.Rax != EINTR || (long)regs.OrigRax < 0 || !EndedByStop.Contains(regs.OrigRax)) return regs;
        // a signal caught on its way in (held back by the tracer, given back on release) may have interrupted it
        if (task.DeferredSignals.Count > 0) return regs;
        try
        {
            var st = Proc.ProcStatus.Read(pid, task.Tid);
            if (st.SigPnd != 0 || st.ShdPnd != 0) return regs;   // a signal may have interrupted it: the program gets its EINTR
        }
        catch (IOException) { return regs; }
        regs.Rip -= 2;
        regs.Rax = regs.OrigRax;
        return regs;
    }

    public static UserRegs ResumeRegs(UserRegs regs)
    {
        long rax = (long)regs.Rax;
        if ((long)regs.OrigRax >= 0 && rax is ERESTARTSYS or ERESTARTNOINTR or ERESTARTNOHAND or ERESTART_RESTARTBLOCK)
        {
            regs.Rip -= 2;
            regs.Rax = regs.OrigRax;
            if (rax == ERESTART_RESTARTBLOCK)
            {
                if (regs.OrigRax == NrNanosleep && regs.Rsi != 0) regs.Rdi = regs.Rsi;
                else if (regs.OrigRax == NrClockNanosleep && (regs.Rsi & TIMER_ABSTIME) == 0 && regs.R10 != 0) regs.Rdx = regs.R10;
            }
        }
        regs.OrigRax = ulong.MaxValue;
        return regs;
    }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        int tid = r.I32();
        var regs = MmState.FromBytes<UserRegs>(r.Raw(UserRegs.Size));
        int xs = r.Bytes().Length;
        ulong mask = r.U64();
        uint pending = r.U32();
        var t = new InfoNode().Set("tid", tid).Set("rip", $"0x{regs.Rip:x}").Set("rsp", $"0x{regs.Rsp:x}")
            .Set("fs_base", $"0x{regs.FsBase:x}").Set("xstate_bytes", xs).Set("blocked", $"0x{mask:x}").Set("pending", pending);
        if ((long)regs.OrigRax >= 0) t.Set("in_syscall", (long)regs.OrigRax);
        for (int i = 0; i < pending; i++) r.Raw(128);
        r.U64(); r.U32(); r.U32();   // rseq
        r.U64(); r.U64(); r.U64();   // clear_child_tid, robust list
        r.Raw(StackT.SizeOf);
        if (!r.AtEnd) t.Set("comm", r.Str());
        if (!r.AtEnd)
        {
            t.Set("timer_slack_ns", r.U64());
            int pdeath = r.I32();
            if (pdeath != 0) t.Set("pdeathsig", pdeath);
            int policy = r.I32(), prio = r.I32();
            t.Set("policy", PolicyName(policy));
            if (prio != 0) t.Set("rt_priority", prio);
            t.Set("nice", r.I32());
            var cpus = r.Bytes();
            var words = new ulong[cpus.Length / 8];
            cpus[..(words.Length * 8)].CopyTo(MemoryMarshal.AsBytes(words.AsSpan()));
            t.Set("affinity", ProcessCalls.CpuList(words));
            if (!r.AtEnd) t.Set("ioprio", r.I32());
            if (!r.AtEnd && r.Bool()) t.Set("own_credentials", Credentials.ReadThreadOwn(ref r).ToString());
        }
        info.List("threads").Add(t);
    }
}
