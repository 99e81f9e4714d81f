using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>
/// Process-wide signal state: every handler that is not the default (address, flags, restorer, mask;
/// SIG_IGN included), and the shared pending queue with each siginfo. The blocked mask and the private
/// queue are per thread (CpuState).
/// </summary>
public sealed class SignalState : IStateKind
{
    public static readonly SignalState Instance = new();
    public string Name => "signals";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.SignalHandlers, RecordKind.SharedPending];
    public int FinishOrder => 50;

    private sealed class Saved
    {
        public List<byte[]> Shared = new();
        /// <summary>The process's signal actions once restored (by signal number; SIGKILL and SIGSTOP left default).</summary>
        public KernelSigaction[]? Actions;
    }

    private static readonly string[] s_sigactionNames = SigactionNames();

    // (a loop: Select on Enumerable.Range is a generic virtual call, slow at its first use in Native AOT)
    private static string[] SigactionNames()
    {
        var names = new string[65];
        for (int sig = 0; sig < names.Length; sig++) names[sig] = $"rt_sigaction({sig})";
        return names;
    }

    public void Checkpoint(CheckpointContext ctx)
    {
        // The pending queues are read as late as possible: a signal that arrives after they are read is
        // not in the image, and with --kill it is lost. Everything written so far (the memory, mostly)
        // goes out first, so that only a few records remain to be written before the kill.
        // (in a tree, once: before the last process's, the others' are read while the tree is written)
        if (ctx == ctx.Session.Processes[^1]) ctx.Image.Flush();
        var handlers = new List<(int Sig, KernelSigaction Act)>();
        var status = ctx.Status;
        ulong set = status.SigIgn | status.SigCgt;   // only these have a disposition other than SIG_DFL
        var sigs = new List<int>();
        for (int sig = 1; sig <= 64; sig++)
            if (sig is not (9 or 19) && (set & (1UL << (sig - 1))) != 0) sigs.Add(sig);
        // every action read in one batch (one ptrace round trip), each into its own place of the scratch area
        var calls = new (string, long, long, long, long, long, bool)[sigs.Count];
        for (int i = 0; i < sigs.Count; i++)
            calls[i] = ("rt_sigaction", Nr.rt_sigaction, sigs[i], 0, (long)ctx.Scratch + CheckpointContext.OutOffset + i * KernelSigaction.Size, 8, true);
        ctx.InjectAll(ctx.Task, calls);
        var acts = ctx.ReadScratch(CheckpointContext.OutOffset, sigs.Count * KernelSigaction.Size);
        for (int i = 0; i < sigs.Count; i++)
        {
            var act = MmState.FromBytes<KernelSigaction>(acts.AsSpan(i * KernelSigaction.Size, KernelSigaction.Size));
            if (act.Handler != 0 || act.Flags != 0 || act.Mask != 0) handlers.Add((sigs[i], act));
        }
        var p = new PayloadWriter().U32((uint)handlers.Count);
        foreach (var (sig, a) in handlers) p.I32(sig).U64(a.Handler).U64(a.Flags).U64(a.Restorer).U64(a.Mask);
        ctx.Image.Write(RecordKind.SignalHandlers, p);
        var shared = ctx.Task.PeekSiginfo(shared: true);
        // signals the injected calls took out of the queues (held back by the tracer, given back to the
        // process on release) are pending too, with their siginfo: a SIGSTOP sent again to a stopped
        // process, a signal that came while the process was held (one sent to a thread alone is pending
        // for that thread: CpuState)
        foreach (var (t, _, _) in ctx.Threads)
            foreach (var (_, info) in t.DeferredSignals)
                if (!Tracing.TracedTask.SentToThread(info)) shared.Add(info);
        var q = new PayloadWriter().U32((uint)shared.Count);
        foreach (var si in shared) q.Raw(si);
        ctx.Image.Write(RecordKind.SharedPending, q);
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint n = r.U32();
        if (rec.Kind == RecordKind.SharedPending)
        {
            for (int i = 0; i < n; i++) ctx.State<Saved>().Shared.Add(r.Raw(128).ToArray());
            r.End();
            return;
        }
        var actions = new KernelSigaction[65];
        for (int i = 0; i < n; i++)
        {
            int sig = r.I32();
            var act = new KernelSigaction { Handler = r.U64(), Flags = r.U64(), Restorer = r.U64(), Mask = r.U64() };
            if (sig is < 1 or > 64) throw new ImageFormatException($"SignalHandlers record at offset {rec.Offset} has an action for signal {sig}");
            actions[sig] = act;
        }
        r.End();
        // every signal: the saved action, or SIG_DFL; the vessel inherited ckpt's own actions, so only
        // those that differ are set (most are SIG_DFL in both); a process forked from its restored parent
        // has the parent's (as restored: the parent's records all come before it)
        // (all in one batch: one ptrace round trip)
        var inherited = ctx.LateForked ? ctx.ForkedFrom?.Existing<Saved>()?.Actions : ctx.Session.VesselActions;
        var batch = ctx.Batch;
        for (int sig = 1; sig <= 64; sig++)
        {
            if (sig is 9 or 19) continue;
            var act = actions[sig];
            if (inherited != null && inherited[sig] is var h && h.Handler == act.Handler && h.Flags == act.Flags && h.Restorer == act.Restorer && h.Mask == act.Mask) continue;
            batch.Reserve(1, KernelSigaction.Size);
            ulong a = batch.AddData(MmState.StructBytes(ref act));
            batch.AddChecked(s_sigactionNames[sig], Nr.rt_sigaction, sig, (long)a, 0, 8);
        }
        batch.Flush();
        ctx.State<Saved>().Actions = actions;
    }

    /// <summary>
    /// Sets every signal action of a fresh vessel to SIG_DFL (the vessels forked from it after this
    /// inherit that, and only the image's own actions need setting).
    /// </summary>
    public static void ResetToDefault(RestoreContext ctx)
    {
        var actions = ctx.Session.VesselActions ?? OwnActions();
        MemoryCalls.WriteRemote(ctx.Pid, Vessel.Scratch, new byte[KernelSigaction.Size]);
        for (int sig = 1; sig <= 64; sig++)
        {
            var h = actions[sig];
            if (sig is 9 or 19 || (h.Handler == 0 && h.Flags == 0 && h.Restorer == 0 && h.Mask == 0)) continue;
            ctx.Inject($"rt_sigaction({sig})", Nr.rt_sigaction, sig, (long)Vessel.Scratch, 0, 8);
        }
        ctx.Session.VesselActions = new KernelSigaction[65];
    }

    /// <summary>ckpt's own signal actions (index = signal), which every vessel inherits when it is forked.</summary>
    public static unsafe KernelSigaction[] OwnActions()
    {
        var all = new KernelSigaction[65];
        for (int sig = 1; sig <= 64; sig++)
        {
            KernelSigaction old;
            if (Sys.Call(Nr.rt_sigaction, sig, 0, (nint)(&old), 8) != 0) return null!;
            all[sig] = old;
        }
        return all;
    }

    public void Finish(RestoreContext ctx)
    {
        foreach (var si in ctx.State<Saved>().Shared)
        {
            ulong a = ctx.PutScratch(0, si);
            ctx.Inject("rt_sigqueueinfo", Nr.rt_sigqueueinfo, PidNamespace.Seen(ctx.Pid, ctx.Pid), BitConverter.ToInt32(si), (long)a);
        }
    }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint n = r.U32();
        var s = info.Child("signals");
        if (rec.Kind == RecordKind.SharedPending)
        {
            var sigs = new List<string>();
            for (int i = 0; i < n; i++) sigs.Add(BitConverter.ToInt32(r.Raw(128)).ToString());
            s.Set("shared_pending", sigs);
            return;
        }
        var list = s.List("handlers");
        for (int i = 0; i < n; i++)
        {
            int sig = r.I32(); ulong h = r.U64(), f = r.U64(); r.U64(); ulong m = r.U64();
            list.Add(new InfoNode().Set("signal", sig).Set("handler", h switch { 0 => "SIG_DFL", 1 => "SIG_IGN", _ => $"0x{h:x}" })
                .Set("flags", $"0x{f:x}").Set("mask", $"0x{m:x}"));
        }
    }
}
