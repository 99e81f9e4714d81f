using System.Buffers.Binary;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;
using Ckpt.Tracing;

namespace Ckpt.Kinds;

/// <summary>
/// Seccomp: each thread's mode (strict, or filters) and its filters, oldest first, with their flags
/// (SECCOMP_FILTER_FLAG_LOG). Read with PTRACE_SECCOMP_GET_FILTER (index 0 is the oldest) and
/// PTRACE_SECCOMP_GET_METADATA; filters shared by several threads are written once. ckpt traces with
/// PTRACE_O_SUSPEND_SECCOMP, so its injected calls are never filtered, at checkpoint or restart.
/// Restart: each thread installs its own filters (seccomp(SECCOMP_SET_MODE_FILTER)), or enters strict
/// mode, after every other injected call of its setup but the last ones (<see cref="CpuState"/>);
/// the filters take effect when ckpt lets the thread go. Refused: a filter that hands syscalls to a
/// user-space supervisor (SECCOMP_RET_USER_NOTIF: the listener cannot be rebuilt).
/// A process whose filters were installed while it was privileged, which then gave up its privileges
/// (no no_new_privs, no CAP_SYS_ADMIN now: a daemon that drops root) could not install them again with
/// its own credentials: when every thread has the leader's filters, the leader installs them at restart
/// before its credentials are set (<see cref="InstallBeforeCredentials"/>), and the other threads,
/// made from it afterwards, inherit them. Threads with different filters in such a process are refused.
/// </summary>
public sealed unsafe class Seccomp : IStateKind
{
    public static readonly Seccomp Instance = new();
    public string Name => "seccomp";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.Seccomp];
    public int FinishOrder => 99;

    private const int ModeStrict = 1, ModeFilter = 2;
    private const uint SECCOMP_RET_ACTION_FULL = 0xffff0000, SECCOMP_RET_USER_NOTIF = 0x7fc00000;
    private const ulong CAP_SYS_ADMIN = 1UL << 21;

    public void Checkpoint(CheckpointContext ctx)
    {
        var filters = new List<(ulong Flags, byte[] Program)>();
        var threads = new List<(int Tid, int Mode, List<int> Chain)>();
        int unprivileged = 0;
        foreach (var (task, _, _) in ctx.Threads)
        {
            int tid = task.Tid;
            // most threads are not under seccomp: look at the one line before parsing all of status
            string text = Native.FileCalls.ReadText($"/proc/{ctx.Pid}/task/{tid}/status");
            int line = text.IndexOf("\nSeccomp:", StringComparison.Ordinal);
            if (line >= 0 && text.AsSpan(line + 9).TrimStart().StartsWith("0")) { threads.Add((tid, 0, [])); continue; }
            var status = ProcStatus.Parse(text);
            if (status.Seccomp == 0) { threads.Add((tid, 0, [])); continue; }
            var chain = new List<int>();
            if (status.Seccomp == ModeFilter)
            {
                if (!status.NoNewPrivs && (status.CapEff & CAP_SYS_ADMIN) == 0) unprivileged = tid;
                for (int i = 0; ; i++)
                {
                    var (prog, flags) = ReadFilter(tid, i);
                    if (prog == null) break;
                    if (UsesSupervisor(prog))
                        throw new NotCheckpointableException(ctx.Pid, $"thread {tid}: seccomp filter {i} hands system calls to a supervisor (SECCOMP_RET_USER_NOTIF), whose listener cannot be rebuilt");
                    int at = filters.FindIndex(f => f.Flags == flags && f.Program.AsSpan().SequenceEqual(prog));
                    if (at < 0) { at = filters.Count; filters.Add((flags, prog)); }
                    chain.Add(at);
                }
            }
            threads.Add((tid, status.Seccomp, chain));
        }
        if (threads.All(t => t.Mode == 0)) return;
        // filters it could not install itself: installed by the leader before its credentials, and inherited
        bool early = unprivileged != 0;
        if (early)
        {
            var leader = threads.First(t => t.Tid == ctx.Pid);
            if (leader.Mode != ModeFilter || threads.Any(t => t.Mode != leader.Mode || !t.Chain.SequenceEqual(leader.Chain)))
                throw new NotCheckpointableException(ctx.Pid, $"thread {unprivileged} runs under a seccomp filter without no_new_privs or CAP_SYS_ADMIN, and its threads have different filters, which could not be installed again after a restart");
        }
        var p = new PayloadWriter().U32((uint)filters.Count);
        foreach (var (flags, prog) in filters) p.U64(flags).Bytes(prog);
        p.U32((uint)threads.Count);
        foreach (var (tid, mode, chain) in threads)
        {
            p.I32(tid).U8((byte)mode).U32((uint)chain.Count);
            foreach (int i in chain) p.U32((uint)i);
        }
        p.Bool(early);   // appended field
        ctx.Image.Write(RecordKind.Seccomp, p);
        ctx.Log.Debug($"pid {ctx.Pid}: seccomp: {filters.Count} distinct filter(s) over {threads.Count(t => t.Mode != 0)} thread(s)");
    }

    /// <summary>Filter <paramref name="index"/> of a stopped thread (0: the oldest) and its flags; null past the last.</summary>
    private static (byte[]? Program, ulong Flags) ReadFilter(int tid, int index)
    {
        long n = Ptrace.Raw(Ptrace.SECCOMP_GET_FILTER, tid, index, 0);
        if (n < 0)
        {
            int e = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            if (e == 2 /* ENOENT */) return (null, 0);
            throw new SyscallException("ptrace(SECCOMP_GET_FILTER)", e, tid);
        }
        var prog = new byte[n * 8];
        fixed (byte* b = prog)
            if (Ptrace.Raw(Ptrace.SECCOMP_GET_FILTER, tid, index, (nint)b) != n) throw SyscallException.Last("ptrace(SECCOMP_GET_FILTER)", tid);
        ulong* md = stackalloc ulong[2];
        md[0] = (ulong)index; md[1] = 0;
        if (Ptrace.Raw(Ptrace.SECCOMP_GET_METADATA, tid, 16, (nint)md) < 0) throw SyscallException.Last("ptrace(SECCOMP_GET_METADATA)", tid);
        return (prog, md[1]);
    }

    /// <summary>Whether a filter program can return SECCOMP_RET_USER_NOTIF (a constant return of that action).</summary>
    private static bool UsesSupervisor(byte[] prog)
    {
        for (int i = 0; i + 8 <= prog.Length; i += 8)
        {
            ushort code = BinaryPrimitives.ReadUInt16LittleEndian(prog.AsSpan(i));
            uint k = BinaryPrimitives.ReadUInt32LittleEndian(prog.AsSpan(i + 4));
            if (code == 0x06 /* BPF_RET|BPF_K */ && (k & SECCOMP_RET_ACTION_FULL) == SECCOMP_RET_USER_NOTIF) return true;
        }
        return false;
    }

    private sealed class Saved
    {
        public List<(ulong Flags, byte[] Program)> Filters = new();
        public Dictionary<int, (int Mode, List<int> Chain)> Threads = new();
        /// <summary>The leader installs the filters before its credentials are set; every thread has them.</summary>
        public bool Early;
        /// <summary>The filters every thread starts with, installed in the leader before the other threads are made (they inherit them, shared); -1: not yet.</summary>
        public int Shared = -1;
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        var st = ctx.State<Saved>();
        uint nf = r.U32();
        for (uint i = 0; i < nf; i++)
        {
            ulong flags = r.U64();
            byte[] prog = r.Bytes().ToArray();
            if (prog.Length == 0 || prog.Length % 8 != 0 || prog.Length > 4096 * 8)
                throw new ImageFormatException($"Seccomp record at offset {rec.Offset}: a filter of {prog.Length} bytes");
            st.Filters.Add((flags, prog));
        }
        uint nt = r.U32();
        for (uint i = 0; i < nt; i++)
        {
            int tid = r.I32();
            int mode = r.U8();
            uint n = r.U32();
            var chain = new List<int>();
            for (uint k = 0; k < n; k++)
            {
                uint at = r.U32();
                if (at >= nf) throw new ImageFormatException($"Seccomp record at offset {rec.Offset}: thread {tid} names filter {at} of {nf}");
                chain.Add((int)at);
            }
            if (mode is not (0 or ModeStrict or ModeFilter)) throw new ImageFormatException($"Seccomp record at offset {rec.Offset}: mode {mode}");
            st.Threads[tid] = (mode, chain);
        }
        st.Early = !r.AtEnd && r.Bool();
        r.End();
    }

    /// <summary>
    /// Called by <see cref="Credentials"/> before it sets the process's credentials: the filters of a process
    /// that could not install them with its own (see the class summary) are installed now by the leader; the
    /// threads made from it later inherit them.
    /// </summary>
    public static void InstallBeforeCredentials(RestoreContext ctx)
    {
        if (ctx.Existing<Saved>() is { Early: true }) InstallShared(ctx);
    }

    /// <summary>
    /// Called before the other threads of the process are made from the leader (<see cref="CpuState.CreateThreads"/>):
    /// the filters every thread starts with (the longest common beginning of their chains, when every
    /// thread is under filters) are installed in the leader now, so that the threads inherit them as the
    /// same filters, shared as in the original (SECCOMP_FILTER_FLAG_TSYNC needs that); each thread adds the
    /// rest of its own later (<see cref="Install"/>).
    /// </summary>
    public static void InstallShared(RestoreContext ctx)
    {
        if (ctx.Existing<Saved>() is not { } st || st.Shared >= 0) return;
        st.Shared = 0;
        var tids = CpuState.SavedTids(ctx).ToList();
        if (tids.Count == 0 || tids.Any(t => !st.Threads.TryGetValue(t, out var x) || x.Mode != ModeFilter)) return;
        var chains = tids.Select(t => st.Threads[t].Chain).ToList();
        int common = chains.Min(c => c.Count);
        for (int k = 0; k < common; k++)
            if (chains.Any(c => c[k] != chains[0][k])) { common = k; break; }
        InstallFilters(ctx, ctx.Vessel, chains[0].Take(common));
        st.Shared = common;
    }

    /// <summary>Installed per thread by <see cref="CpuState"/> (<see cref="Install"/>), near the end of its setup.</summary>
    public void Finish(RestoreContext ctx) { }

    /// <summary>
    /// Puts thread <paramref name="tid"/> under its saved seccomp mode and filters (oldest first). The
    /// trace suspends them (PTRACE_O_SUSPEND_SECCOMP) until ckpt lets the thread go, so the calls
    /// injected after this one are not filtered.
    /// </summary>
    public static void Install(RestoreContext ctx, TracedTask task, int tid)
    {
        if (ctx.Existing<Saved>() is not { } st || !st.Threads.TryGetValue(tid, out var t) || t.Mode == 0) return;
        // the filters must not apply to ckpt's own calls: the trace suspends them (also set at seize)
        task.SetOptions(RestoreContext.VesselOptions);
        if (t.Mode == ModeStrict)
        {
            task.InjectChecked("seccomp(SECCOMP_SET_MODE_STRICT)", Nr.seccomp, 0 /* SECCOMP_SET_MODE_STRICT */, 0, 0);
            return;
        }
        // the first ones it has already (installed in the leader before the threads were made, inherited)
        InstallFilters(ctx, task, t.Chain.Skip(Math.Max(st.Shared, 0)));
        ctx.Log.Debug($"thread {tid}: {t.Chain.Count} seccomp filter(s) installed ({Math.Max(st.Shared, 0)} shared)");
    }

    private static void InstallFilters(RestoreContext ctx, TracedTask task, IEnumerable<int> chain)
    {
        if (ctx.Existing<Saved>() is not { } st) return;
        task.SetOptions(RestoreContext.VesselOptions);
        foreach (int i in chain)
        {
            var (flags, prog) = st.Filters[i];
            if (prog.Length + 16 > RestoreContext.ScratchSize) throw new CkptException($"restart: a seccomp filter of {prog.Length} bytes does not fit the scratch area", ExitCodes.Internal);
            // struct sock_fprog { u16 len; u64 filter; } then the instructions
            var fprog = new byte[16 + prog.Length];
            BinaryPrimitives.WriteUInt16LittleEndian(fprog, (ushort)(prog.Length / 8));
            BinaryPrimitives.WriteUInt64LittleEndian(fprog.AsSpan(8), ctx.Scratch + 16);
            prog.CopyTo(fprog, 16);
            ulong a = ctx.PutScratch(0, fprog);
            task.InjectChecked($"seccomp(SECCOMP_SET_MODE_FILTER) of filter {i}", Nr.seccomp, 1 /* SECCOMP_SET_MODE_FILTER */, (long)flags, (long)a);
        }
    }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint nf = r.U32();
        var node = info.Child("seccomp");
        long insns = 0;
        for (uint i = 0; i < nf; i++) { r.U64(); insns += r.Bytes().Length / 8; }
        node.Set("filters", nf).Set("instructions", insns);
        uint nt = r.U32();
        var list = new List<string>();
        for (uint i = 0; i < nt; i++)
        {
            int tid = r.I32(); int mode = r.U8(); uint n = r.U32();
            for (uint k = 0; k < n; k++) r.U32();
            list.Add($"{tid}:{(mode == ModeStrict ? "strict" : mode == ModeFilter ? $"{n} filter(s)" : "off")}");
        }
        node.Set("threads", string.Join(" ", list));
    }
}
