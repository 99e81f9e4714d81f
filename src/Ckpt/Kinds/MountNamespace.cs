using System.Runtime.InteropServices;
using System.Text;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>
/// The tree's mount namespace, when it has one of its own whose mounts are ckpt's plus proc file systems
/// of its own: <c>unshare --pid --fork --mount-proc</c>, the usual way to run a program in a pid namespace
/// (a proc of the new namespace mounted on /proc, so that the program's /proc/PID and `ps` show its ids).
/// <para>
/// Checkpoint: every process of the tree must be in the root's mount namespace. Its mountinfo is compared
/// with ckpt's, mount by mount (device, root, mount point, file system, source, mount and super options;
/// not the ids, the order or the propagation): every mount of the tree's must be one of ckpt's, but for
/// proc mounts of its own, each saved with its mount point, options and pid namespace (the init, in the
/// tree, of the namespace whose pid 1 is the /1 of that proc; 0: ckpt's). Any other mount of its own (a
/// tmpfs, a bind mount...) is refused. A file open on one of its proc mounts is saved by RegularFile with
/// the mount and its path under it (<see cref="OnOwnProc"/>). A mount of ckpt's the tree does not have is
/// only logged. One MountNamespace record before the Tree record.
/// </para>
/// <para>
/// Restart: the root's fresh vessel makes a new mount namespace (injected <c>unshare(CLONE_NEWNS)</c>, all
/// mounts then made private, as unshare(1) does) before the other vessels are forked; the proc mounts are
/// put in place once every process is rebuilt, just before they are let go (the calls injected until then
/// name /proc/PID paths of ckpt's namespace), by a thread of ckpt that enters the tree's mount namespace
/// (<c>move_mount</c> onto the mount point). Each is made detached by ckpt (<c>fsopen("proc")</c> with
/// <c>pidns</c> set to the namespace's file, the saved super options, <c>fsmount</c> with the mount
/// options) when a file on it is first opened again (<see cref="OpenOnOwnProc"/>), or then.
/// </para>
/// </summary>
public sealed class MountNamespace : ITreeNamespace
{
    public static readonly MountNamespace Instance = new();
    public string Name => "mount namespace";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.MountNamespace];
    public int FinishOrder => 0;

    private const long CLONE_NEWNS = 0x20000, MS_REC = 0x4000, MS_PRIVATE = 1 << 18;

    /// <summary>A proc mount of the tree's own: where, with which options (MOUNT_ATTR_* of fsmount, the super options), for which pid namespace (the host pid of its init; 0: ckpt's).</summary>
    public readonly record struct ProcMount(string MountPoint, uint Attributes, string Options, int Init, string Source);

    private const uint MOUNT_ATTR_RDONLY = 1, MOUNT_ATTR_NOSUID = 2, MOUNT_ATTR_NODEV = 4, MOUNT_ATTR_NOEXEC = 8,
        MOUNT_ATTR_NOATIME = 0x10, MOUNT_ATTR_STRICTATIME = 0x20, MOUNT_ATTR_NODIRATIME = 0x80, KnownAttributes = 0xbf;

    /// <summary>One line of mountinfo: its id, and what two mounts of two namespaces that are copies share.</summary>
    private readonly record struct Mount(int Id, string Key, string MountPoint, string FsType, string MountOptions, string SuperOptions, string Source);

    private static List<Mount> ReadMountInfo(string path)
    {
        var list = new List<Mount>();
        foreach (var line in File.ReadLines(path))
        {
            var f = line.Split(' ');
            int dash = Array.IndexOf(f, "-");
            if (dash < 6 || f.Length < dash + 4) continue;
            string superOpts = f[dash + 3];
            list.Add(new Mount(int.Parse(f[0]), $"{f[2]} {f[3]} {f[4]} {f[5]} {f[dash + 1]} {f[dash + 2]} {superOpts}",
                ProcMounts.Unescape(f[4]), f[dash + 1], f[5], superOpts, ProcMounts.Unescape(f[dash + 2])));
        }
        return list;
    }

    // ------------------------------------------------------------------ checkpoint

    public void Write(CheckpointSession s)
    {
        var (root, own) = s.TreeNamespace("mnt", "mount");
        if (!own) return;
        var rootPid = s.Find(s.Tree[0].Pid)?.Pid ?? s.Tree[0].Pid;
        var theirs = ReadMountInfo($"/proc/{rootPid}/mountinfo");
        var mine = ReadMountInfo("/proc/self/mountinfo").GroupBy(m => m.Key).ToDictionary(g => g.Key, g => g.Count());
        var procs = new List<ProcMount>();
        var procIds = new HashSet<int>();
        foreach (var m in theirs)
        {
            if (mine.TryGetValue(m.Key, out int n) && n > 0) { mine[m.Key] = n - 1; continue; }
            if (m.FsType != "proc")
                throw new NotCheckpointableException(s.Tree[0].Pid, $"its mount namespace ({root}) has a mount ckpt's has not ({m.FsType} on {m.MountPoint}); only proc mounts of its own are rebuilt (unshare --mount-proc): checkpoint a tree whose other mounts are ckpt's");
            procs.Add(new ProcMount(m.MountPoint, Attributes(s, m), Options(m.SuperOptions), InitOf(s, rootPid, m.MountPoint), m.Source));
            procIds.Add(m.Id);
        }
        foreach (var (key, n) in mine)
            if (n > 0) s.Log.Info($"a mount of ckpt's mount namespace is not in the tree's ({key}); the restarted tree's namespace, a copy of ckpt's, will have it");
        // files open on them (RegularFile): saved by mount and path under it
        var ownProcs = s.State<OwnProcs>();
        ownProcs.Root = rootPid;
        for (int i = 0, k = 0; i < theirs.Count; i++)
            if (procIds.Contains(theirs[i].Id)) ownProcs.ByMountId[theirs[i].Id] = (k++, theirs[i].MountPoint);
        var p = new PayloadWriter().U32((uint)procs.Count);
        foreach (var m in procs) p.Str(m.MountPoint).U32(m.Attributes).Str(m.Options).I32(m.Init).Str(m.Source);
        // not optional: a reader that skipped it would run the tree in the restart's mounts, its /proc of another pid namespace
        s.Image.Write(RecordKind.MountNamespace, p);
        s.Log.Info($"the tree is in a mount namespace of its own ({root}) with {procs.Count} proc mount(s) of its own: {string.Join(", ", procs.Select(m => $"{m.MountPoint} (pid namespace of {(m.Init == 0 ? "ckpt" : m.Init)})"))}");
    }

    /// <summary>Checkpoint: the tree's own proc mounts by mount id → (index in the record, mount point), and the root's pid (whose /proc/PID/root reaches them).</summary>
    public sealed class OwnProcs
    {
        public readonly Dictionary<int, (int Index, string MountPoint)> ByMountId = new();
        public int Root;
    }

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
        if (!FileCalls.TryLstat($"/proc/{own.Root}/root{f.Link}", out _))
            throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd} ({f.Link}) is a file of the tree's own proc whose process has ended; not supported");
        return (m.Index, rel);
    }

    private static uint Attributes(CheckpointSession s, Mount m)
    {
        uint a = 0;
        foreach (var o in m.MountOptions.Split(','))
            a |= o switch
            {
                "ro" => MOUNT_ATTR_RDONLY, "nosuid" => MOUNT_ATTR_NOSUID, "nodev" => MOUNT_ATTR_NODEV, "noexec" => MOUNT_ATTR_NOEXEC,
                "noatime" => MOUNT_ATTR_NOATIME, "nodiratime" => MOUNT_ATTR_NODIRATIME, "strictatime" => MOUNT_ATTR_STRICTATIME,
                "rw" or "relatime" => 0u,
                _ => throw new NotCheckpointableException(s.Tree[0].Pid, $"the tree's proc mount on {m.MountPoint} has mount option '{o}', which is not supported"),
            };
        return a;
    }

    /// <summary>The super options to give fsconfig: all but rw/ro (a mount attribute).</summary>
    private static string Options(string superOptions) => string.Join(',', superOptions.Split(',').Where(o => o is not ("rw" or "ro") && o.Length > 0));

    /// <summary>The pid namespace of the proc mounted on <paramref name="mountPoint"/> in the root's namespace: the host pid of the tree's process that is its pid 1, 0 for ckpt's.</summary>
    private static int InitOf(CheckpointSession s, int rootPid, string mountPoint)
    {
        string where = $"/proc/{rootPid}/root{mountPoint.TrimEnd('/')}";
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

    private static List<ProcMount> Read(Record rec)
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
        r.End();
        return list;
    }

    private sealed class Pending
    {
        public List<ProcMount> Mounts = new();
        /// <summary>The proc file systems made so far, detached until <see cref="MountProcs"/> puts them in place (by index; -1: not made).</summary>
        public int[] MountFds = [];
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
            var (mfd, failed) = MakeProc(m, pidns);
            if (failed != null) throw new CkptException($"restart: {failed}", ExitCodes.RestoreConflict);
            return p.MountFds[index] = mfd;
        }
        finally { FileCalls.Close(pidns); }
    }

    public void Restore(RestoreSession s, Record rec) => s.Set(new Pending { Mounts = Read(rec) });

    /// <summary>The root's fresh vessel makes the tree's mount namespace (private mounts), before the others are forked from it.</summary>
    public void Enter(RestoreContext root)
    {
        if (root.Session.Existing<Pending>() is null) return;
        long r = UserNamespace.Unshare(root, "mnt");
        if (r < 0) throw new CkptException($"restart: cannot make the tree's mount namespace (unshare): {Errors.Describe((int)-r)}; restart as root", ExitCodes.Permission);
        MemoryCalls.WriteRemote(root.Pid, Engine.Vessel.Scratch, "/\0"u8);
        r = root.Vessel.Inject(Nr.mount, 0, (long)Engine.Vessel.Scratch, 0, MS_REC | MS_PRIVATE, 0);
        if (r < 0) throw new SyscallException("mount(/, MS_REC|MS_PRIVATE) (injected)", (int)-r, root.Pid);
    }

    /// <summary>
    /// Once every process is rebuilt, before any is let go: the tree's proc mounts, made by a thread of ckpt
    /// in the tree's mount namespace (setns wants its fs unshared first), each for its pid namespace.
    /// </summary>
    public static void MountProcs(RestoreSession s)
    {
        if (s.Existing<Pending>() is not { Mounts.Count: > 0 } p) return;
        int root = s.Processes[0].Pid;
        // every proc made now, in ckpt's namespace (where /proc/PID of the inits can be opened), detached
        var mfds = Enumerable.Range(0, p.Mounts.Count).Select(i => Detached(p, i)).ToArray();
        int mnt = FileCalls.Open($"/proc/{root}/ns/mnt", FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0);
        if (mnt < 0) throw SyscallException.Last("open", root, $"/proc/{root}/ns/mnt");
        try
        {
            string? failed = null;
            var th = new Thread(() =>
            {
                const int CLONE_FS = 0x200;
                if (Sys.Call(Nr.unshare, CLONE_FS) != 0 || Sys.Call(Nr.setns, mnt, (int)CLONE_NEWNS) != 0)
                {
                    failed = $"cannot enter the tree's mount namespace: {Errors.Describe(Marshal.GetLastPInvokeError())}";
                    return;
                }
                for (int i = 0; i < p.Mounts.Count && failed == null; i++) failed = Attach(mfds[i], p.Mounts[i].MountPoint);
            }) { Name = "ckpt-mount-proc" };
            th.Start();
            th.Join();
            if (failed != null) throw new CkptException($"restart: {failed}", ExitCodes.RestoreConflict);
            s.Log.Info($"the tree's mount namespace has its proc mount(s) again: {string.Join(", ", p.Mounts.Select(m => m.MountPoint))}");
        }
        finally
        {
            FileCalls.Close(mnt);
            foreach (int fd in mfds) FileCalls.Close(fd);
            p.MountFds = [];
        }
    }

    /// <summary>move_mount of the detached mount <paramref name="mfd"/> onto <paramref name="mountPoint"/> of the calling thread's mount namespace; null, or what failed.</summary>
    private static string? Attach(int mfd, string mountPoint)
    {
        long r = Sys.Call(Nr.move_mount, mfd, (long)Z("", out var h2), FileCalls.AT_FDCWD, (long)Z(mountPoint, out var h3), MOVE_MOUNT_F_EMPTY_PATH);
        h2.Free(); h3.Free();
        return r == 0 ? null : $"move_mount of a proc onto {mountPoint}: {Errors.Describe(Marshal.GetLastPInvokeError())}";
    }

    private const long FSOPEN_CLOEXEC = 1, FSMOUNT_CLOEXEC = 1, MOVE_MOUNT_F_EMPTY_PATH = 4;
    private const int FSCONFIG_SET_FLAG = 0, FSCONFIG_SET_STRING = 1, FSCONFIG_SET_FD = 5, FSCONFIG_CMD_CREATE = 6;

    /// <summary>A detached proc mount with the new mount API for pid namespace <paramref name="pidns"/>: its fd, or what failed.</summary>
    private static (int Fd, string? Failed) MakeProc(ProcMount m, int pidns)
    {
        long fs = Sys.Call(Nr.fsopen, (long)Z("proc", out var h1), FSOPEN_CLOEXEC);
        h1.Free();
        if (fs < 0) return (-1, $"fsopen(proc) for {m.MountPoint}: {Errors.Describe(Marshal.GetLastPInvokeError())}");
        try
        {
            string? Config(int cmd, string? key, string? value, int aux)
            {
                GCHandle hk = default, hv = default;
                try
                {
                    long k = key == null ? 0 : (long)Z(key, out hk), v = value == null ? 0 : (long)Z(value, out hv);
                    return Sys.Call(Nr.fsconfig, fs, cmd, k, v, aux) == 0 ? null
                        : $"fsconfig({key ?? "create"}{(value != null ? "=" + value : "")}) of the proc mount on {m.MountPoint}: {Errors.Describe(Marshal.GetLastPInvokeError())}";
                }
                finally { if (hk.IsAllocated) hk.Free(); if (hv.IsAllocated) hv.Free(); }
            }
            if (Config(FSCONFIG_SET_FD, "pidns", null, pidns) is { } e1) return (-1, e1);
            if (m.Source.Length > 0 && Config(FSCONFIG_SET_STRING, "source", m.Source, 0) is { } e0) return (-1, e0);
            foreach (var o in m.Options.Split(',', StringSplitOptions.RemoveEmptyEntries))
            {
                int eq = o.IndexOf('=');
                if ((eq < 0 ? Config(FSCONFIG_SET_FLAG, o, null, 0) : Config(FSCONFIG_SET_STRING, o[..eq], o[(eq + 1)..], 0)) is { } e2) return (-1, e2);
            }
            if (Config(FSCONFIG_CMD_CREATE, null, null, 0) is { } e3) return (-1, e3);
            long mfd = Sys.Call(Nr.fsmount, fs, FSMOUNT_CLOEXEC, m.Attributes);
            if (mfd < 0) return (-1, $"fsmount of the proc mount on {m.MountPoint}: {Errors.Describe(Marshal.GetLastPInvokeError())}");
            return ((int)mfd, null);
        }
        finally { FileCalls.Close((int)fs); }
    }

    /// <summary>A pinned NUL-terminated UTF-8 copy of <paramref name="s"/>; the caller frees the handle.</summary>
    private static nint Z(string s, out GCHandle h)
    {
        var b = Encoding.UTF8.GetBytes(s + "\0");
        h = GCHandle.Alloc(b, GCHandleType.Pinned);
        return h.AddrOfPinnedObject();
    }

    public void Describe(Record rec, InfoNode info)
    {
        var node = info.Child("mount_namespace").Set("own", true);
        var list = node.List("proc_mounts");
        foreach (var m in Read(rec))
            list.Add(new InfoNode().Set("mount_point", m.MountPoint).Set("attributes", $"0x{m.Attributes:x}").Set("options", m.Options).Set("pid_namespace_init", m.Init == 0 ? "ckpt's" : m.Init.ToString()).Set("source", m.Source));
    }
}
