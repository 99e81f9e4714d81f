using System.Globalization;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>
/// fanotify (<c>anon_inode:[fanotify]</c>): the group's init flags and event-file flags (fdinfo
/// <c>fanotify flags:F event-flags:E</c>) and every mark of its fdinfo, each with its mark flags, mask
/// and ignore mask (every number in hex):
/// <list type="bullet">
/// <item>on an inode: <c>fanotify ino:X sdev:Y mflags:M mask:K ignored_mask:I fhandle-bytes:B fhandle-type:T f_handle:H</c>,
/// its path found from the file handle as for inotify (<see cref="Inotify.PathOfHandle"/>);</item>
/// <item>on a mount: <c>fanotify mnt_id:N mflags:...</c>, saved by its mount point (mount ids are not kept
/// across a reboot or to another machine);</item>
/// <item>on a filesystem: <c>fanotify sdev:Y mflags:...</c>, saved by a mount point of that device.</item>
/// </list>
/// Refused: events still queued (FIONREAD &gt; 0: the tree is let go a moment to read them first, as for
/// inotify), marks on a mount namespace, an inode no path reaches. A permission request the program
/// has read but not answered yet is not visible and is lost (its requester, if left running, is
/// answered when the old group goes away).
/// Restart: injected <c>fanotify_init</c> with the same flags (FAN_NONBLOCK from the description's
/// current O_NONBLOCK), then per mark, oldest first (fdinfo shows the newest first), <c>fanotify_mark(FAN_MARK_ADD | type, mask, path)</c> and, for
/// the ignore mask, the same with FAN_MARK_IGNORE (or the older FAN_MARK_IGNORED_MASK, as the mark had)
/// and FAN_MARK_IGNORED_SURV_MODIFY when it had it; evictable marks stay evictable.
/// </summary>
public sealed class Fanotify : IFileKind
{
    public static readonly Fanotify Instance = new();
    public string Name => "fanotify";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.Fanotify];
    public int FinishOrder => 44;

    public const string Link = "anon_inode:[fanotify]";

    private enum Target : byte { Inode = 1, Mount = 2, Filesystem = 3 }

    // fanotify_init flags
    private const uint FAN_CLOEXEC = 0x1, FAN_NONBLOCK = 0x2;
    // fanotify_mark flags
    private const uint FAN_MARK_ADD = 0x1, FAN_MARK_DONT_FOLLOW = 0x4, FAN_MARK_MOUNT = 0x10, FAN_MARK_IGNORED_MASK = 0x20,
        FAN_MARK_IGNORED_SURV_MODIFY = 0x40, FAN_MARK_FILESYSTEM = 0x100, FAN_MARK_EVICTABLE = 0x200, FAN_MARK_IGNORE = 0x400;
    private const int AT_FDCWD = -100;

    private readonly record struct Mark(Target Kind, uint MarkFlags, uint Mask, uint IgnoredMask, string Path, ulong Ino, uint Dev);

    public bool Handles(in OpenFile f) => f.Link == Link;

    public void Checkpoint(CheckpointContext ctx) { }

    public void CheckpointFile(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        long queued = Inotify.QueuedAtCheckpoint(ctx, f.Fd);
        var info = ProcFdInfo.Read(ctx.Pid, f.Fd);
        uint? initFlags = null, eventFlags = null;
        var marks = new List<Mark>();
        foreach (var line in info.Lines)
        {
            if (!line.StartsWith("fanotify ", StringComparison.Ordinal)) continue;
            var w = ProcFdInfo.Words(line);
            if (w.TryGetValue("flags", out var fl) && w.TryGetValue("event-flags", out var ef))
            {
                initFlags = (uint)ProcFdInfo.Hex(fl);
                eventFlags = (uint)ProcFdInfo.Hex(ef);
                continue;
            }
            if (!w.TryGetValue("mflags", out var mf) || !w.TryGetValue("mask", out var mk) || !w.TryGetValue("ignored_mask", out var im))
                throw new NotCheckpointableException(ctx.Pid, $"fanotify fd {f.Fd}: cannot parse the mark '{line}' in its fdinfo");
            uint mflags = (uint)ProcFdInfo.Hex(mf), mask = (uint)ProcFdInfo.Hex(mk), ignored = (uint)ProcFdInfo.Hex(im);
            if (w.TryGetValue("ino", out var ino) && w.TryGetValue("sdev", out var sdev))
            {
                ulong inode = ProcFdInfo.Hex(ino);
                uint dev = (uint)ProcFdInfo.Hex(sdev);
                string? path = null;
                if (w.TryGetValue("fhandle-bytes", out var hb) && w.TryGetValue("fhandle-type", out var ht) && w.TryGetValue("f_handle", out var h))
                    path = Inotify.PathOfHandle(ctx.Session, (int)ProcFdInfo.Hex(hb), (int)ProcFdInfo.Hex(ht), Convert.FromHexString(h), inode, dev);
                if (path == null)
                    throw new NotCheckpointableException(ctx.Pid, $"fanotify fd {f.Fd}: a mark is on inode {inode} of device {dev >> 20}:{dev & 0xfffff}, which no path reaches (unlinked, hidden by another mount, or a filesystem without file handles)");
                marks.Add(new Mark(Target.Inode, mflags, mask, ignored, path, inode, dev));
            }
            else if (w.TryGetValue("mnt_id", out var mnt))
            {
                int id = (int)ProcFdInfo.Hex(mnt);
                string path = MountPoint(l => l[0] == id.ToString(CultureInfo.InvariantCulture))
                    ?? throw new NotCheckpointableException(ctx.Pid, $"fanotify fd {f.Fd}: a mark is on mount {id}, which is not in ckpt's mount namespace");
                marks.Add(new Mark(Target.Mount, mflags, mask, ignored, path, 0, (uint)id));
            }
            else if (w.TryGetValue("sdev", out var fsdev))
            {
                uint dev = (uint)ProcFdInfo.Hex(fsdev);
                string majmin = $"{dev >> 20}:{dev & 0xfffff}";
                string path = MountPoint(l => l[2] == majmin)
                    ?? throw new NotCheckpointableException(ctx.Pid, $"fanotify fd {f.Fd}: a mark is on the filesystem of device {majmin}, which is not mounted in ckpt's mount namespace");
                marks.Add(new Mark(Target.Filesystem, mflags, mask, ignored, path, 0, dev));
            }
            else
                throw new NotCheckpointableException(ctx.Pid, $"fanotify fd {f.Fd} has a mark of a kind ckpt cannot save ('{line}'; marks on a mount namespace are not supported)");
        }
        if (initFlags == null || eventFlags == null)
            throw new NotCheckpointableException(ctx.Pid, $"fanotify fd {f.Fd}: its fdinfo does not show the group's flags");
        if (queued > 0)
            throw new NotCheckpointableException(ctx.Pid, $"fanotify fd {f.Fd} has {queued} bytes of events queued, which a new fanotify group cannot be given back; checkpoint once it has read them");
        var p = new PayloadWriter().U32(objref).I32(f.Flags & ~FileCalls.O_CLOEXEC).U32(initFlags.Value).U32(eventFlags.Value).U32((uint)marks.Count);
        foreach (var m in marks) p.U8((byte)m.Kind).U32(m.MarkFlags).U32(m.Mask).U32(m.IgnoredMask).Str(m.Path).U64(m.Ino).U32(m.Dev);
        ctx.Image.Write(RecordKind.Fanotify, p);
        ctx.Log.Debug($"pid {ctx.Pid}: fanotify fd {f.Fd}: flags 0x{initFlags:x}, {marks.Count} mark(s)");
    }

    /// <summary>The mount point of the first mount of ckpt's mountinfo matching (the whole-filesystem mount first).</summary>
    private static string? MountPoint(Func<string[], bool> match) => ProcMounts.MountPoints(match).FirstOrDefault();

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint objref = r.U32(); int flags = r.I32(); uint init = r.U32(), eventFlags = r.U32(); uint n = r.U32();
        if (n > (uint)r.Remaining / 25) throw new ImageFormatException($"Fanotify record at offset {rec.Offset}: {n} marks do not fit");
        var marks = new List<Mark>();
        for (int i = 0; i < n; i++)
        {
            var m = new Mark((Target)r.U8(), r.U32(), r.U32(), r.U32(), r.Str(), r.U64(), r.U32());
            if (m.Kind is not (Target.Inode or Target.Mount or Target.Filesystem))
                throw new ImageFormatException($"Fanotify record at offset {rec.Offset}: mark {i} has an unknown kind {(byte)m.Kind}");
            marks.Add(m);
        }
        r.End();
        // FAN_CLOEXEC as given then (fdinfo shows it; each fd's close-on-exec is set by FdTable)
        init = init & ~FAN_NONBLOCK | ((flags & FileCalls.O_NONBLOCK) != 0 ? FAN_NONBLOCK : 0);
        int fd = (int)ctx.Inject("fanotify_init", Nr.fanotify_init, init, eventFlags);
        // fdinfo lists the newest mark first: added oldest first, they come back in the same order
        for (int i = marks.Count - 1; i >= 0; i--)
        {
            var m = marks[i];
            uint type = m.Kind switch { Target.Mount => FAN_MARK_MOUNT, Target.Filesystem => FAN_MARK_FILESYSTEM, _ => FAN_MARK_DONT_FOLLOW };
            uint evictable = m.MarkFlags & FAN_MARK_EVICTABLE;
            ulong path = ctx.PutScratch(0, System.Text.Encoding.UTF8.GetBytes(m.Path + "\0"));
            if (m.Mask != 0)
                AddMark(ctx, fd, FAN_MARK_ADD | type | evictable, m.Mask, path, m, "mask");
            if (m.IgnoredMask != 0)
            {
                uint ignore = (m.MarkFlags & FAN_MARK_IGNORE) != 0 ? FAN_MARK_IGNORE : FAN_MARK_IGNORED_MASK;
                AddMark(ctx, fd, FAN_MARK_ADD | type | evictable | ignore | (m.MarkFlags & FAN_MARK_IGNORED_SURV_MODIFY), m.IgnoredMask, path, m, "ignore mask");
            }
        }
        ctx.Files.SetRestored(objref, fd);
    }

    private static void AddMark(RestoreContext ctx, int fd, uint flags, uint mask, ulong path, in Mark m, string what)
    {
        long got = ctx.Vessel.Inject(Nr.fanotify_mark, fd, flags, mask, AT_FDCWD, (long)path);
        if (got < 0)
            throw new CkptException($"restart: cannot mark {m.Path} ({m.Kind.ToString().ToLowerInvariant()}) with fanotify {what} 0x{mask:x} again: {Errors.Describe((int)-got)}",
                got == -2 ? ExitCodes.RestoreConflict : ExitCodes.Internal);
    }

    public void Finish(RestoreContext ctx) { }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint objref = r.U32(); int flags = r.I32(); uint init = r.U32(), eventFlags = r.U32(); uint n = r.U32();
        var node = new InfoNode().Set("kind", "fanotify").Set("path", Link).Set("flags", RegularFile.OpenFlags(flags))
            .Set("init_flags", $"0x{init:x}").Set("event_flags", $"0x{eventFlags:x}");
        var list = node.List("marks");
        for (int i = 0; i < n; i++)
        {
            var kind = (Target)r.U8(); uint mflags = r.U32(), mask = r.U32(), ignored = r.U32(); string path = r.Str(); r.U64(); r.U32();
            list.Add(new InfoNode().Set("on", kind.ToString().ToLowerInvariant()).Set("path", path).Set("mask", $"0x{mask:x}")
                .Set("ignored_mask", $"0x{ignored:x}").Set("mark_flags", $"0x{mflags:x}"));
        }
        info.Child("files").Set(objref.ToString(), node);
    }
}
