using System.Runtime.InteropServices;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Tracing;

namespace Ckpt.Kinds;

/// <summary>
/// Per-thread CPU and kernel state: general registers, fs/gs base, the full xstate (x87, SSE, AVX,
/// AVX-512), the blocked mask, private pending signals with their siginfo, sigaltstack, the rseq
/// registration, clear-child-tid and the robust futex list. Restored last: the trampoline is removed,
/// the registers loaded, and the task released by the restorer.
/// </summary>
public sealed class CpuState : IStateKind
{
    public static readonly CpuState Instance = new();
    public string Name => "cpu";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.Thread];
    public int FinishOrder => 100;

    public const long ERESTARTSYS = -512, ERESTARTNOINTR = -513, ERESTARTNOHAND = -514, ERESTART_RESTARTBLOCK = -516;

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
    }

    private sealed class SavedThreads { public readonly List<Saved> List = new(); public bool Created; }

    /// <summary>One Thread record per thread, the leader first.</summary>
    public void Checkpoint(CheckpointContext ctx)
    {
        foreach (var (task, regs, mask) in ctx.Threads) CheckpointThread(ctx, task, regs, mask);
    }

    private static void CheckpointThread(CheckpointContext ctx, TracedTask task, UserRegs regs, ulong sigmask)
    {
        var rseq = task.GetRseq();
        FixupRseq(ctx, task.Tid, ref regs, rseq);
        var p = new PayloadWriter();
        p.I32(task.Tid);
        p.Raw(MmState.StructBytes(ref regs));
        p.Bytes(task.GetXState());
        p.U64(sigmask);
        var pending = task.PeekSiginfo(shared: false);
        p.U32((uint)pending.Count);
        foreach (var si in pending) p.Raw(si);
        p.U64(rseq.RseqAbiPointer).U32(rseq.RseqAbiSize).U32(rseq.Signature);
        const int PR_GET_TID_ADDRESS = 40;
        task.InjectChecked("prctl(PR_GET_TID_ADDRESS)", Nr.prctl, PR_GET_TID_ADDRESS, (long)ctx.Scratch);
        p.U64(BitConverter.ToUInt64(ctx.ReadScratch(0, 8)));
        unsafe
        {
            ulong head = 0, len = 0;
            Sys.Check("get_robust_list", task.Tid, Nr.get_robust_list, task.Tid, (long)&head, (long)&len);
            p.U64(head).U64(len);
        }
        task.InjectChecked("sigaltstack", Nr.sigaltstack, 0, (long)ctx.Scratch);
        p.Raw(ctx.ReadScratch(0, StackT.SizeOf));
        p.Str(File.ReadAllText($"/proc/{ctx.Pid}/task/{task.Tid}/comm").TrimEnd('\n'));   // added in format 1: per-thread name
        ctx.Image.Write(RecordKind.Thread, p);
    }

    /// <summary>A thread stopped inside an rseq critical section resumes at its abort handler.</summary>
    private static void FixupRseq(CheckpointContext ctx, int tid, ref UserRegs regs, RseqConfiguration rseq)
    {
        if (rseq.RseqAbiPointer == 0) return;
        var b = new byte[8];
        MemoryCalls.ReadRemote(ctx.Pid, rseq.RseqAbiPointer + 8, b);
        ulong cs = BitConverter.ToUInt64(b);
        if (cs == 0) return;
        var d = new byte[32];
        MemoryCalls.ReadRemote(ctx.Pid, cs, d);
        ulong start = BitConverter.ToUInt64(d.AsSpan(8)), len = BitConverter.ToUInt64(d.AsSpan(16)), abort = BitConverter.ToUInt64(d.AsSpan(24));
        if (regs.Rip >= start && regs.Rip < start + len)
        {
            ctx.Log.Info($"thread {tid} stopped in an rseq critical section; it will resume at the abort handler 0x{abort:x}");
            regs.Rip = abort;
        }
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
        r.End();
        if (s.XState.Length != ctx.Header.XstateSize)
            throw new ImageFormatException($"Thread record at offset {rec.Offset}: xstate of {s.XState.Length} bytes, header says {ctx.Header.XstateSize}");
        var all = ctx.State<SavedThreads>().List;
        if (all.Count == 0 && s.Tid != ctx.Pid)
            throw new ImageFormatException($"Thread record at offset {rec.Offset}: the first thread is {s.Tid}, not the leader {ctx.Pid}");
        all.Add(s);
    }

    public void Finish(RestoreContext ctx)
    {
        var all = ctx.State<SavedThreads>().List;
        if (all.Count == 0) throw new ImageFormatException("image holds no thread");
        var leader = ctx.Vessel;
        CreateThreads(ctx);
        foreach (var s in all.Skip(1)) RestoreThread(ctx, ctx.OtherThreads.First(t => t.Tid == s.Tid), s);
        RestoreThread(ctx, leader, all[0], last: true);
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
        foreach (var s in threads.List.Skip(1)) ctx.OtherThreads.Add(CreateThread(ctx, s.Tid));
    }

    /// <summary>The tids of the image's threads of this process (the leader first), as read so far.</summary>
    public static IEnumerable<int> SavedTids(RestoreContext ctx) => ctx.State<SavedThreads>().List.Select(s => s.Tid);

    private static unsafe TracedTask CreateThread(RestoreContext ctx, int tid)
    {
        const ulong CLONE_VM = 0x100, CLONE_FS = 0x200, CLONE_FILES = 0x400, CLONE_SIGHAND = 0x800, CLONE_THREAD = 0x10000, CLONE_SYSVSEM = 0x40000;
        ulong tidAddr = ctx.PutScratch(256, BitConverter.GetBytes(tid));
        var args = new CloneArgs
        {
            Flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM,
            SetTid = tidAddr, SetTidSize = 1,
        };
        ulong a = ctx.PutScratch(0, MmState.StructBytes(ref args));
        long got; int tries = 0;
        do got = ctx.Vessel.Inject(Nr.clone3, (long)a, sizeof(CloneArgs));
        while (got == -Errors.EEXIST && Vessel.RetryTakenPid(tid, ref tries));
        if (got == -Errors.EEXIST)
            throw new CkptException($"restart: thread id {tid} is already in use; stop the process that holds it", ExitCodes.RestoreConflict);
        if (got < 0) throw new SyscallException("clone3 thread (injected)", (int)-got, ctx.Pid);
        var t = TracedTask.Adopt((int)got);
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
        // pending signals go in while everything is blocked (set when the vessel was seized)
        foreach (var si in s.Pending)
        {
            int sig = BitConverter.ToInt32(si);
            ulong a = ctx.PutScratch(0, si);
            task.InjectChecked("rt_tgsigqueueinfo", Nr.rt_tgsigqueueinfo, ctx.Pid, s.Tid, sig, (long)a);
        }
        // the very last injected call removes the trampoline it runs from; no thread executes there again
        if (last) task.InjectChecked("munmap trampoline", Nr.munmap, (long)ctx.Trampoline, RestoreContext.TrampolineSize);
        task.SetSigMask(s.SigMask);
        task.SetXState(s.XState);
        task.SetRegs(ResumeRegs(s.Regs));
    }

    /// <summary>
    /// A task stopped in an interrupted syscall resumes by executing it again: rip back over the 2-byte
    /// syscall instruction, rax = the syscall number. For a restart_block syscall (nanosleep, poll...)
    /// the original call is re-executed with its original arguments, since the kernel's restart block
    /// did not survive.
    /// </summary>
    public static UserRegs ResumeRegs(UserRegs regs)
    {
        long rax = (long)regs.Rax;
        if ((long)regs.OrigRax >= 0 && rax is ERESTARTSYS or ERESTARTNOINTR or ERESTARTNOHAND or ERESTART_RESTARTBLOCK)
        {
            regs.Rip -= 2;
            regs.Rax = regs.OrigRax;
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
        info.List("threads").Add(t);
    }
}
