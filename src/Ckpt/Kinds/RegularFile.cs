using System.Runtime.InteropServices;
using System.Text;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// Regular files and directories opened by path: path, access mode and status flags, offset, and the
/// size at checkpoint time (a file whose size differs at restart is refused). A file unlinked while
/// open has its content saved (FileData records) and is restored as an unnamed O_TMPFILE file.
/// </summary>
public sealed class RegularFile : IFileKind
{
    public static readonly RegularFile Instance = new();
    public string Name => "regular file";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.RegularFile, RecordKind.FileData];
    public int FinishOrder => 45;

    public bool Handles(in OpenFile f) => f.Link.StartsWith('/')
        && (f.Stat.Type is StatBuf.S_IFREG or StatBuf.S_IFDIR || f.Stat.Type == StatBuf.S_IFLNK && (f.Flags & FileCalls.O_PATH) != 0);

    public void Checkpoint(CheckpointContext ctx) { }

    /// <summary>The file system type of mount <paramref name="mntId"/> in the process's mountinfo ("" if not found).</summary>
    private static string MountFsType(int pid, int mntId)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/mountinfo"))
            {
                // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
                int sp = line.IndexOf(' ');
                if (sp <= 0 || line[..sp] != mntId.ToString(System.Globalization.CultureInfo.InvariantCulture)) continue;
                int dash = line.IndexOf(" - ", StringComparison.Ordinal);
                if (dash < 0) return "";
                var rest = line[(dash + 3)..].Split(' ');
                return rest.Length > 0 ? rest[0] : "";
            }
        }
        catch (IOException) { }
        return "";
    }

    /// <summary>
    /// Another name of the file <paramref name="st"/> (a hard link) in the directory of <paramref name="removed"/>,
    /// a name it had: the entry of that directory with its device and inode, or null.
    /// </summary>
    internal static string? OtherName(string removed, in StatBuf st)
    {
        string? dir = Path.GetDirectoryName(removed);
        if (dir == null) return null;
        try
        {
            foreach (var entry in Directory.EnumerateFileSystemEntries(dir))
                if (FileCalls.TryLstat(entry, out var e) && e.Ino == st.Ino && e.Dev == st.Dev && e.Type == st.Type) return entry;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return null;
    }

    /// <summary>SECRETMEM_MAGIC: the file system of memfd_secret areas.</summary>
    private const long SecretmemMagic = 0x5345434d;

    public void CheckpointFile(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        // a file of the tree's own proc (unshare --mount-proc): by that mount and its path under it
        if (MountNamespace.OnOwnProc(ctx, f) is { } onProc)
        {
            ctx.Image.Write(RecordKind.RegularFile, new PayloadWriter().U32(objref).Str(f.Link).I32(f.Flags & ~FileCalls.O_CLOEXEC).I64(f.Pos)
                .I64(f.Stat.Size).U32(f.Stat.Mode).Bool(false).U32(0).U64(f.Stat.Dev).U64(f.Stat.Ino).U32(f.Stat.Uid).U32(f.Stat.Gid)
                .Str("").Str("").I32(0).I32(onProc.Index + 1).Str(onProc.Relative));
            return;
        }
        bool deleted = f.Link.EndsWith(" (deleted)") && f.Stat.Nlink == 0;
        string path = deleted ? f.Link[..^10] : f.Link;
        // an O_PATH fd of a symbolic link (O_NOFOLLOW): the link itself, by its name
        bool link = f.Stat.Type == StatBuf.S_IFLNK;
        string? linkTarget = null;
        if (link && deleted)
        {
            // a link removed since: its target is saved, and it is made again (then removed) at restart
            int mine = ctx.GrabFd(f.Fd);
            try { linkTarget = FileCalls.ReadLinkOf(mine) ?? throw SyscallException.Last("readlinkat (a removed symbolic link)", ctx.Pid, $"fd {f.Fd}"); }
            finally { FileCalls.Close(mine); }
        }
        StatBuf st = default;
        // removed under this name, but it has others (hard links): reopened by one in the same directory
        string? removedName = null;
        if (!deleted && !link && f.Link.EndsWith(" (deleted)") && OtherName(path[..^10], f.Stat) is { } other)
        {
            ctx.Log.Info($"pid {ctx.Pid}: fd {f.Fd}: {path[..^10]} was removed; the file is reopened by another of its names, {other}");
            removedName = path[..^10];
            path = other;
        }
        string reach = MountNamespace.Reach(ctx.Session, path);   // a path of the tree's own mounts: through its root
        bool found = deleted || (link ? FileCalls.TryLstat(reach, out st) : FileCalls.TryStat(reach, out st));
        // a file of a mount of ckpt's that a mount of the tree's covers (opened before a tmpfs was mounted on
        // its directory): its path leads there in ckpt's namespace only, where the restart opens it
        bool covered = false;
        if (!deleted && reach != path && (!found || st.Ino != f.Stat.Ino || st.Dev != f.Stat.Dev)
            && (link ? FileCalls.TryLstat(path, out var cst) : FileCalls.TryStat(path, out cst)) && cst.Ino == f.Stat.Ino && cst.Dev == f.Stat.Dev)
        {
            (st, found, covered) = (cst, true, true);
            ctx.Log.Info($"pid {ctx.Pid}: fd {f.Fd}: {path} is covered by a mount of the tree's own; it is opened in ckpt's mount namespace at restart");
        }
        if (!found && Marshal.GetLastPInvokeError() is Errors.EACCES or Errors.EPERM)
            throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd}: {path} cannot be looked up by this user (permission denied); checkpoint as a user who can reach it, or as root");
        // a /proc file of a process that has exited since it was opened (reads fail with ESRCH)
        int deadPid = !deleted && !found && DeadProcess(ctx, f, path) is int dp ? dp : 0;
        if (deadPid != 0) ctx.Log.Info($"pid {ctx.Pid}: fd {f.Fd} ({path}) is a /proc file of process {deadPid}, which has exited: opened again through a stand-in with that pid at restart");
        if (!deleted && deadPid == 0 && (!found || st.Ino != f.Stat.Ino || st.Dev != f.Stat.Dev))
        {
            string fs = MountFsType(ctx.Pid, f.MntId);
            int mine = ctx.GrabFd(f.Fd);
            try
            {
                // a POSIX message queue: a file of the mqueue file system, named by the queue's name
                if (fs == "mqueue" || FileCalls.FstatfsType(mine) == MessageQueue.MqueueMagic)
                {
                    MessageQueue.CheckpointFile(ctx, f, objref, mine);
                    return;
                }
                if (FileCalls.FstatfsType(mine) == SecretmemMagic)
                    throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd} is a secret memory area (memfd_secret), whose contents only its own mappings can read; it cannot be saved");
            }
            finally { FileCalls.Close(mine); }
            if (f.Link.EndsWith(" (deleted)"))
                throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd}: {path[..^10]} was removed, but the open file still has {f.Stat.Nlink} other name(s) (hard links), none in its directory, which ckpt cannot find; checkpoint once the process has closed it, or give it back its name");
            throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd}: {path} no longer names the open file (renamed or replaced{(fs is "" or "tmpfs" or "ext4" or "xfs" or "btrfs" or "overlay" ? "" : $"; it is on a {fs} file system")})");
        }
        // another description of an unlinked file already saved: refer to it (the content is saved once)
        uint sameAs = 0;
        if (deleted && !ctx.Session.State<CheckpointState>().Unlinked.TryAdd((f.Stat.Dev, f.Stat.Ino), objref))
            sameAs = ctx.Session.State<CheckpointState>().Unlinked[(f.Stat.Dev, f.Stat.Ino)];
        var p = new PayloadWriter().U32(objref).Str(path).I32(f.Flags & ~FileCalls.O_CLOEXEC).I64(f.Pos)
            .I64(f.Stat.Size).U32(f.Stat.Mode).Bool(deleted).U32(sameAs).U64(f.Stat.Dev).U64(f.Stat.Ino).U32(f.Stat.Uid).U32(f.Stat.Gid);
        // appended fields, each written when it or a later one is there: the target of a removed symbolic
        // link; the name a file open by another of its names was removed from; the pid of the exited
        // process whose /proc file this is
        if (linkTarget != null || removedName != null || deadPid != 0 || covered) p.Str(linkTarget ?? "");
        if (removedName != null || deadPid != 0 || covered) p.Str(removedName ?? "");
        if (deadPid != 0 || covered) p.I32(deadPid);
        if (covered) p.I32(0).Str("").Bool(true);
        ctx.Image.Write(RecordKind.RegularFile, p);
        // a removed directory is empty, a link has no content: nothing to save
        if (deleted && sameAs == 0 && f.Stat.Type is not (StatBuf.S_IFDIR or StatBuf.S_IFLNK)) SaveContent(ctx, f, objref);
    }

    private sealed class CheckpointState
    {
        /// <summary>Unlinked files met so far: (dev, ino) → objref of the first description, which holds the content.</summary>
        public readonly Dictionary<(ulong, ulong), uint> Unlinked = new();
    }

    /// <summary>An unlinked file's data ranges as FileData records (the format of a memory object's data: <see cref="MemoryObject.SaveData"/>).</summary>
    private static void SaveContent(CheckpointContext ctx, OpenFile f, uint objref)
    {
        int fd = ctx.GrabFd(f.Fd);
        try { MemoryObject.SaveData(ctx, RecordKind.FileData, objref, fd, f.Stat.Size, f.Link); }
        finally { FileCalls.Close(fd); }
    }

    private sealed class RestoreState
    {
        public readonly Dictionary<uint, int> Writers = new();   // objref -> our copy, for FileData
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint objref = r.U32();
        if (rec.Kind == RecordKind.FileData)
        {
            long off = r.I64();
            var data = rec.Payload.Span[12..];
            if (!ctx.State<RestoreState>().Writers.TryGetValue(objref, out int w))
                throw new ImageFormatException($"FileData record at offset {rec.Offset} for objref {objref}, which is no unlinked file");
            FileCalls.PwriteAll(w, data, off, "pwrite (unlinked file)");
            return;
        }
        string path = r.Str(); int flags = r.I32(); long pos = r.I64(); long size = r.I64(); uint mode = r.U32(); bool deleted = r.Bool();
        uint sameAs = r.AtEnd ? 0 : r.U32();
        ulong dev = r.U64OrDefault(0), ino = r.U64OrDefault(0);
        uint uid = r.AtEnd ? 0 : r.U32(), gid = r.AtEnd ? 0 : r.U32();
        string? linkTarget = r.AtEnd ? null : r.Str();
        if (linkTarget == "") linkTarget = null;
        string? removedName = r.AtEnd ? null : r.Str();
        if (removedName == "") removedName = null;
        int deadPid = r.AtEnd ? 0 : r.I32();
        // appended: on the tree's own proc mount N (N > 0: index + 1), at this path under it
        int onProc = r.AtEnd ? 0 : r.I32();
        string relative = onProc > 0 || !r.AtEnd ? r.Str() : "";
        // appended: on a mount of ckpt's the tree's namespace covers (opened in ckpt's namespace)
        bool covered = !r.AtEnd && r.Bool();
        r.End();
        if (onProc > 0)
        {
            if (deleted || deadPid != 0 || relative.StartsWith('/') || relative.Split('/').Contains(".."))
                throw new ImageFormatException($"RegularFile record at offset {rec.Offset}: {path} on proc mount {onProc - 1} at '{relative}'");
            int pfd = MountNamespace.OpenOnOwnProc(ctx, onProc - 1, relative, flags);
            ctx.SetOffsetAndFlags(pfd, pos, -1, path);
            ctx.Files.SetRestored(objref, pfd);
            return;
        }
        if (deadPid != 0 && (deleted || deadPid < 0 || !path.StartsWith($"/proc/{deadPid}/", StringComparison.Ordinal)))
            throw new ImageFormatException($"RegularFile record at offset {rec.Offset}: {path} is no /proc file of pid {deadPid}");
        int fd;
        if (deleted && (mode & StatBuf.S_IFMT) == StatBuf.S_IFLNK)
        {
            // a removed symbolic link held by an O_PATH fd: made again under its name (or beside it), opened, removed
            if (linkTarget == null) throw new ImageFormatException($"RegularFile record at offset {rec.Offset}: a removed symbolic link without its target");
            string? made = null;
            foreach (var c in new[] { path, $"{path}.ckpt-{Environment.ProcessId}" })
                if (Directory.Exists(Path.GetDirectoryName(c)) && FileCalls.Symlink(linkTarget, c) == 0) { made = c; break; }
            if (made == null) throw new CkptException($"restart: cannot make the removed symbolic link {path} again", ExitCodes.RestoreConflict);
            try
            {
                SocketCalls.Lchown(made, uid, gid);
                fd = ctx.OpenInVessel(made, FileCalls.ReopenFlags(flags) | FileCalls.O_CLOEXEC);
            }
            finally { FileCalls.Unlink(made); }
            ctx.Files.SetRestored(objref, fd);
            return;
        }
        if (deleted && (mode & StatBuf.S_IFMT) == StatBuf.S_IFDIR)
        {
            // a removed directory (the process went on using it): an empty one made and removed again
            int dir = DeletedDirectory(ctx.Session, dev, ino, path, mode, uid, gid);
            fd = ctx.OpenInVessel($"/proc/{Environment.ProcessId}/fd/{dir}", FileCalls.ReopenFlags(flags) | FileCalls.O_CLOEXEC);
            ctx.Files.SetRestored(objref, fd);
            return;   // its position in an empty directory means nothing
        }
        if (deleted && sameAs != 0)
        {
            // one more description of an unlinked file restored earlier: open that same file again
            int first = ctx.FileFd(sameAs, $"unlinked file {path}");
            fd = ctx.OpenInVessel($"/proc/self/fd/{first}", FileCalls.ReopenFlags(flags) | FileCalls.O_CLOEXEC);
        }
        else if (deadPid != 0) fd = OpenDeadProcFile(ctx, path, deadPid, flags);
        else if (!deleted)
        {
            string reach = covered ? MountNamespace.InCkptNamespace(ctx.Session, path) : path;
            if (!((mode & StatBuf.S_IFMT) == StatBuf.S_IFLNK ? FileCalls.TryLstat(reach, out var st) : FileCalls.TryStat(reach, out st)))
                throw new CkptException($"restart: {path} (open in the image) no longer exists", ExitCodes.RestoreConflict);
            if ((mode & StatBuf.S_IFMT) == StatBuf.S_IFLNK && (st.Mode & StatBuf.S_IFMT) != StatBuf.S_IFLNK)
                throw new CkptException($"restart: {path} (a symbolic link open in the image) is no longer one", ExitCodes.RestoreConflict);
            if ((st.Mode & StatBuf.S_IFMT) == StatBuf.S_IFREG && st.Size != size)
            {
                // a file the process only writes (a log its output goes to, which others append to or
                // rotate meanwhile): what it writes next goes where it would have gone; a file it reads
                // must hold what it held
                if ((flags & FileCalls.O_ACCMODE) != FileCalls.O_WRONLY)
                    throw new CkptException($"restart: {path} changed since the checkpoint (size {size} -> {st.Size})", ExitCodes.RestoreConflict);
                ctx.Log.Info($"{path} (open for writing only) changed size since the checkpoint ({size} -> {st.Size}); kept");
            }
            // a file removed under the name it was opened by, open by another: given that name again
            // for the open (then removed), so that the fd shows "NAME (deleted)" as it did; opened by
            // the other if the name is taken
            if (removedName != null && FileCalls.Link(path, removedName) == 0)
            {
                try { fd = ctx.OpenInVessel(removedName, FileCalls.ReopenFlags(flags) | FileCalls.O_CLOEXEC); }
                finally { FileCalls.Unlink(removedName); }
            }
            else if (covered) fd = MountNamespace.OpenInCkptNamespace(ctx, path, FileCalls.ReopenFlags(flags));
            else fd = ctx.OpenInVessel(path, FileCalls.ReopenFlags(flags) | FileCalls.O_CLOEXEC);
        }
        else fd = RestoreUnlinked(ctx, objref, path, flags, mode, size);
        ctx.SetOffsetAndFlags(fd, pos, -1, path);
        ctx.Files.SetRestored(objref, fd);
    }

    /// <summary>
    /// A /proc file of a process that had exited: a stand-in with that pid (a vessel of ckpt's, parked;
    /// a pid near it if it is taken here) lives while the process opens the file, then is killed and
    /// reaped: the fd refers to an exited process's file, as it did.
    /// </summary>
    private static int OpenDeadProcFile(RestoreContext ctx, string path, int pid, int flags)
    {
        int standIn = Vessel.StandIn(pid, $"the ended process whose file {path} was open");
        string at = standIn == pid ? path : $"/proc/{standIn}/{path[$"/proc/{pid}/".Length..]}";
        if (standIn != pid) ctx.Log.Info($"pid {ctx.Pid}: {at} opened instead of {path} (of an ended process): pid {pid} is in use");
        try { return ctx.OpenInVessel(at, FileCalls.ReopenFlags(flags) | FileCalls.O_CLOEXEC); }
        finally { Vessel.KillAndReap(standIn); }
    }

    /// <summary>
    /// The pid whose /proc directory <paramref name="path"/> is in, if that process has exited and the fd
    /// is a file of the proc file system (a file of /proc/PID opened while it lived), else null.
    /// </summary>
    private static int? DeadProcess(CheckpointContext ctx, in OpenFile f, string path)
    {
        if (!path.StartsWith("/proc/", StringComparison.Ordinal) || ProcessTree.ProcPid(path) is not int pid || pid <= 0
            || !path.StartsWith($"/proc/{pid}/", StringComparison.Ordinal) || Directory.Exists($"/proc/{pid}")) return null;
        int mine = ctx.GrabFd(f.Fd);
        try { return FileCalls.FstatfsType(mine) == ProcSuperMagic ? pid : null; }
        finally { FileCalls.Close(mine); }
    }

    /// <summary>PROC_SUPER_MAGIC: the proc file system.</summary>
    private const long ProcSuperMagic = 0x9fa0;

    private static int RestoreUnlinked(RestoreContext ctx, uint objref, string path, int flags, uint mode, long size)
    {
        string dir = Path.GetDirectoryName(path) is { Length: > 0 } d && Directory.Exists(d) ? d : "/tmp";
        int tmp = ctx.OpenInVessel(dir, FileCalls.O_TMPFILE | FileCalls.O_RDWR | FileCalls.O_CLOEXEC, (int)(mode & 0xfff));
        // the vessel's umask (still ckpt's own) applied to the creation mode: set the saved one
        ctx.Inject("fchmod", Nr.fchmod, tmp, mode & 0xfff);
        int mine = ctx.GrabFd(tmp);
        ctx.State<RestoreState>().Writers[objref] = mine;
        // the saved size, holes included (only data ranges follow in FileData records)
        if (Sys.Call(77 /* ftruncate */, mine, size) != 0) throw SyscallException.Last("ftruncate (unlinked file)", ctx.Pid);
        // always reopened: the O_TMPFILE description itself would report O_TMPFILE|O_DIRECTORY in F_GETFL
        int fd = ctx.OpenInVessel($"/proc/self/fd/{tmp}", FileCalls.ReopenFlags(flags) | FileCalls.O_CLOEXEC);
        ctx.Inject("close", Nr.close, tmp);
        return fd;
    }

    public void Finish(RestoreContext ctx)
    {
        foreach (var w in ctx.State<RestoreState>().Writers.Values) FileCalls.Close(w);
    }

    /// <summary>Removed directories rebuilt so far, by the (dev, ino) they had: one directory for all their holders (fds, cwds).</summary>
    private sealed class DeletedDirectories { public readonly Dictionary<(ulong, ulong), int> ByInode = new(); }

    /// <summary>
    /// ckpt's fd (open until the restart ends) of an empty directory standing for the removed directory
    /// that was at <paramref name="path"/>: made under that name when it is free, so that the process's
    /// links show "PATH (deleted)" as before (else under a temporary name beside it, or in /tmp), with
    /// the saved mode and owner, then removed. Every holder of the same (dev, ino) gets the same one.
    /// </summary>
    internal static int DeletedDirectory(RestoreSession s, ulong dev, ulong ino, string path, uint mode, uint uid, uint gid)
    {
        var known = s.State<DeletedDirectories>().ByInode;
        if (dev != 0 && known.TryGetValue((dev, ino), out int have)) return have;
        string parent = Path.GetDirectoryName(path) is { Length: > 0 } d && Directory.Exists(d) ? d : "/tmp";
        string made = path;
        if (parent != Path.GetDirectoryName(path) || FileCalls.Mkdir(made, 0700) != 0)
        {
            made = Path.Combine(parent, $".ckpt-removed-{Environment.ProcessId}-{known.Count}");
            if (FileCalls.Mkdir(made, 0700) != 0)
                throw new CkptException($"restart: cannot make a directory to stand for the removed directory {path}: {Errors.Describe(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}", ExitCodes.RestoreConflict);
        }
        int fd = FileCalls.Open(made, FileCalls.O_RDONLY | FileCalls.O_DIRECTORY | FileCalls.O_CLOEXEC, 0);
        if (fd < 0)
        {
            var e = SyscallException.Last("open", 0, made);
            FileCalls.Rmdir(made);
            throw e;
        }
        try
        {
            if (FileCalls.Fchown(fd, uid, gid) != 0) throw SyscallException.Last("fchown", 0, made);
            if (FileCalls.Fchmod(fd, mode & 0xfff) != 0) throw SyscallException.Last("fchmod", 0, made);
            if (FileCalls.Rmdir(made) != 0) throw SyscallException.Last("rmdir", 0, made);
        }
        catch
        {
            FileCalls.Close(fd);
            FileCalls.Rmdir(made);
            throw;
        }
        s.Own(fd);
        if (dev != 0) known[(dev, ino)] = fd;
        return fd;
    }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint objref = r.U32();
        if (rec.Kind == RecordKind.FileData)
        {
            var n = info.Child("files").Get(objref.ToString()) as InfoNode;
            n?.Set("saved_bytes", (long)(n.Get("saved_bytes") ?? 0L) + rec.Payload.Length - 12);
            return;
        }
        string path = r.Str(); int flags = r.I32(); long pos = r.I64(); long size = r.I64(); r.U32(); bool deleted = r.Bool();
        var node = new InfoNode().Set("kind", deleted ? "unlinked file" : "file").Set("path", path)
            .Set("flags", OpenFlags(flags)).Set("pos", pos).Set("size", size);
        if (!r.AtEnd) { r.U32(); r.U64OrDefault(0); r.U64OrDefault(0); }
        if (!r.AtEnd) { r.U32(); r.U32(); }
        if (!r.AtEnd && r.Str() is { Length: > 0 } target) node.Set("link_target", target);
        if (!r.AtEnd && r.Str() is { Length: > 0 } removed) node.Set("removed_name", removed);
        if (!r.AtEnd && r.I32() is int exited and not 0) node.Set("exited_pid", exited);
        if (!r.AtEnd && r.I32() is int onProc and > 0) node.Set("on_own_proc_mount", onProc - 1).Set("under_mount", r.Str());
        info.Child("files").Set(objref.ToString(), node);
    }

    public static string OpenFlags(int flags)
    {
        var sb = new StringBuilder((flags & 3) switch { 0 => "O_RDONLY", 1 => "O_WRONLY", _ => "O_RDWR" });
        if ((flags & FileCalls.O_APPEND) != 0) sb.Append("|O_APPEND");
        if ((flags & FileCalls.O_NONBLOCK) != 0) sb.Append("|O_NONBLOCK");
        if ((flags & FileCalls.O_DIRECTORY) != 0) sb.Append("|O_DIRECTORY");
        if ((flags & 0x101000) == 0x101000) sb.Append("|O_SYNC");
        return sb.ToString();
    }
}
