using System.Globalization;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>
/// inotify (<c>anon_inode:inotify</c>): O_NONBLOCK and every watch of its fdinfo
/// (<c>inotify wd:N ino:X sdev:Y mask:M ignored_mask:0 fhandle-bytes:B fhandle-type:T f_handle:H</c>, every number in hex).
/// The watched inode's path is found at checkpoint from its file handle: <c>open_by_handle_at</c> on a
/// mount of device <c>sdev</c> (CAP_DAC_READ_SEARCH), then the link of that fd, checked to name the same
/// inode. Refused: events still queued (FIONREAD &gt; 0; they cannot be queued again in a new instance),
/// a watched inode no path reaches (unlinked, hidden by another mount, a filesystem without file
/// handles).
/// Restart: injected <c>inotify_init1</c> and <c>inotify_add_watch(path, mask)</c> in ascending wd order.
/// wds are allocated in increasing order (idr_alloc_cyclic from 1), so a gap in the saved wds is
/// reproduced by adding and removing a watch on a scratch directory; the IN_IGNORED events those
/// removals queue are then read out through a pidfd_getfd copy. A watch that does not come back with
/// its wd (two saved paths now name one inode) fails the restart.
/// </summary>
public sealed class Inotify : IFileKind
{
    public static readonly Inotify Instance = new();
    public string Name => "inotify";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.Inotify];
    public int FinishOrder => 44;
    /// <summary>Most wds skipped with a scratch watch to reproduce gaps; beyond, restart refuses.</summary>
    public const int MaxGap = 1 << 16;
    private const uint UserMask = EventCalls.IN_ALL_EVENTS | EventCalls.IN_ONESHOT | EventCalls.IN_EXCL_UNLINK;

    public bool Handles(in OpenFile f) => f.Link == "anon_inode:inotify";

    public void Checkpoint(CheckpointContext ctx) { }

    public readonly record struct Watch(int Wd, uint Mask, string Path, ulong Ino, uint Sdev);

    /// <summary>
    /// Does an inotify instance or fanotify group of the frozen tree have events queued (they cannot be saved)? Then the
    /// tree is let go a moment to read them and frozen again (<see cref="Engine.Checkpointer"/>). What each
    /// queue held at the last look is what the image is taken with: events queued later (ckpt's own image
    /// or log written in a watched directory, or anything else changing there) come after the
    /// checkpoint's moment, like any change to the files after it. They stay queued for a tree left
    /// running.
    /// </summary>
    public static bool HasQueuedEvents(CheckpointSession s)
    {
        var seen = s.State<QueuesAtFreeze>().Bytes;
        bool any = false;
        foreach (var ctx in s.Processes)
            foreach (var f in ctx.OpenFiles)
            {
                if (f.Link is not ("anon_inode:inotify" or Fanotify.Link)) continue;
                int mine = ctx.GrabFd(f.Fd);
                try { any |= (seen[(ctx.Pid, f.Fd)] = EventCalls.QueuedBytes(mine, ctx.Pid)) > 0; }
                finally { FileCalls.Close(mine); }
            }
        return any;
    }

    /// <summary>
    /// Bytes of events queued in an inotify or fanotify fd of the process: as at the last look
    /// (<see cref="HasQueuedEvents"/>) when the tree has not run since, else as now.
    /// </summary>
    public static long QueuedAtCheckpoint(CheckpointContext ctx, int fd)
    {
        if (QueuesAtFreeze.TryGet(ctx.Session, ctx.Pid, fd, out long queued)) return queued;
        int mine = ctx.GrabFd(fd);
        try { return EventCalls.QueuedBytes(mine, ctx.Pid); }
        finally { FileCalls.Close(mine); }
    }

    public void CheckpointFile(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        long queued = QueuedAtCheckpoint(ctx, f.Fd);
        var info = ProcFdInfo.Read(ctx.Pid, f.Fd);
        var watches = new List<Watch>();
        var vias = new List<(int Index, int Fd)>();
        foreach (var line in info.Lines)
        {
            if (!line.StartsWith("inotify ", StringComparison.Ordinal)) continue;
            var w = ProcFdInfo.Words(line);
            if (!w.TryGetValue("wd", out var wd) || !w.TryGetValue("ino", out var ino) || !w.TryGetValue("sdev", out var sdev) || !w.TryGetValue("mask", out var mask))
                throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd}: cannot parse the inotify watch '{line}' in its fdinfo");
            var watch = new Watch((int)ProcFdInfo.Hex(wd), (uint)ProcFdInfo.Hex(mask) & UserMask, "", ProcFdInfo.Hex(ino), (uint)ProcFdInfo.Hex(sdev));
            string? path = null;
            if (w.TryGetValue("fhandle-bytes", out var hb) && w.TryGetValue("fhandle-type", out var ht) && w.TryGetValue("f_handle", out var h))
                path = PathOfHandle(ctx.Session, (int)ProcFdInfo.Hex(hb), (int)ProcFdInfo.Hex(ht), Convert.FromHexString(h), watch.Ino, watch.Sdev);
            if (path == null)
            {
                // a file removed while open (a log rotated under `tail -F`): reached at restart through an fd of
                // the process that holds it, rebuilt as a removed file
                int via = OpenFdOf(ctx, watch.Ino, watch.Sdev);
                if (via < 0)
                    throw new NotCheckpointableException(ctx.Pid, $"inotify fd {f.Fd}: watch wd {watch.Wd} is on inode {watch.Ino} of device {watch.Sdev >> 20}:{watch.Sdev & 0xfffff}, which no path reaches (unlinked and not open in the process, hidden by another mount, or a filesystem without file handles)");
                vias.Add((watches.Count, via));
                path = "";
            }
            watches.Add(watch with { Path = path });
        }
        if (queued > 0)
        {
            // the usual cause: ckpt's own image or log written in a directory the process watches
            var own = ctx.Session.OwnFiles.FirstOrDefault(o => watches.Any(w => w.Path == o || w.Path == Path.GetDirectoryName(o)));
            if (own != null)
                throw new NotCheckpointableException(ctx.Pid, $"inotify fd {f.Fd} watches {Path.GetDirectoryName(own)}, where ckpt is writing {own}, and has {queued} bytes of events queued (from that writing, or other); write the image and log to a directory the process does not watch");
            throw new NotCheckpointableException(ctx.Pid, $"inotify fd {f.Fd} has {queued} bytes of events queued, which a new inotify instance cannot be given back; checkpoint once it has read them");
        }
        var p = new PayloadWriter().U32(objref).I32(f.Flags & ~FileCalls.O_CLOEXEC).U32((uint)watches.Count);
        foreach (var w in watches) p.I32(w.Wd).U32(w.Mask).Str(w.Path).U64(w.Ino).U32(w.Sdev);
        // appended field: the watches of removed files, each reached through an fd of the process
        p.U32((uint)vias.Count);
        foreach (var (index, via) in vias) p.I32(index).I32(via);
        ctx.Image.Write(RecordKind.Inotify, p);
    }

    /// <summary>An fd of the process on the removed file (inode <paramref name="ino"/> of device <paramref name="sdev"/>, major &lt;&lt; 20 | minor), or -1.</summary>
    private static int OpenFdOf(CheckpointContext ctx, ulong ino, uint sdev)
    {
        foreach (var o in ctx.OpenFiles)
            if (!o.InFlight && o.Stat.Ino == ino && o.Stat.Nlink == 0 && o.Stat.Type == StatBuf.S_IFREG
                && FileCalls.MajorOf(o.Stat.Dev) == (int)(sdev >> 20) && FileCalls.MinorOf(o.Stat.Dev) == (int)(sdev & 0xfffff))
                return o.Fd;
        return -1;
    }

    /// <summary>Instances with watches of removed files: their watches are all added in Finish, once those files are at their fds.</summary>
    private sealed class Deferred { public readonly List<(uint Objref, List<Watch> Watches)> List = new(); }

    /// <summary>
    /// The path of the inode behind a file handle: opened with open_by_handle_at on each mount of its
    /// device (kernel dev_t: major &lt;&lt; 20 | minor) until the link of the opened fd names that inode.
    /// </summary>
    public static unsafe string? PathOfHandle(CheckpointSession s, int bytes, int type, byte[] handle, ulong ino, uint sdev)
    {
        if (bytes != handle.Length || bytes == 0) return null;
        string dev = $"{sdev >> 20}:{sdev & 0xfffff}";
        // a tree with mounts of its own: its mounts of that device, reached through its root (the paths are its)
        var mounts = MountNamespace.TreeMountPoints(s, dev) ?? ProcMounts.MountPoints(f => f[2] == dev);
        var fh = new byte[8 + bytes];
        BitConverter.TryWriteBytes(fh.AsSpan(0), (uint)bytes);
        BitConverter.TryWriteBytes(fh.AsSpan(4), type);
        handle.CopyTo(fh, 8);
        foreach (var mnt in mounts)
        {
            // not O_PATH: open_by_handle_at refuses an O_PATH mount fd (EBADF)
            int mfd = FileCalls.Open(mnt, FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0);
            if (mfd < 0) continue;
            try
            {
                int fd;
                fixed (byte* p = fh) fd = EventCalls.OpenByHandleAt(mfd, p, FileCalls.O_PATH | FileCalls.O_CLOEXEC);
                if (fd < 0) continue;
                try
                {
                    string path;
                    try { path = MmState.ProcLink($"/proc/self/fd/{fd}"); } catch (CkptException) { continue; }
                    // (lstat: the inode may be a symbolic link, watched itself)
                    if (path.StartsWith('/') && FileCalls.TryLstat(MountNamespace.Reach(s, path), out var st) && st.Ino == ino
                        && FileCalls.MajorOf(st.Dev) == (int)(sdev >> 20) && FileCalls.MinorOf(st.Dev) == (int)(sdev & 0xfffff))
                        return path;
                }
                finally { FileCalls.Close(fd); }
            }
            finally { FileCalls.Close(mfd); }
        }
        return null;
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint objref = r.U32(); int flags = r.I32(); uint n = r.U32();
        if (n > (uint)r.Remaining / 24) throw new ImageFormatException($"Inotify record at offset {rec.Offset}: {n} watches do not fit");
        var watches = new List<Watch>();
        for (int i = 0; i < n; i++) watches.Add(new Watch(r.I32(), r.U32(), r.Str(), r.U64(), r.U32()));
        var vias = new Dictionary<int, int>();
        for (uint i = 0, m = r.AtEnd ? 0 : r.U32(); i < m; i++)
        {
            int index = r.I32(), via = r.I32();
            if (index < 0 || index >= watches.Count || via < 0 || !vias.TryAdd(index, via))
                throw new ImageFormatException($"Inotify record at offset {rec.Offset}: watch {index} through fd {via}");
            watches[index] = watches[index] with { Path = $"/proc/self/fd/{via}" };
        }
        r.End();
        watches.Sort((a, b) => a.Wd.CompareTo(b.Wd));
        int fd = (int)ctx.Inject("inotify_init1", Nr.inotify_init1, FileCalls.O_CLOEXEC | (flags & FileCalls.O_NONBLOCK));
        ctx.Files.SetRestored(objref, fd);
        // a watch of a removed file goes through the fd that holds it, final in Finish: then all of them, in order
        if (vias.Count > 0) ctx.State<Deferred>().List.Add((objref, watches));
        else AddWatches(ctx, fd, watches);
    }

    /// <summary>Adds the watches in wd order, each getting its saved wd (the numbers skipped are taken by scratch watches, removed at once).</summary>
    private static void AddWatches(RestoreContext ctx, int fd, List<Watch> watches)
    {
        int next = 1, skipped = 0;
        string? scratchDir = null;
        var dummies = new HashSet<int>();
        try
        {
            foreach (var w in watches)
            {
                if (w.Wd < next || w.Wd - next + skipped > MaxGap)
                    throw new CkptException($"restart: inotify watch wd {w.Wd} on {w.Path} cannot be given its number again (wds are given in increasing order; {(w.Wd < next ? "it is repeated" : $"more than {MaxGap} skipped")})", ExitCodes.RestoreConflict);
                while (next < w.Wd)
                {
                    // skip a wd: a watch on a scratch directory, removed at once (queues an IN_IGNORED, read out below)
                    scratchDir ??= Directory.CreateTempSubdirectory("ckpt-inotify-").FullName;
                    int d = AddWatch(ctx, fd, scratchDir, EventCalls.IN_ALL_EVENTS);
                    ctx.Inject("inotify_rm_watch", Nr.inotify_rm_watch, fd, d);
                    dummies.Add(d);
                    next = d + 1;
                    if (++skipped % 4096 == 0) Drain(ctx, fd, dummies);   // stay under max_queued_events
                }
                if (!w.Path.StartsWith("/proc/self/fd/", StringComparison.Ordinal) && !FileCalls.TryStat(w.Path, out _))
                    throw new CkptException($"restart: {w.Path} (watched by inotify wd {w.Wd}) no longer exists", ExitCodes.RestoreConflict);
                int got = AddWatch(ctx, fd, w.Path, w.Mask);
                if (got != w.Wd)
                    throw new CkptException($"restart: inotify watch on {w.Path} came back as wd {got} instead of {w.Wd}" + (got < w.Wd ? " (another watched path now names the same file)" : ""), ExitCodes.RestoreConflict);
                next = w.Wd + 1;
            }
            if (dummies.Count > 0) Drain(ctx, fd, dummies);
        }
        finally
        {
            if (scratchDir != null) try { Directory.Delete(scratchDir); } catch (IOException) { }
        }
    }

    private static int AddWatch(RestoreContext ctx, int fd, string path, uint mask)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(path + "\0");
        ulong p = ctx.PutScratch(0, bytes);
        // a watch on a symbolic link itself (added with IN_DONT_FOLLOW, which the kernel does not keep in the mask)
        const uint IN_DONT_FOLLOW = 0x02000000;
        if (!path.StartsWith("/proc/", StringComparison.Ordinal) && FileCalls.TryLstat(path, out var lst) && lst.Type == StatBuf.S_IFLNK) mask |= IN_DONT_FOLLOW;
        long wd = ctx.Vessel.Inject(Nr.inotify_add_watch, fd, (long)p, mask);
        if (wd < 0) throw new CkptException($"restart: inotify_add_watch {path}: {Errors.Describe((int)-wd)}", ExitCodes.RestoreConflict);
        return (int)wd;
    }

    /// <summary>Reads out the queued events (IN_IGNORED of the scratch watches); anything else is logged as lost.</summary>
    private static unsafe void Drain(RestoreContext ctx, int fd, HashSet<int> dummies)
    {
        int mine = ctx.GrabFd(fd);
        try
        {
            int n = EventCalls.QueuedBytes(mine, ctx.Pid);
            if (n == 0) return;
            var buf = new byte[n];
            nint got;
            fixed (byte* b = buf) got = FileCalls.Read(mine, b, (nuint)n);
            if (got < 0) throw SyscallException.Last("read (inotify events of scratch watches)", ctx.Pid);
            for (int off = 0; off + 16 <= got;)
            {
                int wd = BitConverter.ToInt32(buf, off);
                uint mask = BitConverter.ToUInt32(buf, off + 4);
                int len = BitConverter.ToInt32(buf, off + 12);
                if (!(dummies.Contains(wd) && mask == EventCalls.IN_IGNORED))
                    ctx.Log.Info($"inotify: an event (wd {wd}, mask 0x{mask:x}) that arrived while the watches were being restored was lost");
                off += 16 + len;
            }
        }
        finally { FileCalls.Close(mine); }
    }

    /// <summary>The watches of instances that watch removed files, through the final fds of those files.</summary>
    public void Finish(RestoreContext ctx)
    {
        if (ctx.Existing<Deferred>() is not { } d) return;
        foreach (var (objref, watches) in d.List)
        {
            var fds = FdTable.FinalFds(ctx, objref);
            if (fds.Count == 0) throw new CkptException($"restart: an inotify instance of pid {ctx.Pid} watching removed files is held by no fd of it", ExitCodes.Internal);
            AddWatches(ctx, fds[0], watches);
        }
        d.List.Clear();
    }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint objref = r.U32(); int flags = r.I32(); uint n = r.U32();
        var node = new InfoNode().Set("kind", "inotify").Set("path", "anon_inode:inotify").Set("flags", RegularFile.OpenFlags(flags));
        var list = node.List("watches");
        for (int i = 0; i < n; i++)
        {
            int wd = r.I32(); uint mask = r.U32(); string path = r.Str(); ulong ino = r.U64(); uint sdev = r.U32();
            list.Add(new InfoNode().Set("wd", wd).Set("path", path).Set("mask", $"0x{mask:x}").Set("ino", ino.ToString(CultureInfo.InvariantCulture)));
        }
        info.Child("files").Set(objref.ToString(), node);
    }
}
