using System.Globalization;
using System.Text;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>
/// The tree's user namespace, when processes of it are in one below ckpt's (<c>unshare --user
/// --map-root-user</c>, a rootless container, a sandbox): its uid and gid maps, whether setgroups is
/// denied, its owner, and which of the tree's other namespaces it owns (so that the program keeps the
/// privileges it had over them: bringing a device of its network namespace up, mounting in its mount
/// namespace, setting its host name).
/// <para>
/// Checkpoint: every live process of the tree is in ckpt's user namespace or in one other, a child of
/// ckpt's (<c>NS_GET_PARENT</c>; deeper nesting is refused). Its maps come from /proc/PID/uid_map and
/// gid_map as ckpt's namespace sees them, its owner from <c>NS_GET_OWNER_UID</c>; each of the tree's own
/// namespaces is owned (<c>NS_GET_USERNS</c>) by ckpt's user namespace or by that one (any other is
/// refused). A process in it whose ids have no mapping there is refused. Credentials are saved as ckpt
/// sees them (Credentials) and translated at restart. One UserNamespace record before the Tree record, and
/// before every other namespace's.
/// </para>
/// <para>
/// Restart: a helper of ckpt (a short-lived vessel, given the owner's uid first) makes the user namespace
/// (injected <c>unshare(CLONE_NEWUSER)</c>), ckpt writes its setgroups, uid_map and gid_map, keeps an fd of
/// it and kills the helper. A namespace the image says it owned is made by another helper that joined it
/// (<see cref="MakeOwned"/>), and the root's vessel (or, for a pid namespace, the process that forks its
/// init) enters it through ckpt's fd, so that it is owned as it was. The vessels are built with ckpt's
/// privileges in ckpt's user namespace; at Finish (before the pid namespaces of children and the
/// credentials) each process that was in it sets its supplementary groups (as ckpt's namespace sees them:
/// a namespace with setgroups denied could not), enters it (<c>setns</c>, single-threaded still) and only
/// then makes its threads: their ids at the levels of pid namespaces its user namespace does not own
/// cannot be chosen from inside (clone3's set_tid needs CAP_CHECKPOINT_RESTORE over them), so ckpt sets
/// the next id of its own level (ns_last_pid) before each (<see cref="ThreadIds"/>). Credentials then sets
/// the ids as the namespace sees them and the capabilities (relative to it).
/// </para>
/// </summary>
public sealed class UserNamespace : ITreeNamespace
{
    public static readonly UserNamespace Instance = new();
    public string Name => "user namespace";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.UserNamespace];
    /// <summary>Before PidNamespace (69: pid_for_children, which needs the threads made) and Credentials (70).</summary>
    public int FinishOrder => 68;

    private const int CLONE_NEWUSER = 0x10000000;
    private const uint PIDFD_GET_PID_FOR_CHILDREN_NAMESPACE = 0xff06;
    private const uint NS_GET_USERNS = 0xb701, NS_GET_PARENT = 0xb702, NS_GET_OWNER_UID = 0xb704;

    /// <summary>The namespaces the tree's user namespace may own, in the order of the record's mask bits.</summary>
    internal static readonly (string Name, int Flag)[] Kinds =
    [
        ("uts", 0x04000000), ("ipc", 0x08000000), ("net", 0x40000000), ("mnt", 0x00020000), ("cgroup", 0x02000000), ("time", 0x00000080),
    ];

    /// <summary>One line of a uid or gid map: ids <c>Inside</c>.. of the namespace are <c>Outside</c>.. of ckpt's.</summary>
    public readonly record struct Range(uint Inside, uint Outside, uint Count);

    public sealed class State
    {
        public uint Owner;
        public bool SetgroupsDenied;
        public Range[] Uids = [], Gids = [];
        /// <summary>Bits of <see cref="Kinds"/>: the tree's namespaces of those kinds are owned by it.</summary>
        public uint OwnedMask;
        /// <summary>The host pids of the processes in it.</summary>
        public HashSet<int> Members = [];

        /// <summary>Restart: ckpt's fd of the namespace made.</summary>
        public int Fd = -1;
        /// <summary>Restart: the processes that entered it (their threads are made inside).</summary>
        public readonly HashSet<int> Joined = [];

        public bool Owns(string kind) => (OwnedMask & (1u << Array.FindIndex(Kinds, k => k.Name == kind))) != 0;
    }

    /// <summary>The user namespace of the restart running on this (the tracer) thread; null for a tree in ckpt's.</summary>
    [ThreadStatic] private static State? t_current;
    public static State? Current => t_current;
    public static void Reset() => t_current = null;

    /// <summary>Id <paramref name="id"/> of ckpt's namespace as <paramref name="map"/>'s namespace sees it; null where it has none.</summary>
    public static uint? Inside(Range[] map, uint id)
    {
        foreach (var r in map)
            if (id >= r.Outside && id - r.Outside < r.Count) return r.Inside + (id - r.Outside);
        return null;
    }

    // ------------------------------------------------------------------ checkpoint

    public void Write(CheckpointSession s)
    {
        string mine = FileCalls.ReadLink("/proc/self/ns/user") ?? throw new CkptException("checkpoint: cannot read ckpt's own user namespace (/proc/self/ns/user)", ExitCodes.Internal);
        string? ns = null;
        int first = 0;
        var members = new List<int>();
        foreach (var e in s.Tree)
        {
            if (e.Zombie) continue;
            int live = s.Find(e.Pid)?.Pid ?? e.Pid;
            string its = FileCalls.ReadLink($"/proc/{live}/ns/user") ?? throw new NotCheckpointableException(e.Pid, "its user namespace cannot be read (/proc/PID/ns/user)");
            if (its == mine) continue;
            if (ns == null) (ns, first) = (its, live);
            else if (its != ns)
                throw new NotCheckpointableException(e.Pid, $"it is in user namespace {its}, and pid {first} of the tree in {ns}: one user namespace besides ckpt's is saved, not more");
            members.Add(e.Pid);
        }
        if (ns == null) return;
        string? parent = Related(first, "user", NS_GET_PARENT);
        if (parent != mine)
            throw new NotCheckpointableException(first, $"its user namespace {ns} is not a child of ckpt's ({mine}; its parent is {parent ?? "not visible"}): nested user namespaces are not supported; run ckpt in the parent of that namespace");
        var st = new State
        {
            Owner = OwnerUid(first),
            SetgroupsDenied = FileCalls.ReadText($"/proc/{first}/setgroups").Trim() == "deny",
            Uids = ParseMap(FileCalls.ReadText($"/proc/{first}/uid_map")),
            Gids = ParseMap(FileCalls.ReadText($"/proc/{first}/gid_map")),
        };
        if (st.Uids.Length == 0 || st.Gids.Length == 0)
            throw new NotCheckpointableException(first, $"its user namespace {ns} has no {(st.Uids.Length == 0 ? "uid" : "gid")} map yet (a namespace being set up); checkpoint it once its maps are written");
        foreach (int pid in members)
        {
            var status = ProcStatus.Read(s.Find(pid)?.Pid ?? pid);
            foreach (uint u in status.Uid.Distinct())
                if (Inside(st.Uids, u) == null) throw new NotCheckpointableException(pid, $"its uid {u} has no uid in its user namespace {ns} (uid_map: {Format(st.Uids).Trim().Replace('\n', ',')}); it cannot be given again");
            foreach (uint g in status.Gid.Distinct())
                if (Inside(st.Gids, g) == null) throw new NotCheckpointableException(pid, $"its gid {g} has no gid in its user namespace {ns} (gid_map: {Format(st.Gids).Trim().Replace('\n', ',')}); it cannot be given again");
        }
        // the owner of each of the tree's own namespaces: ckpt's user namespace or this one
        int root = s.Processes[0].Pid;
        for (int i = 0; i < Kinds.Length; i++)
        {
            string kind = Kinds[i].Name;
            string? its = FileCalls.ReadLink($"/proc/{root}/ns/{kind}"), ckpts = FileCalls.ReadLink($"/proc/self/ns/{kind}");
            if (its == null || its == ckpts) continue;
            string? owner = Related(root, kind, NS_GET_USERNS);
            if (owner == ns) st.OwnedMask |= 1u << i;
            else if (owner != mine)
                throw new NotCheckpointableException(root, $"its {kind} namespace {its} is owned by user namespace {owner ?? "(not visible)"}, neither ckpt's nor the tree's ({ns})");
        }
        var p = new PayloadWriter().U32(st.Owner).Bool(st.SetgroupsDenied);
        foreach (var map in new[] { st.Uids, st.Gids })
        {
            p.U32((uint)map.Length);
            foreach (var r in map) p.U32(r.Inside).U32(r.Outside).U32(r.Count);
        }
        p.U32(st.OwnedMask).U32((uint)members.Count);
        foreach (int pid in members) p.I32(pid);
        // not optional: a reader that skipped it would restart the tree with ckpt's privileges
        s.Image.Write(RecordKind.UserNamespace, p);
        s.Log.Info($"{members.Count} process(es) of the tree in user namespace {ns} (owner {st.Owner}, uid_map {Format(st.Uids).Trim().Replace('\n', ',')}, gid_map {Format(st.Gids).Trim().Replace('\n', ',')}" +
            $"{(st.SetgroupsDenied ? ", setgroups denied" : "")}{(st.OwnedMask != 0 ? $", owning the tree's {string.Join(", ", Kinds.Where((k, i) => (st.OwnedMask & (1u << i)) != 0).Select(k => k.Name))} namespace(s)" : "")})");
    }

    /// <summary>
    /// The user namespace that owns pid namespace /proc/<paramref name="pid"/>/ns/<paramref name="which"/>
    /// when it is not ckpt's: the tree's (true), else false; any other is refused.
    /// </summary>
    internal static bool OwnedByTree(int pid, string which)
    {
        string? owner = Related(pid, which, NS_GET_USERNS);
        if (owner == FileCalls.ReadLink("/proc/self/ns/user")) return false;
        string? its = FileCalls.ReadLink($"/proc/{pid}/ns/user");
        if (owner != null && owner == its) return true;
        throw new NotCheckpointableException(pid, $"its {which} namespace ({FileCalls.ReadLink($"/proc/{pid}/ns/{which}")}) is owned by user namespace {owner ?? "(not visible)"}, neither ckpt's nor its own ({its})");
    }

    private static Range[] ParseMap(string text)
    {
        var list = new List<Range>();
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length != 3) throw new FormatException($"id map line '{line}'");
            list.Add(new Range(uint.Parse(f[0], CultureInfo.InvariantCulture), uint.Parse(f[1], CultureInfo.InvariantCulture), uint.Parse(f[2], CultureInfo.InvariantCulture)));
        }
        return list.ToArray();
    }

    private static string Format(Range[] map)
    {
        var b = new StringBuilder();
        foreach (var r in map) b.Append(CultureInfo.InvariantCulture, $"{r.Inside} {r.Outside} {r.Count}\n");
        return b.ToString();
    }

    /// <summary>The namespace an ioctl on /proc/PID/ns/WHICH returns (its parent, its owner), as a link text; null if it cannot be had.</summary>
    internal static unsafe string? Related(int pid, string which, uint request)
    {
        int fd = FileCalls.Open($"/proc/{pid}/ns/{which}", FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0);
        if (fd < 0) return null;
        try
        {
            int other = (int)Sys.Call(Nr.ioctl, fd, request);
            if (other < 0) return null;
            try { return FileCalls.ReadLink($"/proc/self/fd/{other}"); }
            finally { FileCalls.Close(other); }
        }
        finally { FileCalls.Close(fd); }
    }

    private static unsafe uint OwnerUid(int pid)
    {
        int fd = FileCalls.Open($"/proc/{pid}/ns/user", FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0);
        if (fd < 0) throw SyscallException.Last("open ns/user", pid);
        try
        {
            uint uid = 0;
            if (Sys.Call(Nr.ioctl, fd, NS_GET_OWNER_UID, (long)&uid) < 0) throw SyscallException.Last("ioctl(NS_GET_OWNER_UID)", pid);
            return uid;
        }
        finally { FileCalls.Close(fd); }
    }

    // ------------------------------------------------------------------ the record

    private static State Read(Record rec)
    {
        var r = rec.Reader();
        string at = $"UserNamespace record at offset {rec.Offset}";
        var st = new State { Owner = r.U32(), SetgroupsDenied = r.Bool() };
        static Range[] Map(ref PayloadReader r, string at, string what)
        {
            uint n = r.U32();
            if (n == 0 || n > 340) throw new ImageFormatException($"{at}: {n} lines in its {what} map");
            var m = new Range[n];
            for (int i = 0; i < n; i++)
            {
                m[i] = new Range(r.U32(), r.U32(), r.U32());
                if (m[i].Count == 0 || (ulong)m[i].Inside + m[i].Count > 1UL << 32 || (ulong)m[i].Outside + m[i].Count > 1UL << 32)
                    throw new ImageFormatException($"{at}: {what} map line {m[i].Inside} {m[i].Outside} {m[i].Count}");
            }
            return m;
        }
        st.Uids = Map(ref r, at, "uid");
        st.Gids = Map(ref r, at, "gid");
        st.OwnedMask = r.U32();
        if (st.OwnedMask >> Kinds.Length != 0) throw new ImageFormatException($"{at}: namespace kinds {st.OwnedMask:x} it owns");
        uint members = r.U32();
        if (members == 0 || members > 1 << 22) throw new ImageFormatException($"{at}: {members} processes in it");
        for (int i = 0; i < members; i++)
        {
            int pid = r.I32();
            if (pid <= 0 || !st.Members.Add(pid)) throw new ImageFormatException($"{at}: pid {pid}");
        }
        r.End();
        return st;
    }

    // ------------------------------------------------------------------ restart

    /// <summary>Makes the user namespace now, before any vessel of the tree: the namespaces it owns are made by its members.</summary>
    public void Restore(RestoreSession s, Record rec)
    {
        var st = Read(rec);
        st.Fd = s.Own(Make(s, st));
        s.Set(st);
        t_current = st;
    }

    /// <summary>A helper makes the namespace (as its owner where it can be), ckpt writes the maps and keeps an fd of it.</summary>
    private static int Make(RestoreSession s, State st)
    {
        for (int attempt = 0; ; attempt++)
        {
            bool asOwner = st.Owner != 0 && attempt == 0;
            var helper = Vessel.CreateHelper();
            try
            {
                if (asOwner) helper.InjectChecked("setresuid (the owner of the user namespace)", Nr.setresuid, st.Owner, st.Owner, st.Owner);
                long r = helper.Inject(Nr.unshare, CLONE_NEWUSER);
                if (r < 0)
                {
                    if (asOwner)
                    {
                        s.Log.Info($"the tree's user namespace cannot be made by its owner (uid {st.Owner}): unshare: {Errors.Describe((int)-r)}; made by ckpt's user instead");
                        continue;
                    }
                    throw new CkptException($"restart: cannot make the tree's user namespace (unshare): {Errors.Describe((int)-r)}; restart as root on a kernel that allows user namespaces", ExitCodes.Permission);
                }
                int h = helper.Tid;
                if (st.SetgroupsDenied) WriteOnce($"/proc/{h}/setgroups", "deny");
                WriteOnce($"/proc/{h}/uid_map", Format(st.Uids));
                WriteOnce($"/proc/{h}/gid_map", Format(st.Gids));
                int fd = FileCalls.Open($"/proc/{h}/ns/user", FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0);
                if (fd < 0) throw SyscallException.Last("open ns/user", h);
                s.Log.Info($"the tree's user namespace made (owner {(asOwner ? st.Owner : 0)}, uid_map {Format(st.Uids).Trim().Replace('\n', ',')}, gid_map {Format(st.Gids).Trim().Replace('\n', ',')})");
                return fd;
            }
            finally { Vessel.KillAndReap(helper.Tid); }
        }
    }

    /// <summary>Writes <paramref name="text"/> to a /proc file in one write (an id map must come whole).</summary>
    private static void WriteOnce(string path, string text)
    {
        int fd = FileCalls.Open(path, FileCalls.O_WRONLY | FileCalls.O_CLOEXEC, 0);
        if (fd < 0) throw SyscallException.Last($"open {path}");
        try
        {
            if (!WriteAll(fd, Encoding.ASCII.GetBytes(text)))
                throw new CkptException($"restart: cannot write {path} ({text.Trim().Replace('\n', ',')}): {Errors.Describe(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}", ExitCodes.RestoreConflict);
        }
        finally { FileCalls.Close(fd); }
    }

    /// <summary>
    /// A namespace of kind <paramref name="flag"/> owned by the tree's user namespace: a helper enters that
    /// one (ckpt's fd, reopened through /proc/CKPT/fd/N), <paramref name="prepare"/> readies it (ckpt moves it
    /// to a cgroup...), it unshares, <paramref name="before"/> runs with its pid (ckpt writes the offsets of a
    /// time namespace...), and ckpt keeps an fd of its /proc/PID/ns/<paramref name="file"/>. For a pid namespace,
    /// <paramref name="parentInit"/> is the init of the parent namespace (0: ckpt's), entered first.
    /// </summary>
    internal static int MakeOwned(RestoreSession s, int flag, string file, Action<int>? prepare = null, Action<int>? before = null, int parentInit = 0)
    {
        var st = t_current ?? throw new InvalidOperationException("no user namespace for the tree");
        var helper = Vessel.CreateHelper();
        try
        {
            prepare?.Invoke(helper.Tid);
            Join(helper, Vessel.Scratch, st, "its helper");
            if (parentInit != 0)
            {
                long pfd = PidNamespace.OpenIn(helper, Vessel.Scratch, $"/proc/{parentInit}/ns/pid", FileCalls.O_RDONLY);
                long e = helper.Inject(Nr.setns, pfd, 0x20000000 /* CLONE_NEWPID */);
                helper.Inject(Nr.close, pfd);
                if (e < 0) throw new SyscallException($"setns into the pid namespace of {parentInit} (injected)", (int)-e, helper.Tid);
            }
            long r = helper.Inject(Nr.unshare, flag);
            if (r < 0) throw new SyscallException($"unshare({file} namespace) in the tree's user namespace (injected)", (int)-r, helper.Tid);
            before?.Invoke(helper.Tid);
            int fd;
            if (file == "pid_for_children")
            {
                // (a pid namespace no process is in yet has no /proc/PID/ns/pid_for_children: its pidfd gives it)
                int pidfd = ProcessCalls.PidfdOpen(helper.Tid);
                fd = (int)Sys.Call(Nr.ioctl, pidfd, PIDFD_GET_PID_FOR_CHILDREN_NAMESPACE);
                int err = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
                FileCalls.Close(pidfd);
                if (fd < 0)
                    throw new CkptException($"restart: cannot reach the pid namespace made in the tree's user namespace (ioctl PIDFD_GET_PID_FOR_CHILDREN_NAMESPACE: {Errors.Describe(err)}; Linux 6.11 or later has it)", ExitCodes.RestoreConflict);
            }
            else
            {
                fd = FileCalls.Open($"/proc/{helper.Tid}/ns/{file}", FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0);
                if (fd < 0) throw SyscallException.Last($"open ns/{file}", helper.Tid);
            }
            return s.Own(fd);
        }
        finally { Vessel.KillAndReap(helper.Tid); }
    }

    /// <summary>
    /// The tree's namespace of kind <paramref name="kind"/> for the root's fresh vessel: made by the vessel
    /// (injected unshare) unless the tree's user namespace owns it, then made inside that one and entered.
    /// Returns 0 or -errno, as the unshare would.
    /// </summary>
    internal static long Unshare(RestoreContext root, string kind, Action<int>? prepare = null)
    {
        int flag = Array.Find(Kinds, k => k.Name == kind).Flag;
        if (t_current is not { } st || !st.Owns(kind)) return root.Vessel.Inject(Nr.unshare, flag);
        int fd = MakeOwned(root.Session, flag, kind, prepare);
        long r = Enter(root.Vessel, Vessel.Scratch, fd, flag);
        root.Session.CloseOwn(fd);
        if (r == 0) root.Log.Debug($"the tree's {kind} namespace made in its user namespace");
        return r;
    }

    /// <summary>Injected setns of <paramref name="task"/> into the namespace of ckpt's fd <paramref name="fd"/> (reopened through /proc/CKPT/fd/N); 0 or -errno.</summary>
    internal static long Enter(Tracing.TracedTask task, ulong scratch, int fd, int flag)
    {
        long mine = PidNamespace.OpenIn(task, scratch, $"/proc/{Environment.ProcessId}/fd/{fd}", FileCalls.O_RDONLY);
        long r = task.Inject(Nr.setns, mine, flag);
        task.Inject(Nr.close, mine);
        return r;
    }

    /// <summary>For <see cref="Vessel.Create"/>: ckpt's fd of a new pid namespace owned by the tree's user namespace for the init <paramref name="pid"/> (a namespace one below ckpt's); -1 when its namespace is not owned so.</summary>
    internal static int MakePidNamespaceFor(int pid)
    {
        if (t_current == null || PidNamespace.Current is not { } l || !l.Tasks.TryGetValue(pid, out var t) || !l.OwnedByUser.Contains(t.Ns)) return -1;
        int parent = l.Spaces[t.Ns].Parent;
        return MakeOwned(CurrentSession!, 0x20000000, "pid_for_children", parentInit: parent == 0 ? 0 : l.Spaces[parent].Init);
    }

    /// <summary>The session of the restart on this thread, for the calls made from the engine (<see cref="Vessel"/>).</summary>
    [ThreadStatic] private static RestoreSession? t_session;
    internal static RestoreSession? CurrentSession { get => t_session; set => t_session = value; }

    private static void Join(Tracing.TracedTask task, ulong scratch, State st, string what)
    {
        long r = Enter(task, scratch, st.Fd, CLONE_NEWUSER);
        if (r < 0) throw new SyscallException($"setns into the tree's user namespace ({what}, injected)", (int)-r, task.Tid);
    }

    /// <summary>Nothing for the root here: the namespaces it owns are entered by their kinds (<see cref="Unshare"/>), the user namespace itself at Finish.</summary>
    public void Enter(RestoreContext root) { }

    /// <summary>
    /// A process that was in the tree's user namespace: its supplementary groups set from outside, then it
    /// enters (single-threaded, its threads made inside after). Its ids and capabilities follow (Credentials).
    /// </summary>
    public void Finish(RestoreContext ctx)
    {
        if (ctx.Session.Existing<State>() is not { } st || !st.Members.Contains(ctx.Pid)) return;
        Credentials.SetGroups(ctx, ctx.Vessel, Credentials.SavedOf(ctx).Groups);
        Join(ctx.Vessel, ctx.Scratch, st, $"pid {ctx.Pid}");
        // entering made it not dumpable (its credentials moved to a namespace its uid does not own), and so
        // out of reach of the other members (opening /proc/PID/ns/pid of an init in it, for pid_for_children):
        // dumpable meanwhile; its own setting comes back at its release (ProcessAttributes.FinishDumpable)
        ctx.Vessel.InjectChecked("prctl(PR_SET_DUMPABLE)", Nr.prctl, 4 /* PR_SET_DUMPABLE */, 1);
        st.Joined.Add(ctx.Pid);
        CpuState.CreateThreads(ctx);
    }

    /// <summary>Whether the vessel of process <paramref name="pid"/> entered the tree's user namespace (its ids and capabilities are relative to it).</summary>
    public static bool Joined(int pid) => t_current?.Joined.Contains(pid) == true;

    /// <summary>
    /// For a thread made by a process inside the tree's user namespace: how many of its ids (innermost
    /// first, ckpt's level last) clone3's set_tid may give (the levels of pid namespaces that namespace
    /// owns); ckpt's own level is set through ns_last_pid by <see cref="PrimeThreadId"/>. Null when the
    /// process is not inside.
    /// </summary>
    internal static int? SettableLevels(int parentTid, int[] ids)
    {
        if (!Joined(parentTid)) return null;
        var l = PidNamespace.Current;
        int n = l?.NsOf(parentTid) ?? 0, k = 0;
        while (n != 0 && l!.OwnedByUser.Contains(n)) { k++; n = l.Spaces[n].Parent; }
        if (k != ids.Length - 1)
            throw new CkptException($"restart: thread {ids[^1]} of pid {parentTid} is to be made inside its user namespace, in a pid namespace that namespace does not own (its id there cannot be chosen); not supported", ExitCodes.RestoreConflict);
        return k;
    }

    /// <summary>Sets ckpt's pid namespace's ns_last_pid so that the next task made gets <paramref name="id"/> (if no one else forks meanwhile).</summary>
    internal static void PrimeThreadId(int id)
    {
        const string path = "/proc/sys/kernel/ns_last_pid";
        int fd = FileCalls.Open(path, FileCalls.O_WRONLY | FileCalls.O_CLOEXEC, 0);
        if (fd < 0) throw SyscallException.Last($"open {path}");
        try
        {
            if (!WriteAll(fd, Encoding.ASCII.GetBytes((id - 1).ToString(CultureInfo.InvariantCulture)))) throw SyscallException.Last($"write {path}");
        }
        finally { FileCalls.Close(fd); }
    }

    private static unsafe bool WriteAll(int fd, byte[] bytes)
    {
        fixed (byte* b = bytes) return FileCalls.Write(fd, b, (nuint)bytes.Length) == bytes.Length;
    }

    public void Describe(Record rec, InfoNode info)
    {
        var st = Read(rec);
        info.Child("user_namespace").Set("owner", st.Owner).Set("uid_map", Format(st.Uids).Trim().Replace('\n', ',')).Set("gid_map", Format(st.Gids).Trim().Replace('\n', ','))
            .Set("setgroups", st.SetgroupsDenied ? "deny" : "allow")
            .Set("owns", string.Join(' ', Kinds.Where((k, i) => (st.OwnedMask & (1u << i)) != 0).Select(k => k.Name)))
            .Set("processes", string.Join(' ', st.Members.Order()));
    }
}
