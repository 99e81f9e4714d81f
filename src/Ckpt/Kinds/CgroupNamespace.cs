using System.Runtime.InteropServices;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// The tree's cgroup namespace, when it has one of its own (<c>unshare --cgroup</c>): the cgroup of each
/// hierarchy that is its root (what the tree sees as "/" in /proc/PID/cgroup and in a cgroup file system it
/// mounts).
/// <para>
/// Checkpoint: every process of the tree must be in the root's cgroup namespace. A thread of ckpt enters it
/// (setns: a cgroup namespace is per thread) and reads the root's /proc/PID/cgroup, which shows its cgroups
/// relative to the namespace's roots; with the same file read from ckpt's namespace, each root is the
/// cgroup path less that relative part. A process above its namespace's root (a path with "..") is
/// refused. One CgroupNamespace record before the Tree record.
/// </para>
/// <para>
/// Restart: the root's fresh vessel joins each root cgroup (made when missing, as Cgroups does) and makes a
/// new cgroup namespace there (injected <c>unshare(CLONE_NEWCGROUP)</c>) before the other vessels are forked;
/// each process then joins its own cgroups (Cgroups), below those roots.
/// </para>
/// </summary>
public sealed class CgroupNamespace : ITreeNamespace
{
    public static readonly CgroupNamespace Instance = new();
    public string Name => "cgroup namespace";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.CgroupNamespace];
    public int FinishOrder => 0;

    private const int CLONE_NEWCGROUP = 0x02000000;

    public void Write(CheckpointSession s)
    {
        var (ns, own) = s.TreeNamespace("cgroup", "cgroup");
        if (!own) return;
        int root = s.Processes[0].Pid;
        var outside = Cgroups.Parse(FileCalls.ReadText($"/proc/{root}/cgroup"));
        // the same file as the tree's namespace shows it
        string? inside = null, failed = null;
        int fd = FileCalls.Open($"/proc/{root}/ns/cgroup", FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0);
        if (fd < 0) throw SyscallException.Last("open ns/cgroup", root);
        try
        {
            var entered = NamespaceThread.Run([(fd, CLONE_NEWCGROUP, "its cgroup")], () =>
            {
                try { inside = FileCalls.ReadText($"/proc/{root}/cgroup"); return null; }
                catch (IOException e) { return e.Message; }
            }, "ckpt-cgroup-ns");
            failed = entered.EnterErrno != 0 ? Errors.Describe(entered.EnterErrno) : entered.Failed;
        }
        finally { FileCalls.Close(fd); }
        if (inside == null) throw new NotCheckpointableException(root, $"its cgroup namespace ({ns}) cannot be entered to read its cgroups: {failed}");
        var relative = Cgroups.Parse(inside);
        var roots = new List<Cgroups.Membership>();
        foreach (var m in outside)
        {
            var rel = relative.FirstOrDefault(x => x.Hierarchy == m.Hierarchy && x.Controllers == m.Controllers);
            if (rel.Path == null) continue;
            if (rel.Path.Split('/').Contains(".."))
                throw new NotCheckpointableException(root, $"it is above the root of its cgroup namespace ({ns}) in hierarchy {m.Hierarchy} ({m.Controllers}: {rel.Path}); not supported");
            string path = rel.Path == "/" ? m.Path
                : m.Path.EndsWith(rel.Path, StringComparison.Ordinal) ? m.Path[..^rel.Path.Length] is { Length: > 0 } p ? p : "/"
                : throw new NotCheckpointableException(root, $"its cgroup {m.Path} in hierarchy {m.Hierarchy} does not end with what its cgroup namespace shows ({rel.Path})");
            roots.Add(m with { Path = path });
        }
        var w = new PayloadWriter().U32((uint)roots.Count);
        foreach (var m in roots) w.U32(m.Hierarchy).Str(m.Controllers).Str(m.Path);
        // not optional: a reader that skipped it would show the tree the machine's whole cgroup hierarchy
        s.Image.Write(RecordKind.CgroupNamespace, w);
        s.Log.Info($"the tree is in a cgroup namespace of its own ({ns}) rooted at {string.Join(", ", roots.Select(m => $"{(m.Hierarchy == 0 ? "v2" : m.Controllers)}:{m.Path}"))}");
    }

    private static List<Cgroups.Membership> Read(Record rec)
    {
        var r = rec.Reader();
        uint n = r.U32();
        if (n > 64) throw new ImageFormatException($"CgroupNamespace record at offset {rec.Offset}: {n} hierarchies");
        var list = new List<Cgroups.Membership>();
        for (int i = 0; i < n; i++)
        {
            var m = new Cgroups.Membership(r.U32(), r.Str(), r.Str());
            if (!m.Path.StartsWith('/') || m.Path.Split('/').Contains(".."))
                throw new ImageFormatException($"CgroupNamespace record at offset {rec.Offset}: root {m.Path}");
            list.Add(m);
        }
        r.End();
        return list;
    }

    private sealed class Pending { public List<Cgroups.Membership> Roots = new(); }

    public void Restore(RestoreSession s, Record rec) => s.Set(new Pending { Roots = Read(rec) });

    /// <summary>The root's fresh vessel joins the namespace's root cgroups and makes a new cgroup namespace there, before the others are forked.</summary>
    public void Enter(RestoreContext root)
    {
        var s = root.Session;
        if (s.Existing<Pending>() is not { } p) return;
        var now = Cgroups.Parse(FileCalls.ReadText($"/proc/{root.Pid}/cgroup"));
        foreach (var m in p.Roots)
        {
            // the same hierarchy here: cgroup v2, or the v1 one with the same controllers
            var cur = now.FirstOrDefault(x => x.Controllers == m.Controllers && (x.Hierarchy == 0) == (m.Hierarchy == 0));
            if (cur.Path == m.Path) continue;
            if (Cgroups.Join(s, root.Pid, m) is { } why)
                s.Log.Info($"the root of the tree's cgroup namespace {(m.Hierarchy == 0 ? "v2" : m.Controllers)}:{m.Path} cannot be joined ({why}); the namespace is rooted at {cur.Path} there");
        }
        // (made inside the tree's user namespace when it owns it: by a helper moved to the same roots first)
        long r = UserNamespace.Unshare(root, "cgroup", helper =>
        {
            foreach (var m in p.Roots) Cgroups.Join(s, helper, m);
        });
        if (r < 0) throw new CkptException($"restart: cannot make the tree's cgroup namespace (unshare): {Errors.Describe((int)-r)}; restart as root", ExitCodes.Permission);
        s.Log.Info("the tree runs in a cgroup namespace of its own");
    }

    public void Describe(Record rec, InfoNode info)
    {
        var list = info.Child("cgroup_namespace").Set("own", true).List("roots");
        foreach (var m in Read(rec)) list.Add(new InfoNode().Set("hierarchy", m.Hierarchy).Set("controllers", m.Controllers).Set("path", m.Path));
    }
}
