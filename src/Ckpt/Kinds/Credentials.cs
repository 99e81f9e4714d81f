using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;
using Ckpt.Tracing;

namespace Ckpt.Kinds;

/// <summary>
/// Credentials: real/effective/saved/fs uids and gids, supplementary groups, and the capability sets
/// (inheritable, permitted, effective, bounding, ambient). Applied last before the registers, since
/// they may take away the privileges the restore needs.
/// </summary>
public sealed class Credentials : IStateKind
{
    public static readonly Credentials Instance = new();
    public string Name => "credentials";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.Credentials];
    public int FinishOrder => 70;

    internal sealed class Saved
    {
        public uint[] Uid = new uint[4], Gid = new uint[4];
        public uint[] Groups = [];
        public ulong Inh, Prm, Eff, Bnd, Amb;
        public long Securebits = -1;
        /// <summary>The groups are in place already (set before the process entered its user namespace).</summary>
        public bool GroupsSet;
    }

    /// <summary>
    /// <paramref name="s"/> as the tree's user namespace sees it, for a process inside it: its ids through the
    /// namespace's maps (checked at checkpoint), its groups left as set before it entered (the process's own)
    /// or, for a thread with groups of its own, mapped too.
    /// </summary>
    private static Saved Inside(RestoreContext ctx, Saved s, UserNamespace.State ns)
    {
        uint Map(UserNamespace.Range[] map, uint id, string what)
            => UserNamespace.Inside(map, id) ?? throw new CkptException($"restart: pid {ctx.Pid}'s {what} {id} has no id in the tree's user namespace", ExitCodes.RestoreConflict);
        var process = ctx.State<Saved>();
        return new Saved
        {
            Uid = s.Uid.Select(u => Map(ns.Uids, u, "uid")).ToArray(),
            Gid = s.Gid.Select(g => Map(ns.Gids, g, "gid")).ToArray(),
            Groups = s.Groups.SequenceEqual(process.Groups) ? s.Groups : s.Groups.Select(g => Map(ns.Gids, g, "supplementary gid")).ToArray(),
            GroupsSet = s.Groups.SequenceEqual(process.Groups),
            Inh = s.Inh, Prm = s.Prm, Eff = s.Eff, Bnd = s.Bnd, Amb = s.Amb, Securebits = s.Securebits,
        };
    }

    /// <summary>The process's saved credentials (as ckpt's user namespace sees them), once its Credentials record was read.</summary>
    internal static Saved SavedOf(RestoreContext ctx) => ctx.State<Saved>();

    private const int PR_GET_SECUREBITS = 27, PR_SET_SECUREBITS = 28, PR_SET_KEEPCAPS = 8, CAP_SETPCAP = 8;
    private const long SECBIT_KEEP_CAPS = 1 << 4;

    /// <summary>
    /// A thread's own credentials, when they differ from its process leader's (a thread that changed its
    /// ids or capabilities with a raw system call: file servers act for a user per thread; glibc's
    /// set*id calls change every thread): the Thread record's appended field, null when they are the
    /// leader's. <paramref name="leaderLines"/>: the <see cref="CredentialLines"/> of the leader's /proc
    /// status, read once per process.
    /// </summary>
    public static byte[]? ThreadOwn(int pid, int tid, string[] leaderLines)
    {
        // compared as text (the kernel prints the same values the same way), parsed only when they differ
        string? text = FileCalls.ReadSmallText($"/proc/{pid}/task/{tid}/status");
        if (text == null) throw new IOException($"cannot read /proc/{pid}/task/{tid}/status");
        return CredentialLines(text).SequenceEqual(leaderLines) ? null : Payload(ProcStatus.Parse(text));
    }

    /// <summary>The credential lines of a /proc status text (Uid:, Gid:, Groups:, Cap*:), in order.</summary>
    public static IEnumerable<string> CredentialLines(string status)
    {
        foreach (var line in status.Split('\n'))
            if (line.StartsWith("Uid:", StringComparison.Ordinal) || line.StartsWith("Gid:", StringComparison.Ordinal)
                || line.StartsWith("Groups:", StringComparison.Ordinal) || line.StartsWith("Cap", StringComparison.Ordinal))
                yield return line;
    }

    private static byte[] Payload(ProcStatus st)
    {
        var p = new PayloadWriter();
        foreach (var u in st.Uid) p.U32(u);
        foreach (var g in st.Gid) p.U32(g);
        p.U32((uint)st.Groups.Length);
        foreach (var g in st.Groups) p.U32(g);
        p.U64(st.CapInh).U64(st.CapPrm).U64(st.CapEff).U64(st.CapBnd).U64(st.CapAmb);
        return p.Span.ToArray();
    }

    private static Saved Read(ref PayloadReader r)
    {
        var s = new Saved();
        for (int i = 0; i < 4; i++) s.Uid[i] = r.U32();
        for (int i = 0; i < 4; i++) s.Gid[i] = r.U32();
        uint n = r.U32();
        if (n > 65536) throw new ImageFormatException($"{n} supplementary groups");
        s.Groups = new uint[n];
        for (int i = 0; i < s.Groups.Length; i++) s.Groups[i] = r.U32();
        s.Inh = r.U64(); s.Prm = r.U64(); s.Eff = r.U64(); s.Bnd = r.U64(); s.Amb = r.U64();
        return s;
    }

    /// <summary>A thread's own credentials from its Thread record (as written by <see cref="ThreadOwn"/>), to give it with <see cref="SetThreadOwn"/>.</summary>
    public sealed class ThreadCredentials
    {
        internal ThreadCredentials(Saved value) => Value = value;
        internal Saved Value { get; }
        public override string ToString() => $"uid {Value.Uid[1]} gid {Value.Gid[1]} caps 0x{Value.Eff:x}";
    }

    public static ThreadCredentials ReadThreadOwn(ref PayloadReader r) => new(Read(ref r));

    /// <summary>
    /// Gives a thread created from the leader (with the leader's credentials) its own: the thread's
    /// injected calls change only it. A leader without the privilege to take them fails the restart.
    /// </summary>
    public static void SetThreadOwn(RestoreContext ctx, TracedTask task, ThreadCredentials c)
    {
        const int PR_GET_KEEPCAPS = 7;
        // the keep-caps bit it has from the leader (its securebits are set by then): the steps end by clearing it
        long keep = task.Inject(Nr.prctl, PR_GET_KEEPCAPS);
        try
        {
            SetIdsAndCapabilities(ctx, task, c.Value);
            if (keep == 1) task.InjectChecked("prctl(PR_SET_KEEPCAPS)", Nr.prctl, PR_SET_KEEPCAPS, 1);
        }
        catch (SyscallException e)
        {
            throw new CkptException($"restart: thread {task.Tid} of pid {ctx.Pid} had credentials of its own ({c}) that it cannot be given from the process's ({e.Message})", ExitCodes.Permission);
        }
    }

    public void Checkpoint(CheckpointContext ctx)
    {
        var st = ctx.Status;
        var p = new PayloadWriter().Raw(Payload(st));
        // appended field: the securebits (SECBIT_KEEP_CAPS is PR_SET_KEEPCAPS), or -errno
        p.I64(ctx.Task.Inject(Nr.prctl, PR_GET_SECUREBITS));
        ctx.Image.Write(RecordKind.Credentials, p);
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        var s = Read(ref r);
        ctx.Set(s);
        s.Securebits = r.AtEnd ? -1 : r.I64();
        r.End();
        uint me = ProcessCalls.GetEuid();
        if (me != 0 && (s.Uid.Any(u => u != me) || s.Prm != 0))
            throw new CkptException($"restart: the image runs as uid {s.Uid[1]} with capabilities 0x{s.Prm:x}; uid {me} may not take them (restart as root)", ExitCodes.Permission);
    }

    public void Finish(RestoreContext ctx)
    {
        // filters the process could not install with the credentials it is given now
        Seccomp.InstallBeforeCredentials(ctx);
        var s = ctx.State<Saved>();
        // the vessel carries ckpt's own credentials: nothing to do when the image has the same
        var me = ProcStatus.Read(Environment.ProcessId);
        // (a process inside the tree's user namespace has its ids and capabilities to be set relative to it)
        if (UserNamespace.Joined(ctx.Pid) || !(me.Uid.SequenceEqual(s.Uid) && me.Gid.SequenceEqual(s.Gid) && me.Groups.SequenceEqual(s.Groups)
            && me.CapInh == s.Inh && me.CapPrm == s.Prm && me.CapEff == s.Eff && me.CapBnd == s.Bnd && me.CapAmb == s.Amb))
        {
            // threads are made with their ids by clone3's set_tid, which needs a privilege the process may not
            // have with its own credentials: they are made now (inheriting filters put in just before), and
            // each is given the process's credentials (a thread with its own gets them later, CpuState)
            CpuState.CreateThreads(ctx);
            PosixTimers.StandIns(ctx);
            SetIdsAndCapabilities(ctx, s);
            foreach (var t in ctx.OtherThreads)
                if (!CpuState.HasOwnCredentials(ctx, t.Tid)) SetIdsAndCapabilities(ctx, t, s);
        }
        SetSecurebits(ctx, ctx.Vessel, s);
        foreach (var t in ctx.OtherThreads)
            if (!CpuState.HasOwnCredentials(ctx, t.Tid)) SetSecurebits(ctx, t, s);
    }

    private static void SetIdsAndCapabilities(RestoreContext ctx, Saved s) => SetIdsAndCapabilities(ctx, ctx.Vessel, s);

    /// <summary>Sets the ids, groups and capability sets of one thread of the vessel (each thread has its own).</summary>
    private static void SetIdsAndCapabilities(RestoreContext ctx, TracedTask task, Saved s)
    {
        int lastCap = int.TryParse(Native.FileCalls.ReadText("/proc/sys/kernel/cap_last_cap").Trim(), out var lc) ? lc : 63;
        const int PR_CAPBSET_DROP = 24, PR_CAP_AMBIENT = 47, PR_CAP_AMBIENT_RAISE = 2;
        if (UserNamespace.Joined(ctx.Pid)) s = Inside(ctx, s, UserNamespace.Current!);
        if (!s.GroupsSet) SetGroups(ctx, task, s.Groups);
        for (int cap = 0; cap <= lastCap; cap++)
            if ((s.Bnd & (1UL << cap)) == 0)
            {
                long rc = task.Inject(Nr.prctl, PR_CAPBSET_DROP, cap);
                if (rc < 0 && rc != -Errors.EINVAL) throw new SyscallException("prctl(PR_CAPBSET_DROP) (injected)", (int)-rc, ctx.Pid);
            }
        task.InjectChecked("prctl(PR_SET_KEEPCAPS)", Nr.prctl, PR_SET_KEEPCAPS, 1);
        task.InjectChecked("setresgid", Nr.setresgid, s.Gid[0], s.Gid[1], s.Gid[2]);
        // the file-system ids, where they are not the effective ones (setres*id makes them so): the gid while
        // the vessel is still root; the uid with CAP_SETUID made effective a moment (setresuid to a user
        // clears the effective set; the permitted one is kept until the capset below)
        if (s.Gid[3] != s.Gid[1]) task.Inject(Nr.setfsgid, s.Gid[3]);
        task.InjectChecked("setresuid", Nr.setresuid, s.Uid[0], s.Uid[1], s.Uid[2]);
        if (s.Uid[3] != s.Uid[1])
        {
            const ulong setuid = 1UL << 7;   // CAP_SETUID
            Capset(ctx, task, setuid, s.Prm | setuid, s.Inh);
            task.Inject(Nr.setfsuid, s.Uid[3]);
        }
        Capset(ctx, task, s.Eff, s.Prm, s.Inh);
        for (int cap = 0; cap < 64; cap++)
            if ((s.Amb & (1UL << cap)) != 0) task.InjectChecked("prctl(PR_CAP_AMBIENT)", Nr.prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0);
        task.InjectChecked("prctl(PR_SET_KEEPCAPS)", Nr.prctl, PR_SET_KEEPCAPS, 0);
    }

    /// <summary>Injected setgroups of <paramref name="groups"/> into <paramref name="task"/> (one thread of the vessel).</summary>
    internal static void SetGroups(RestoreContext ctx, TracedTask task, uint[] groups)
    {
        var bytes = new byte[groups.Length * 4];
        Buffer.BlockCopy(groups, 0, bytes, 0, bytes.Length);
        ulong g = ctx.PutScratch(0, bytes.Length > 0 ? bytes : new byte[4]);
        task.InjectChecked("setgroups", Nr.setgroups, groups.Length, (long)g);
    }

    /// <summary>Sets the capability sets of one thread of the vessel (capset v3, pid 0: the calling thread).</summary>
    private static void Capset(RestoreContext ctx, TracedTask task, ulong eff, ulong prm, ulong inh)
    {
        // header {version, pid}, then two data words {effective, permitted, inheritable}
        var capData = new byte[8 + 24];
        BitConverter.TryWriteBytes(capData.AsSpan(0), 0x20080522u);
        for (int w = 0; w < 2; w++)
        {
            int sh = 32 * w;
            BitConverter.TryWriteBytes(capData.AsSpan(8 + 12 * w), (uint)(eff >> sh));
            BitConverter.TryWriteBytes(capData.AsSpan(12 + 12 * w), (uint)(prm >> sh));
            BitConverter.TryWriteBytes(capData.AsSpan(16 + 12 * w), (uint)(inh >> sh));
        }
        ulong c = ctx.PutScratch(0, capData);
        task.InjectChecked("capset", Nr.capset, (long)c, (long)c + 8);
    }

    /// <summary>
    /// The securebits, once the ids and capabilities are the process's: setting them needs CAP_SETPCAP,
    /// which the process may no longer have. Keep-caps alone needs nothing (PR_SET_KEEPCAPS); otherwise
    /// CAP_SETPCAP is made effective a moment when it is permitted. Bits that cannot be set so (locks in
    /// a process without CAP_SETPCAP) are logged.
    /// </summary>
    private static void SetSecurebits(RestoreContext ctx, TracedTask task, Saved s)
    {
        if (s.Securebits < 0) return;
        long now = task.Inject(Nr.prctl, PR_GET_SECUREBITS);
        if (now == s.Securebits) return;
        if (now >= 0 && (now ^ s.Securebits) == SECBIT_KEEP_CAPS)
        {
            task.InjectChecked("prctl(PR_SET_KEEPCAPS)", Nr.prctl, PR_SET_KEEPCAPS, (s.Securebits & SECBIT_KEEP_CAPS) != 0 ? 1 : 0);
            return;
        }
        long rc = task.Inject(Nr.prctl, PR_SET_SECUREBITS, s.Securebits);
        const ulong setpcap = 1UL << CAP_SETPCAP;
        if (rc == -Errors.EPERM && (s.Prm & setpcap) != 0 && (s.Eff & setpcap) == 0)
        {
            Capset(ctx, task, s.Eff | setpcap, s.Prm, s.Inh);
            rc = task.Inject(Nr.prctl, PR_SET_SECUREBITS, s.Securebits);
            Capset(ctx, task, s.Eff, s.Prm, s.Inh);
        }
        if (rc < 0)
            ctx.Log.Info($"pid {ctx.Pid}: securebits 0x{s.Securebits:x} not restored, 0x{now:x} instead ({Errors.Describe((int)-rc)}: setting them needs CAP_SETPCAP, which the process does not have)");
    }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        var c = info.Child("process").Child("credentials");
        c.Set("uid", $"{r.U32()} {r.U32()} {r.U32()} {r.U32()}");
        c.Set("gid", $"{r.U32()} {r.U32()} {r.U32()} {r.U32()}");
        uint n = r.U32();
        var gs = new List<string>();
        for (int i = 0; i < n; i++) gs.Add(r.U32().ToString());
        c.Set("groups", gs);
        foreach (var k in new[] { "cap_inh", "cap_prm", "cap_eff", "cap_bnd", "cap_amb" }) c.Set(k, $"0x{r.U64():x}");
        if (!r.AtEnd && r.I64() is var bits and >= 0) c.Set("securebits", $"0x{bits:x}");
    }
}
