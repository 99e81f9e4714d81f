using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>
/// Memory objects: files without a name that memory maps and fds refer to — a memfd (as the .NET
/// runtime's double mapping uses), shared anonymous memory (<c>/dev/zero (deleted)</c>) and a deleted
/// regular file. Each object is saved once, keyed by the (device, inode) of its backing, the first time
/// a mapping (MemoryRegion) or an fd (this kind, as a file kind) meets it: a MemoryObject record (name,
/// size, mode, owner, seals) and MemoryObjectData records with its data ranges. Vma records refer to it
/// by objref (backings ObjectShared, ObjectPrivate); an fd of it is a MemoryFile record.
/// At restart the object is rebuilt in ckpt itself (memfd_create with the same name, a shared anonymous
/// mapping's file through /proc/self/map_files, or the deleted file recreated under its name in its
/// directory and unlinked at once), filled with pwrite, and kept as a "master" fd; the vessel opens it
/// through /proc/CKPT/fd/MASTER to map it or to hold it as an fd. Seals are applied before the first
/// mapping (F_SEAL_WRITE refuses writable mappings, as in the original) except F_SEAL_FUTURE_WRITE and
/// F_SEAL_SEAL, applied in Finish.
/// </summary>
public sealed class MemoryObject : IFileKind
{
    public static readonly MemoryObject Instance = new();
    public string Name => "memory object";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.MemoryObject, RecordKind.MemoryObjectData, RecordKind.MemoryFile];
    /// <summary>Before MmState (20): its executable link cannot be set while ckpt's writable copy of a deleted
    /// executable is open (the whole stream, so every mapping and fd, is in place by then).</summary>
    public int FinishOrder => 15;

    public enum ObjectType : byte { Memfd = 1, SharedAnon = 2, DeletedFile = 3, HugetlbShared = 4 }

    public const int DataChunk = 4 << 20;
    private const string Deleted = " (deleted)";
    private const string MemfdPrefix = "/memfd:";
    public const string SharedAnonPath = "/dev/zero (deleted)";
    private const uint LateSeals = SharedMemoryCalls.F_SEAL_FUTURE_WRITE | SharedMemoryCalls.F_SEAL_SEAL;

    /// <summary>Is this maps path (or fd link) one of a memory object?</summary>
    public static bool IsObjectPath(string path)
        => path.StartsWith('/') && path.EndsWith(Deleted, StringComparison.Ordinal) && !path.StartsWith("/SYSV", StringComparison.Ordinal);

    // ---------------------------------------------------------------- checkpoint

    /// <summary>A memfd or an unlinked regular file (the same inode may also be mapped: one object).</summary>
    public bool Handles(in OpenFile f)
        => f.Stat.Type == StatBuf.S_IFREG && f.Stat.Nlink == 0 && IsObjectPath(f.Link);

    public void Checkpoint(CheckpointContext ctx) { }

    private sealed class CheckpointState
    {
        /// <summary>Objects written so far: (dev, ino) of the backing → objref.</summary>
        public readonly Dictionary<(ulong Dev, ulong Ino), uint> Objects = new();
        /// <summary>The name each deleted file was saved by (its first holder's), by objref.</summary>
        public readonly Dictionary<uint, string> Names = new();
        public NativeBuffer? Buffer;
    }

    public void CheckpointFile(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        int pid = ctx.Pid, fd = f.Fd;
        uint obj = Save(ctx, f.Link, f.Stat, $"fd {f.Fd}", () => OpenOrThrow($"/proc/{pid}/fd/{fd}", pid));
        var p = new PayloadWriter().U32(objref).U32(obj).I32(f.Flags & ~FileCalls.O_CLOEXEC).I64(f.Pos);
        // appended: the name the description was opened by (a deleted file linked under several names
        // shows each description's own); empty when it is the object's
        p.Str(DeletedName(f.Link) is { } own && own != ObjectName(ctx, obj) ? own : "");
        ctx.Image.Write(RecordKind.MemoryFile, p);
    }

    /// <summary>Saves the object mapped by <paramref name="v"/> (once); returns its objref.</summary>
    public static uint SaveMapped(CheckpointContext ctx, VmaInfo v)
    {
        string mf = $"/proc/{ctx.Pid}/map_files/{v.Start:x}-{v.End:x}";
        if (!FileCalls.TryStat(mf, out var st))
            throw new NotCheckpointableException(ctx.Pid, $"mapping {v.Start:x}-{v.End:x} ({v.Path}): cannot stat {mf}");
        int pid = ctx.Pid;
        return Save(ctx, v.Path, st, $"mapping {v.Start:x}-{v.End:x}", () => OpenOrThrow(mf, pid));
    }

    /// <summary>The path of a deleted file's link or maps entry without " (deleted)"; null for the others.</summary>
    internal static string? DeletedName(string link)
        => IsObjectPath(link) && !link.StartsWith(MemfdPrefix, StringComparison.Ordinal) && link != SharedAnonPath && link != MemoryRegion.HugetlbAnonPath
            ? link[..^Deleted.Length] : null;

    /// <summary>The names other than <paramref name="name"/> that fds and regions of the tree show for the deleted file <paramref name="st"/>.</summary>
    private static List<string> Aliases(CheckpointSession s, in StatBuf st, string name)
    {
        var names = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var p in s.Processes)
        {
            foreach (var f in p.OpenFiles)
                if (f.Stat.Ino == st.Ino && f.Stat.Dev == st.Dev && DeletedName(f.Link) is { } n) names.Add(n);
            foreach (var v in p.Vmas)
                if (v.Inode == st.Ino && FileCalls.MakeDev(v.DevMajor, v.DevMinor) == st.Dev && DeletedName(v.Path) is { } n) names.Add(n);
        }
        names.Remove(name);
        return [.. names];
    }

    private static string? ObjectName(CheckpointContext ctx, uint obj)
        => ctx.Session.State<CheckpointState>().Names.GetValueOrDefault(obj);

    internal static int OpenOrThrow(string path, int pid)
    {
        int fd = FileCalls.Open(path, FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0);
        if (fd < 0) throw SyscallException.Last("open", pid, path);
        return fd;
    }

    private static uint Save(CheckpointContext ctx, string path, StatBuf st, string what, Func<int> open)
    {
        var state = ctx.Session.State<CheckpointState>();
        if (state.Objects.TryGetValue((st.Dev, st.Ino), out uint known)) return known;
        ObjectType type;
        string name;
        if (path.StartsWith(MemfdPrefix, StringComparison.Ordinal)) { type = ObjectType.Memfd; name = path[MemfdPrefix.Length..^Deleted.Length]; }
        else if (path == SharedAnonPath) { type = ObjectType.SharedAnon; name = ""; }
        else if (path == MemoryRegion.HugetlbAnonPath) { type = ObjectType.HugetlbShared; name = ""; }
        else { type = ObjectType.DeletedFile; name = path[..^Deleted.Length]; }
        if (st.Type != StatBuf.S_IFREG)
            throw new NotCheckpointableException(ctx.Pid, $"{what} is backed by {path}, which is not a regular file");
        if (st.Nlink != 0)
            throw new NotCheckpointableException(ctx.Pid, $"{what} is backed by {path}, which was unlinked but still has {st.Nlink} other link(s); not supported");
        if (st.Blksize > MemoryRegion.PageSize && type != ObjectType.HugetlbShared)
            throw new NotCheckpointableException(ctx.Pid, $"{what} is backed by {path}, on huge pages (hugetlbfs), which is not supported");

        // a process outside the tree sharing it would no longer share it with the restarted tree
        if (ctx.Session.State<OutsideHolders>().Find(ctx.Session, st.Dev, st.Ino) is { } outside)
            throw new NotCheckpointableException(ctx.Pid, $"{what} ({path}) is shared with pid {outside.Pid} outside the tree ({outside.Where}); the restarted tree would no longer share it: checkpoint a tree that holds every user");
        uint objref = ctx.Files.Intern($"mem:{st.Dev}:{st.Ino}").Ref;
        state.Objects[(st.Dev, st.Ino)] = objref;
        if (type == ObjectType.DeletedFile) state.Names[objref] = name;
        int fd = open();
        try
        {
            uint seals = 0;
            if (type == ObjectType.Memfd)
            {
                int s = FileCalls.Fcntl(fd, SharedMemoryCalls.F_GET_SEALS, 0);
                if (s > 0) seals = (uint)s;
            }
            var p = new PayloadWriter().U32(objref).U8((byte)type).Str(name).I64(st.Size).U32(st.Mode).U32(st.Uid).U32(st.Gid).U32(seals);
            // appended field: log2 of the huge page size of shared anonymous memory on huge pages, else 0
            p.U8(type == ObjectType.HugetlbShared ? (byte)MemoryCalls.HugePageShift(st) : (byte)0);
            // appended: access and modification times (set again once the data are in)
            p.I64(st.AtimeSec).I64(st.AtimeNsec).I64(st.MtimeSec).I64(st.MtimeNsec);
            // appended: the other names a deleted file's fds and regions in the tree show (it was linked
            // under several, each opened or mapped by its own, then all removed)
            var aliases = type == ObjectType.DeletedFile ? Aliases(ctx.Session, st, name) : [];
            p.U32((uint)aliases.Count);
            foreach (var a in aliases) p.Str(a);
            ctx.Image.Write(RecordKind.MemoryObject, p);
            // hugetlbfs shows every byte as data (no SEEK_HOLE): its untouched pages read as zeros, not saved
            SaveData(ctx, RecordKind.MemoryObjectData, objref, fd, st.Size, path, skipZeros: type == ObjectType.HugetlbShared);
        }
        finally { FileCalls.Close(fd); }
        ctx.Log.Debug($"memory object {objref}: {type} {path} ({st.Size} bytes, dev {st.Dev:x} ino {st.Ino}), first met at {what}");
        return objref;
    }

    /// <summary>
    /// The data ranges (SEEK_DATA / SEEK_HOLE) of <paramref name="fd"/> as <paramref name="kind"/> records
    /// (u32 objref, i64 offset, data) of at most 4 MiB.
    /// </summary>
    internal static void SaveData(CheckpointContext ctx, RecordKind kind, uint objref, int fd, long size, string path, bool skipZeros = false)
        => SaveData(ctx.Session, ctx.Pid, kind, objref, fd, size, path, skipZeros);

    /// <summary>As <see cref="SaveData(CheckpointContext, RecordKind, uint, int, long, string, bool)"/>, for a file of no one process (<paramref name="pid"/>: for errors).</summary>
    internal static unsafe void SaveData(CheckpointSession session, int pid, RecordKind kind, uint objref, int fd, long size, string path, bool skipZeros = false)
    {
        var buf = session.State<CheckpointState>().Buffer ??= new NativeBuffer(DataChunk);
        var head = new PayloadWriter();
        long off = 0;
        while (off < size)
        {
            session.ThrowIfCancelled();
            long data = FileCalls.Lseek(fd, off, FileCalls.SEEK_DATA);
            if (data < 0 || data >= size) break;   // ENXIO: no data after off
            long hole = FileCalls.Lseek(fd, data, FileCalls.SEEK_HOLE);
            if (hole < 0 || hole > size) hole = size;
            while (data < hole)
            {
                int want = (int)Math.Min(DataChunk, hole - data);
                int got = 0;
                while (got < want)
                {
                    nint n = FileCalls.Pread(fd, buf.Pointer + got, (nuint)(want - got), data + got);
                    if (n < 0) throw SyscallException.Last("pread", pid, path);
                    if (n == 0) break;
                    got += (int)n;
                }
                if (got == 0) { hole = data; break; }   // shrunk meanwhile: nothing more to read
                if (skipZeros && !buf.Span[..got].ContainsAnyExcept((byte)0)) { data += got; continue; }
                head.Clear();
                head.U32(objref).I64(data);
                session.Image.Write(kind, head.Span, buf.Span[..got]);
                data += got;
            }
            off = Math.Max(hole, off + 1);
        }
    }

    // ---------------------------------------------------------------- restart

    private sealed class Restored
    {
        public required ObjectType Type;
        public required string Name;
        public required int Master;     // our own fd of the rebuilt object
        public required uint Seals;
        public bool EarlySealsApplied;
        /// <summary>The description memfd_create made has been given to a read-write fd of the image.</summary>
        public bool Given;
        /// <summary>ckpt's mapping of a hugetlbfs object, which its data go through (hugetlbfs has no write), or 0.</summary>
        public nint Mapped;
        public long MappedLength;
        /// <summary>Access and modification times (sec, nsec each), set once the data are in; null in older images.</summary>
        public long[]? Times;
        /// <summary>A deleted file: ckpt's read-only fd of it opened by each of its names (<see cref="GiveNames"/>).</summary>
        public readonly Dictionary<string, int> Named = new(StringComparer.Ordinal);
    }

    private sealed class RestoreState
    {
        public readonly Dictionary<uint, Restored> Objects = new();
        /// <summary>ckpt's copy of each rebuilt deleted file, by its saved path, kept until the restart ends
        /// (the objects are closed after the first process's Finish, the executable link of every process is set in its own).</summary>
        public readonly Dictionary<string, int> DeletedFiles = new();
    }

    /// <summary>
    /// The path under which a later <see cref="RestoreContext.OpenInVessel"/> opens the rebuilt deleted file that
    /// was at <paramref name="path"/> (without " (deleted)"), or null if the image holds none: a process
    /// whose executable was deleted maps it, so the file comes back as a memory object.
    /// </summary>
    public static string? DeletedFilePath(RestoreContext ctx, string path)
        => ctx.Session.State<RestoreState>().DeletedFiles.TryGetValue(path, out int fd) ? $"/proc/{Environment.ProcessId}/fd/{fd}" : null;

    public void Restore(RestoreContext ctx, Record rec)
    {
        var st = ctx.Session.State<RestoreState>();
        var r = rec.Reader();
        uint objref = r.U32();
        switch (rec.Kind)
        {
            case RecordKind.MemoryObjectData:
            {
                long off = r.I64();
                if (!st.Objects.TryGetValue(objref, out var o))
                    throw new ImageFormatException($"MemoryObjectData record at offset {rec.Offset} for objref {objref}, which is no memory object");
                if (off < 0) throw new ImageFormatException($"MemoryObjectData record at offset {rec.Offset} has a negative offset");
                if (o.Mapped != 0)
                {
                    var data = rec.Payload.Span[12..];
                    if (off + data.Length > o.MappedLength) throw new ImageFormatException($"MemoryObjectData record at offset {rec.Offset} lies outside its object");
                    unsafe { data.CopyTo(new Span<byte>((void*)(o.Mapped + (nint)off), data.Length)); }
                }
                else FileCalls.PwriteAll(o.Master, rec.Payload.Span[12..], off, $"pwrite (memory object {o.Name})");
                return;
            }
            case RecordKind.MemoryFile:
            {
                uint obj = r.U32(); int flags = r.I32(); long pos = r.I64();
                string? own = r.AtEnd ? null : r.Str();
                r.End();
                int fd = GiveMemfd(ctx, obj, flags)
                    ?? OpenInVessel(ctx, obj, FileCalls.ReopenFlags(flags) | FileCalls.O_CLOEXEC, $"fd description {objref}", own is null or "" ? null : own);
                ctx.SetOffsetAndFlags(fd, pos, -1, "a memory object's file");
                ctx.Files.SetRestored(objref, fd);
                return;
            }
        }
        var type = (ObjectType)r.U8();
        string name = r.Str(); long size = r.I64(); uint mode = r.U32(), uid = r.U32(), gid = r.U32(), seals = r.U32();
        int hugeShift = r.AtEnd ? 0 : r.U8();
        long[]? times = r.AtEnd ? null : [r.I64(), r.I64(), r.I64(), r.I64()];
        var aliases = new string[r.AtEnd ? 0 : r.U32()];
        for (int i = 0; i < aliases.Length; i++) aliases[i] = r.Str();
        r.End();
        if (type == ObjectType.HugetlbShared && hugeShift is < 13 or > 40)
            throw new ImageFormatException($"MemoryObject record at offset {rec.Offset}: huge pages of 2^{hugeShift} bytes");
        if (size < 0) throw new ImageFormatException($"MemoryObject record at offset {rec.Offset} has a negative size");
        if (st.Objects.ContainsKey(objref)) throw new ImageFormatException($"MemoryObject record at offset {rec.Offset} defines objref {objref} twice");
        nint mapped = 0;
        int master = type switch
        {
            ObjectType.Memfd => CreateMemfd(name, seals),
            ObjectType.SharedAnon => CreateSharedAnon(size, 0, out _),
            ObjectType.HugetlbShared => CreateSharedAnon(size, hugeShift, out mapped),
            ObjectType.DeletedFile => CreateDeletedFile(name),
            _ => throw new ImageFormatException($"MemoryObject record at offset {rec.Offset} has unknown type {(int)type}"),
        };
        var made = new Restored { Type = type, Name = name, Master = master, Seals = seals, Mapped = mapped, MappedLength = mapped != 0 ? size : 0, Times = times };
        st.Objects[objref] = made;
        if (type == ObjectType.DeletedFile)
        {
            GiveNames(ctx.Session, made, [name, .. aliases]);
            // an executable is set through the file opened by its name
            if (!st.DeletedFiles.ContainsKey(name))
                st.DeletedFiles[name] = made.Named.TryGetValue(name, out int k) ? k : ctx.Session.Own(OpenOrThrow($"/proc/self/fd/{master}", 0));
        }
        if (type is not (ObjectType.SharedAnon or ObjectType.HugetlbShared))
        {
            if (FileCalls.Ftruncate(master, size) != 0) throw SyscallException.Last("ftruncate", 0, $"memory object {name}");
            // fchown first: it clears set-id bits that the mode may hold
            if (FileCalls.Fchown(master, uid, gid) != 0) throw SyscallException.Last("fchown", 0, $"memory object {name}");
            if (FileCalls.Fchmod(master, mode & 0xfff) != 0) throw SyscallException.Last("fchmod", 0, $"memory object {name}");
        }
        ctx.Log.Debug($"memory object {objref}: {type} {name} ({size} bytes) rebuilt as our fd {master}");
    }

    private static int CreateMemfd(string name, uint seals)
    {
        // a memfd created without MFD_ALLOW_SEALING has exactly F_SEAL_SEAL
        uint flags = SharedMemoryCalls.MFD_CLOEXEC | (seals == SharedMemoryCalls.F_SEAL_SEAL ? 0 : SharedMemoryCalls.MFD_ALLOW_SEALING);
        int fd = SharedMemoryCalls.MemfdCreate(name, flags);
        if (fd < 0) throw SyscallException.Last("memfd_create", 0, name);
        return fd;
    }

    private static unsafe int CreateSharedAnon(long size, int hugeShift, out nint kept)
    {
        // the file behind a MAP_SHARED|MAP_ANONYMOUS mapping ("/dev/zero (deleted)", or "/anon_hugepage
        // (deleted)" on huge pages) exists only through a mapping: make one here, keep its file, drop the
        // mapping; on huge pages keep it, the way its data go in (hugetlbfs files cannot be written)
        long len = Math.Max(size, MemoryRegion.PageSize);
        int flags = MemoryCalls.MAP_SHARED | MemoryCalls.MAP_ANONYMOUS | MemoryCalls.HugePageFlags(hugeShift);
        nint a = MemoryCalls.Mmap(0, (nuint)len, MemoryCalls.PROT_READ | MemoryCalls.PROT_WRITE, flags, -1, 0);
        if (a == -1)
        {
            int e = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            if (hugeShift != 0 && e == Errors.ENOMEM)
                throw new CkptException($"restart: {len} bytes of shared memory on huge pages: {MemoryCalls.NoHugePages(hugeShift)}", ExitCodes.RestoreConflict);
            throw new SyscallException("mmap (shared anonymous)", e, 0, $"{len} bytes");
        }
        kept = 0;
        try
        {
            string mf = $"/proc/self/map_files/{(ulong)a:x}-{(ulong)a + (ulong)len:x}";
            int fd = FileCalls.Open(mf, FileCalls.O_RDWR | FileCalls.O_CLOEXEC, 0);
            if (fd < 0) throw SyscallException.Last("open", 0, mf);
            if (hugeShift != 0) kept = a;
            return fd;
        }
        finally { if (kept == 0) MemoryCalls.Munmap(a, (nuint)len); }
    }

    /// <summary>
    /// The file of a deleted file: an O_TMPFILE file in its directory, which is then given its names
    /// (<see cref="GiveNames"/>: maps and fd links show "PATH (deleted)" by the name each had, a file deleted
    /// under several names shows each); where the file system has no O_TMPFILE, a new file under the
    /// saved name, unlinked at once (every open shows that name); in /tmp when its directory is gone.
    /// </summary>
    private static int CreateDeletedFile(string path)
    {
        string dir = Path.GetDirectoryName(path) is { Length: > 0 } d && Directory.Exists(d) ? d : "/tmp";
        int fd = FileCalls.Open(dir, FileCalls.O_TMPFILE | FileCalls.O_RDWR | FileCalls.O_CLOEXEC, 0600);
        if (fd >= 0) return fd;
        fd = FileCalls.Open(path, FileCalls.O_RDWR | FileCalls.O_CREAT | FileCalls.O_EXCL | FileCalls.O_CLOEXEC, 0600);
        if (fd >= 0)
        {
            if (FileCalls.Unlink(path) != 0) { FileCalls.Close(fd); throw SyscallException.Last("unlink", 0, path); }
            return fd;
        }
        if (dir != "/tmp") fd = FileCalls.Open("/tmp", FileCalls.O_TMPFILE | FileCalls.O_RDWR | FileCalls.O_CLOEXEC, 0600);
        if (fd < 0) throw new CkptException($"restart: cannot recreate the deleted file {path}: {Errors.Describe(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}", ExitCodes.RestoreConflict);
        return fd;
    }

    /// <summary>
    /// Gives the deleted file <paramref name="o"/> its names: it is linked under each (an O_TMPFILE file can
    /// be linked once: by the first name that is free, the others from that one), opened there by ckpt
    /// (read-only: an executable cannot be set while a description writes to it) and unlinked at once, so
    /// that what is opened through one of those fds shows "NAME (deleted)". A name another file has now
    /// is left out (opened through the master instead), as are all of them where the file system has no
    /// O_TMPFILE (the master was made under the first name).
    /// </summary>
    private static void GiveNames(RestoreSession s, Restored o, string[] names)
    {
        string? anchor = null;
        var linked = new List<string>();
        try
        {
            foreach (var n in names)
            {
                bool ok = anchor == null
                    ? FileCalls.Linkat(FileCalls.AT_FDCWD, $"/proc/self/fd/{o.Master}", FileCalls.AT_FDCWD, n, FileCalls.AT_SYMLINK_FOLLOW) == 0
                    : FileCalls.Link(anchor, n) == 0;
                if (!ok) continue;
                anchor ??= n;
                linked.Add(n);
                int fd = FileCalls.Open(n, FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0);
                if (fd < 0) throw SyscallException.Last("open", 0, $"deleted file {n}");
                o.Named[n] = s.Own(fd);
            }
        }
        finally
        {
            foreach (var n in linked) FileCalls.Unlink(n);
        }
    }

    /// <summary>
    /// Opens memory object <paramref name="obj"/> in the vessel (to map it, or as an fd); returns the vessel's
    /// fd. A deleted file is opened by <paramref name="name"/> (the path its region or fd showed, without
    /// " (deleted)"; null: the object's) where it could be given that name.
    /// </summary>
    public static int OpenInVessel(RestoreContext ctx, uint obj, int flags, string what, string? name = null)
    {
        var o = Find(ctx, obj, what);
        if (o.Type == ObjectType.DeletedFile && o.Named.TryGetValue(name ?? o.Name, out int named))
            return ctx.OpenInVessel($"/proc/{Environment.ProcessId}/fd/{named}", flags);
        ApplyEarlySeals(o);
        // a memfd mapped for writing: through the description memfd_create made (one opened again through
        // /proc would count as a writer as long as the mapping holds it: exec of the memfd, ETXTBSY)
        // (not with O_APPEND, which a read-write fd of the image may have set on it: no writable shared mapping then)
        if (o.Type == ObjectType.Memfd && (flags & FileCalls.O_ACCMODE) == FileCalls.O_RDWR
            && (FileCalls.Fcntl(o.Master, FileCalls.F_GETFL, 0) & FileCalls.O_APPEND) == 0)
            return ctx.Install(o.Master);
        return ctx.OpenInVessel($"/proc/{Environment.ProcessId}/fd/{o.Master}", flags);
    }

    private static Restored Find(RestoreContext ctx, uint obj, string what)
        => ctx.Session.State<RestoreState>().Objects.TryGetValue(obj, out var o) ? o
            : throw new ImageFormatException($"{what} refers to memory object {obj}, which the image never defined");

    /// <summary>
    /// The description memfd_create made, given to the first read-write fd description of a memfd (its
    /// flags set): opened again through /proc it would count as a writer of the file, and exec of the memfd
    /// (execveat, fexecve) would fail with ETXTBSY as it did not before. Null for the others.
    /// </summary>
    private static int? GiveMemfd(RestoreContext ctx, uint obj, int flags)
    {
        var o = Find(ctx, obj, "a memfd's fd description");
        if (o.Type != ObjectType.Memfd || o.Given || (flags & FileCalls.O_ACCMODE) != FileCalls.O_RDWR) return null;
        o.Given = true;
        ApplyEarlySeals(o);
        int fd = ctx.Install(o.Master);
        const int settable = FileCalls.O_APPEND | FileCalls.O_NONBLOCK | 0x40000 /* O_NOATIME */ | 0x4000 /* O_DIRECT */;
        if ((flags & settable) != 0) ctx.SetOffsetAndFlags(fd, 0, flags & settable, "a memory object's file");
        return fd;
    }

    private static void ApplyEarlySeals(Restored o)
    {
        if (!o.EarlySealsApplied)
        {
            // the contents are complete (its data records came right after it): seal as the original was
            // sealed when it was mapped, but F_SEAL_FUTURE_WRITE (new writable mappings refused) and
            // F_SEAL_SEAL come after every mapping
            uint early = o.Seals & ~LateSeals;
            if (early != 0 && FileCalls.Fcntl(o.Master, SharedMemoryCalls.F_ADD_SEALS, (nint)early) != 0)
                throw SyscallException.Last("fcntl(F_ADD_SEALS)", 0, $"memory object {o.Name}");
            o.EarlySealsApplied = true;
        }
    }

    public void Finish(RestoreContext ctx)
    {
        foreach (var o in ctx.Session.State<RestoreState>().Objects.Values)
        {
            uint pending = o.EarlySealsApplied ? o.Seals & LateSeals : o.Seals;
            if (o.Type == ObjectType.Memfd && o.Seals != SharedMemoryCalls.F_SEAL_SEAL && pending != 0)
            {
                if (FileCalls.Fcntl(o.Master, SharedMemoryCalls.F_ADD_SEALS, (nint)pending) != 0)
                    throw SyscallException.Last("fcntl(F_ADD_SEALS)", 0, $"memory object {o.Name}");
            }
            // the data are in: the times they had (a file's, a memfd's; shared anonymous memory has none to see)
            if (o.Times is { } t && o.Type is ObjectType.Memfd or ObjectType.DeletedFile && FileCalls.SetTimes(o.Master, t[0], t[1], t[2], t[3]) != 0)
                throw SyscallException.Last("futimens", 0, $"memory object {o.Name}");
            FileCalls.Close(o.Master);
            if (o.Mapped != 0) MemoryCalls.Munmap(o.Mapped, (nuint)o.MappedLength);
        }
        ctx.Session.State<RestoreState>().Objects.Clear();
    }

    // ---------------------------------------------------------------- info

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint objref = r.U32();
        var objects = info.Child("memory_objects");
        switch (rec.Kind)
        {
            case RecordKind.MemoryObjectData:
            {
                var n = objects.Get(objref.ToString()) as InfoNode;
                n?.Set("saved_bytes", (long)(n.Get("saved_bytes") ?? 0L) + rec.Payload.Length - 12);
                return;
            }
            case RecordKind.MemoryFile:
            {
                uint obj = r.U32(); int flags = r.I32(); long pos = r.I64();
                var o = objects.Get(obj.ToString()) as InfoNode;
                info.Child("files").Set(objref.ToString(), new InfoNode().Set("kind", o?.Get("type") ?? "memory object")
                    .Set("path", o?.Get("name")).Set("object", obj).Set("flags", RegularFile.OpenFlags(flags)).Set("pos", pos));
                return;
            }
        }
        var type = (ObjectType)r.U8();
        string name = r.Str(); long size = r.I64(); uint mode = r.U32(), uid = r.U32(), gid = r.U32(), seals = r.U32();
        objects.Set(objref.ToString(), new InfoNode().Set("type", type switch
            {
                ObjectType.Memfd => "memfd", ObjectType.SharedAnon => "shared anonymous", ObjectType.DeletedFile => "deleted file", _ => type.ToString(),
            })
            .Set("name", name).Set("size", size).Set("mode", Convert.ToString(mode & 0xfff, 8)).Set("uid", uid).Set("gid", gid)
            .Set("seals", seals).Set("saved_bytes", 0L));
    }
}
