using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>
/// The pid namespaces of the tree below ckpt's: a tree whose root is the init of a pid namespace of its own
/// (<c>unshare --pid --fork</c>, a container's init), or that made one (a process that ran <c>unshare
/// --pid</c> and forked its init), and the processes forked into one from outside (<c>nsenter</c>). Each task
/// keeps its id in every namespace from ckpt's down to its own: the program sees the ids of its own.
/// <para>
/// Checkpoint: every namespace a process of the tree is in must have its init (pid 1 there) in the tree,
/// and every process in it must be in the tree (a namespace is rebuilt whole or not at all); its parent is
/// ckpt's namespace or another of the tree's (<c>NS_GET_PARENT</c>). Each task's ids come from NSpid in
/// /proc/PID/task/TID/status, and the ids of a session or group whose leader exited (made again by a
/// helper) from a member's NSsid or NSpgid. A process whose children go into another namespace than its own
/// (pid_for_children, after <c>unshare(CLONE_NEWPID)</c> or <c>setns</c>) has that namespace saved: one of the
/// tree's, or a new one still empty (a child of its own, made again by <c>unshare</c>). One PidNamespace record
/// before the Tree record, only when the tree has such a namespace.
/// </para>
/// <para>
/// Restart: a namespace's init is forked with <c>CLONE_NEWPID</c> (by ckpt for the root), every task with
/// clone3's set_tid holding its id at each level (<see cref="Vessel.InjectClone"/>); a process forked into a
/// namespace other than its parent's has that parent enter it first (<c>setns</c> on the namespace's
/// /proc/PID/ns/pid, then back to its own). The ids given to calls injected into a process of a namespace
/// (a process group to join, a signal's target, a timer's thread, an fd's owner, a pidfd's process) are
/// those it sees (<see cref="Layout.Seen"/>). Finish: pid_for_children set again (<c>setns</c>, or
/// <c>unshare</c> for an empty one). ckpt itself cannot be seen from inside: a vessel there takes ckpt's
/// files through a pidfd of ckpt reopened from /proc/CKPT/fd/N.
/// </para>
/// </summary>
public sealed class PidNamespace : ITreeNamespace
{
    public static readonly PidNamespace Instance = new();
    public string Name => "pid namespaces";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.PidNamespace];
    /// <summary>After the threads are made (they must be made while pid_for_children is the process's own namespace) and before the credentials (setns needs CAP_SYS_ADMIN).</summary>
    public int FinishOrder => 69;

    private const long CLONE_NEWPID = 0x20000000;
    private const uint NS_GET_PARENT = 0xb702;
    /// <summary>The kernel's MAX_PID_NS_LEVEL: namespaces nest at most this deep.</summary>
    private const int MaxDepth = 32;

    /// <summary>One namespace of the layout: its parent (index; -1 for ckpt's, index 0) and the host pid of its init (0: an empty namespace, made by unshare).</summary>
    public readonly record struct Space(int Parent, int Init, int Depth);

    /// <summary>
    /// The tree's pid namespaces and each task's ids in them. Index 0 is ckpt's namespace. A task not listed
    /// is in ckpt's namespace.
    /// </summary>
    public sealed class Layout
    {
        public readonly List<Space> Spaces = [new Space(-1, 0, 0)];
        /// <summary>host tid → its namespace and its ids at levels 1..depth (the outermost first).</summary>
        public readonly Dictionary<int, (int Ns, int[] Ids)> Tasks = new();
        /// <summary>host pid → the namespace its children go into, where that is not its own.</summary>
        public readonly Dictionary<int, int> ForChildren = new();
        /// <summary>The namespaces owned by the tree's user namespace (UserNamespace), not ckpt's: made inside that one.</summary>
        public readonly HashSet<int> OwnedByUser = [];
        /// <summary>Restart: the namespaces that exist (their init was made).</summary>
        public readonly HashSet<int> Made = [0];
        /// <summary>Restart: the namespaces whose next free id was set past the image's ids (<see cref="PrimeCursor"/>).</summary>
        public readonly HashSet<int> Primed = [0];
        /// <summary>Restart: tasks made that the image does not list (go-betweens, helpers) → their namespace, and their id as their parent's namespace (<c>In</c>) sees it.</summary>
        public readonly Dictionary<int, (int Ns, int Id, int In)> Others = new();

        /// <summary>Restart: an id the image names whose task had exited (a timer's target thread), → the task made to stand for it with ids of its own.</summary>
        public readonly Dictionary<int, int> Aliases = new();

        public int NsOf(int hostTid) => Tasks.TryGetValue(hostTid, out var t) ? t.Ns : Others.GetValueOrDefault(hostTid).Ns;

        /// <summary>Whether namespace <paramref name="ns"/> is <paramref name="ancestor"/> or below it.</summary>
        public bool Within(int ns, int ancestor)
        {
            for (int n = ns; n >= 0; n = Spaces[n].Parent) if (n == ancestor) return true;
            return false;
        }

        /// <summary>
        /// Id <paramref name="hostId"/> (a task, process group or session of ckpt's namespace) as the task
        /// <paramref name="viewer"/> sees it; 0 when it cannot see it (outside its namespace, or a task the
        /// image does not list).
        /// </summary>
        public int Seen(int viewer, int hostId)
        {
            int v = NsOf(viewer);
            if (v == 0 || hostId <= 0) return hostId;
            if (Aliases.TryGetValue(hostId, out int alias)) hostId = alias;
            if (Others.TryGetValue(hostId, out var o)) return o.In == v ? o.Id : 0;
            if (!Tasks.TryGetValue(hostId, out var t) || !Within(t.Ns, v)) return 0;
            return t.Ids[Spaces[v].Depth - 1];
        }

        /// <summary>clone3's set_tid for task <paramref name="hostId"/>: its id in its own namespace first, ckpt's last.</summary>
        public int[] SetTid(int hostId)
        {
            if (!Tasks.TryGetValue(hostId, out var t)) return [hostId];
            var ids = new int[t.Ids.Length + 1];
            for (int i = 0; i < t.Ids.Length; i++) ids[i] = t.Ids[t.Ids.Length - 1 - i];
            ids[^1] = hostId;
            return ids;
        }
    }

    /// <summary>The layout of the restart running on this (the tracer) thread; null for a tree wholly in ckpt's namespace.</summary>
    [ThreadStatic] private static Layout? t_current;
    public static Layout? Current => t_current;
    /// <summary>Forgets the layout of an earlier restart (the tracer thread runs one restart at a time).</summary>
    public static void Reset() => t_current = null;

    private static int s_ckptPidfd = -1;
    /// <summary>A pidfd of ckpt itself, open while ckpt runs, which a vessel in a pid namespace of the tree reopens through /proc/CKPT/fd/N (<see cref="RestoreContext.Install"/>).</summary>
    public static int CkptPidfd
    {
        get
        {
            if (s_ckptPidfd < 0)
            {
                int fd = ProcessCalls.PidfdOpen(Environment.ProcessId);
                if (Interlocked.CompareExchange(ref s_ckptPidfd, fd, -1) != -1) FileCalls.Close(fd);
            }
            return s_ckptPidfd;
        }
    }

    /// <summary>Id <paramref name="hostId"/> as the task <paramref name="viewer"/> of the current restart sees it (itself when there is no layout).</summary>
    public static int Seen(int viewer, int hostId) => t_current?.Seen(viewer, hostId) ?? hostId;

    // ------------------------------------------------------------------ checkpoint

    public void Write(CheckpointSession s)
    {
        string mine = FileCalls.ReadLink("/proc/self/ns/pid") ?? throw new CkptException("checkpoint: cannot read ckpt's own pid namespace (/proc/self/ns/pid)", ExitCodes.Internal);
        var own = new Dictionary<int, string>();          // pid → its namespace
        var forChildren = new Dictionary<int, string>();  // pid → its children's, where it differs
        foreach (var e in s.Tree)
        {
            int live = s.Find(e.Pid)?.Pid ?? e.Pid;
            string? ns = FileCalls.ReadLink($"/proc/{live}/ns/pid");
            if (ns == null) throw new NotCheckpointableException(e.Pid, "its pid namespace cannot be read (/proc/PID/ns/pid)");
            own[e.Pid] = ns;
            if (!e.Zombie && FileCalls.ReadLink($"/proc/{live}/ns/pid_for_children") is { } pfc && pfc != ns) forChildren[e.Pid] = pfc;
        }
        if (own.Values.All(n => n == mine) && forChildren.Count == 0) return;
        var self = ProcStatus.Read(Environment.ProcessId);
        if (self.NsPid.Length != 1)
            throw new CkptException("checkpoint: /proc is not the one of ckpt's pid namespace (NSpid lists several ids for ckpt); mount a proc of its namespace", ExitCodes.Internal);

        // the namespaces, each after its parent, with their depth below ckpt's
        var layout = new Layout();
        var index = new Dictionary<string, int> { [mine] = 0 };
        var ids = new Dictionary<int, int[]>();   // tid → NSpid
        var pidOf = new Dictionary<int, int>();   // tid → its process
        foreach (var e in s.Tree)
        {
            var ctx = s.Find(e.Pid);
            // (a process whose main thread exited: its status is still there, with its ids)
            ids[e.Pid] = ProcStatus.Read(e.Pid).NsPid;
            pidOf[e.Pid] = e.Pid;
            if (ctx != null)
                foreach (var (t, _, _) in ctx.Threads)
                    if (t.Tid != e.Pid) { ids[t.Tid] = ProcStatus.Read(e.Pid, t.Tid).NsPid; pidOf[t.Tid] = e.Pid; }
        }
        foreach (var pid in own.Keys.OrderBy(p => ids[p].Length))
            Place(s, layout, index, mine, own[pid], pid, ids[pid].Length - 1);
        // the members: a namespace is rebuilt whole, with its init
        foreach (var (pid, ns) in own)
        {
            int n = index[ns];
            if (n == 0) continue;
            if (ids[pid].Length - 1 != layout.Spaces[n].Depth)
                throw new NotCheckpointableException(pid, $"its ids ({string.Join(' ', ids[pid])}) do not match the depth of its pid namespace {ns}");
            if (ids[pid][^1] == 1) layout.Spaces[n] = layout.Spaces[n] with { Init = pid };
        }
        for (int n = 1; n < layout.Spaces.Count; n++)
            if (layout.Spaces[n].Init == 0)
            {
                string ns = index.First(x => x.Value == n).Key;
                int holder = own.First(x => x.Value == ns).Key;
                int init = FindInit(ns);
                throw new NotCheckpointableException(holder, $"it is in pid namespace {ns}, whose init (pid 1 there{(init > 0 ? $": pid {init} here" : "")}) is not in the tree; a pid namespace is checkpointed whole: checkpoint the tree of its init{(init > 0 ? $" ({init})" : "")}, or of the process that made it");
            }
        // what every task's children go into
        foreach (var (pid, pfc) in forChildren)
        {
            if (!index.TryGetValue(pfc, out int n))
            {
                // a namespace made by unshare(CLONE_NEWPID) that no process entered yet
                if (ParentOf(pid, "pid_for_children") != own[pid])
                    throw new NotCheckpointableException(pid, $"its children's pid namespace {pfc} is neither one of the tree's nor a new one below its own; not supported");
                n = layout.Spaces.Count;
                layout.Spaces.Add(new Space(index[own[pid]], 0, layout.Spaces[index[own[pid]]].Depth + 1));
                index[pfc] = n;
            }
            layout.ForChildren[pid] = n;
        }
        // no process outside the tree may be in its namespaces (nor in an empty one: it is empty no more)
        var tree = s.Tree.Select(e => e.Pid).ToHashSet();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int other) || tree.Contains(other)) continue;
            if (FileCalls.ReadLink($"{dir}/ns/pid") is not { } ns || !index.TryGetValue(ns, out int n) || n == 0) continue;
            string comm = "";
            try { comm = ProcStat.Read(other).Comm; } catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException) { continue; }
            var space = layout.Spaces[n];
            int by = space.Init != 0 ? space.Init : layout.ForChildren.First(x => x.Value == n).Key;
            throw new NotCheckpointableException(by, $"pid {other} ({comm}) is in the pid namespace {ns} of the tree but not in the tree (a process entered it from outside, nsenter?); a pid namespace is checkpointed whole: checkpoint a tree that holds it, or end it first");
        }
        foreach (var (tid, nspid) in ids)
        {
            int pid = pidOf[tid];
            int n = index[own[pid]];
            if (n == 0) continue;
            if (nspid.Length - 1 != layout.Spaces[n].Depth)
                throw new NotCheckpointableException(pid, $"thread {tid}: its ids ({string.Join(' ', nspid)}) do not match the depth of its pid namespace");
            layout.Tasks[tid] = (n, nspid[1..]);
        }
        // the ids of sessions and groups whose leader exited, where a member in a namespace of the tree sees
        // them: the restart makes a helper with those ids to make the session or group
        foreach (var e in s.Tree)
        {
            if (e.Zombie || index[own[e.Pid]] is not (int n and > 0)) continue;
            var st = ProcStatus.Read(e.Pid);
            foreach (var nsids in new[] { st.NsSid, st.NsPgid })
                if (nsids.Length == layout.Spaces[n].Depth + 1 && nsids.All(x => x > 0) && !layout.Tasks.ContainsKey(nsids[0]) && !pidOf.ContainsKey(nsids[0]))
                    layout.Tasks[nsids[0]] = (n, nsids[1..]);
        }
        // the threads POSIX timers signal that had exited: their id in a namespace one below ckpt's, from a
        // proc of that namespace the process sees (/proc/PID/timers there names it as the namespace does)
        foreach (var e in s.Tree)
        {
            if (e.Zombie || index[own[e.Pid]] is not (int n and > 0) || layout.Spaces[n].Depth != 1) continue;
            foreach (var (hostTid, nsTid) in ExitedTimerTargets(e.Pid, ids[e.Pid][^1]))
                if (!pidOf.ContainsKey(hostTid) && !layout.Tasks.ContainsKey(hostTid)) layout.Tasks[hostTid] = (n, [nsTid]);
        }
        // which are owned by the tree's user namespace (made inside it at restart)
        for (int n = 1; n < layout.Spaces.Count; n++)
        {
            var sp = layout.Spaces[n];
            bool owned = sp.Init != 0 ? UserNamespace.OwnedByTree(sp.Init, "pid") : UserNamespace.OwnedByTree(layout.ForChildren.First(x => x.Value == n).Key, "pid_for_children");
            if (owned) layout.OwnedByUser.Add(n);
        }
        var p = new PayloadWriter().U32((uint)layout.Spaces.Count - 1);
        foreach (var sp in layout.Spaces.Skip(1)) p.U32((uint)sp.Parent).I32(sp.Init);
        p.U32((uint)layout.Tasks.Count);
        foreach (var (tid, (n, tids)) in layout.Tasks.OrderBy(x => x.Key))
        {
            p.I32(tid).U32((uint)n);
            foreach (int id in tids) p.I32(id);
        }
        p.U32((uint)layout.ForChildren.Count);
        foreach (var (pid, n) in layout.ForChildren.OrderBy(x => x.Key)) p.I32(pid).U32((uint)n);
        if (layout.OwnedByUser.Count > 0)
        {
            p.U32((uint)layout.OwnedByUser.Count);
            foreach (int n in layout.OwnedByUser.Order()) p.U32((uint)n);
        }
        // not optional: a reader that skipped it would rebuild the tree with other ids than the program knows
        s.Image.Write(RecordKind.PidNamespace, p);
        s.Log.Info($"the tree has {layout.Spaces.Count - 1} pid namespace(s) of its own: " +
            string.Join(", ", layout.Spaces.Skip(1).Select((sp, i) => sp.Init != 0 ? $"init {sp.Init} (depth {sp.Depth})" : $"an empty one (depth {sp.Depth})")));
    }

    /// <summary>
    /// The SIGEV_THREAD_ID targets of process <paramref name="pid"/>'s POSIX timers (host tid, id in its
    /// namespace), read from /proc/PID/timers of ckpt's proc and of the proc mounted on /proc where the
    /// process is (when that is one of its own namespace: its /proc/NSPID is the process). None otherwise.
    /// </summary>
    private static IEnumerable<(int Host, int Inner)> ExitedTimerTargets(int pid, int nsPid)
    {
        List<ProcTimers.Timer> host, inner;
        try
        {
            string theirs = $"/proc/{pid}/root/proc/{nsPid}";
            if (!ProcTimers.Available(pid) || ProcStat.Read(pid).Field(22) != StartTime($"{theirs}/stat")) return [];
            host = ProcTimers.Read(pid);
            if (!host.Any(t => t.ToThread)) return [];
            inner = ProcTimers.Parse(FileCalls.ReadText($"{theirs}/timers"));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { return []; }
        return host.Where(t => t.ToThread).Select(t => (t.NotifyPid, inner.FirstOrDefault(x => x.Id == t.Id).NotifyPid)).Where(x => x.Item2 > 0).ToList();
    }

    /// <summary>Field 22 (start time) of a /proc/PID/stat file at <paramref name="path"/>.</summary>
    private static string StartTime(string path) => ProcStat.Parse(FileCalls.ReadText(path)).Field(22);

    /// <summary>Adds namespace <paramref name="ns"/> (of process <paramref name="pid"/>, <paramref name="depth"/> below ckpt's) to the layout after its parent, once.</summary>
    private static void Place(CheckpointSession s, Layout layout, Dictionary<string, int> index, string mine, string ns, int pid, int depth)
    {
        if (index.ContainsKey(ns)) return;
        if (depth < 1 || depth >= MaxDepth) throw new NotCheckpointableException(pid, $"its pid namespace {ns} is not below ckpt's ({mine})");
        string? parent = ParentOf(pid, "pid");
        if (parent == null || !index.TryGetValue(parent, out int pi))
            throw new NotCheckpointableException(pid, $"it is in pid namespace {ns}, whose parent ({parent ?? "unknown"}) is neither ckpt's nor one of the tree's; checkpoint the tree of the init of its parent namespace");
        if (layout.Spaces[pi].Depth != depth - 1) throw new NotCheckpointableException(pid, $"its pid namespace {ns} is {depth} below ckpt's, its parent {parent} is not one above");
        index[ns] = layout.Spaces.Count;
        layout.Spaces.Add(new Space(pi, 0, depth));
    }

    /// <summary>The parent of the pid namespace /proc/PID/ns/<paramref name="which"/> (NS_GET_PARENT), as a link text; null if it cannot be had.</summary>
    private static string? ParentOf(int pid, string which) => UserNamespace.Related(pid, which, NS_GET_PARENT);

    /// <summary>The host pid of the init of namespace <paramref name="ns"/> (a process in it whose last NSpid is 1), 0 when none is found.</summary>
    private static int FindInit(string ns)
    {
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid) || FileCalls.ReadLink($"{dir}/ns/pid") != ns) continue;
            try { if (ProcStatus.Read(pid).NsPid[^1] == 1) return pid; }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { }
        }
        return 0;
    }

    // ------------------------------------------------------------------ the record

    private static Layout Read(Record rec)
    {
        var r = rec.Reader();
        var l = new Layout();
        string at = $"PidNamespace record at offset {rec.Offset}";
        uint n = r.U32();
        if (n == 0 || n > 1 << 16) throw new ImageFormatException($"{at}: {n} namespaces");
        for (int i = 1; i <= n; i++)
        {
            uint parent = r.U32();
            int init = r.I32();
            if (parent >= i || init < 0) throw new ImageFormatException($"{at}: namespace {i} has parent {parent} and init {init}");
            int depth = l.Spaces[(int)parent].Depth + 1;
            if (depth >= MaxDepth) throw new ImageFormatException($"{at}: namespace {i} nests {depth} deep");
            l.Spaces.Add(new Space((int)parent, init, depth));
        }
        uint tasks = r.U32();
        if (tasks > 1 << 22) throw new ImageFormatException($"{at}: {tasks} tasks");
        for (int i = 0; i < tasks; i++)
        {
            int tid = r.I32();
            uint ns = r.U32();
            if (tid <= 0 || ns == 0 || ns > n || l.Tasks.ContainsKey(tid)) throw new ImageFormatException($"{at}: task {tid} in namespace {ns}");
            var ids = new int[l.Spaces[(int)ns].Depth];
            for (int k = 0; k < ids.Length; k++)
                if ((ids[k] = r.I32()) <= 0) throw new ImageFormatException($"{at}: task {tid} has id {ids[k]}");
            l.Tasks[tid] = ((int)ns, ids);
        }
        uint pfc = r.U32();
        if (pfc > 1 << 22) throw new ImageFormatException($"{at}: {pfc} pid_for_children entries");
        for (int i = 0; i < pfc; i++)
        {
            int pid = r.I32();
            uint ns = r.U32();
            if (pid <= 0 || ns > n) throw new ImageFormatException($"{at}: pid {pid}'s children go into namespace {ns}");
            l.ForChildren[pid] = (int)ns;
        }
        uint owned = r.AtEnd ? 0 : r.U32();
        for (int i = 0; i < owned; i++)
        {
            uint ns = r.U32();
            if (ns == 0 || ns > n || !l.OwnedByUser.Add((int)ns)) throw new ImageFormatException($"{at}: namespace {ns} owned by the tree's user namespace");
        }
        r.End();
        for (int i = 1; i < l.Spaces.Count; i++)
        {
            var sp = l.Spaces[i];
            if (sp.Init != 0 && (!l.Tasks.TryGetValue(sp.Init, out var t) || t.Ns != i || t.Ids[^1] != 1))
                throw new ImageFormatException($"{at}: the init {sp.Init} of namespace {i} is not pid 1 there");
            if (sp.Init == 0 && !l.ForChildren.ContainsValue(i)) throw new ImageFormatException($"{at}: namespace {i} has no init and no process forks into it");
        }
        return l;
    }

    public void Restore(RestoreSession s, Record rec)
    {
        var l = Read(rec);
        s.Set(l);
        t_current = l;
    }

    /// <summary>The root's vessel was made in its namespace by <see cref="Vessel.Create"/>: nothing more to do.</summary>
    public void Enter(RestoreContext root) { }

    // ------------------------------------------------------------------ restart

    /// <summary>
    /// How a clone3 by <paramref name="parent"/> makes task <paramref name="id"/> (0: any id): whether with
    /// CLONE_NEWPID (the init of its namespace), and its set_tid (innermost first; empty: any id). Has the
    /// parent enter the task's namespace first when the task goes into one it is not forking into
    /// (<paramref name="enteredFrom"/>: true; the caller has it leave again with <see cref="Leave"/>).
    /// </summary>
    internal static (bool NewNs, int[] SetTid) Plan(Tracing.TracedTask parent, ulong scratch, int id, bool thread, out bool enteredFrom)
    {
        enteredFrom = false;
        var l = t_current;
        if (l == null) return (false, id != 0 ? [id] : []);
        int from = l.NsOf(parent.Tid);
        if (thread || id == 0 || !l.Tasks.TryGetValue(id, out var t))
        {
            if (id != 0 && from != 0 && !thread)
                throw new CkptException($"restart: a task with id {id} is to be made by pid {parent.Tid}, in a pid namespace of the tree, but the image has no ids in that namespace for it", ExitCodes.RestoreConflict);
            return (false, id == 0 ? [] : thread ? l.SetTid(id) : [id]);
        }
        if (t.Ns == from) return (false, l.SetTid(id));
        if (l.Spaces[t.Ns].Parent == from && !l.Made.Contains(t.Ns))
        {
            if (t.Ids[^1] != 1) throw new CkptException($"restart: pid {id} is to be made before the init of its pid namespace", ExitCodes.RestoreConflict);
            if (!l.OwnedByUser.Contains(t.Ns)) return (true, l.SetTid(id));
            // owned by the tree's user namespace: made inside that one by a helper, the parent forks into it
            int parentInit = l.Spaces[from].Init;
            int fd = UserNamespace.MakeOwned(UserNamespace.CurrentSession!, (int)CLONE_NEWPID, "pid_for_children", parentInit: parentInit);
            try
            {
                long r = UserNamespace.Enter(parent, scratch, fd, (int)CLONE_NEWPID);
                if (r < 0) throw new SyscallException("setns into a new pid namespace of the tree's user namespace (injected)", (int)-r, parent.Tid);
            }
            finally { UserNamespace.CurrentSession!.CloseOwn(fd); }
            enteredFrom = true;
            return (false, l.SetTid(id));
        }
        int init = l.Spaces[t.Ns].Init;
        if (!l.Made.Contains(t.Ns) || !l.Within(t.Ns, from))
            throw new CkptException($"restart: pid {id} cannot be forked by {parent.Tid} into its pid namespace (not made yet, or not below the parent's)", ExitCodes.RestoreConflict);
        Enter(parent, scratch, $"/proc/{init}/ns/pid", $"the pid namespace of {init}");
        enteredFrom = true;
        return (false, l.SetTid(id));
    }

    /// <summary>Notes a task made by <see cref="Vessel.InjectClone"/> or <see cref="Vessel.Create"/>: its namespace exists now.</summary>
    internal static void Made(int hostTid, int parentTid, bool newNs, int seenAs)
    {
        var l = t_current;
        if (l == null) return;
        if (l.Tasks.TryGetValue(hostTid, out var t)) { if (newNs || t.Ids[^1] == 1) l.Made.Add(t.Ns); }
        else if (parentTid != 0 && l.NsOf(parentTid) is int n and > 0) l.Others[hostTid] = (n, seenAs, n);
    }

    /// <summary>
    /// A pidfd of task <paramref name="hostPid"/> (pidfd_open <paramref name="flags"/>) in the vessel of
    /// <paramref name="ctx"/>: opened there by the id it sees, or by ckpt and installed where the vessel cannot
    /// see it (a process outside its pid namespace). Returns the fd or -errno.
    /// </summary>
    internal static long PidfdOpen(RestoreContext ctx, int hostPid, int flags)
    {
        int seen = Seen(ctx.Vessel.Tid, hostPid);
        if (seen != 0) return ctx.Vessel.Inject(Nr.pidfd_open, seen, flags);
        long mine = Sys.Call(Nr.pidfd_open, hostPid, flags);
        if (mine < 0) return -System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
        try { return ctx.Install((int)mine); }
        finally { FileCalls.Close((int)mine); }
    }

    /// <summary>
    /// Once the init of a namespace exists (<paramref name="task"/>, ready for injection): the namespace's
    /// ns_last_pid is set to the highest id the image has in it, so that a task made with any id there (a
    /// go-between, a helper for a reaped process's pidfd) takes none of the ids still to be given (a new
    /// namespace hands out 2, 3... next). Written from inside, where /proc/sys/kernel/ns_last_pid is the
    /// namespace's own.
    /// </summary>
    internal static void PrimeCursor(Tracing.TracedTask task, ulong scratch)
    {
        var l = t_current;
        if (l == null || l.NsOf(task.Tid) is not (int n and > 0) || !l.Primed.Add(n)) return;
        int max = l.Tasks.Values.Where(t => t.Ns == n).Select(t => t.Ids[^1]).DefaultIfEmpty(0).Max();
        if (max <= 1) return;
        const string path = "/proc/sys/kernel/ns_last_pid";
        long fd = OpenIn(task, scratch, path, FileCalls.O_WRONLY);
        var text = System.Text.Encoding.ASCII.GetBytes(max.ToString(System.Globalization.CultureInfo.InvariantCulture));
        MemoryCalls.WriteRemote(task.Tid, scratch, text);
        long w = task.Inject(Nr.write, fd, (long)scratch, text.Length);
        task.Inject(Nr.close, fd);
        if (w != text.Length) throw new SyscallException($"write {path} (injected)", w < 0 ? (int)-w : Errors.EIO, task.Tid);
    }

    /// <summary>Puts <paramref name="task"/>'s pid_for_children back to its own namespace after <see cref="Plan"/> had it enter another.</summary>
    internal static void Leave(Tracing.TracedTask task, ulong scratch) => Enter(task, scratch, "/proc/thread-self/ns/pid", "its own pid namespace");

    /// <summary>Injected setns(open(<paramref name="path"/>), CLONE_NEWPID) into <paramref name="task"/>: its next children go into that namespace.</summary>
    private static void Enter(Tracing.TracedTask task, ulong scratch, string path, string what)
    {
        long fd = OpenIn(task, scratch, path, FileCalls.O_RDONLY);
        long r = task.Inject(Nr.setns, fd, CLONE_NEWPID);
        task.Inject(Nr.close, fd);
        if (r < 0) throw new SyscallException($"setns into {what} (injected)", (int)-r, task.Tid);
    }

    /// <summary>Injected openat(<paramref name="path"/>, <paramref name="flags"/> | O_CLOEXEC) in <paramref name="task"/> (a vessel that may have no trampoline yet: the path goes to <paramref name="scratch"/>); the fd, or throws naming the path.</summary>
    internal static long OpenIn(Tracing.TracedTask task, ulong scratch, string path, int flags)
    {
        MemoryCalls.WriteRemote(task.Tid, scratch, System.Text.Encoding.UTF8.GetBytes(path + "\0"));
        long fd = task.Inject(Nr.openat, FileCalls.AT_FDCWD, (long)scratch, flags | FileCalls.O_CLOEXEC, 0);
        if (fd < 0) throw new SyscallException($"open {path} (injected)", (int)-fd, task.Tid);
        return fd;
    }

    /// <summary>Sets the process's pid_for_children as it was: after its threads were made (threads cannot be made while it differs).</summary>
    public void Finish(RestoreContext ctx)
    {
        if (ctx.Session.Existing<Layout>() is not { } l || !l.ForChildren.TryGetValue(ctx.Pid, out int n)) return;
        CpuState.CreateThreads(ctx);
        int init = l.Spaces[n].Init;
        if (init != 0)
        {
            Enter(ctx.Vessel, ctx.Scratch, $"/proc/{init}/ns/pid", $"the pid namespace of {init}");
            ctx.Session.Log.Debug($"pid {ctx.Pid}: its children go into the pid namespace of {init}");
        }
        else
        {
            long r = ctx.Vessel.Inject(Nr.unshare, CLONE_NEWPID);
            if (r < 0) throw new SyscallException("unshare(CLONE_NEWPID) (injected)", (int)-r, ctx.Pid);
            ctx.Session.Log.Debug($"pid {ctx.Pid}: its children go into a new pid namespace, as they would have");
        }
    }

    public void Describe(Record rec, InfoNode info)
    {
        var l = Read(rec);
        var spaces = info.List("pid_namespaces");
        for (int i = 1; i < l.Spaces.Count; i++)
        {
            var sp = l.Spaces[i];
            var node = new InfoNode().Set("index", i).Set("parent", sp.Parent == 0 ? "ckpt's" : sp.Parent.ToString()).Set("depth", sp.Depth);
            if (sp.Init != 0) node.Set("init", sp.Init);
            else node.Set("empty", true);
            var members = l.Tasks.Where(x => x.Value.Ns == i).OrderBy(x => x.Key).Select(x => $"{x.Key}={string.Join('/', x.Value.Ids)}").ToList();
            node.Set("tasks", string.Join(' ', members));
            var into = l.ForChildren.Where(x => x.Value == i).Select(x => x.Key).ToList();
            if (into.Count > 0) node.Set("children_of", string.Join(' ', into));
            spaces.Add(node);
        }
    }
}
