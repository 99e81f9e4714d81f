using System.Runtime.InteropServices;
using System.Text;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>
/// The tree's mount namespace, when it has one of its own: <c>unshare --mount</c> and what a program does in
/// it then (a tmpfs of its own, bind mounts of host directories or files, read-only or nosuid remounts,
/// mounts it removed, a sysfs or mqueue of its own), and <c>unshare --pid --fork --mount-proc</c>, the usual
/// way to run a program in a pid namespace (a proc of the new namespace mounted on /proc).
/// <para>
/// Checkpoint: every process of the tree must be in the root's mount namespace. Its mountinfo is compared
/// with ckpt's, mount by mount (device, root, mount point, file system, source, mount and super options;
/// not the ids, the order or the propagation). A mount of ckpt's the tree has not is saved as removed; a
/// mount of the tree's ckpt has not is saved as one of its own, in mountinfo order, as:
/// <list type="bullet">
/// <item>a proc of its own: its mount point, options and pid namespace (the init, in the tree, of the
/// namespace whose pid 1 is the /1 of that proc; 0: ckpt's). A file open on it is saved by RegularFile with
/// the mount and its path under it (<see cref="OnOwnProc"/>).</item>
/// <item>a bind mount of a file or directory ckpt reaches (a mount of ckpt's on the same device whose root
/// holds it): that path, with the mount's own flags (ro, nosuid, nodev, noexec, atime...);</item>
/// <item>a bind mount of a part of an earlier mount of its own: that mount and the path under it;</item>
/// <item>a tmpfs of its own: its options, and every file in it (MountFile records: type, mode, owner, times,
/// link target, hard links; MountFileData: the data ranges of regular files), but for what a mount on it
/// covers, saved as an empty directory or file;</item>
/// <item>a new instance of a file system whose contents the kernel makes (sysfs, mqueue, cgroup, devpts
/// holding no pty...): its options;</item>
/// <item>an overlay of directories ckpt reaches (a container engine's root): its options;</item>
/// <item>a mount of ckpt's at the same place with other flags (remounted read-only, nosuid...: systemd's
/// ProtectSystem, of / too): its flags, set on the new namespace's copy.</item>
/// </list>
/// A tree with a root of its own (pivot_root into a container's directory or tmpfs, the old root removed)
/// keeps none of ckpt's mounts: each of its mounts is saved, its root first. Anything else (an overlay, a
/// disk ckpt has not mounted, a FUSE file system...) is refused, naming the mount. The propagation of the tree's
/// mounts is not kept (they are all private after the restart). Paths of the tree's files are looked at
/// through an fd of the root of its namespace (<see cref="Reach"/>; a process of it may have chrooted). One MountNamespace
/// record (then the MountFile records) before the Tree record.
/// </para>
/// <para>
/// Restart: the root's fresh vessel makes a new mount namespace (injected <c>unshare(CLONE_NEWNS)</c>, all
/// mounts then made private, as unshare(1) does); each tmpfs is made by ckpt when the record is read and
/// filled from the MountFile records (detached, with the new mount API). Once the root's vessel is in every
/// namespace of the tree, before the others are forked (<see cref="Build"/>), a thread of ckpt that entered
/// its mount, network, IPC and cgroup namespaces removes the mounts the tree had removed and attaches the
/// tree's own in order (<c>open_tree</c> clones of the bind sources, <c>mount_setattr</c> for their flags and
/// private propagation, <c>move_mount</c>; a root of its own is pivoted to, and ckpt's proc stands on its
/// /proc until the proc mounts). The proc mounts are put in place once every process is rebuilt,
/// just before they are let go (the calls injected until then name /proc/PID paths of ckpt's namespace),
/// likewise (<see cref="MountProcs"/>); each is made detached by ckpt (<c>fsopen("proc")</c> with
/// <c>pidns</c> set to the namespace's file) when a file on it is first opened again
/// (<see cref="OpenOnOwnProc"/>), or then. From the building of its mounts until then, ckpt's tracer thread
/// works in the tree's mount namespace, so that the paths the restart uses are the tree's.
/// </para>
/// </summary>
public sealed class MountNamespace : ITreeNamespace
{
    public static readonly MountNamespace Instance = new();
    public string Name => "mount namespace";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.MountNamespace, RecordKind.MountFile, RecordKind.MountFileData];
    public int FinishOrder => 0;

    private const long CLONE_NEWNS = 0x20000, MS_REC = 0x4000, MS_PRIVATE = 1 << 18;

    /// <summary>A proc mount of the tree's own: where, with which options (MOUNT_ATTR_* of fsmount, the super options), for which pid namespace (the host pid of its init; 0: ckpt's).</summary>
    public readonly record struct ProcMount(string MountPoint, uint Attributes, string Options, int Init, string Source);

    /// <summary>How a mount of the tree's own (other than proc) is made again.</summary>
    public enum OwnKind : byte
    {
        /// <summary>A bind mount of <see cref="OwnMount.From"/>, a path of ckpt's mount namespace.</summary>
        Bind = 1,
        /// <summary>A bind mount of <see cref="OwnMount.From"/> under the earlier own mount <see cref="OwnMount.FromIndex"/>.</summary>
        BindOwn = 2,
        /// <summary>A tmpfs, with the files saved in MountFile records.</summary>
        Tmpfs = 3,
        /// <summary>A new instance of a file system the kernel fills (sysfs, mqueue, cgroup...).</summary>
        New = 4,
        /// <summary>A mount of ckpt's (the copy the new namespace has) with other per-mount flags: a read-only or nosuid remount (systemd's ProtectSystem, of / too).</summary>
        Flags = 5,
        /// <summary>An overlay of directories ckpt reaches (a container engine's root): made again with the same options, in ckpt's namespace (they name its paths).</summary>
        Overlay = 6,
        /// <summary>A bind mount of <see cref="OwnMount.From"/> under the tree's own proc mount <see cref="OwnMount.FromIndex"/> (/proc/sys bound read-only on itself, as container engines do).</summary>
        BindProc = 7,
    }

    /// <summary>A mount of the tree's own other than proc: how it is made, where, its file system, source, MOUNT_ATTR_* flags and super options.</summary>
    public readonly record struct OwnMount(OwnKind Kind, string MountPoint, string FsType, string Source, uint Attributes, string Options, string From, int FromIndex);

    private const uint KnownAttributes = MountCalls.MOUNT_ATTR_RDONLY | MountCalls.MOUNT_ATTR_NOSUID | MountCalls.MOUNT_ATTR_NODEV
        | MountCalls.MOUNT_ATTR_NOEXEC | MountCalls.MOUNT_ATTR__ATIME | MountCalls.MOUNT_ATTR_NODIRATIME | MountCalls.MOUNT_ATTR_NOSYMFOLLOW;

    /// <summary>File systems a new instance of which holds what the old one held (the kernel fills it from the namespaces it is made in).</summary>
    private static readonly HashSet<string> NewKinds = ["sysfs", "mqueue", "cgroup", "cgroup2", "tracefs", "debugfs", "securityfs", "fusectl", "configfs", "pstore", "devpts"];

    /// <summary>One line of mountinfo: its id and parent's, its device, root and mount point, and what two mounts of two namespaces that are copies share.</summary>
    private readonly record struct Mount(int Id, int Parent, string Device, string Root, string Key, string MountPoint, string FsType, string MountOptions, string SuperOptions, string Source, string Propagation);

    private static List<Mount> ReadMountInfo(string path) => ParseMountInfo(File.ReadLines(path));

    private static List<Mount> ParseMountInfo(IEnumerable<string> lines)
    {
        var list = new List<Mount>();
        foreach (var line in lines)
        {
            var f = line.Split(' ');
            int dash = Array.IndexOf(f, "-");
            if (dash < 6 || f.Length < dash + 4) continue;
            string superOpts = f[dash + 3];
            list.Add(new Mount(int.Parse(f[0]), int.Parse(f[1]), f[2], ProcMounts.Unescape(f[3]), $"{f[2]} {f[3]} {f[4]} {f[5]} {f[dash + 1]} {f[dash + 2]} {superOpts}",
                ProcMounts.Unescape(f[4]), f[dash + 1], f[5], superOpts, ProcMounts.Unescape(f[dash + 2]), string.Join(' ', f[6..dash])));
        }
        return list;
    }

    /// <summary>
    /// The mounts of <paramref name="list"/> each after the one it is on (its parent): mountinfo lists them by
    /// id, which is the order they were made in, not always the order they were attached in (a namespace the
    /// restart built: its tmpfs mounts were made before its root).
    /// </summary>
    private static List<Mount> ParentsFirst(List<Mount> list)
    {
        var ids = list.Select(m => m.Id).ToHashSet();
        var children = list.Where(m => m.Parent != m.Id && ids.Contains(m.Parent)).GroupBy(m => m.Parent).ToDictionary(g => g.Key, g => g.ToList());
        var ordered = new List<Mount>(list.Count);
        var stack = new Stack<Mount>();
        foreach (var top in list.Where(m => m.Parent == m.Id || !ids.Contains(m.Parent)))
        {
            stack.Push(top);
            while (stack.Count > 0)
            {
                var m = stack.Pop();
                ordered.Add(m);
                if (children.TryGetValue(m.Id, out var kids))
                    for (int i = kids.Count - 1; i >= 0; i--) stack.Push(kids[i]);
            }
        }
        return ordered.Count == list.Count ? ordered : list;   // (a loop: not a mount tree; as listed)
    }

    /// <summary>Is <paramref name="path"/> <paramref name="dir"/> or under it?</summary>
    private static bool Under(string path, string dir)
        => path == dir || dir == "/" || path.StartsWith(dir.TrimEnd('/') + "/", StringComparison.Ordinal);

    /// <summary>The part of <paramref name="path"/> under <paramref name="dir"/> ("" for itself), when <see cref="Under"/>.</summary>
    private static string Below(string path, string dir) => path == dir ? "" : path[(dir.TrimEnd('/').Length + 1)..];

    // ------------------------------------------------------------------ checkpoint

    /// <summary>
    /// Checkpoint: the tree has mounts of its own or removed some: its paths are reached through the root of
    /// its mount namespace (<see cref="FromInside"/>: "/proc/self/fd/N"), whose mounts are these.
    /// </summary>
    private sealed class TreeRoot { public required string Prefix; public required List<Mount> Mounts; }

    /// <summary>
    /// Where ckpt reaches the tree's file <paramref name="path"/> (as its fds and maps name it, from the root
    /// of the tree's mount namespace): through that root when the tree's namespace has mounts of its own,
    /// else the same path.
    /// </summary>
    public static string Reach(CheckpointSession s, string path)
        => s.Existing<TreeRoot>() is { } t && path.StartsWith('/') ? t.Prefix + path : path;

    /// <summary>
    /// Checkpoint: whether file <paramref name="dev"/>:<paramref name="ino"/>, which the kernel names
    /// <paramref name="path"/>, is not at that path in the tree's mount namespace but is in ckpt's: a
    /// sandbox's first process (bubblewrap) runs a program and libraries of the host that its new root no
    /// longer shows. The restart opens it in ckpt's namespace (<see cref="OpenInCkptNamespace"/>).
    /// </summary>
    public static bool OnlyInCkptNamespace(CheckpointSession s, string path, ulong dev, ulong ino)
    {
        string reach = Reach(s, path);
        if (reach == path) return false;
        if (FileCalls.TryStat(reach, out var t) && t.Ino == ino && t.Dev == dev) return false;
        return FileCalls.TryStat(path, out var c) && c.Ino == ino && c.Dev == dev;
    }

    /// <summary>
    /// The mount namespace of process <paramref name="pid"/> as seen from its root (not from a process of
    /// it, whose root may be a directory it chrooted to): its mountinfo, and an O_PATH fd of its root
    /// directory, by a thread of ckpt that entered it (its /proc/thread-self/mountinfo opened through ckpt's
    /// proc, which that thread no longer reaches by path).
    /// </summary>
    private static (List<string> MountInfo, int Root) FromInside(int pid)
    {
        int proc = FileCalls.Open("/proc", FileCalls.O_PATH | FileCalls.O_DIRECTORY | FileCalls.O_CLOEXEC, 0);
        if (proc < 0) throw SyscallException.Last("open", 0, "/proc");
        List<string>? lines = null;
        int root = -1;
        try
        {
            string? failed = InTreeNamespaces(pid, false, () =>
            {
                root = FileCalls.Open("/", FileCalls.O_PATH | FileCalls.O_DIRECTORY | FileCalls.O_CLOEXEC, 0);
                int mi = FileCalls.OpenAt(proc, "thread-self/mountinfo", FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0);
                if (root < 0 || mi < 0) return $"cannot open its root or mountinfo: {Errors.Describe(Marshal.GetLastPInvokeError())}";
                try
                {
                    var text = new MemoryStream();
                    var buf = new byte[65536];
                    int n;
                    while ((n = FileCalls.ReadFull(mi, buf)) > 0) text.Write(buf, 0, n);
                    lines = Encoding.UTF8.GetString(text.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries).ToList();
                    return null;
                }
                catch (SyscallException e) { return e.Message; }
                finally { FileCalls.Close(mi); }
            });
            if (failed != null || lines == null)
            {
                if (root >= 0) FileCalls.Close(root);
                throw new NotCheckpointableException(pid, $"its mount namespace cannot be read from inside ({failed})");
            }
            return (lines, root);
        }
        finally { FileCalls.Close(proc); }
    }

    /// <summary>
    /// Checkpoint: the mount points of device <paramref name="device"/> (major:minor) in the tree's mount
    /// namespace, as ckpt reaches them (through the root of that namespace), whole file systems first; null
    /// when the tree's mounts are ckpt's.
    /// </summary>
    public static List<string>? TreeMountPoints(CheckpointSession s, string device)
    {
        if (s.Existing<TreeRoot>() is not { } t) return null;
        return t.Mounts.Where(m => m.Device == device).OrderBy(m => m.Root == "/" ? 0 : 1).Select(m => t.Prefix + m.MountPoint).ToList();
    }

    public void Write(CheckpointSession s)
    {
        var (root, own) = s.TreeNamespace("mnt", "mount");
        if (!own) return;
        var rootPid = s.Find(s.Tree[0].Pid)?.Pid ?? s.Tree[0].Pid;
        // the namespace from its root (the processes may have chrooted), reached through an fd of that root
        var (lines, rootFd) = FromInside(rootPid);
        string nsRoot = $"/proc/self/fd/{rootFd}";
        var theirs = ParentsFirst(ParseMountInfo(lines));
        var mineList = ParentsFirst(ReadMountInfo("/proc/self/mountinfo"));
        var mine = mineList.GroupBy(m => m.Key).ToDictionary(g => g.Key, g => g.ToList());
        // a root of its own (pivot_root into a container's file system): none of ckpt's mounts is kept, each of
        // the tree's is made again (the bind mounts of ckpt's paths among them), its root first
        var ckptRoot = mineList.LastOrDefault(m => m.MountPoint == "/");
        bool ownRoot = !theirs.Any(m => m.MountPoint == "/" && m.Device == ckptRoot.Device && m.Root == ckptRoot.Root);
        if (ownRoot)
        {
            if (!theirs.Any(m => m.MountPoint == "/"))
                throw new NotCheckpointableException(s.Tree[0].Pid, $"its mount namespace ({root}) shows no mount on its root; not supported");
            if (theirs[0].MountPoint != "/" || theirs.Count(m => m.MountPoint == "/") > 1)
                throw new NotCheckpointableException(s.Tree[0].Pid, $"its mount namespace ({root}) has several mounts on its root, or mounts that are not under it; not supported");
            foreach (var l in mine.Values) l.Clear();
        }
        var procs = new List<ProcMount>();
        var procIds = new HashSet<int>();
        var owns = new List<OwnMount>();
        var ownLines = new List<Mount>();
        foreach (var m in theirs)
        {
            if (mine.TryGetValue(m.Key, out var same) && same.Count > 0) { same.RemoveAt(0); continue; }
            if (m.FsType == "proc" && m.Root == "/")
            {
                procs.Add(new ProcMount(m.MountPoint, Attributes(s, m), Options(m.SuperOptions), InitOf(s, nsRoot, m.MountPoint), m.Source));
                procIds.Add(m.Id);
                continue;
            }
            // the same mount as one of ckpt's at the same place but for its own flags (remounted read-only...)
            if (mineList.FirstOrDefault(c => mine[c.Key].Contains(c) && c.Device == m.Device && c.Root == m.Root && c.MountPoint == m.MountPoint
                    && c.FsType == m.FsType && c.Source == m.Source && c.SuperOptions == m.SuperOptions) is { Id: > 0 } flagged)
            {
                mine[flagged.Key].Remove(flagged);
                owns.Add(new OwnMount(OwnKind.Flags, m.MountPoint, m.FsType, m.Source, Attributes(s, m), "", "", -1));
                ownLines.Add(m);
                continue;
            }
            var made = Classify(s, root!, nsRoot, m, mineList, ownLines, theirs.Where(p => procIds.Contains(p.Id)).ToList(), theirs, ownRoot && owns.Count == 0);
            // on its own proc (a container engine's masks: /dev/null on /proc/kcore, a read-only /proc/sys, a tmpfs on /proc/acpi): mounted after it
            if (theirs.FirstOrDefault(p => procIds.Contains(p.Id) && Under(m.MountPoint, p.MountPoint)) is { FsType: "proc" } over && made.Kind is not (OwnKind.Bind or OwnKind.BindOwn or OwnKind.BindProc or OwnKind.Tmpfs))
                throw new NotCheckpointableException(s.Tree[0].Pid, $"its mount namespace ({root}) has a {m.FsType} mount on {m.MountPoint}, on its own proc mounted on {over.MountPoint}, which is no bind mount or tmpfs; not supported");
            owns.Add(made);
            ownLines.Add(m);
            if (m.Propagation.Contains("shared:") || m.Propagation.Contains("master:"))
                s.Log.Info($"the tree's mount on {m.MountPoint} propagates ({m.Propagation}); after the restart it is private");
        }
        // ckpt's mounts the tree has not: removed at restart, those on top first
        var removed = mineList.Where(m => mine[m.Key].Contains(m)).Select(m => m.MountPoint).Reverse().ToList();
        if (removed.Contains("/") && !ownRoot)
            throw new NotCheckpointableException(s.Tree[0].Pid, $"its mount namespace ({root}) has another root than ckpt's; not supported");
        if (ownRoot)
        {
            removed.Clear();
            if (!procs.Any(m => m.MountPoint == "/proc") && !FileCalls.TryLstat($"{nsRoot}/proc", out _))
                s.Log.Info("the tree's root has no /proc: the restart puts ckpt's proc on it while it rebuilds the tree, on a /proc it makes");
        }
        if (owns.Count > 0 || removed.Count > 0) s.Set(new TreeRoot { Prefix = nsRoot, Mounts = theirs });
        // (the fd of its root stays open while the checkpoint runs: files on its procs are looked at through it)
        else if (procs.Count == 0) FileCalls.Close(rootFd);
        // files open on its own procs (RegularFile): saved by mount and path under it
        var ownProcs = s.State<OwnProcs>();
        ownProcs.Root = nsRoot;
        for (int i = 0, k = 0; i < theirs.Count; i++)
            if (procIds.Contains(theirs[i].Id)) ownProcs.ByMountId[theirs[i].Id] = (k++, theirs[i].MountPoint);
        var p = new PayloadWriter().U32((uint)procs.Count);
        foreach (var m in procs) p.Str(m.MountPoint).U32(m.Attributes).Str(m.Options).I32(m.Init).Str(m.Source);
        // appended: the mounts removed, the mounts of its own other than proc
        p.U32((uint)removed.Count);
        foreach (var r in removed) p.Str(r);
        p.U32((uint)owns.Count);
        foreach (var m in owns) p.U8((byte)m.Kind).Str(m.MountPoint).Str(m.FsType).Str(m.Source).U32(m.Attributes).Str(m.Options).Str(m.From).I32(m.FromIndex);
        // not optional: a reader that skipped it would run the tree in the restart's mounts, its /proc of another pid namespace
        s.Image.Write(RecordKind.MountNamespace, p);
        long files = 0, bytes = 0;
        for (int i = 0; i < owns.Count; i++)
            if (owns[i].Kind == OwnKind.Tmpfs)
            {
                var covered = theirs.Where(c => c.Parent == ownLines[i].Id).Select(c => Below(c.MountPoint, ownLines[i].MountPoint)).ToHashSet();
                var (n, b) = SaveFiles(s, nsRoot, i, ownLines[i], covered);
                files += n; bytes += b;
            }
        s.Log.Info($"the tree is in a mount namespace of its own ({root}) with {procs.Count} proc mount(s) of its own"
            + (procs.Count > 0 ? $" ({string.Join(", ", procs.Select(m => $"{m.MountPoint}: pid namespace of {(m.Init == 0 ? "ckpt" : m.Init)}"))})" : "")
            + $", {owns.Count} other mount(s) of its own ({string.Join(", ", owns.Select(m => $"{m.FsType} on {m.MountPoint}: {m.Kind}{(m.Kind == OwnKind.Bind ? " of " + m.From : "")}"))})"
            + $", {removed.Count} mount(s) of ckpt's removed ({string.Join(", ", removed)}); {files} file(s) of its tmpfs saved, {bytes} bytes");
    }

    /// <summary>How the tree's own mount <paramref name="m"/> (not proc) is made again, or refused.</summary>
    private static OwnMount Classify(CheckpointSession s, string ns, string nsRoot, Mount m, List<Mount> mine, List<Mount> ownLines, List<Mount> procLines, List<Mount> theirs, bool isRoot)
    {
        int pid = s.Tree[0].Pid;
        if (m.MountPoint == "/" && !isRoot)
            throw new NotCheckpointableException(pid, $"its mount namespace ({ns}) has a {m.FsType} mount on / that is not its root; not supported");
        uint attrs = Attributes(s, m);
        // what the tree sees at the mount point: the root of this mount, unless another is on top of it
        string at = nsRoot + m.MountPoint;
        if (theirs.Any(o => o.Parent == m.Id && o.MountPoint == m.MountPoint) || !FileCalls.TryLstat(at, out var top))
            throw new NotCheckpointableException(pid, $"its {m.FsType} mount on {m.MountPoint} is covered by another mount on the same place; not supported");
        bool Same(string path) => FileCalls.TryLstat(path, out var st) && st.Dev == top.Dev && st.Ino == top.Ino;
        // a bind mount of what ckpt reaches: a mount of ckpt's on that device holding its root (the deepest)
        foreach (var c in mine.Where(c => c.Device == m.Device && c.FsType == m.FsType && Under(m.Root, c.Root)).OrderByDescending(c => c.Root.Length))
        {
            string from = c.MountPoint.TrimEnd('/') + (Below(m.Root, c.Root) is { Length: > 0 } rest ? "/" + rest : "");
            if (from.Length == 0) from = "/";
            if (Same(from)) return new OwnMount(OwnKind.Bind, m.MountPoint, m.FsType, m.Source, attrs, "", from, -1);
        }
        // a bind mount of a part of a mount of its own made before
        for (int j = ownLines.Count - 1; j >= 0; j--)
            if (ownLines[j].Device == m.Device && Under(m.Root, ownLines[j].Root))
            {
                string rel = Below(m.Root, ownLines[j].Root);
                if (Same($"{nsRoot}{ownLines[j].MountPoint.TrimEnd('/')}{(rel.Length > 0 ? "/" + rel : "")}"))
                    return new OwnMount(OwnKind.BindOwn, m.MountPoint, m.FsType, m.Source, attrs, "", rel, j);
            }
        // a bind mount of a part of a proc of its own
        for (int j = 0; j < procLines.Count; j++)
            if (procLines[j].Device == m.Device && m.FsType == "proc")
            {
                string rel = Below(m.Root, "/");
                if (Same($"{nsRoot}{procLines[j].MountPoint.TrimEnd('/')}{(rel.Length > 0 ? "/" + rel : "")}"))
                    return new OwnMount(OwnKind.BindProc, m.MountPoint, m.FsType, m.Source, attrs, "", rel, j);
            }
        // a tmpfs (or a part of one no other mount shows: bubblewrap's root is a directory of a tmpfs whose
        // own mount is gone; that part is made again as a whole tmpfs)
        if (m.FsType == "tmpfs")
        {
            if (m.Root != "/") s.Log.Info($"the tree's mount on {m.MountPoint} is {m.Root} of a tmpfs no other mount of it shows: saved as a tmpfs of its own");
            return new OwnMount(OwnKind.Tmpfs, m.MountPoint, m.FsType, m.Source, attrs, Options(m.SuperOptions, keepRo: true), "", -1);
        }
        if (m.Root == "/" && m.FsType == "overlay")
        {
            // its layers are directories of the namespace it was made in: ckpt's must reach them
            foreach (var o in m.SuperOptions.Split(','))
            {
                int eq = o.IndexOf('=');
                string key = eq < 0 ? o : o[..eq];
                if (key is not ("lowerdir" or "upperdir" or "workdir" or "lowerdir+" or "datadir+")) continue;
                foreach (var dir in ProcMounts.Unescape(o[(eq + 1)..]).Split(':', StringSplitOptions.RemoveEmptyEntries))
                    if (!Directory.Exists(dir))
                        throw new NotCheckpointableException(pid, $"its overlay mount on {m.MountPoint} has {key} {dir}, which ckpt does not reach (a directory of another mount namespace, or removed); checkpoint from the namespace that made the overlay");
            }
            return new OwnMount(OwnKind.Overlay, m.MountPoint, m.FsType, m.Source, attrs, Options(m.SuperOptions, keepRo: true), "", -1);
        }
        if (isRoot)
            throw new NotCheckpointableException(pid, $"its mount namespace ({ns}) has a root of its own ({m.FsType} {m.Source}{(m.Root != "/" ? ", root " + m.Root : "")}) that is neither a bind mount of a directory ckpt reaches, a tmpfs nor an overlay; not supported");
        // (a devpts instance of its own: made again empty; the ptys the tree holds are made again in it by
        // Pty, through its /dev/ptmx, and a pty no process holds is gone with its instance)
        if (m.Root == "/" && NewKinds.Contains(m.FsType))
            return new OwnMount(OwnKind.New, m.MountPoint, m.FsType, m.Source, attrs, Options(m.SuperOptions, keepRo: true), "", -1);
        throw new NotCheckpointableException(pid, $"its mount namespace ({ns}) has a {m.FsType} mount ({m.Source}{(m.Root != "/" ? ", root " + m.Root : "")}) on {m.MountPoint} that ckpt cannot make again"
            + " (not a bind mount of a path ckpt reaches, nor a tmpfs, proc, sysfs, mqueue, cgroup or devpts of its own); checkpoint a tree whose mounts are of those kinds");
    }

    /// <summary>Checkpoint: the tree's own proc mounts by mount id → (index in the record, mount point), and where ckpt reaches them.</summary>
    public sealed class OwnProcs
    {
        public readonly Dictionary<int, (int Index, string MountPoint)> ByMountId = new();
        /// <summary>Where ckpt reaches the root of the tree's mount namespace ("/proc/self/fd/N").</summary>
        public string Root = "";
    }

    [Flags]
    private enum FileFlags : byte { None = 0, HardLink = 1, Covered = 2 }

    /// <summary>
    /// Every file of the tree's tmpfs <paramref name="m"/> (own mount <paramref name="index"/>), walked from
    /// its mount point through the root of the namespace, parents first: a MountFile record each (a hard link
    /// to a file met before names it), the data ranges of regular files in MountFileData records. What a
    /// mount on it covers (<paramref name="covered"/>: paths under it) is saved as an empty directory or file,
    /// the place of that mount. Returns the files and bytes saved.
    /// </summary>
    private static (long Files, long Bytes) SaveFiles(CheckpointSession s, string nsRoot, int index, Mount m, HashSet<string> covered)
    {
        string top = nsRoot + m.MountPoint.TrimEnd('/');
        // (the root's fd link itself is a link: its directory is "/proc/self/fd/N/")
        if (!FileCalls.TryLstat(m.MountPoint == "/" ? top + "/" : top, out var rootSt) || rootSt.Type != StatBuf.S_IFDIR)
            throw new NotCheckpointableException(s.Tree[0].Pid, $"the tree's tmpfs on {m.MountPoint} cannot be read ({Errors.Describe(Marshal.GetLastPInvokeError())})");
        var first = new Dictionary<ulong, string>();
        var p = new PayloadWriter();
        long files = 0, bytes = 0;
        uint ids = s.State<FileIds>().Next;
        var stack = new Stack<(string Rel, StatBuf St)>();
        stack.Push(("", rootSt));
        while (stack.Count > 0)
        {
            s.ThrowIfCancelled();
            var (rel, st) = stack.Pop();
            string path = rel.Length == 0 ? top : $"{top}/{rel}";
            var flags = FileFlags.None;
            string target = "";
            uint id = 0;
            if (rel.Length > 0 && (covered.Contains(rel) || st.Dev != rootSt.Dev)) flags |= FileFlags.Covered;
            else if (st.Type != StatBuf.S_IFDIR && st.Nlink > 1 && first.TryGetValue(st.Ino, out var earlier)) { flags |= FileFlags.HardLink; target = earlier; }
            else
            {
                if (st.Type != StatBuf.S_IFDIR && st.Nlink > 1) first[st.Ino] = rel;
                if (st.Type == StatBuf.S_IFLNK)
                    target = FileCalls.ReadLink(path) ?? throw SyscallException.Last("readlink", s.Tree[0].Pid, path);
                if (st.Type == StatBuf.S_IFREG && st.Size > 0) id = ++ids;
            }
            uint type = (flags & FileFlags.Covered) != 0 ? (st.Type == StatBuf.S_IFDIR ? StatBuf.S_IFDIR : StatBuf.S_IFREG) : st.Type;
            p.Clear();
            p.U32((uint)index).U32(id).Str(rel).U32(type | (st.Mode & 0xfff)).U32(st.Uid).U32(st.Gid).U64(st.Rdev)
                .I64((flags & FileFlags.Covered) != 0 ? 0 : st.Size).I64(st.AtimeSec).I64(st.AtimeNsec).I64(st.MtimeSec).I64(st.MtimeNsec).U8((byte)flags).Str(target);
            // appended: its extended attributes (user.*, trusted.overlay.* of an overlay's upper layer,
            // security.capability...), but for a hard link (its file's) and a covered place
            var xattrs = (flags & (FileFlags.Covered | FileFlags.HardLink)) != 0 ? []
                : FileCalls.Xattrs(rel.Length == 0 ? top + "/." : path)
                  ?? throw new NotCheckpointableException(s.Tree[0].Pid, $"the extended attributes of {m.MountPoint.TrimEnd('/')}/{rel} of the tree's tmpfs cannot be read ({Errors.Describe(Marshal.GetLastPInvokeError())})");
            p.U32((uint)xattrs.Count);
            foreach (var (name, value) in xattrs) p.Str(name).Bytes(value);
            s.Image.Write(RecordKind.MountFile, p);
            files++;
            if (id != 0)
            {
                int fd = FileCalls.Open(path, FileCalls.O_RDONLY | FileCalls.O_NOFOLLOW | FileCalls.O_CLOEXEC, 0);
                if (fd < 0) throw SyscallException.Last("open", s.Tree[0].Pid, path);
                try { MemoryObject.SaveData(s, s.Tree[0].Pid, RecordKind.MountFileData, id, fd, st.Size, path); }
                finally { FileCalls.Close(fd); }
                bytes += st.Blocks * 512;
            }
            if (st.Type != StatBuf.S_IFDIR || (flags & FileFlags.Covered) != 0) continue;
            var children = new List<(string, StatBuf)>();
            if (!FileCalls.StatEntriesNoFollow(path, (name, cst) => children.Add((rel.Length == 0 ? name : $"{rel}/{name}", cst))))
                throw new NotCheckpointableException(s.Tree[0].Pid, $"the directory {m.MountPoint.TrimEnd('/')}/{rel} of the tree's tmpfs cannot be read ({Errors.Describe(Marshal.GetLastPInvokeError())})");
            for (int c = children.Count - 1; c >= 0; c--) stack.Push(children[c]);
        }
        s.State<FileIds>().Next = ids;
        return (files, bytes);
    }

    private sealed class FileIds { public uint Next; }

    /// <summary>
    /// Checkpoint: fd <paramref name="f"/>'s place on one of the tree's own proc mounts (its index, the path
    /// under it; "" for its root), or null when the file is on none. A file of a process that has ended (its
    /// /proc/PID is gone there) is refused.
    /// </summary>
    public static (int Index, string Relative)? OnOwnProc(CheckpointContext ctx, in OpenFile f)
    {
        if (ctx.Session.Existing<OwnProcs>() is not { } own || !own.ByMountId.TryGetValue(f.MntId, out var m)) return null;
        string mp = m.MountPoint.TrimEnd('/');
        if (!(f.Link == m.MountPoint || f.Link.StartsWith(mp + "/", StringComparison.Ordinal)))
            throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd} ({f.Link}) is on the tree's own proc mount at {m.MountPoint}, but not under that path (a mount over it?); not supported");
        string rel = f.Link.Length > mp.Length ? f.Link[(mp.Length + 1)..] : "";
        if (!FileCalls.TryLstat(own.Root + f.Link, out _))
            throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd} ({f.Link}) is a file of the tree's own proc whose process has ended; not supported");
        return (m.Index, rel);
    }

    private static uint Attributes(CheckpointSession s, Mount m)
    {
        uint a = 0;
        foreach (var o in m.MountOptions.Split(','))
            a |= o switch
            {
                "ro" => MountCalls.MOUNT_ATTR_RDONLY, "nosuid" => MountCalls.MOUNT_ATTR_NOSUID, "nodev" => MountCalls.MOUNT_ATTR_NODEV,
                "noexec" => MountCalls.MOUNT_ATTR_NOEXEC, "noatime" => MountCalls.MOUNT_ATTR_NOATIME, "nodiratime" => MountCalls.MOUNT_ATTR_NODIRATIME,
                "strictatime" => MountCalls.MOUNT_ATTR_STRICTATIME, "nosymfollow" => MountCalls.MOUNT_ATTR_NOSYMFOLLOW,
                "rw" or "relatime" => 0u,
                _ => throw new NotCheckpointableException(s.Tree[0].Pid, $"the tree's {m.FsType} mount on {m.MountPoint} has mount option '{o}', which is not supported"),
            };
        return a;
    }

    /// <summary>
    /// The super options to give fsconfig: all but rw (the default), seclabel (shown, not set) and ro (a
    /// read-only super block: kept for the file systems made again, <paramref name="keepRo"/>).
    /// </summary>
    private static string Options(string superOptions, bool keepRo = false)
        => string.Join(',', superOptions.Split(',').Where(o => o.Length > 0 && !(o is "rw" or "seclabel" || (o == "ro" && !keepRo))));

    /// <summary>Options without a read-only super block's "ro" (a tmpfs is made writable to be filled), and whether it was there.</summary>
    private static (string Options, bool ReadOnly) WithoutRo(string options)
    {
        var list = options.Split(',', StringSplitOptions.RemoveEmptyEntries).ToList();
        return (string.Join(',', list.Where(o => o != "ro")), list.Contains("ro"));
    }

    /// <summary>The pid namespace of the proc mounted on <paramref name="mountPoint"/> in the root's namespace: the host pid of the tree's process that is its pid 1, 0 for ckpt's.</summary>
    private static int InitOf(CheckpointSession s, string nsRoot, string mountPoint)
    {
        string where = nsRoot + mountPoint.TrimEnd('/');
        string? ns = FileCalls.ReadLink($"{where}/1/ns/pid");
        if (ns == null)
            throw new NotCheckpointableException(s.Tree[0].Pid, $"the pid namespace of the tree's proc mount on {mountPoint} cannot be found (no pid 1 in it)");
        if (ns == FileCalls.ReadLink("/proc/self/ns/pid")) return 0;
        foreach (var e in s.Tree)
        {
            if (e.Zombie || FileCalls.ReadLink($"/proc/{e.Pid}/ns/pid") != ns) continue;
            if (ProcStatus.Read(e.Pid).NsPid[^1] == 1) return e.Pid;
        }
        throw new NotCheckpointableException(s.Tree[0].Pid, $"the tree's proc mount on {mountPoint} is of a pid namespace ({ns}) whose init is not in the tree");
    }

    // ------------------------------------------------------------------ the record

    private sealed record Saved(List<ProcMount> Procs, List<string> Removed, List<OwnMount> Own);

    private static Saved Read(Record rec)
    {
        var r = rec.Reader();
        uint n = r.U32();
        if (n > 1024) throw new ImageFormatException($"MountNamespace record at offset {rec.Offset}: {n} proc mounts");
        var list = new List<ProcMount>();
        for (int i = 0; i < n; i++)
        {
            var m = new ProcMount(r.Str(), r.U32(), r.Str(), r.I32(), r.Str());
            if (!m.MountPoint.StartsWith('/') || (m.Attributes & ~KnownAttributes) != 0 || m.Init < 0)
                throw new ImageFormatException($"MountNamespace record at offset {rec.Offset}: proc mount {i} ({m.MountPoint}, attributes 0x{m.Attributes:x}, init {m.Init})");
            list.Add(m);
        }
        var removed = new List<string>();
        var own = new List<OwnMount>();
        if (!r.AtEnd)
        {
            uint nr = r.U32();
            if (nr > 65536) throw new ImageFormatException($"MountNamespace record at offset {rec.Offset}: {nr} mounts removed");
            for (int i = 0; i < nr; i++)
            {
                string mp = r.Str();
                if (!mp.StartsWith('/') || mp == "/") throw new ImageFormatException($"MountNamespace record at offset {rec.Offset}: removed mount {i} on '{mp}'");
                removed.Add(mp);
            }
            uint no = r.U32();
            if (no > 65536) throw new ImageFormatException($"MountNamespace record at offset {rec.Offset}: {no} mounts of its own");
            for (int i = 0; i < no; i++)
            {
                var m = new OwnMount((OwnKind)r.U8(), r.Str(), r.Str(), r.Str(), r.U32(), r.Str(), r.Str(), r.I32());
                bool ok = m.MountPoint.StartsWith('/') && (m.MountPoint != "/" || m.Kind == OwnKind.Flags || (i == 0 && m.Kind is OwnKind.Bind or OwnKind.Tmpfs or OwnKind.Overlay)) && (m.Attributes & ~KnownAttributes) == 0 && m.Kind switch
                {
                    OwnKind.Bind => m.From.StartsWith('/'),
                    OwnKind.BindOwn => m.FromIndex >= 0 && m.FromIndex < i && !m.From.StartsWith('/') && !m.From.Split('/').Contains(".."),
                    OwnKind.Tmpfs => m.FsType == "tmpfs",
                    OwnKind.New => NewKinds.Contains(m.FsType),
                    OwnKind.Flags => m.From.Length == 0,
                    OwnKind.Overlay => m.FsType == "overlay",
                    OwnKind.BindProc => m.FromIndex >= 0 && m.FromIndex < list.Count && !m.From.StartsWith('/') && !m.From.Split('/').Contains(".."),
                    _ => false,
                };
                if (!ok) throw new ImageFormatException($"MountNamespace record at offset {rec.Offset}: mount {i} of its own ({m.Kind} {m.FsType} on '{m.MountPoint}' from '{m.From}' {m.FromIndex})");
                own.Add(m);
            }
        }
        r.End();
        return new Saved(list, removed, own);
    }

    /// <summary>A MountFile record: a file of tmpfs <c>Index</c> (an own mount), at <c>Path</c> under it.</summary>
    private readonly record struct SavedFile(int Index, uint Id, string Path, uint Mode, uint Uid, uint Gid, ulong Rdev, long Size,
        long AtimeSec, long AtimeNsec, long MtimeSec, long MtimeNsec, FileFlags Flags, string Target)
    {
        /// <summary>Its extended attributes (appended field: none in an older image).</summary>
        public List<(string Name, byte[] Value)> Xattrs { get; init; } = [];
    }

    private static SavedFile ReadFile(Record rec)
    {
        var r = rec.Reader();
        var f = new SavedFile((int)r.U32(), r.U32(), r.Str(), r.U32(), r.U32(), r.U32(), r.U64(), r.I64(), r.I64(), r.I64(), r.I64(), r.I64(), (FileFlags)r.U8(), r.Str());
        if (!r.AtEnd)
        {
            uint n = r.U32();
            for (uint i = 0; i < n; i++) f.Xattrs.Add((r.Str(), r.Bytes().ToArray()));
        }
        r.End();
        bool Bad(string p) => p.StartsWith('/') || p.Split('/').Any(c => c is ".." or "." or "");
        if ((f.Path.Length > 0 && Bad(f.Path)) || ((f.Flags & FileFlags.HardLink) != 0 && (f.Target.Length == 0 || Bad(f.Target))) || f.Size < 0 || (f.Flags & ~(FileFlags.HardLink | FileFlags.Covered)) != 0)
            throw new ImageFormatException($"MountFile record at offset {rec.Offset}: '{f.Path}' (flags {f.Flags}, target '{f.Target}', size {f.Size})");
        return f;
    }

    // ------------------------------------------------------------------ restart

    private sealed class Pending
    {
        public List<ProcMount> Mounts = new();
        public List<string> Removed = new();
        public List<OwnMount> Own = new();
        /// <summary>The proc file systems made so far, detached until <see cref="MountProcs"/> puts them in place (by index; -1: not made).</summary>
        public int[] MountFds = [];
        /// <summary>Each own mount's fd: made (tmpfs) or cloned (bind) before it is attached, then the attached mount; -1 until then.</summary>
        public int[] OwnFds = [];
        /// <summary>ckpt's fd of each regular file of a tmpfs being filled, by file id.</summary>
        public readonly Dictionary<uint, int> Files = new();
        /// <summary>The files of the tmpfs made so far, whose mode and times are set once all are in (a new entry changes its directory's times).</summary>
        public readonly List<SavedFile> Made = new();
        /// <summary>ckpt's own mount namespace, which its tracer thread left for the tree's (<see cref="Build"/>) until the proc mounts (-1: it did not).</summary>
        public int CkptNamespace = -1;
        /// <summary>ckpt's root directory (O_PATH), through which the paths of ckpt's namespace are reached meanwhile.</summary>
        public int CkptRoot = -1;
        /// <summary>A clone of ckpt's proc is on /proc of the tree's own root until the proc mounts.</summary>
        public bool StandIn;
    }


    /// <summary>
    /// Restart: a file on the tree's own proc mount <paramref name="index"/> (its path under it:
    /// <paramref name="relative"/>), opened by ckpt on that proc, made now and detached until every process
    /// is rebuilt (the same mount is then put in place, so the file is on it), and installed in the vessel.
    /// </summary>
    public static int OpenOnOwnProc(RestoreContext ctx, int index, string relative, int flags)
    {
        var p = ctx.Session.Existing<Pending>();
        if (p == null || index < 0 || index >= p.Mounts.Count)
            throw new ImageFormatException($"a file is on proc mount {index} of the tree's mount namespace, which the image does not have");
        int mfd = Detached(p, index);
        int mine = FileCalls.OpenAt(mfd, relative.Length == 0 ? "." : relative, FileCalls.ReopenFlags(flags) | FileCalls.O_CLOEXEC, 0);
        if (mine < 0) throw new CkptException($"restart: cannot open {p.Mounts[index].MountPoint.TrimEnd('/')}/{relative} of the tree's own proc: {Errors.Describe(Marshal.GetLastPInvokeError())}", ExitCodes.RestoreConflict);
        try { return ctx.Install(mine); }
        finally { FileCalls.Close(mine); }
    }

    /// <summary>The detached proc file system of mount <paramref name="index"/>, made once (for its pid namespace, whose init exists by now).</summary>
    private static int Detached(Pending p, int index)
    {
        if (p.MountFds.Length != p.Mounts.Count) p.MountFds = Enumerable.Repeat(-1, p.Mounts.Count).ToArray();
        if (p.MountFds[index] >= 0) return p.MountFds[index];
        var m = p.Mounts[index];
        string nsPath = m.Init == 0 ? "/proc/self/ns/pid" : $"/proc/{m.Init}/ns/pid";
        int pidns = FileCalls.Open(nsPath, FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0);
        if (pidns < 0) throw SyscallException.Last("open", m.Init, nsPath);
        try
        {
            var (mfd, failed) = MakeFs("proc", m.MountPoint, m.Source, m.Options, m.Attributes, pidns);
            if (failed != null) throw new CkptException($"restart: {failed}", ExitCodes.RestoreConflict);
            return p.MountFds[index] = mfd;
        }
        finally { FileCalls.Close(pidns); }
    }

    public void Restore(RestoreSession s, Record rec)
    {
        if (rec.Kind == RecordKind.MountNamespace)
        {
            var saved = Read(rec);
            var p = new Pending { Mounts = saved.Procs, Removed = saved.Removed, Own = saved.Own, OwnFds = Enumerable.Repeat(-1, saved.Own.Count).ToArray() };
            s.Set(p);
            // each tmpfs made now (detached), to be filled by the MountFile records that follow
            for (int i = 0; i < p.Own.Count; i++)
                if (p.Own[i].Kind == OwnKind.Tmpfs)
                {
                    var m = p.Own[i];
                    // (writable while it is filled: its flags are set as it is attached, a read-only super block once filled)
                    var (fd, failed) = MakeFs("tmpfs", m.MountPoint, m.Source, WithoutRo(m.Options).Options, m.Attributes & ~MountCalls.MOUNT_ATTR_RDONLY);
                    if (failed != null) throw new CkptException($"restart: {failed}", ExitCodes.RestoreConflict);
                    p.OwnFds[i] = s.Own(fd);
                }
            return;
        }
        var pending = s.Existing<Pending>() ?? throw new ImageFormatException($"{rec.Kind} record at offset {rec.Offset} before the MountNamespace record");
        if (rec.Kind == RecordKind.MountFileData)
        {
            var r = rec.Reader();
            uint id = r.U32();
            long off = r.I64();
            if (!pending.Files.TryGetValue(id, out int w) || off < 0)
                throw new ImageFormatException($"MountFileData record at offset {rec.Offset} for file {id} (offset {off}), which is no file of a tmpfs");
            FileCalls.PwriteAll(w, rec.Payload.Span[12..], off, "pwrite (a file of the tree's tmpfs)");
            return;
        }
        MakeFile(s, pending, ReadFile(rec), rec.Offset);
    }

    /// <summary>A file of a tmpfs of the tree's own, made under its (detached) mount with its owner; mode and times come at the end (<see cref="SetModesAndTimes"/>).</summary>
    private static void MakeFile(RestoreSession s, Pending p, in SavedFile f, long offset)
    {
        if (f.Index < 0 || f.Index >= p.Own.Count || p.Own[f.Index].Kind != OwnKind.Tmpfs || p.OwnFds[f.Index] < 0)
            throw new ImageFormatException($"MountFile record at offset {offset}: mount {f.Index} is no tmpfs of the tree's");
        int dir = p.OwnFds[f.Index];
        string where = $"{p.Own[f.Index].MountPoint.TrimEnd('/')}/{f.Path}";
        uint type = f.Mode & StatBuf.S_IFMT;
        int rc = 0;
        if ((f.Flags & FileFlags.HardLink) != 0) rc = FileCalls.Linkat(dir, f.Target, dir, f.Path, 0);
        else if (f.Path.Length == 0)
        {
            if (type != StatBuf.S_IFDIR) throw new ImageFormatException($"MountFile record at offset {offset}: the root of a tmpfs is no directory");
        }
        else switch (type)
        {
            case StatBuf.S_IFDIR: rc = FileCalls.MkdirAt(dir, f.Path, 0700); break;
            case StatBuf.S_IFLNK: rc = FileCalls.SymlinkAt(f.Target, dir, f.Path); break;
            case StatBuf.S_IFREG:
                int fd = FileCalls.OpenAt(dir, f.Path, FileCalls.O_WRONLY | FileCalls.O_CREAT | FileCalls.O_EXCL | FileCalls.O_NOFOLLOW | FileCalls.O_CLOEXEC, 0600);
                if (fd < 0) { rc = -1; break; }
                if (f.Size > 0 && FileCalls.Ftruncate(fd, f.Size) != 0)
                {
                    FileCalls.Close(fd);
                    throw new CkptException($"restart: {where} of the tree's tmpfs cannot be made {f.Size} bytes long: {Errors.Describe(Marshal.GetLastPInvokeError())}", ExitCodes.RestoreConflict);
                }
                if (f.Id != 0 && p.Files.TryAdd(f.Id, fd)) s.Own(fd);
                else FileCalls.Close(fd);
                break;
            case StatBuf.S_IFSOCK:
                // a socket's name: bound again by its socket, if the tree holds it; a name no socket holds is not made
                s.Log.Info($"{where} of the tree's tmpfs is a unix socket's name; it is not made again (a socket of the tree bound there binds it again)");
                return;
            case StatBuf.S_IFIFO or StatBuf.S_IFCHR or StatBuf.S_IFBLK: rc = FileCalls.MknodAt(dir, f.Path, f.Mode & (StatBuf.S_IFMT | 0xfff), f.Rdev); break;
            default: throw new ImageFormatException($"MountFile record at offset {offset}: {where} of unknown type 0x{type:x}");
        }
        if (rc != 0) throw new CkptException($"restart: {where} of the tree's tmpfs cannot be made: {Errors.Describe(Marshal.GetLastPInvokeError())}", ExitCodes.RestoreConflict);
        if ((f.Flags & FileFlags.HardLink) != 0) return;
        if (FileCalls.FchownAt(dir, f.Path, f.Uid, f.Gid, FileCalls.AT_SYMLINK_NOFOLLOW | (f.Path.Length == 0 ? FileCalls.AT_EMPTY_PATH : 0)) != 0)
            throw new CkptException($"restart: {where} of the tree's tmpfs cannot be given owner {f.Uid}:{f.Gid}: {Errors.Describe(Marshal.GetLastPInvokeError())}", ExitCodes.RestoreConflict);
        // after the owner: a change of owner clears security.capability
        foreach (var (name, value) in f.Xattrs)
            if (FileCalls.SetXattr(f.Path.Length == 0 ? $"/proc/self/fd/{dir}/." : $"/proc/self/fd/{dir}/{f.Path}", name, value) != 0)
                throw new CkptException($"restart: {where} of the tree's tmpfs cannot be given its extended attribute {name}: {Errors.Describe(Marshal.GetLastPInvokeError())}", ExitCodes.RestoreConflict);
        p.Made.Add(f);
    }

    /// <summary>Once every file of the tree's tmpfs is in: their modes (set-id bits after the owner) and times, children before their directories.</summary>
    private static void SetModesAndTimes(RestoreSession s, Pending p)
    {
        foreach (var fd in p.Files.Values) s.CloseOwn(fd);
        p.Files.Clear();
        for (int i = p.Made.Count - 1; i >= 0; i--)
        {
            var f = p.Made[i];
            int dir = p.OwnFds[f.Index];
            string path = f.Path.Length == 0 ? "." : f.Path;
            if ((f.Mode & StatBuf.S_IFMT) != StatBuf.S_IFLNK && FileCalls.FchmodAt(dir, path, f.Mode & 0xfff, 0) != 0)
                throw new CkptException($"restart: {p.Own[f.Index].MountPoint.TrimEnd('/')}/{f.Path} of the tree's tmpfs cannot be given mode {f.Mode & 0xfff:o}: {Errors.Describe(Marshal.GetLastPInvokeError())}", ExitCodes.RestoreConflict);
            FileCalls.SetTimesAt(dir, path, f.AtimeSec, f.AtimeNsec, f.MtimeSec, f.MtimeNsec);
        }
        p.Made.Clear();
        // a tmpfs whose super block was read-only: made so now
        for (int i = 0; i < p.Own.Count; i++)
            if (p.Own[i].Kind == OwnKind.Tmpfs && p.OwnFds[i] >= 0 && WithoutRo(p.Own[i].Options).ReadOnly && MountCalls.Reconfigure(p.OwnFds[i], "ro") != 0)
                throw new CkptException($"restart: cannot make the tmpfs on {p.Own[i].MountPoint} read-only again (fspick, fsconfig): {Errors.Describe(Marshal.GetLastPInvokeError())}", ExitCodes.RestoreConflict);
    }

    /// <summary>The root's fresh vessel makes the tree's mount namespace (private mounts), before the others are forked from it.</summary>
    public void Enter(RestoreContext root)
    {
        if (root.Session.Existing<Pending>() is not { } p) return;
        long r = UserNamespace.Unshare(root, "mnt");
        if (r < 0) throw new CkptException($"restart: cannot make the tree's mount namespace (unshare): {Errors.Describe((int)-r)}; restart as root", ExitCodes.Permission);
        MemoryCalls.WriteRemote(root.Pid, Engine.Vessel.Scratch, "/\0"u8);
        r = root.Vessel.Inject(Nr.mount, 0, (long)Engine.Vessel.Scratch, 0, MS_REC | MS_PRIVATE, 0);
        if (r < 0) throw new SyscallException("mount(/, MS_REC|MS_PRIVATE) (injected)", (int)-r, root.Pid);
    }

    /// <summary>A mount that is removed only with the proc mounts (those under /proc: the calls injected until then use ckpt's /proc/PID).</summary>
    private static bool Late(string mountPoint) => Under(mountPoint, "/proc");

    /// <summary>An own mount made only with the proc mounts: one on a proc of the tree's own, or a bind mount of a part of one (or of such a mount).</summary>
    private static bool LateOwn(Pending p, int i)
    {
        var m = p.Own[i];
        return m.Kind == OwnKind.BindProc || p.Mounts.Any(pm => Under(m.MountPoint, pm.MountPoint)) || (m.Kind == OwnKind.BindOwn && LateOwn(p, m.FromIndex));
    }

    /// <summary>
    /// Own mount <paramref name="i"/>, made (<paramref name="fd"/>), given its flags and private propagation
    /// and attached on its mount point (<paramref name="asRoot"/>: made the root, <see cref="PivotTo"/>):
    /// null, or what failed.
    /// </summary>
    private static string? AttachOwn(Pending p, int i, int fd, bool asRoot = false)
    {
        var m = p.Own[i];
        // its own flags (a bind mount's are the source's until then, a tmpfs was writable to be filled); every
        // mount is private (a clone of a shared mount of ckpt's would be its peer)
        ulong attrs = m.Attributes, clear = KnownAttributes;
        if (MountCalls.SetAttributes(fd, attrs, clear, MountCalls.MS_PRIVATE) != 0)
            return $"cannot set the flags of the {m.FsType} mount on {m.MountPoint} (mount_setattr 0x{attrs:x}): {Errors.Describe(Marshal.GetLastPInvokeError())}";
        if (asRoot) return PivotTo(fd);
        if (MountCalls.Attach(fd, m.MountPoint) != 0)
            return $"cannot mount the {m.FsType} mount of the tree's own on {m.MountPoint} (move_mount): {Errors.Describe(Marshal.GetLastPInvokeError())}";
        return null;
    }

    /// <summary>Own mount <paramref name="i"/>, a bind mount of a path of ckpt's namespace: a clone of it made by ckpt (its thread in its own namespace).</summary>
    private static void CloneCkptPath(RestoreSession s, Pending p, int i)
    {
        int fd = MountCalls.CloneTree(FileCalls.AT_FDCWD, p.Own[i].From);
        if (fd < 0) throw new CkptException($"restart: cannot bind {p.Own[i].From} on {p.Own[i].MountPoint} of the tree's mount namespace again (open_tree): {Errors.Describe(Marshal.GetLastPInvokeError())}", ExitCodes.RestoreConflict);
        p.OwnFds[i] = s.Own(fd);
    }

    /// <summary>A clone of <paramref name="path"/> of the calling thread's mount namespace (a part of an own mount, attached by now) for own mount <paramref name="i"/>: its fd, or -1 and <paramref name="failed"/>.</summary>
    private static int CloneFor(Pending p, int i, string path, out string? failed)
    {
        int fd = MountCalls.CloneTree(FileCalls.AT_FDCWD, path);
        failed = fd < 0 ? $"cannot bind {path} on {p.Own[i].MountPoint} again (open_tree): {Errors.Describe(Marshal.GetLastPInvokeError())}" : null;
        return fd;
    }

    /// <summary>Where a bind mount of a part of an own or proc mount finds that part, in the tree's namespace.</summary>
    private static string SourceOf(Pending p, OwnMount m)
    {
        string top = (m.Kind == OwnKind.BindProc ? p.Mounts[m.FromIndex].MountPoint : p.Own[m.FromIndex].MountPoint).TrimEnd('/');
        return m.From.Length == 0 ? (top.Length == 0 ? "/" : top) : $"{top}/{m.From}";
    }

    /// <summary>
    /// Once the root's vessel is in every namespace of the tree, before the other vessels are forked from it:
    /// the mounts of ckpt's the tree had removed are removed, and the tree's own (but proc) are attached in
    /// order, by a thread of ckpt in the tree's mount, network, IPC and cgroup namespaces (a new sysfs, mqueue
    /// or cgroup is of the namespace it is made in).
    /// </summary>
    public static void Build(RestoreContext root)
    {
        var s = root.Session;
        if (s.Existing<Pending>() is not { } p || (p.Own.Count == 0 && p.Removed.All(Late))) return;
        SetModesAndTimes(s, p);
        // a root of its own: made first and pivoted to; ckpt's proc stands on its /proc while the tree is rebuilt
        // (the calls injected into the vessels name /proc/PID paths of ckpt's namespace)
        bool ownRoot = OwnRoot(p);
        int standIn = -1;
        if (ownRoot)
        {
            standIn = MountCalls.CloneTree(FileCalls.AT_FDCWD, "/proc");
            if (standIn < 0) throw new CkptException($"restart: cannot clone ckpt's /proc (open_tree): {Errors.Describe(Marshal.GetLastPInvokeError())}", ExitCodes.RestoreConflict);
            s.Own(standIn);
        }
        // the bind mounts of ckpt's paths and the overlays of its directories: made here, in ckpt's namespace
        for (int i = 0; i < p.Own.Count; i++)
            if (LateOwn(p, i)) continue;
            else if (p.Own[i].Kind == OwnKind.Bind) CloneCkptPath(s, p, i);
            else if (p.Own[i].Kind == OwnKind.Overlay)
            {
                var m = p.Own[i];
                var (fd, why) = MakeFs(m.FsType, m.MountPoint, m.Source, m.Options, m.Attributes);
                if (why != null) throw new CkptException($"restart: {why}", ExitCodes.RestoreConflict);
                p.OwnFds[i] = s.Own(fd);
            }
        string? failed = InTreeNamespaces(root.Pid, p.Own.Any(m => m.Kind == OwnKind.New), () =>
        {
            // the copies of ckpt's mounts given the tree's flags, before anything is mounted on them
            foreach (var m in p.Own.Where(m => m.Kind == OwnKind.Flags))
                if (MountCalls.SetAttributes(m.MountPoint, m.Attributes, KnownAttributes) != 0)
                    return $"cannot set the flags of the mount on {m.MountPoint} (mount_setattr 0x{m.Attributes:x}): {Errors.Describe(Marshal.GetLastPInvokeError())}";
            foreach (var mp in p.Removed.Where(m => !Late(m)))
                if (MountCalls.Umount2(mp, MountCalls.MNT_DETACH) != 0)
                {
                    int e = Marshal.GetLastPInvokeError();
                    // already gone with a mount it was on (removed lazily, with what is on it)
                    if (e is not (Errors.EINVAL or Errors.ENOENT)) return $"cannot remove the mount on {mp} (the tree had removed it): {Errors.Describe(e)}";
                }
            for (int i = 0; i < p.Own.Count; i++)
            {
                var m = p.Own[i];
                if (m.Kind == OwnKind.Flags || LateOwn(p, i)) continue;
                if (m.Kind == OwnKind.BindOwn)
                {
                    int from = p.OwnFds[m.FromIndex];
                    if (p.Own[m.FromIndex].Kind == OwnKind.Flags) return $"cannot bind a part of {p.Own[m.FromIndex].MountPoint} on {m.MountPoint} again (the image is not one ckpt writes)";
                    int fd = MountCalls.CloneTree(from, m.From, m.From.Length == 0 ? FileCalls.AT_EMPTY_PATH : 0u);
                    if (fd < 0) return $"cannot bind {p.Own[m.FromIndex].MountPoint.TrimEnd('/')}/{m.From} on {m.MountPoint} again (open_tree): {Errors.Describe(Marshal.GetLastPInvokeError())}";
                    p.OwnFds[i] = s.Own(fd);
                }
                else if (m.Kind == OwnKind.New)
                {
                    var (fd, why) = MakeFs(m.FsType, m.MountPoint, m.Source, m.Options, m.Attributes);
                    if (why != null) return why;
                    p.OwnFds[i] = s.Own(fd);
                }
                if (AttachOwn(p, i, p.OwnFds[i], asRoot: i == 0 && ownRoot) is { } failed) return failed;
            }
            if (ownRoot)
            {
                if (!Directory.Exists("/proc") && FileCalls.Mkdir("/proc", 0555) != 0)
                    return $"cannot make /proc in the tree's root for ckpt's proc: {Errors.Describe(Marshal.GetLastPInvokeError())}";
                if (MountCalls.SetAttributes(standIn, 0, 0, MountCalls.MS_PRIVATE) != 0 || MountCalls.Attach(standIn, "/proc") != 0)
                    return $"cannot put ckpt's proc on /proc of the tree's root: {Errors.Describe(Marshal.GetLastPInvokeError())}";
                p.StandIn = true;
            }
            return null;
        });
        if (standIn >= 0) s.CloseOwn(standIn);
        if (failed != null) throw new CkptException($"restart: {failed}", ExitCodes.RestoreConflict);
        // (a tmpfs mounted on a proc of the tree's own stays made, detached, until the proc mounts)
        for (int i = 0; i < p.Own.Count; i++)
            if (p.OwnFds[i] >= 0 && !LateOwn(p, i)) { s.CloseOwn(p.OwnFds[i]); p.OwnFds[i] = -1; }
        s.Log.Info($"the tree's mount namespace has its {p.Own.Count} mount(s) of its own again ({string.Join(", ", p.Own.Select(m => $"{m.FsType} on {m.MountPoint}"))}), {p.Removed.Count(m => !Late(m))} removed");
        // ckpt's tracer thread works in the tree's mount namespace from now on (until the proc mounts): every
        // path the restart opens, binds, connects to or changes is the tree's (its /proc is ckpt's until then)
        p.CkptNamespace = s.Own(FileCalls.Open("/proc/thread-self/ns/mnt", FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0));
        if (p.CkptNamespace < 0) throw SyscallException.Last("open", 0, "/proc/thread-self/ns/mnt");
        p.CkptRoot = s.Own(FileCalls.Open("/", FileCalls.O_PATH | FileCalls.O_DIRECTORY | FileCalls.O_CLOEXEC, 0));
        if (p.CkptRoot < 0) throw SyscallException.Last("open", 0, "/");
        const int CLONE_FS = 0x200;
        if (Sys.Call(Nr.unshare, CLONE_FS) != 0) throw SyscallException.Last("unshare(CLONE_FS)");
        ProcessCalls.JoinNamespace(root.Pid, "mnt", (int)CLONE_NEWNS);
        s.Log.Info("ckpt's tracer thread works in the tree's mount namespace");
    }

    /// <summary>The tree has a root of its own (pivot_root into a container's file system): its first own mount is on /.</summary>
    private static bool OwnRoot(Pending p) => p.Own.Count > 0 && p.Own[0].MountPoint == "/" && p.Own[0].Kind != OwnKind.Flags;

    /// <summary>
    /// The calling thread's mount namespace gets the mount <paramref name="mountFd"/> as its root: attached on
    /// top of the present one, made the root (<c>pivot_root(".", ".")</c> from inside it: the old root ends
    /// on top of it) and the old root removed with every mount on it. Null, or what failed.
    /// </summary>
    private static string? PivotTo(int mountFd)
    {
        if (MountCalls.Attach(mountFd, "/") != 0) return $"cannot mount the tree's root (move_mount): {Errors.Describe(Marshal.GetLastPInvokeError())}";
        if (Sys.Call(Nr.fchdir, mountFd) != 0) return $"cannot enter the tree's root (fchdir): {Errors.Describe(Marshal.GetLastPInvokeError())}";
        if (MountCalls.PivotRoot(".", ".") != 0) return $"cannot make the tree's root the root of its mount namespace (pivot_root): {Errors.Describe(Marshal.GetLastPInvokeError())}";
        if (MountCalls.Umount2(".", MountCalls.MNT_DETACH) != 0) return $"cannot remove ckpt's root from the tree's mount namespace: {Errors.Describe(Marshal.GetLastPInvokeError())}";
        return FileCalls.ChdirRoot() == 0 ? null : $"chdir(/): {Errors.Describe(Marshal.GetLastPInvokeError())}";
    }

    /// <summary>
    /// Restart: where ckpt reaches <paramref name="path"/> of its own mount namespace while its tracer thread
    /// is in the tree's (a file of a mount the tree's namespace covers): through ckpt's root directory.
    /// </summary>
    public static string InCkptNamespace(RestoreSession s, string path)
        => s.Existing<Pending>() is { CkptRoot: >= 0 } p && path.StartsWith('/') ? $"/proc/self/fd/{p.CkptRoot}{path}" : path;

    /// <summary>Restart: the file at <paramref name="path"/> of ckpt's mount namespace, opened by ckpt (<see cref="InCkptNamespace"/>) and installed in the vessel.</summary>
    public static int OpenInCkptNamespace(RestoreContext ctx, string path, int flags)
    {
        string reach = InCkptNamespace(ctx.Session, path);
        int mine = FileCalls.Open(reach, flags | FileCalls.O_CLOEXEC, 0);
        if (mine < 0) throw new CkptException($"restart: cannot open {path} (of ckpt's mount namespace, which the tree's does not show there): {Errors.Describe(Marshal.GetLastPInvokeError())}", ExitCodes.RestoreConflict);
        try { return ctx.Install(mine); }
        finally { FileCalls.Close(mine); }
    }

    /// <summary>Restart: ckpt's tracer thread back in ckpt's mount namespace, if it had joined the tree's (<see cref="Build"/>).</summary>
    public static void Leave(RestoreSession s)
    {
        if (s.Existing<Pending>() is not { CkptNamespace: >= 0 } p) return;
        // threads started from it meanwhile share its fs (root, cwd): setns wants it unshared again
        const int CLONE_FS = 0x200;
        if (Sys.Call(Nr.unshare, CLONE_FS) != 0) throw SyscallException.Last("unshare(CLONE_FS)");
        if (Sys.Call(Nr.setns, p.CkptNamespace, CLONE_NEWNS) != 0) throw SyscallException.Last("setns (ckpt's mount namespace)");
        s.CloseOwn(p.CkptNamespace);
        s.CloseOwn(p.CkptRoot);
        p.CkptNamespace = p.CkptRoot = -1;
    }

    /// <summary>
    /// Runs <paramref name="work"/> on a thread of ckpt in the mount namespace of process <paramref name="pid"/>
    /// (and in its network, IPC and cgroup namespaces when <paramref name="all"/>): setns wants the thread's fs
    /// unshared first. Returns what failed, or null.
    /// </summary>
    private static string? InTreeNamespaces(int pid, bool all, Func<string?> work)
    {
        var kinds = all ? new[] { ("net", 0x40000000L), ("ipc", 0x08000000L), ("cgroup", 0x02000000L), ("mnt", CLONE_NEWNS) } : new[] { ("mnt", CLONE_NEWNS) };
        var fds = new List<int>();
        try
        {
            foreach (var (name, _) in kinds)
            {
                int fd = FileCalls.Open($"/proc/{pid}/ns/{name}", FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0);
                if (fd < 0) throw SyscallException.Last("open", pid, $"/proc/{pid}/ns/{name}");
                fds.Add(fd);
            }
            return NamespaceThread.Run(kinds.Select((k, i) => (fds[i], k.Item2, $"the tree's {k.Item1}")).ToList(), work, "ckpt-mounts").Failed;
        }
        finally { foreach (int fd in fds) FileCalls.Close(fd); }
    }

    /// <summary>
    /// Once every process is rebuilt, before any is let go: the mounts under /proc the tree had removed, and
    /// the tree's proc mounts, each for its pid namespace, by a thread of ckpt in the tree's mount namespace.
    /// </summary>
    public static void MountProcs(RestoreSession s)
    {
        Leave(s);
        if (s.Existing<Pending>() is not { } p || (p.Mounts.Count == 0 && !p.Removed.Any(Late) && !p.StandIn)) return;
        int root = s.Processes[0].Pid;
        var late = Enumerable.Range(0, p.Own.Count).Where(i => LateOwn(p, i)).ToList();
        // the bind mounts of ckpt's paths on the tree's procs: cloned here, in ckpt's namespace
        foreach (int i in late.Where(i => p.Own[i].Kind == OwnKind.Bind)) CloneCkptPath(s, p, i);
        // every proc made now, in ckpt's namespace (where /proc/PID of the inits can be opened), detached
        var mfds = Enumerable.Range(0, p.Mounts.Count).Select(i => Detached(p, i)).ToArray();
        try
        {
            string? failed = InTreeNamespaces(root, false, () =>
            {
                if (p.StandIn && MountCalls.Umount2("/proc", MountCalls.MNT_DETACH) != 0)
                    return $"cannot remove ckpt's proc from /proc of the tree's root: {Errors.Describe(Marshal.GetLastPInvokeError())}";
                p.StandIn = false;
                foreach (var mp in p.Removed.Where(Late))
                    if (MountCalls.Umount2(mp, MountCalls.MNT_DETACH) != 0 && Marshal.GetLastPInvokeError() is not (Errors.EINVAL or Errors.ENOENT))
                        return $"cannot remove the mount on {mp} (the tree had removed it): {Errors.Describe(Marshal.GetLastPInvokeError())}";
                for (int i = 0; i < p.Mounts.Count; i++)
                    if (MountCalls.Attach(mfds[i], p.Mounts[i].MountPoint) != 0)
                        return $"move_mount of a proc onto {p.Mounts[i].MountPoint}: {Errors.Describe(Marshal.GetLastPInvokeError())}";
                // then what is mounted on them, in order
                foreach (int i in late)
                {
                    var m = p.Own[i];
                    if (m.Kind is OwnKind.BindOwn or OwnKind.BindProc)
                    {
                        p.OwnFds[i] = CloneFor(p, i, SourceOf(p, m), out var why);
                        if (why != null) return why;
                        s.Own(p.OwnFds[i]);
                    }
                    if (AttachOwn(p, i, p.OwnFds[i]) is { } failed) return failed;
                }
                return null;
            });
            foreach (int i in late) if (p.OwnFds[i] >= 0) { s.CloseOwn(p.OwnFds[i]); p.OwnFds[i] = -1; }
            if (failed != null) throw new CkptException($"restart: {failed}", ExitCodes.RestoreConflict);
            s.Log.Info($"the tree's mount namespace has its proc mount(s) again: {string.Join(", ", p.Mounts.Select(m => m.MountPoint))}");
        }
        finally
        {
            foreach (int fd in mfds) FileCalls.Close(fd);
            p.MountFds = [];
        }
    }

    /// <summary>
    /// A new file system of type <paramref name="fsType"/> (for <paramref name="mountPoint"/>), detached, with
    /// the new mount API: its source, super options, the pid namespace of a proc (<paramref name="pidns"/>)
    /// and mount attributes. Its fd, or what failed.
    /// </summary>
    private static (int Fd, string? Failed) MakeFs(string fsType, string mountPoint, string source, string options, uint attributes, int pidns = -1)
    {
        int fs = MountCalls.FsOpen(fsType);
        if (fs < 0) return (-1, $"fsopen({fsType}) for {mountPoint}: {Errors.Describe(Marshal.GetLastPInvokeError())}");
        try
        {
            string? Config(int cmd, string? key, string? value, int aux)
                => MountCalls.FsConfig(fs, cmd, key, value, aux) == 0 ? null
                    : $"fsconfig({key ?? "create"}{(value != null ? "=" + value : "")}) of the {fsType} mount on {mountPoint}: {Errors.Describe(Marshal.GetLastPInvokeError())}";
            if (pidns >= 0 && Config(MountCalls.FSCONFIG_SET_FD, "pidns", null, pidns) is { } e1) return (-1, e1);
            if (source.Length > 0 && Config(MountCalls.FSCONFIG_SET_STRING, "source", source, 0) is { } e0) return (-1, e0);
            foreach (var o in options.Split(',', StringSplitOptions.RemoveEmptyEntries))
            {
                int eq = o.IndexOf('=');
                // (as mountinfo shows them: a space, comma or backslash in a value is an octal escape)
                if ((eq < 0 ? Config(MountCalls.FSCONFIG_SET_FLAG, o, null, 0) : Config(MountCalls.FSCONFIG_SET_STRING, o[..eq], ProcMounts.Unescape(o[(eq + 1)..]), 0)) is { } e2) return (-1, e2);
            }
            if (Config(MountCalls.FSCONFIG_CMD_CREATE, null, null, 0) is { } e3) return (-1, e3);
            int mfd = MountCalls.FsMount(fs, attributes);
            if (mfd < 0) return (-1, $"fsmount of the {fsType} mount on {mountPoint}: {Errors.Describe(Marshal.GetLastPInvokeError())}");
            return (mfd, null);
        }
        finally { FileCalls.Close(fs); }
    }

    public void Describe(Record rec, InfoNode info)
    {
        var node = info.Child("mount_namespace").Set("own", true);
        if (rec.Kind == RecordKind.MountFile)
        {
            _ = ReadFile(rec);
            node.Set("tmpfs_files", (node.Get("tmpfs_files") is long n ? n : 0) + 1);
            return;
        }
        if (rec.Kind == RecordKind.MountFileData)
        {
            node.Set("tmpfs_bytes", (node.Get("tmpfs_bytes") is long n ? n : 0) + rec.Payload.Length - 12);
            return;
        }
        var saved = Read(rec);
        var list = node.List("proc_mounts");
        foreach (var m in saved.Procs)
            list.Add(new InfoNode().Set("mount_point", m.MountPoint).Set("attributes", $"0x{m.Attributes:x}").Set("options", m.Options).Set("pid_namespace_init", m.Init == 0 ? "ckpt's" : m.Init.ToString()).Set("source", m.Source));
        if (saved.Removed.Count > 0)
        {
            var removed = node.List("removed");
            foreach (var r in saved.Removed) removed.Add(new InfoNode().Set("mount_point", r));
        }
        if (saved.Own.Count > 0)
        {
            var own = node.List("mounts");
            foreach (var m in saved.Own)
            {
                var n = new InfoNode().Set("mount_point", m.MountPoint).Set("kind", m.Kind.ToString().ToLowerInvariant()).Set("fs_type", m.FsType).Set("source", m.Source)
                    .Set("attributes", $"0x{m.Attributes:x}");
                if (m.Options.Length > 0) n.Set("options", m.Options);
                if (m.Kind == OwnKind.Bind) n.Set("from", m.From);
                if (m.Kind == OwnKind.BindOwn) n.Set("from", $"{saved.Own[m.FromIndex].MountPoint.TrimEnd('/')}/{m.From}");
                if (m.Kind == OwnKind.BindProc) n.Set("from", $"{saved.Procs[m.FromIndex].MountPoint.TrimEnd('/')}/{m.From}");
                own.Add(n);
            }
        }
    }
}
