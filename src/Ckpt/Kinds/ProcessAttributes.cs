using System.Text;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;
using Ckpt.Tracing;

namespace Ckpt.Kinds;

/// <summary>
/// The process itself: pid (restart creates the vessel with it), command name and line, nice value,
/// resource limits and interval timers, no_new_privs, personality, child subreaper, dumpable and THP
/// disable flags. (Per-thread attributes, timer slack, parent-death signal, scheduling and affinity
/// included, are in the Thread record: <see cref="CpuState"/>.)
/// </summary>
public sealed class ProcessAttributes : IStateKind
{
    public static readonly ProcessAttributes Instance = new();
    public string Name => "process";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.Process];
    public int FinishOrder => 60;
    public const int RlimitCount = 16;
    public static readonly string[] RlimitNames =
        ["cpu", "fsize", "data", "stack", "core", "rss", "nproc", "nofile", "memlock", "as", "locks", "sigpending", "msgqueue", "nice", "rtprio", "rttime"];

    private sealed class Saved
    {
        public string Comm = "";
        public int Nice;
        public RLimit[] Limits = new RLimit[RlimitCount];
        public byte[][] Timers = new byte[3][];
        public bool NoNewPrivs;
        public int Pgid, Sid;
        /// <summary>Appended fields (absent in older images: null, nothing restored).</summary>
        public Extra? More;
    }

    private sealed record Extra(uint Personality, bool Subreaper, int Dumpable, uint ThpDisable)
    {
        /// <summary>/proc/PID/oom_score_adj (appended field; null in older images).</summary>
        public int? OomScoreAdj { get; init; }
        /// <summary>/proc/PID/loginuid, the audit login uid (appended field; null in older images; uint.MaxValue: unset).</summary>
        public uint? LoginUid { get; init; }
    }

    private const int PR_GET_DUMPABLE = 3, PR_SET_DUMPABLE = 4, PR_GET_CHILD_SUBREAPER = 37,
        PR_SET_THP_DISABLE = 41, PR_GET_THP_DISABLE = 42;

    /// <summary>
    /// Whether a SysV semaphore set exists that the process's undo list could refer to: /proc/sysvipc/sem
    /// read once per checkpoint by the tracer thread, which is in the tree's IPC namespace (IpcNamespace).
    /// </summary>
    private static bool SysvSemaphoresExist(CheckpointContext ctx)
    {
        var seen = ctx.Session.State<SemaphoreSets>();
        if (seen.Exist == null)
        {
            try { seen.Exist = IpcNamespace.Entries(Native.FileCalls.ReadText("/proc/sysvipc/sem")) > 0; }
            catch (IOException) { seen.Exist = true; }
        }
        return seen.Exist.Value;
    }

    private sealed class SemaphoreSets { public bool? Exist; }

    /// <summary>Pid 2 is kthreadd (read at the first checkpoint, not when a restart loads this type).</summary>
    private static bool Kthreadd => s_kthreadd ??= Native.FileCalls.ReadSmallText("/proc/2/comm")?.TrimEnd('\n') == "kthreadd";
    private static bool? s_kthreadd;

    public void Checkpoint(CheckpointContext ctx)
    {
        int pid = ctx.Pid;
        var f = ProcStat.Read(pid);
        // SysV semaphore adjustments (SEM_UNDO) cannot be read, so they are not saved; kcmp against a
        // kernel thread (kthreadd, which has no undo list; ckpt has one: the .NET runtime makes it) says
        // whether the process has one. (Every process with threads has one, empty, made by the first
        // pthread_create: it can hold adjustments only where SysV semaphores exist.)
        if (Kthreadd && ProcessCalls.Kcmp(2, pid, ProcessCalls.KCMP_SYSVSEM, 0, 0) is 1 or 2 && SysvSemaphoresExist(ctx))
            ctx.Log.Info($"pid {pid} has a SysV semaphore undo list (SEM_UNDO): its adjustments are not saved (with --kill the kernel applies them now)");
        var p = new PayloadWriter();
        p.I32(ctx.ProcessId).I32(f.PPid);
        p.Str(Native.FileCalls.ReadText($"/proc/{ctx.ProcessId}/comm").TrimEnd('\n'));   // (a zombie main thread's is the process's name)
        p.Strs(Native.FileCalls.ReadText($"/proc/{pid}/cmdline").Split('\0', StringSplitOptions.None).SkipLast(1).ToList());
        p.I32(f.Nice);
        foreach (var (soft, hard) in ProcLimits.Read(pid)) p.U64(soft).U64(hard);
        // the calls only the process itself can make, in one round trip: its 3 itimers, then (for the
        // appended fields below) whether it is a child subreaper, its dumpable flag, THP disable
        const int O = CheckpointContext.OutOffset;
        long o = (long)ctx.Scratch + O;
        var res = ctx.InjectAll(ctx.Task,
            ("getitimer", Nr.getitimer, 0, o, 0, true), ("getitimer", Nr.getitimer, 1, o + ItimerVal.Size, 0, true),
            ("getitimer", Nr.getitimer, 2, o + 2 * ItimerVal.Size, 0, true),
            ("prctl(PR_GET_CHILD_SUBREAPER)", Nr.prctl, PR_GET_CHILD_SUBREAPER, o + 3 * ItimerVal.Size, 0, true),
            ("prctl(PR_GET_DUMPABLE)", Nr.prctl, PR_GET_DUMPABLE, 0, 0, true),
            ("prctl(PR_GET_THP_DISABLE)", Nr.prctl, PR_GET_THP_DISABLE, 0, 0, true));
        var outs = ctx.ReadScratch(O, 3 * ItimerVal.Size + 4);
        p.Raw(outs.AsSpan(0, 3 * ItimerVal.Size));
        p.Bool(ctx.Status.NoNewPrivs);   // trailing fields: absent in older images
        p.I32(f.Pgrp).I32(f.Session);
        // appended fields: personality, child subreaper, dumpable, THP disable
        p.U32(Convert.ToUInt32(Native.FileCalls.ReadText($"/proc/{pid}/personality").Trim(), 16));
        p.Bool(BitConverter.ToInt32(outs.AsSpan(3 * ItimerVal.Size)) != 0);
        p.I32((int)res[4]);
        p.U32((uint)res[5]);
        p.I32(int.Parse(Native.FileCalls.ReadText($"/proc/{pid}/oom_score_adj").Trim(), System.Globalization.CultureInfo.InvariantCulture));
        // appended field: the audit login uid (set by pam_loginuid for a login session; -1 when unset)
        p.U32(FileCalls.ReadSmallText($"/proc/{pid}/loginuid") is { } lu && uint.TryParse(lu.Trim(), out uint loginUid) ? loginUid : uint.MaxValue);
        ctx.Image.Write(RecordKind.Process, p);
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        int pid = r.I32();
        r.I32();
        var s = ctx.State<Saved>();
        s.Comm = r.Str();
        r.Strs();
        s.Nice = r.I32();
        for (int i = 0; i < RlimitCount; i++) s.Limits[i] = new RLimit { Cur = r.U64(), Max = r.U64() };
        for (int i = 0; i < 3; i++) s.Timers[i] = r.Raw(ItimerVal.Size).ToArray();
        s.NoNewPrivs = !r.AtEnd && r.Bool();
        if (!r.AtEnd) { s.Pgid = r.I32(); s.Sid = r.I32(); }
        if (!r.AtEnd) s.More = new Extra(r.U32(), r.Bool(), r.I32(), r.U32());
        if (!r.AtEnd && s.More != null) s.More = s.More with { OomScoreAdj = r.I32() };
        if (!r.AtEnd && s.More != null) s.More = s.More with { LoginUid = r.U32() };
        r.End();
        // images with a Tree record had every vessel created from it; older ones hold one process
        if (ctx.Task == null) CreateVessel(ctx, pid);
    }

    /// <summary>
    /// Forks the vessel of the root process with its pid, seizes it and readies it for injection. With
    /// <paramref name="by"/> (a vessel of ckpt's, the helper that makes the root's session), that vessel
    /// forks it for ckpt (CLONE_PARENT): it is ckpt's child in the helper's session.
    /// </summary>
    internal static void CreateVessel(RestoreContext ctx, int pid, RestoreContext? by = null)
    {
        ctx.Session.VesselActions ??= SignalState.OwnActions();
        // (forked by the helper: created before anything can fail, so that a failure kills only a vessel)
        TracedTask? child = by == null ? null : Vessel.CreateChild(by.Vessel, pid, 17, forParent: true);
        int got = child?.Tid ?? Vessel.Create(pid);
        ctx.Pid = got;
        try
        {
            TracedTask task;
            if (child == null)
            {
                // tracer and vessel on one CPU: ptrace round trips are several times slower across CPUs
                ctx.VesselAffinity = ProcessCalls.GetAffinity(got);
                var one = ProcessCalls.SingleCpu(ProcessCalls.GetCpu());
                ProcessCalls.SetAffinity(0, one);
                ProcessCalls.SetAffinity(got, one);
                task = TracedTask.SeizeAndStop(got, RestoreContext.VesselOptions);
            }
            else
            {
                // (on the helper's CPU, whose affinity it inherits)
                ctx.VesselAffinity = by!.VesselAffinity;
                task = child;
            }
            ctx.Task = task;
            task.SyscallGadget = Vessel.Gadget;
            // the root as the init of a pid namespace of the tree: ids made at will there stay clear of the image's
            PidNamespace.PrimeCursor(task, Vessel.Scratch);
            task.SetSigMask(ulong.MaxValue);
            var xs = task.GetXState();
            ulong xcr0 = BitConverter.ToUInt64(xs, 464);
            // (a CPU that has every feature the image uses, with another buffer: the threads' xstate is laid out again)
            ctx.Session.Xstate ??= XstateLayout.PlanFor(ctx.Header, xcr0, xs.Length, XstateLayout.Of(xcr0));
            if (ctx.Session.Xstate != null) ctx.Log.Info($"xstate laid out again for this CPU: {ctx.Header.XstateSize} -> {xs.Length} bytes");
            var rseq = task.GetRseq();
            if (rseq.RseqAbiPointer != 0)
                ctx.Inject("rseq unregister", Nr.rseq, (long)rseq.RseqAbiPointer, rseq.RseqAbiSize, 1 /* RSEQ_FLAG_UNREGISTER */, rseq.Signature);
            ctx.Log.Debug($"vessel {got} seized");
        }
        catch
        {
            Vessel.KillAndReap(got);
            throw;
        }
    }

    public unsafe void Finish(RestoreContext ctx)
    {
        var s = ctx.State<Saved>();
        const int PR_SET_NAME = 15;
        // the calls whose result is only checked go in one batch (one ptrace round trip), up to the
        // rlimits, which read and write the scratch area themselves
        var batch = ctx.Batch;
        var comm = Encoding.UTF8.GetBytes(s.Comm + "\0");
        batch.Reserve(3, comm.Length);
        batch.AddChecked("prctl(PR_SET_NAME)", Nr.prctl, PR_SET_NAME, (long)batch.AddData(comm));
        batch.AddChecked("setpriority", Nr.setpriority, 0 /* PRIO_PROCESS */, 0, s.Nice);
        // no_new_privs cannot be cleared: a process that had it must not come back without it
        if (s.NoNewPrivs) batch.AddChecked("prctl(PR_SET_NO_NEW_PRIVS)", Nr.prctl, 38 /* PR_SET_NO_NEW_PRIVS */, 1);
        // leading its own session or process group is the process's own state (a daemon must not come
        // back inside ckpt's session, where the terminal's SIGHUP and SIGINT reach it); membership in
        // another process's group or session is not restored: the vessel stays in ckpt's
        if (ctx.Session.Tree != null) { }   // sessions and groups were made with the tree (ProcessTree)
        else if (s.Sid == ctx.Pid) batch.AddChecked("setsid", Nr.setsid);
        else if (ctx.Options.Frozen)
        {
            // left stopped in ckpt's process group, it would be killed by SIGHUP when ckpt exits (a group
            // with a stopped member becomes orphaned); in a session of its own it waits for SIGCONT
            batch.AddChecked("setsid", Nr.setsid);
            ctx.Log.Info("--frozen: the process was given a session of its own so that it outlives ckpt while stopped");
        }
        else if (s.Pgid == ctx.Pid) batch.AddChecked("setpgid", Nr.setpgid, 0, 0);
        batch.Flush();
        var mine = ProcLimits.Read(ctx.LateForked ? ctx.Pid : Environment.ProcessId);   // what the vessel inherited (from ckpt, or from its restored parent)
        for (int i = 0; i < RlimitCount; i++)
        {
            var want = s.Limits[i];
            if (want.Cur == mine[i].Soft && want.Max == mine[i].Hard) continue;
            ulong a = ctx.PutScratch(0, MmState.StructBytes(ref want));
            long rc = ctx.Vessel.Inject(Nr.prlimit64, 0, i, (long)a, 0);
            if (rc == -Errors.EPERM)
            {
                // raising a hard limit needs CAP_SYS_RESOURCE: keep the current hard limit
                ctx.Inject("prlimit64", Nr.prlimit64, 0, i, 0, (long)a);
                var cur = MmState.FromBytes<RLimit>(ctx.GetScratch(0, sizeof(RLimit)));
                var clamped = new RLimit { Cur = Math.Min(want.Cur, cur.Max), Max = cur.Max };
                a = ctx.PutScratch(0, MmState.StructBytes(ref clamped));
                ctx.Inject("prlimit64", Nr.prlimit64, 0, i, (long)a, 0);
                ctx.Log.Info($"rlimit {RlimitNames[i]}: hard limit {want.Max} could not be restored (needs CAP_SYS_RESOURCE); kept {cur.Max}");
            }
            else if (rc < 0) throw new SyscallException($"prlimit64 {RlimitNames[i]} (injected)", (int)-rc, ctx.Pid);
        }
        for (int which = 0; which < 3; which++)
        {
            var t = MmState.FromBytes<ItimerVal>(s.Timers[which]);
            if (t.ValueSec == 0 && t.ValueUsec == 0)
            {
                if (t.IntervalSec == 0 && t.IntervalUsec == 0) continue;
                // a periodic ITIMER_REAL that fired and waits for its SIGALRM to be dequeued before
                // re-arming reads as value 0: it is still armed, next expiry one interval away
                t.ValueSec = t.IntervalSec;
                t.ValueUsec = t.IntervalUsec;
            }
            var bytes = MmState.StructBytes(ref t);
            batch.Reserve(1, bytes.Length);
            batch.AddChecked("setitimer", Nr.setitimer, which, (long)batch.AddData(bytes), 0);
        }
        batch.Flush();
        if (s.More is { } m) FinishMore(ctx, m);
    }

    /// <summary>Writes <paramref name="text"/> to a /proc file of the vessel itself (injected open, write, close); the error, or null.</summary>
    private static string? WriteOwnProcFile(RestoreContext ctx, string path, string text)
    {
        int fd;
        try { fd = ctx.OpenInVessel(path, FileCalls.O_WRONLY | FileCalls.O_CLOEXEC); }
        catch (CkptException e) { return e.Message; }
        ulong at = ctx.PutScratch(0, System.Text.Encoding.UTF8.GetBytes(text));
        long n = ctx.Vessel.Inject(Nr.write, fd, (long)at, text.Length);
        ctx.Vessel.Inject(Nr.close, fd);
        return n < 0 ? $"write {path}: {Errors.Describe((int)-n)}" : null;
    }

    /// <summary>Personality, child subreaper, THP disable, OOM score adjustment, login uid: each logged (not fatal) if it cannot be set.</summary>
    private static void FinishMore(RestoreContext ctx, Extra m)
    {
        // the OOM killer's adjustment (a database or a service may have lowered or raised it): written by
        // ckpt, which may lower it (CAP_SYS_RESOURCE), while the vessel still has ckpt's own
        if (m.OomScoreAdj is int oom)
        {
            string path = $"/proc/{ctx.Pid}/oom_score_adj";
            try
            {
                if (Native.FileCalls.ReadText(path).Trim() != oom.ToString(System.Globalization.CultureInfo.InvariantCulture))
                    File.WriteAllText(path, oom.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                ctx.Log.Info($"pid {ctx.Pid}: oom_score_adj {oom} could not be restored ({e.Message})");
            }
        }
        // the audit login uid: only the process itself may write it (injected), freely while it has none
        // (the vessel has ckpt's), else with CAP_AUDIT_CONTROL; the session id that comes with it is new
        if (m.LoginUid is uint loginUid && FileCalls.ReadSmallText($"/proc/{ctx.Pid}/loginuid")?.Trim() != loginUid.ToString(System.Globalization.CultureInfo.InvariantCulture))
        {
            string? error = WriteOwnProcFile(ctx, "/proc/self/loginuid", loginUid.ToString(System.Globalization.CultureInfo.InvariantCulture));
            if (error != null) ctx.Log.Info($"pid {ctx.Pid}: loginuid {(int)loginUid} could not be restored ({error})");
        }
        // personality is per task: set in the leader, the other threads (created later from it) inherit it.
        // Setting it after the memory was mapped is fine: it only steers later mmap/exec choices.
        // the two values to compare read in one batch (one ptrace round trip)
        long old = 0, thp = 0;
        var batch = ctx.Batch;
        batch.Add(Nr.personality, 0xffffffffL, check: got => old = got);
        batch.Add(Nr.prctl, PR_GET_THP_DISABLE, check: got => thp = got);
        batch.Flush();
        if (old != m.Personality)
        {
            long rc = ctx.Vessel.Inject(Nr.personality, m.Personality);
            if (rc < 0) ctx.Log.Info($"pid {ctx.Pid}: personality 0x{m.Personality:x} could not be restored ({Errors.Describe((int)-rc)}); it is 0x{old:x}");
        }
        if (m.Subreaper)
        {
            long rc = ctx.Vessel.Inject(Nr.prctl, ProcessCalls.PR_SET_CHILD_SUBREAPER, 1);
            if (rc < 0) ctx.Log.Info($"pid {ctx.Pid}: the child subreaper flag could not be restored ({Errors.Describe((int)-rc)})");
        }
        if (thp != m.ThpDisable)
        {
            // bit 0: disabled; other bits: the flags it was disabled with (PR_THP_DISABLE_EXCEPT_ADVISED)
            long rc = (m.ThpDisable & 1) != 0
                ? ctx.Vessel.Inject(Nr.prctl, PR_SET_THP_DISABLE, 1, m.ThpDisable & ~1u)
                : ctx.Vessel.Inject(Nr.prctl, PR_SET_THP_DISABLE, 0);
            if (rc < 0) ctx.Log.Info($"pid {ctx.Pid}: THP disable 0x{m.ThpDisable:x} could not be restored ({Errors.Describe((int)-rc)}); it is 0x{thp:x}");
        }
    }

    /// <summary>
    /// The dumpable flag, set by the leader's last injected calls (<see cref="CpuState"/>): a credential
    /// change resets it (Credentials, FinishOrder 70), and a process that is not dumpable may no longer
    /// be read or written through /proc or process_vm_* by a tracer without CAP_SYS_PTRACE.
    /// </summary>
    internal static void FinishDumpable(RestoreContext ctx)
    {
        if (ctx.State<Saved>().More is not { } m) return;
        long now = ctx.Vessel.Inject(Nr.prctl, PR_GET_DUMPABLE);
        if (now == m.Dumpable) return;
        if (m.Dumpable is 0 or 1)
        {
            long rc = ctx.Vessel.Inject(Nr.prctl, PR_SET_DUMPABLE, m.Dumpable);
            if (rc >= 0) return;
            ctx.Log.Info($"pid {ctx.Pid}: dumpable {m.Dumpable} could not be restored ({Errors.Describe((int)-rc)}); it is {now}");
        }
        else ctx.Log.Info($"pid {ctx.Pid}: dumpable {m.Dumpable} (suid_dumpable) cannot be set with prctl; it is {now}");
    }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        var p = info.Child("process");
        p.Set("pid", r.I32()).Set("ppid", r.I32()).Set("comm", r.Str()).Set("cmdline", string.Join(" ", r.Strs())).Set("nice", r.I32());
        var lim = p.Child("rlimits");
        for (int i = 0; i < RlimitCount; i++)
        {
            ulong c = r.U64(), m = r.U64();
            lim.Set(RlimitNames[i], $"{Fmt(c)}/{Fmt(m)}");
        }
        string[] names = ["real", "virtual", "prof"];
        for (int i = 0; i < 3; i++)
        {
            var t = MmState.FromBytes<ItimerVal>(r.Raw(ItimerVal.Size));
            if (t.ValueSec != 0 || t.ValueUsec != 0)
                p.Child("itimers").Set(names[i], $"next {t.ValueSec}.{t.ValueUsec:D6}s interval {t.IntervalSec}.{t.IntervalUsec:D6}s");
        }
        if (!r.AtEnd && r.Bool()) p.Set("no_new_privs", true);
        if (!r.AtEnd) p.Set("pgid", r.I32()).Set("sid", r.I32());
        if (!r.AtEnd)
        {
            p.Set("personality", $"0x{r.U32():x8}");
            if (r.Bool()) p.Set("child_subreaper", true);
            p.Set("dumpable", r.I32());
            uint thp = r.U32();
            if (thp != 0) p.Set("thp_disable", $"0x{thp:x}");
            if (!r.AtEnd && r.I32() is var oom and not 0) p.Set("oom_score_adj", oom);
            if (!r.AtEnd && r.U32() is var loginUid and not uint.MaxValue) p.Set("loginuid", loginUid);
        }
        static string Fmt(ulong v) => v == ulong.MaxValue ? "unlimited" : v.ToString();
    }
}
