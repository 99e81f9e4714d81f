using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;
using Ckpt.Tracing;

namespace Ckpt.Kinds;

/// <summary>
/// The process tree: every process (pid, parent, process group, session, exit signal, threads, name),
/// zombies with the status their parent's wait() will report. Written once, right after the header.
/// Restart creates every process from it before any process state is read, as <see cref="Plan"/> says:
/// each for its parent (an injected clone3 with the saved pid, by the parent or by a sibling with
/// CLONE_PARENT) so that parent links hold, sessions created by setsid in the process that leads them
/// (helpers standing for leaders that exited), process groups joined in two passes (leaders, then
/// members), and zombies made to exit with their saved status.
/// </summary>
public sealed class ProcessTree : IStateKind
{
    public static readonly ProcessTree Instance = new();
    public string Name => "tree";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.Tree];
    public int FinishOrder => 0;

    public void Checkpoint(CheckpointContext ctx) { }   // the tree is written once, by Write

    public static void Write(CheckpointSession s)
    {
        var p = new PayloadWriter().U32((uint)s.Tree.Count);
        foreach (var e in s.Tree)
            p.I32(e.Pid).I32(e.PPid).I32(e.Pgid).I32(e.Sid).I32(e.ExitSignal).Bool(e.Zombie).I32(e.WaitStatus).I32(e.Threads).Str(e.Comm).U32((uint)e.Shares).Bool(e.Stopped);
        // appended: session leaders whose controlling terminal is a pty of the tree
        var (cttys, outside) = Pty.Cttys(s);
        p.U32((uint)cttys.Count);
        foreach (var (pid, index, tpgid) in cttys) p.I32(pid).I32(index).I32(tpgid);
        // appended: processes stopped by job control's SIGTSTP, SIGTTIN or SIGTTOU (others: SIGSTOP)
        var jobStopped = s.Tree.Where(e => e.Stopped && e.StopSignal is not (0 or TracedTask.SIGSTOP)).ToList();
        p.U32((uint)jobStopped.Count);
        foreach (var e in jobStopped) p.I32(e.Pid).I32(e.StopSignal);
        // appended: processes forked at restart only once their parent's memory is in place, so that the
        // pages they still share with it are shared again (their Vma records say which)
        var late = s.State<LateForks>().Pids;
        late.UnionWith(LateForkable(s, cttys.Select(c => c.Pid).ToHashSet()));
        p.U32((uint)late.Count);
        foreach (var e in s.Tree) if (late.Contains(e.Pid)) p.I32(e.Pid);
        // appended: processes whose main thread exited while other threads run (zombie leaders)
        var leaderless = s.Tree.Where(e => e.LeaderExited).ToList();
        p.U32((uint)leaderless.Count);
        foreach (var e in leaderless) p.I32(e.Pid);
        // appended: whether the root's session leader had exited (the session is made again by a helper)
        p.Bool(s.Tree[0].SessionLeaderExited);
        // appended: session leaders whose controlling terminal is outside the tree (a restart from a
        // terminal gives the root a new pty that stands for it: TerminalRelay)
        p.U32((uint)outside.Count);
        foreach (var (pid, major, minor, tpgid) in outside) p.I32(pid).I32(major).I32(minor).I32(tpgid);
        s.Image.Write(RecordKind.Tree, p);
    }

    /// <summary>The pid of a /proc/PID or /proc/PID/... path, else null.</summary>
    internal static int? ProcPid(string path)
    {
        var rest = path.AsSpan(6);
        int slash = rest.IndexOf('/');
        return int.TryParse(slash < 0 ? rest : rest[..slash], out int pid) ? pid : null;
    }

    /// <summary>Checkpoint: the processes the Tree record says are forked late (<see cref="LateForkable"/>).</summary>
    public sealed class LateForks { public readonly HashSet<int> Pids = new(); }

    /// <summary>
    /// Processes that restart can fork from their parent once the parent's memory is in place, instead of
    /// with the tree, so that they inherit its pages (copy on write, as a fork made them): a process
    /// without children, forked by its parent as the tree is built (not for it by a sibling, no helper),
    /// that shares nothing else with it, whose session and group are its parent's or its own (made by
    /// setsid or setpgid once forked) and that holds no controlling terminal; and that has anonymous
    /// memory at the very addresses its parent has some, some of it shared (where smaps tells); not where the parent
    /// has no_new_privs and it has not, nor where the two have different root directories, nor where the
    /// tree holds its /proc files open.
    /// </summary>
    private static IEnumerable<int> LateForkable(CheckpointSession s, HashSet<int> cttyLeaders)
    {
        if (s.Tree.Count < 2) yield break;
        TreePlan plan;
        try { plan = Plan(s.Tree, _ => false); }
        catch (TreePlanException) { yield break; }
        var byPid = s.Tree.ToDictionary(e => e.Pid);
        var parents = s.Tree.Select(e => e.PPid).ToHashSet();
        var busy = plan.Steps.Where(st => !st.Setsid).Select(st => st.By)
            .Concat(plan.GroupHelpers.Select(g => g.By)).Concat(plan.Helpers.Select(h => h.Parent)).ToHashSet();
        // a process whose /proc files the tree holds open: they are opened again with the holder's fds,
        // before a late fork would have made it
        foreach (var ctx in s.Processes)
            foreach (var f in ctx.OpenFiles)
                if (f.Link.StartsWith("/proc/", StringComparison.Ordinal) && ProcPid(f.Link) is int held) busy.Add(held);
        foreach (var e in s.Tree.Skip(1))
        {
            if (e.Zombie || e.Shares != ShareFlags.None || parents.Contains(e.Pid) || busy.Contains(e.Pid) || cttyLeaders.Contains(e.Pid)) continue;
            if (!byPid.TryGetValue(e.PPid, out var parent) || parent.Zombie || e.LeaderExited || parent.LeaderExited) continue;
            var fork = plan.Steps.FirstOrDefault(st => !st.Setsid && st.Pid == e.Pid);
            if (fork.Pid != e.Pid || fork.By != e.PPid || fork.ForParent || fork.Helper) continue;
            if (e.Sid != parent.Sid && e.Sid != e.Pid) continue;
            if (e.Pgid != parent.Pgid && e.Pgid != e.Pid) continue;
            if (s.Find(e.Pid) is not { } mine || s.Find(e.PPid) is not { } theirs) continue;
            // what the fork would give it and cannot be undone (no_new_privs), or that it would undo wrongly
            // (a root directory: chroot works from the current one)
            if (theirs.Status.NoNewPrivs && !mine.Status.NoNewPrivs) continue;
            if (FileCalls.ReadLink($"/proc/{mine.Pid}/root") != FileCalls.ReadLink($"/proc/{theirs.Pid}/root")) continue;
            // (smaps, read at the freeze for a small process, tells whether any of that memory is shared)
            // (anonymous regions only: a private file mapping's shared pages are mostly the file's own, in
            // every process that maps the library)
            var anon = theirs.Vmas.Where(v => v.Inode == 0 && !v.Shared).Select(v => (v.Start, v.End)).ToHashSet();
            var same = mine.Vmas.Where(v => v.Inode == 0 && !v.Shared && anon.Contains((v.Start, v.End))).ToList();
            if (same.Any(v => v.SharedKb != 0)) yield return e.Pid;
        }
    }

    private static List<TreeEntry> Read(Record rec, out List<(int Pid, int Index, int Tpgid)> cttys, out List<int> late,
        out List<(int Pid, int Major, int Minor, int Tpgid)> outside)
    {
        var r = rec.Reader();
        uint n = r.U32();
        if (n == 0 || n > 1 << 22) throw new ImageFormatException($"Tree record at offset {rec.Offset}: {n} processes");
        var list = new List<TreeEntry>();
        for (int i = 0; i < n; i++)
        {
            int pid = r.I32(), ppid = r.I32(), pgid = r.I32(), sid = r.I32(), sig = r.I32();
            bool zombie = r.Bool(); int status = r.I32(), threads = r.I32();
            list.Add(new TreeEntry(pid, ppid, pgid, sid, sig, r.Str()) { Zombie = zombie, WaitStatus = status, Threads = threads, Shares = (ShareFlags)r.U32(), Stopped = r.Bool() });
        }
        cttys = new();
        uint nc = r.AtEnd ? 0 : r.U32();
        for (uint i = 0; i < nc; i++) cttys.Add((r.I32(), r.I32(), r.I32()));
        uint ns = r.AtEnd ? 0 : r.U32();
        for (uint i = 0; i < ns; i++)
        {
            int pid = r.I32(), sig = r.I32();
            int at = list.FindIndex(e => e.Pid == pid);
            if (at < 0 || !list[at].Stopped || !TracedTask.IsJobControlStop(sig))
                throw new ImageFormatException($"Tree record at offset {rec.Offset}: stop signal {sig} for pid {pid}, which is not a stopped process");
            list[at] = list[at] with { StopSignal = sig };
        }
        late = new();
        uint nl = r.AtEnd ? 0 : r.U32();
        for (uint i = 0; i < nl; i++)
        {
            int pid = r.I32();
            int at = list.FindIndex(e => e.Pid == pid);
            if (at <= 0 || list[at].Zombie || list[at].Shares != ShareFlags.None || list.Any(e => e.PPid == pid) || late.Contains(pid))
                throw new ImageFormatException($"Tree record at offset {rec.Offset}: pid {pid} cannot be forked late (not a live process without children)");
            late.Add(pid);
        }
        uint nx = r.AtEnd ? 0 : r.U32();
        for (uint i = 0; i < nx; i++)
        {
            int pid = r.I32();
            int at = list.FindIndex(e => e.Pid == pid);
            if (at < 0 || list[at].Zombie || list[at].Threads < 1 || late.Contains(pid))
                throw new ImageFormatException($"Tree record at offset {rec.Offset}: pid {pid} cannot be a process whose main thread exited");
            list[at] = list[at] with { LeaderExited = true };
        }
        if (!r.AtEnd && r.Bool())
        {
            if (list[0].Sid <= 0 || list[0].Sid == list[0].Pid || list.Any(e => e.Pid == list[0].Sid))
                throw new ImageFormatException($"Tree record at offset {rec.Offset}: the root's session {list[0].Sid} is to be made again, but it is not one whose leader exited");
            list[0].SessionLeaderExited = true;
        }
        outside = new();
        uint no = r.AtEnd ? 0 : r.U32();
        for (uint i = 0; i < no; i++) outside.Add((r.I32(), r.I32(), r.I32(), r.I32()));
        r.End();
        bool Leads(int pid) => list.FirstOrDefault(e => e.Pid == pid) is { } leader && leader.Sid == pid && !leader.Zombie;
        foreach (var (pid, index, _) in cttys)
            if (index < 0 || !Leads(pid))
                throw new ImageFormatException($"Tree record at offset {rec.Offset}: pid {pid} has a controlling terminal but leads no live session");
        foreach (var (pid, major, minor, _) in outside)
            if (major <= 0 || minor < 0 || !Leads(pid) || cttys.Any(c => c.Pid == pid))
                throw new ImageFormatException($"Tree record at offset {rec.Offset}: pid {pid} has a controlling terminal {major}:{minor} outside the tree but leads no live session or has another");
        var seen = new HashSet<int>();
        foreach (var e in list)
        {
            if (e.Pid <= 0 || !seen.Add(e.Pid)) throw new ImageFormatException($"Tree record at offset {rec.Offset}: pid {e.Pid} twice or invalid");
            if (e != list[0] && !seen.Contains(e.PPid)) throw new ImageFormatException($"Tree record at offset {rec.Offset}: pid {e.Pid} comes before its parent {e.PPid}");
        }
        if (list[0].Zombie) throw new ImageFormatException($"Tree record at offset {rec.Offset}: the root is a zombie");
        return list;
    }

    public void Restore(RestoreContext ctx, Record rec) => throw new ImageFormatException($"Tree record at offset {rec.Offset} is not the first record");

    /// <summary>Creates every process of the tree (each a copy of ckpt, stopped), with sessions, groups and zombies.</summary>
    public static void Restore(RestoreSession s, Record rec)
    {
        if (s.Tree != null || s.Processes.Count > 0) throw new ImageFormatException($"Tree record at offset {rec.Offset} is not the first record");
        var tree = s.Tree = Read(rec, out var cttys, out var lateList, out var outside);
        foreach (int pid in lateList) s.Late[pid] = tree.First(e => e.Pid == pid);
        var fg = s.State<Pty.Foreground>().ByLeader;
        foreach (var (pid, index, tpgid) in cttys) fg[pid] = (index, tpgid);
        var root = tree[0];
        RaiseFdLimit();
        var rootCtx = new RestoreContext { Session = s };
        bool sessionMade = root.SessionLeaderExited && MakeRootSession(s, rootCtx, root);
        if (!sessionMade) ProcessAttributes.CreateVessel(rootCtx, root.Pid);
        // the tree's namespaces (time, UTS, IPC) when it has its own: the other vessels are forked inside
        foreach (var ns in KindTable.Ordered.OfType<ITreeNamespace>()) ns.Enter(rootCtx);
        // the tree's own mounts, once the root's vessel is in each of its namespaces (a new sysfs is of the network namespace it is made in)
        MountNamespace.Build(rootCtx);
        rootCtx.Stopped = root.Stopped;
        rootCtx.StopSignal = root.StopSignal;
        rootCtx.LeaderExited = root.LeaderExited;
        s.Processes.Add(rootCtx);
        // its children are forked from it: first drop ckpt's memory, fds and signal handlers from it, so
        // that they inherit nothing to undo
        if (tree.Count > 1)
        {
            Vessel.Strip(rootCtx.Vessel);
            MmState.KeepInheritable(rootCtx);
            rootCtx.FdsCleaned = true;
            SignalState.ResetToDefault(rootCtx);
        }
        // the process group each process is in now: a child starts in its creator's
        var pgid = new Dictionary<int, int>();
        var leads = new HashSet<int>();
        if (sessionMade) pgid[root.Pid] = root.Sid;
        else if (root.Sid == root.Pid || s.Options.Frozen || root.SessionLeaderExited)
        {
            // left stopped in ckpt's process group, a --frozen tree would be killed by SIGHUP when ckpt
            // exits (a group with a stopped member becomes orphaned); in a session of its own it waits
            rootCtx.Vessel.InjectChecked("setsid", Nr.setsid);
            if (fg.TryGetValue(root.Pid, out var rootTty)) Pty.AcquireCtty(rootCtx, rootTty.Index);
            else if (s.Options.Relay is { } relay && !root.SessionLeaderExited && outside.FirstOrDefault(o => o.Pid == root.Pid) is { Pid: > 0 } theirs)
            {
                // its terminal was outside the tree: a new pty that ckpt relays to its own terminal
                relay.Open(root.Pid, theirs.Major, theirs.Minor);
                Pty.TakeCtty(rootCtx, relay.Index);
                fg[root.Pid] = (relay.Index, theirs.Tpgid);
            }
            if (root.SessionLeaderExited)
                s.Log.Info($"the root's session {root.Sid} (whose leader had exited) cannot be made again, its id being taken here: the root leads a session of its own instead");
            else if (root.Sid != root.Pid) s.Log.Info("--frozen: the tree was given a session of its own so that it outlives ckpt while stopped");
            pgid[root.Pid] = root.Pid;
            leads.Add(root.Pid);
        }
        else pgid[root.Pid] = (int)Sys.Call(Nr.getpgid, 0);
        TreePlan plan;
        try { plan = Plan(tree, _ => false); }
        catch (TreePlanException e) { throw new ImageFormatException($"Tree record at offset {rec.Offset}: pid {e.Pid}: {e.Message}"); }
        var entries = tree.ToDictionary(e => e.Pid);
        // helpers: processes standing for exited session and group leaders while the tree is built
        var helpers = new Dictionary<int, Tracing.TracedTask>();
        Tracing.TracedTask VesselOf(int pid) => helpers.TryGetValue(pid, out var h) ? h : s.Find(pid)!.Vessel;
        try
        {
            foreach (var step in plan.Steps)
            {
                // forked (and given its session) when its Process record comes: ForkLate
                if (s.Late.ContainsKey(step.Pid)) continue;
                if (step.Setsid)
                {
                    VesselOf(step.Pid).InjectChecked("setsid", Nr.setsid);
                    pgid[step.Pid] = step.Pid;
                    if (helpers.ContainsKey(step.Pid)) continue;
                    leads.Add(step.Pid);
                    // its controlling terminal before it forks: the session inherits it
                    if (fg.TryGetValue(step.Pid, out var tty)) Pty.AcquireCtty(s.Find(step.Pid)!, tty.Index);
                    continue;
                }
                // (a go-between's pid is any: its id in the plan is negative)
                var child = Vessel.CreateChild(VesselOf(step.By), Math.Max(step.Pid, 0), step.ExitSignal, step.Shares, forParent: step.ForParent);
                pgid[step.Pid] = pgid[step.By];
                if (step.Helper) { helpers[step.Pid] = child; continue; }
                var e = entries[step.Pid];
                var ctx = new RestoreContext { Session = s, Task = child, Pid = e.Pid, VesselAffinity = rootCtx.VesselAffinity, Shares = e.Shares, Stopped = e.Stopped, StopSignal = e.StopSignal, FdsCleaned = true, LeaderExited = e.LeaderExited };
                foreach (var (k, v) in rootCtx.Inherited) ctx.Inherited[k] = v;
                s.Processes.Add(ctx);
            }
            s.Log.Debug($"{tree.Count} vessels created{(helpers.Count > 0 ? $", and {helpers.Count} helper(s) for sessions whose leader exited or for processes adopted by a subreaper" : "")}");
            // process groups: leaders first (a group whose leader exited gets a helper forked by one of its
            // members), then members join theirs; a group led by a process outside the tree was the root's,
            // and is the root's group here
            foreach (var e in tree)
                if (e.Pgid == e.Pid && !s.Late.ContainsKey(e.Pid) && pgid[e.Pid] != e.Pid && !leads.Contains(e.Pid))
                {
                    s.Find(e.Pid)!.Vessel.InjectChecked("setpgid", Nr.setpgid, 0, 0);
                    pgid[e.Pid] = e.Pid;
                }
            foreach (var (id, by) in plan.GroupHelpers)
            {
                var h = helpers[id] = Vessel.CreateChild(VesselOf(by), id, 0, ShareFlags.None);
                h.InjectChecked("setpgid", Nr.setpgid, 0, 0);
            }
            var pids = tree.Select(e => e.Pid).ToHashSet();
            foreach (var e in tree)
            {
                if (s.Late.ContainsKey(e.Pid)) continue;
                int want = e.Pgid == e.Pid || pids.Contains(e.Pgid) || plan.HelperIds.Contains(e.Pgid) ? e.Pgid : pgid[root.Pid];
                if (pgid[e.Pid] == want || leads.Contains(e.Pid)) continue;
                var member = s.Find(e.Pid)!.Vessel;
                // (the group's id as the member's pid namespace sees it)
                int seen = PidNamespace.Seen(member.Tid, want);
                if (seen == 0) throw new CkptException($"restart: pid {e.Pid} cannot join process group {want}, which its pid namespace cannot see", ExitCodes.RestoreConflict);
                long rc = member.Inject(Nr.setpgid, 0, seen);
                if (rc < 0) throw new CkptException($"restart: pid {e.Pid} cannot join process group {want}: {Errors.Describe((int)-rc)}", ExitCodes.RestoreConflict);
                pgid[e.Pid] = want;
            }
            // the helpers' work is done: each exits, and its parent takes back the exit and its signal; a
            // go-between's child is adopted by its parent in the tree, a subreaper for that moment
            foreach (var (id, parent, sig) in plan.Helpers)
            {
                bool adopting = plan.Adoptions.TryGetValue(id, out var adoption);
                if (adopting) VesselOf(adoption.Adopter).InjectChecked("prctl(PR_SET_CHILD_SUBREAPER)", Nr.prctl, ProcessCalls.PR_SET_CHILD_SUBREAPER, 1);
                EndHelper(helpers[id], VesselOf(parent), sig);
                helpers.Remove(id);
                if (!adopting) continue;
                VesselOf(adoption.Adopter).InjectChecked("prctl(PR_SET_CHILD_SUBREAPER)", Nr.prctl, ProcessCalls.PR_SET_CHILD_SUBREAPER, 0);
                int ppid = ProcStat.Read(adoption.Child).PPid;
                if (ppid != adoption.Adopter)
                    throw new CkptException($"restart: pid {adoption.Child} was to be adopted by {adoption.Adopter}, but its parent is {ppid}", ExitCodes.Internal);
                s.Log.Debug($"pid {adoption.Child} adopted by {adoption.Adopter}");
            }
        }
        catch
        {
            foreach (var h in helpers.Values) ProcessCalls.Kill(h.Tid, TracedTask.SIGKILL);
            throw;
        }
        foreach (var e in tree.Where(e => e.Zombie)) MakeZombie(s, e);
    }

    /// <summary>
    /// A step of building the tree: a process forked (by its parent, or for it by a process in the session
    /// it needs), or a leader's setsid. A helper's pid may be negative: a go-between with any pid, which
    /// forks one process and exits at the end so that the process is adopted by the subreaper it belongs to.
    /// </summary>
    internal readonly record struct TreeStep(bool Setsid, int Pid, int By, bool ForParent, int ExitSignal, ShareFlags Shares, bool Helper);

    /// <summary>
    /// How restart builds the tree's sessions (worked out at checkpoint time too, so that a tree it cannot
    /// build is refused there). A process inherits the session its creator is in when it forks it, so:
    /// a session leader's setsid is put off until it has forked the children born in its first session
    /// (a process that called setsid after forking), and a leader whose children are in a session that is
    /// neither its own nor its parent's is forked in that session, as it must have been; a process whose
    /// session its parent is not in (an orphan taken in by a subreaper, a child made with CLONE_PARENT) is
    /// forked for its parent by a sibling in that session (clone3 with CLONE_PARENT), or else by a
    /// go-between forked by a process of that session below its parent, which exits once the tree is built
    /// so that the parent, a subreaper for that moment, adopts it (as the kernel gave it that parent); a
    /// session whose leader has exited gets a helper process with the leader's pid that calls setsid, forks
    /// its members, and exits once the tree is built (forked by the deepest of its members' parents, so
    /// that the others are above it). A group whose leader exited (and that no session helper leads) gets a
    /// helper with the leader's pid, forked by one of its members, that leads it until the members joined.
    /// </summary>
    internal sealed class TreePlan
    {
        public readonly List<TreeStep> Steps = new();
        /// <summary>
        /// Helper processes (pid, parent, exit signal), in the order they exit once the groups are made:
        /// session helpers and go-betweens, the last forked first, then group helpers.
        /// </summary>
        public readonly List<(int Pid, int Parent, int ExitSignal)> Helpers = new();
        /// <summary>Groups whose leader has exited and that no session helper leads: a helper (pid) forked by a member (by).</summary>
        public readonly List<(int Pid, int By)> GroupHelpers = new();
        /// <summary>Pids of processes that lead, or of helpers that stand for, each group to be made.</summary>
        public readonly HashSet<int> HelperIds = new();
        /// <summary>Go-betweens (negative ids): the process each forks, and the subreaper that adopts it when the go-between exits.</summary>
        public readonly Dictionary<int, (int Child, int Adopter)> Adoptions = new();
    }

    /// <summary>Why a tree cannot be built: the process and what about it.</summary>
    internal sealed class TreePlanException(int pid, string what) : Exception(what) { public int Pid { get; } = pid; }

    private const int SIGCHLD = 17;

    /// <param name="aliveOutside">whether a pid (of a session or group leader not in the tree) is a live process outside it</param>
    internal static TreePlan Plan(IReadOnlyList<TreeEntry> tree, Func<int, bool> aliveOutside)
    {
        // the fallbacks taken when nothing can be made without one, in the order tried: each order builds
        // some trees the other does not; the first plan that gives every process its place is taken
        TreePlanException? first = null;
        foreach (Allow[] steps in FallbackOrders)
        {
            try { return Plan(tree, aliveOutside, steps); }
            catch (TreePlanException e) { first ??= e; }
        }
        throw first!;
    }

    /// <summary>
    /// What a step of planning may do beyond what needs nothing put off: a fallback that might have waited (a
    /// leader forked in its parent's session, a session helper forked before all its members' parents are), a
    /// pending leader's setsid, a leader forked in its parent's session although the leader of a session its
    /// children are in is yet to be made.
    /// </summary>
    [Flags]
    private enum Allow { None = 0, Fallback = 1, Setsid = 2, Force = 4 }

    /// <summary>What is allowed when nothing can be made otherwise, step by step, in the orders <see cref="Plan(IReadOnlyList{TreeEntry}, Func{int, bool})"/> tries.</summary>
    private static readonly Allow[][] FallbackOrders =
    [
        [Allow.Fallback, Allow.Fallback | Allow.Setsid, Allow.Fallback | Allow.Setsid | Allow.Force],
        [Allow.Setsid, Allow.Fallback | Allow.Setsid, Allow.Fallback | Allow.Setsid | Allow.Force],
    ];

    private static TreePlan Plan(IReadOnlyList<TreeEntry> tree, Func<int, bool> aliveOutside, Allow[] steps)
    {
        var plan = new TreePlan();
        var root = tree[0];
        var pids = tree.Select(e => e.Pid).ToHashSet();
        var byPid = tree.ToDictionary(e => e.Pid);
        // each created process (of the tree, a helper or a go-between): its session now, its parent while
        // the tree is built, exit signal, what it shares with its parent
        var sid = new Dictionary<int, int> { [root.Pid] = root.Sid };
        var parentOf = new Dictionary<int, int>();
        var exitSignal = new Dictionary<int, int> { [root.Pid] = root.ExitSignal };
        var shares = new Dictionary<int, ShareFlags> { [root.Pid] = ShareFlags.None };
        var order = new List<int> { root.Pid };   // created processes, in creation order
        var pending = new List<int>();   // leaders that have not called setsid yet (in creation order)
        var exiting = new List<(int Pid, int Parent, int ExitSignal)>();   // session helpers and go-betweens
        int nextTemp = 0;
        void Created(int pid, int parent, int session, int signal, ShareFlags share)
        {
            sid[pid] = session;
            parentOf[pid] = parent;
            exitSignal[pid] = signal;
            shares[pid] = share;
            order.Add(pid);
        }
        void Fork(TreeEntry e, int by, bool forParent)
        {
            plan.Steps.Add(new TreeStep(false, e.Pid, by, forParent, e.ExitSignal, e.Shares, false));
            // (with CLONE_PARENT the child takes its creator's exit signal)
            Created(e.Pid, forParent ? parentOf[by] : by, sid[by], forParent ? exitSignal[by] : e.ExitSignal, e.Shares);
            if (e.Sid == e.Pid) pending.Add(e.Pid);
        }
        void Setsid(int pid)
        {
            plan.Steps.Add(new TreeStep(true, pid, pid, false, 0, ShareFlags.None, false));
            sid[pid] = pid;
            pending.Remove(pid);
        }
        bool Above(int ancestor, int pid)
        {
            for (int p = pid; parentOf.TryGetValue(p, out int up); p = up)
                if (up == ancestor) return true;
            return false;
        }
        // forked by a go-between that a process of the session forks below the parent, adopted by the
        // parent when the go-between exits (an adopted process's exit signal is SIGCHLD)
        // (when setsid is allowed, by the session's leader, which calls setsid first)
        bool ForkAdopted(TreeEntry e, int session, Allow allow)
        {
            if (e.ExitSignal != SIGCHLD || e.Shares != ShareFlags.None) return false;
            int creator = order.FirstOrDefault(c => c > 0 && sid[c] == session && Above(e.PPid, c));
            if (creator == 0 && allow.HasFlag(Allow.Setsid) && pending.Contains(session) && Above(e.PPid, session))
            {
                Setsid(session);
                creator = session;
            }
            if (creator == 0) return false;
            int temp = --nextTemp;
            plan.Steps.Add(new TreeStep(false, temp, creator, false, 0, ShareFlags.None, true));
            Created(temp, creator, sid[creator], 0, ShareFlags.None);
            exiting.Add((temp, creator, 0));
            plan.Adoptions[temp] = (e.Pid, e.PPid);
            Fork(e, temp, false);
            return true;
        }
        bool CreateIn(TreeEntry e, int want, Allow allow)
        {
            int parent = e.PPid;
            if (sid[parent] == want) { Fork(e, parent, false); return true; }
            if (want == parent && pending.Contains(parent))
            {
                if (!allow.HasFlag(Allow.Setsid)) return false;
                Setsid(parent);
                Fork(e, parent, false);
                return true;
            }
            // forked for its parent by a sibling already in that session (which it shares nothing with)
            if (e.Shares == ShareFlags.None)
                foreach (int f in order)
                    if (f > 0 && parentOf.TryGetValue(f, out int p) && p == parent && exitSignal[f] == e.ExitSignal && shares[f] == ShareFlags.None
                        && (sid[f] == want || f == want && allow.HasFlag(Allow.Setsid) && pending.Contains(f)))
                    {
                        if (sid[f] != want) Setsid(f);
                        Fork(e, f, true);
                        return true;
                    }
            if (ForkAdopted(e, want, allow)) return true;
            // a session whose leader exited: a helper with the leader's pid leads it, forked by the deepest
            // of the parents its members have outside it (all of them once they exist, each above the next)
            if (pids.Contains(want) || want == root.Sid || sid.ContainsKey(want) || aliveOutside(want)) return false;
            var outside = tree.Where(m => m.Sid == want && byPid.TryGetValue(m.PPid, out var pm) && pm.Sid != want).Select(m => m.PPid).Distinct().ToList();
            if (!allow.HasFlag(Allow.Fallback) && outside.Any(o => !sid.ContainsKey(o))) return false;
            int by = parent;
            foreach (int o in outside)
                if (sid.ContainsKey(o) && o != by && Above(by, o)) by = o;
            if (outside.Any(o => sid.ContainsKey(o) && o != by && !Above(o, by))) by = parent;
            int signal = by == parent ? e.ExitSignal : SIGCHLD;
            plan.Steps.Add(new TreeStep(false, want, by, false, signal, ShareFlags.None, true));
            exiting.Add((want, by, signal));
            plan.HelperIds.Add(want);
            Created(want, by, sid[by], signal, ShareFlags.None);
            Setsid(want);
            if (by == parent) { Fork(e, want, true); return true; }
            if (!ForkAdopted(e, want, allow))
                throw new TreePlanException(e.Pid, $"it is in session {want}, whose leader exited, and no process of it can be forked below its parent {parent}");
            return true;
        }
        // the sessions other than its own that a leader was in when it forked its children: those of its
        // children that are not leaders, and those its children that are leaders were born in (recursively)
        var foreignOf = new Dictionary<int, List<int>>();
        List<int> Foreign(int leader)
        {
            if (foreignOf.TryGetValue(leader, out var known)) return known;
            var set = new List<int>();
            foreach (var c in tree)
                if (c.PPid == leader && c.Pid != root.Pid)
                    foreach (int f in c.Sid != c.Pid ? [c.Sid] : Foreign(c.Pid))
                        if (f != leader && !set.Contains(f)) set.Add(f);
            return foreignOf[leader] = set;
        }
        bool Descends(int pid, int ancestor)
        {
            for (int p = pid; byPid.TryGetValue(p, out var pe) && p != root.Pid; p = pe.PPid)
                if (pe.PPid == ancestor) return true;
            return false;
        }
        bool TryCreate(TreeEntry e, Allow allow)
        {
            if (e.Sid != e.Pid) return CreateIn(e, e.Sid, allow);
            // a leader: forked in the session its children are in when that is not its own (it was born
            // there and called setsid after forking them), else in its parent's
            var foreign = Foreign(e.Pid);
            if (foreign.Count == 0 || foreign.Contains(sid[e.PPid])) { Fork(e, e.PPid, false); return true; }
            foreach (int f in foreign)
                if (CreateIn(e, f, Allow.None)) return true;
            // the session of a leader that has not called setsid yet (its parent, or another process): once
            // setsid may be called
            var leaders = foreign.Where(f => sid.ContainsKey(f) && pending.Contains(f)).ToList();
            if (allow.HasFlag(Allow.Setsid))
                foreach (int f in leaders)
                    if (CreateIn(e, f, allow)) return true;
            if (!allow.HasFlag(Allow.Fallback) || leaders.Count > 0 && !allow.HasFlag(Allow.Setsid)) return false;
            // a session whose leader is yet to be created: wait for it, as long as anything else can be made
            // (not for one led by a descendant: a process's ancestors were all its ancestors when it was
            // born, and its session is younger than them)
            if (!allow.HasFlag(Allow.Force) && foreign.Any(f => pids.Contains(f) && !sid.ContainsKey(f) && !Descends(f, e.Pid))) return false;
            Fork(e, e.PPid, false);
            return true;
        }
        var remaining = tree.Skip(1).ToList();
        while (remaining.Count > 0)
        {
            bool progress = false;
            for (int i = 0; i < remaining.Count; i++)
                if (sid.ContainsKey(remaining[i].PPid) && TryCreate(remaining[i], Allow.None)) { remaining.RemoveAt(i--); progress = true; }
            if (progress) continue;
            // a fallback, else the setsid of a leader put off while it had children born in its first session to fork
            foreach (Allow allow in steps)
            {
                for (int i = 0; i < remaining.Count && !progress; i++)
                    if (sid.ContainsKey(remaining[i].PPid) && TryCreate(remaining[i], allow)) { remaining.RemoveAt(i); progress = true; }
                if (progress) break;
            }
            if (progress) continue;
            var stuck = remaining.First(e => sid.ContainsKey(e.PPid));
            string why = stuck.Shares != ShareFlags.None ? $" and shares its {(stuck.Shares.HasFlag(ShareFlags.Files) ? "fd table" : "working directory")} with it"
                : !pids.Contains(stuck.Sid) && stuck.Sid != root.Sid && aliveOutside(stuck.Sid) ? $", and whose leader {stuck.Sid} is a process outside the tree" : "";
            throw new TreePlanException(stuck.Pid, $"it is in session {stuck.Sid}, which its parent {stuck.PPid} is not in{why}; such a session cannot be recreated");
        }
        foreach (int p in pending.ToList()) Setsid(p);
        // each process in its session, under its parent (a go-between's child adopted by it), with its exit signal
        foreach (var e in tree.Skip(1))
        {
            int parent = parentOf[e.Pid];
            if (parent < 0 && plan.Adoptions.TryGetValue(parent, out var adoption)) parent = adoption.Adopter;
            if (sid[e.Pid] != e.Sid || parent != e.PPid || exitSignal[e.Pid] != e.ExitSignal)
                throw new TreePlanException(e.Pid, $"it is in session {e.Sid} under its parent {e.PPid}, a place in the tree that could not be made again");
        }
        // the last forked exits first: a go-between's parent and the subreaper above it are still there
        exiting.Reverse();
        plan.Helpers.AddRange(exiting);
        // groups whose leader exited (not the root's group, which may be led from outside)
        foreach (var e in tree)
        {
            if (e.Pgid == e.Pid || pids.Contains(e.Pgid) || e.Pgid == root.Pgid || plan.HelperIds.Contains(e.Pgid)) continue;
            if (aliveOutside(e.Pgid))
                throw new TreePlanException(e.Pid, $"it is in process group {e.Pgid}, led by a process outside the tree; checkpoint the tree that holds the group leader");
            plan.GroupHelpers.Add((e.Pgid, e.Pid));
            plan.Helpers.Add((e.Pgid, e.Pid, 0));   // exit signal 0: its exit signals no one
            plan.HelperIds.Add(e.Pgid);
        }
        return plan;
    }

    /// <summary>
    /// Forks a process of <see cref="RestoreSession.Late"/> from its parent, whose records were all read
    /// (its memory is in place: the child inherits its pages, copy on write), with the saved pid: the child
    /// gets an empty fd table (ckpt's candidates for external fds come when wanted), sets all
    /// its signal actions (SignalState), keeps the parent's regions that its image has too (MmState) and
    /// makes its session or group as the tree had it. Its place in the order of processes is last: it has
    /// no children.
    /// </summary>
    public static RestoreContext ForkLate(RestoreSession s, TreeEntry e)
    {
        var parent = s.Find(e.PPid);
        if (parent is not { Started: true } || parent.Trampoline == 0)
            throw new ImageFormatException($"pid {e.Pid} is to be forked from its parent {e.PPid}, whose state does not come before it");
        parent.FlushBatch();
        var child = Vessel.InjectClone(parent.Vessel, parent.Scratch, new CloneArgs { ExitSignal = (ulong)e.ExitSignal }, e.Pid, "pid",
            Vessel.PidTakenHint);
        child.SyscallGadget = parent.Trampoline;
        var ctx = new RestoreContext
        {
            Session = s, Task = child, Pid = e.Pid, VesselAffinity = parent.VesselAffinity, Stopped = e.Stopped, StopSignal = e.StopSignal,
            FdsCleaned = true, LateForked = true, ForkedFrom = parent, Trampoline = parent.Trampoline,
        };
        s.Processes.Add(ctx);
        // the parent's fds go (ckpt's stdin, stdout, stderr and --inherit-fd ones are installed when an
        // External record wants one: ExternalFile)
        ctx.Inject("close_range", Nr.close_range, 0, uint.MaxValue, 0);
        if (e.Sid == e.Pid) child.InjectChecked("setsid", Nr.setsid);
        else if (e.Pgid == e.Pid) child.InjectChecked("setpgid", Nr.setpgid, 0, 0);
        s.Log.Debug($"pid {e.Pid} forked from {e.PPid} once its memory was in place");
        return ctx;
    }

    /// <summary>
    /// ckpt's soft fd limit raised to its hard one before the vessels inherit it (each gets its own limits
    /// in Finish): a process may have raised its limit above the one ckpt was started with, and a tree
    /// holds more fds than one process (the masters in ckpt).
    /// </summary>
    private static unsafe void RaiseFdLimit()
    {
        var lim = ProcLimits.Read(Environment.ProcessId)[ProcLimits.RLIMIT_NOFILE];
        if (lim.Soft >= lim.Hard) return;
        var want = new RLimit { Cur = lim.Hard, Max = lim.Hard };
        ProcessCalls.Prlimit(0, ProcLimits.RLIMIT_NOFILE, &want, null);
    }

    /// <summary>
    /// The root's session, whose leader had exited (a daemon that forked twice): a helper vessel with the
    /// leader's pid calls setsid and forks the root's vessel for ckpt (CLONE_PARENT), then is killed and
    /// reaped; the root lives on in that session and its group, without a controlling terminal, as it
    /// did. False when that pid is taken here (the caller gives the root a session of its own).
    /// </summary>
    private static bool MakeRootSession(RestoreSession s, RestoreContext rootCtx, TreeEntry root)
    {
        var helper = new RestoreContext { Session = s };
        try { ProcessAttributes.CreateVessel(helper, root.Sid); }
        catch (CkptException e) when (e.ExitCode == ExitCodes.RestoreConflict)
        {
            s.Log.Debug($"no helper for the root's session: {e.Message}");
            return false;
        }
        int id = helper.Pid;
        try
        {
            helper.Vessel.InjectChecked("setsid", Nr.setsid);
            ProcessAttributes.CreateVessel(rootCtx, root.Pid, helper);
        }
        finally { Vessel.KillAndReap(id); }
        s.Log.Debug($"the root's session {root.Sid} made again by a helper");
        return true;
    }

    /// <summary>Makes the vessel exit as the zombie did, then takes the SIGCHLD that tells its parent back (it was not pending at the checkpoint).</summary>
    private static void MakeZombie(RestoreSession s, TreeEntry e)
    {
        var ctx = s.Find(e.Pid)!;
        var task = ctx.Vessel;
        int st = e.WaitStatus;
        var name = System.Text.Encoding.UTF8.GetBytes(e.Comm + "\0");
        MemoryCalls.WriteRemote(e.Pid, Vessel.Scratch, name.AsSpan(0, Math.Min(name.Length, 16)));
        task.InjectChecked("prctl(PR_SET_NAME)", Nr.prctl, 15 /* PR_SET_NAME */, (long)Vessel.Scratch);
        EndAs(task, st, Vessel.Scratch, Vessel.PauseLoop);
        ctx.Task = null;
        s.Processes.Remove(ctx);
        var until = DateTime.UtcNow.AddSeconds(5);
        while (ProcStat.Read(e.Pid).State != 'Z')
        {
            if (DateTime.UtcNow > until) throw new CkptException($"restart: zombie {e.Pid} did not exit", ExitCodes.Internal);
            Thread.Sleep(1);
        }
        // the parent's SIGCHLD of this exit is not in the image: take it out of its queue
        if (e.ExitSignal > 0)
        {
            TakeSignal(s.Find(e.PPid)!.Vessel, e.ExitSignal);
        }
        s.Log.Debug($"pid {e.Pid} is a zombie again (status 0x{st:x})");
    }

    /// <summary>
    /// Makes a traced task end the way wait status <paramref name="status"/> says a process ended:
    /// exit_group(code), or killed by the signal, with its default action, unblocked (SIGKILL's and
    /// SIGSTOP's cannot be changed, nor blocked) and no core file: the task is let go at
    /// <paramref name="pauseAt"/>, a pause() (a syscall instruction, rax set to pause; the vessel's pause
    /// loop sets it itself), where the signal finds it. <paramref name="scratch"/>: writable memory of
    /// the task for the calls' arguments. Nobody reaps it here.
    /// </summary>
    internal static void EndAs(Tracing.TracedTask task, int status, ulong scratch, ulong pauseAt)
    {
        if (Ptrace.Exited(status))
        {
            try { task.Inject(Nr.exit_group, Ptrace.ExitCode(status)); }
            catch (TaskGoneException) { }
            return;
        }
        int sig = Ptrace.TermSig(status);
        if (sig != 9 && sig != 19)
        {
            MemoryCalls.WriteRemote(task.Tid, scratch, new byte[32]);   // SIG_DFL, no flags, empty mask
            task.InjectChecked("rt_sigaction", Nr.rt_sigaction, sig, (long)scratch, 0, 8);
        }
        MemoryCalls.WriteRemote(task.Tid, scratch, new byte[16]);
        task.InjectChecked("prlimit64(RLIMIT_CORE)", Nr.prlimit64, 0, 4 /* RLIMIT_CORE */, (long)scratch, 0);
        task.SetSigMask(0);
        var regs = task.GetRegs();
        regs.Rip = pauseAt;
        regs.Rax = Nr.pause;
        regs.OrigRax = TracedTask.NoSyscall;
        task.SetRegs(regs);
        task.Detach();
        ProcessCalls.Kill(task.Tid, sig);
    }

    /// <summary>Takes signal <paramref name="sig"/> out of a vessel's pending queues (one the image does not have).</summary>
    private static void TakeSignal(Tracing.TracedTask vessel, int sig)
    {
        var set = new byte[8 + 16];   // the sigset, then a zero timespec (do not wait)
        BitConverter.TryWriteBytes(set, 1UL << (sig - 1));
        MemoryCalls.WriteRemote(vessel.Tid, Vessel.Scratch, set);
        while (vessel.Inject(Nr.rt_sigtimedwait, (long)Vessel.Scratch, 0, (long)Vessel.Scratch + 8, 8) > 0) { }
    }

    /// <summary>A helper exits; its parent reaps it and takes the signal of its exit back.</summary>
    internal static void EndHelper(Tracing.TracedTask helper, Tracing.TracedTask parent, int sig)
    {
        int pid = helper.Tid;
        try { helper.Inject(Nr.exit_group, 0); }
        catch (TaskGoneException) { }
        ReapHelper(pid, parent);
        if (sig > 0) TakeSignal(parent, sig);
    }

    /// <summary>The parent of an exiting helper reaps it (waits up to 5 s for it to have exited).</summary>
    internal static void ReapHelper(int pid, Tracing.TracedTask parent)
    {
        const long WNOHANG = 1, __WALL = 0x40000000;
        var until = DateTime.UtcNow.AddSeconds(5);
        // (its id as the parent's pid namespace sees it)
        int seen = PidNamespace.Seen(parent.Tid, pid);
        if (seen <= 0) throw new CkptException($"restart: helper process {pid} cannot be seen by its parent {parent.Tid}", ExitCodes.Internal);
        while (parent.Inject(Nr.wait4, seen, 0, WNOHANG | __WALL, 0) != seen)
        {
            if (DateTime.UtcNow > until) throw new CkptException($"restart: helper process {pid} did not exit", ExitCodes.Internal);
            Thread.Sleep(1);
        }
    }

    public void Finish(RestoreContext ctx) { }

    public void Describe(Record rec, InfoNode info)
    {
        var list = info.List("tree");
        var entries = Read(rec, out var cttys, out var late, out var outside);
        foreach (var e in entries)
        {
            var n = new InfoNode().Set("pid", e.Pid).Set("ppid", e.PPid).Set("pgid", e.Pgid).Set("sid", e.Sid).Set("threads", e.Threads).Set("comm", e.Comm);
            if (e.Zombie) n.Set("zombie", true).Set("wait_status", $"0x{e.WaitStatus:x}");
            if (e.ExitSignal != 17) n.Set("exit_signal", e.ExitSignal);
            if (e.Shares != ShareFlags.None) n.Set("shares_with_parent", e.Shares.ToString());
            if (e.Stopped) n.Set("stopped", true);
            if (e.StopSignal is not (0 or TracedTask.SIGSTOP)) n.Set("stop_signal", e.StopSignal);
            if (late.Contains(e.Pid)) n.Set("forked_late", true);
            if (e.LeaderExited) n.Set("main_thread_exited", true);
            if (e.SessionLeaderExited) n.Set("session_leader_exited", true);
            foreach (var c in cttys)
                if (c.Pid == e.Pid) n.Set("controlling_terminal", $"/dev/pts/{c.Index} (of the tree), foreground group {c.Tpgid}");
            foreach (var o in outside)
                if (o.Pid == e.Pid) n.Set("controlling_terminal", $"{o.Major}:{o.Minor}{(Pty.IsSlave(o.Major) ? $" (/dev/pts/{Pty.SlaveIndex(o.Major, o.Minor)})" : "")}, outside the tree, foreground group {o.Tpgid}");
            list.Add(n);
        }
    }
}
