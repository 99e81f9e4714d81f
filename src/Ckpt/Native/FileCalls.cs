using System.Runtime.InteropServices;

namespace Ckpt.Native;

/// <summary>File-descriptor calls on our own side.</summary>
public static unsafe partial class FileCalls
{
    public const int O_RDONLY = 0, O_WRONLY = 1, O_RDWR = 2, O_ACCMODE = 3, O_CREAT = 0x40, O_EXCL = 0x80,
        O_NOCTTY = 0x100, O_TRUNC = 0x200, O_APPEND = 0x400, O_NONBLOCK = 0x800, O_DIRECTORY = 0x10000,
        O_NOFOLLOW = 0x20000, O_CLOEXEC = 0x80000, O_PATH = 0x200000, O_TMPFILE = 0x410000, O_LARGEFILE = 0x8000;

    /// <summary>
    /// The flags to open a saved file description again with: without the ones that only act at
    /// creation (O_CREAT, O_EXCL, O_TRUNC, O_NOCTTY; O_TMPFILE, whose O_DIRECTORY part would refuse the
    /// file) or that belong to the fd (O_CLOEXEC).
    /// </summary>
    public static int ReopenFlags(int flags)
    {
        if ((flags & 0x400000 /* __O_TMPFILE */) != 0) flags &= ~O_TMPFILE;
        return flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY | O_CLOEXEC);
    }
    public const int F_GETFD = 1, F_SETFD = 2, F_GETFL = 3, F_SETFL = 4, F_SETPIPE_SZ = 1031, F_GETPIPE_SZ = 1032;
    public const int SEEK_SET = 0, SEEK_CUR = 1, SEEK_END = 2, SEEK_DATA = 3, SEEK_HOLE = 4;
    public const int AT_FDCWD = -100;

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "openat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int OpenAt(int dirfd, string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    public static partial nint Read(int fd, byte* buf, nuint count);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    public static partial nint Write(int fd, byte* buf, nuint count);

    [LibraryImport("libc", EntryPoint = "pread64", SetLastError = true)]
    public static partial nint Pread(int fd, byte* buf, nuint count, long offset);

    [LibraryImport("libc", EntryPoint = "pwrite64", SetLastError = true)]
    public static partial nint Pwrite(int fd, byte* buf, nuint count, long offset);

    [LibraryImport("libc", EntryPoint = "pwritev64", SetLastError = true)]
    public static partial nint Pwritev(int fd, Iovec* iov, int iovcnt, long offset);

    [LibraryImport("libc", EntryPoint = "lseek64", SetLastError = true)]
    public static partial long Lseek(int fd, long offset, int whence);

    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    public static partial int Fcntl(int fd, int cmd, nint arg);

    [LibraryImport("libc", EntryPoint = "tee", SetLastError = true)]
    public static partial nint Tee(int fdIn, int fdOut, nuint len, uint flags);

    [LibraryImport("libc", EntryPoint = "pipe2", SetLastError = true)]
    public static partial int Pipe2(int* fds, int flags);

    [LibraryImport("libc", EntryPoint = "fstat", SetLastError = true)]
    public static partial int Fstat(int fd, StatBuf* st);

    [LibraryImport("libc", EntryPoint = "stat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Stat(string path, StatBuf* st);

    [LibraryImport("libc", EntryPoint = "lstat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Lstat(string path, StatBuf* st);

    [LibraryImport("libc", EntryPoint = "ftruncate64", SetLastError = true)]
    public static partial int Ftruncate(int fd, long length);

    [LibraryImport("libc", EntryPoint = "fchmod", SetLastError = true)]
    public static partial int Fchmod(int fd, uint mode);

    [LibraryImport("libc", EntryPoint = "fchown", SetLastError = true)]
    public static partial int Fchown(int fd, uint uid, uint gid);

    /// <summary>futimens: times = two struct timespec (access, then modification), each { i64 sec; i64 nsec }.</summary>
    [LibraryImport("libc", EntryPoint = "futimens", SetLastError = true)]
    private static partial int futimens(int fd, long* times);

    /// <summary>Sets the access and modification times of <paramref name="fd"/>.</summary>
    public static int SetTimes(int fd, long atimeSec, long atimeNsec, long mtimeSec, long mtimeNsec)
    {
        long* t = stackalloc long[4] { atimeSec, atimeNsec, mtimeSec, mtimeNsec };
        return futimens(fd, t);
    }

    [LibraryImport("libc", EntryPoint = "unlink", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Unlink(string path);

    [LibraryImport("libc", EntryPoint = "mkfifo", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int MkFifo(string path, uint mode);

    [LibraryImport("libc", EntryPoint = "mknod", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Mknod(string path, uint mode, ulong dev);

    /// <summary>The dev_t of major:minor (glibc's makedev).</summary>
    public static ulong MakeDev(int major, int minor) => MakeDev((ulong)(uint)major, (ulong)(uint)minor);

    [LibraryImport("libc", EntryPoint = "chdir", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Chdir(string path);

    /// <summary>chdir("/") of the calling thread (its fs unshared: a thread of its own).</summary>
    public static int ChdirRoot() => Chdir("/");

    [LibraryImport("libc", EntryPoint = "mkdir", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Mkdir(string path, uint mode);

    [LibraryImport("libc", EntryPoint = "rmdir", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Rmdir(string path);

    [LibraryImport("libc", EntryPoint = "fstatfs", SetLastError = true)]
    private static partial int Fstatfs(int fd, byte* buf);

    /// <summary>The f_type of the file system holding fd (e.g. 0x19800202 for mqueue), or 0 when fstatfs fails.</summary>
    public static long FstatfsType(int fd)
    {
        byte* buf = stackalloc byte[128];   // struct statfs is 120 bytes on x86-64; f_type comes first
        return Fstatfs(fd, buf) == 0 ? *(long*)buf : 0;
    }

    public static StatBuf FstatOrThrow(int fd, int pid = 0)
    {
        StatBuf st;
        if (Fstat(fd, &st) != 0) throw SyscallException.Last("fstat", pid);
        return st;
    }

    public static bool TryStat(string path, out StatBuf st)
    {
        StatBuf s;
        bool ok = Stat(path, &s) == 0;
        st = s;
        return ok;
    }

    /// <summary>As <see cref="TryStat"/>, of a symbolic link itself.</summary>
    public static bool TryLstat(string path, out StatBuf st)
    {
        StatBuf s;
        bool ok = Lstat(path, &s) == 0;
        st = s;
        return ok;
    }

    [LibraryImport("libc", EntryPoint = "readlink", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint Readlink(string path, byte* buf, nuint size);

    [LibraryImport("libc", EntryPoint = "readlinkat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint Readlinkat(int dirfd, string path, byte* buf, nuint size);

    /// <summary>The target of the symbolic link an O_PATH fd refers to (readlinkat with an empty path), or null (errno set).</summary>
    public static string? ReadLinkOf(int fd)
    {
        Span<byte> buf = stackalloc byte[4096];
        fixed (byte* b = buf)
        {
            nint n = Readlinkat(fd, "", b, (nuint)buf.Length);
            return n < 0 ? null : System.Text.Encoding.UTF8.GetString(buf[..(int)n]);
        }
    }

    [LibraryImport("libc", EntryPoint = "symlink", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Symlink(string target, string path);

    /// <summary>link(2): a new name (hard link) <paramref name="path"/> for the file <paramref name="existing"/>.</summary>
    [LibraryImport("libc", EntryPoint = "link", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Link(string existing, string path);

    /// <summary>linkat(2); with <see cref="AT_SYMLINK_FOLLOW"/>, <paramref name="existing"/> may be a /proc fd link (of an O_TMPFILE file: a name for it).</summary>
    [LibraryImport("libc", EntryPoint = "linkat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Linkat(int olddirfd, string existing, int newdirfd, string path, int flags);

    public const int AT_SYMLINK_FOLLOW = 0x400, AT_SYMLINK_NOFOLLOW = 0x100, AT_EMPTY_PATH = 0x1000;

    // the *at calls that rebuild a file tree under a directory fd (the files of a tmpfs of the tree's own)
    [LibraryImport("libc", EntryPoint = "mkdirat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int MkdirAt(int dirfd, string path, uint mode);

    [LibraryImport("libc", EntryPoint = "symlinkat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int SymlinkAt(string target, int dirfd, string path);

    [LibraryImport("libc", EntryPoint = "mknodat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int MknodAt(int dirfd, string path, uint mode, ulong dev);

    [LibraryImport("libc", EntryPoint = "fchownat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int FchownAt(int dirfd, string path, uint uid, uint gid, int flags);

    [LibraryImport("libc", EntryPoint = "fchmodat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int FchmodAt(int dirfd, string path, uint mode, int flags);

    [LibraryImport("libc", EntryPoint = "utimensat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int utimensat(int dirfd, string path, long* times, int flags);

    /// <summary>Sets the access and modification times of <paramref name="path"/> under <paramref name="dirfd"/> (not following a last symbolic link).</summary>
    public static int SetTimesAt(int dirfd, string path, long atimeSec, long atimeNsec, long mtimeSec, long mtimeNsec)
    {
        long* t = stackalloc long[4] { atimeSec, atimeNsec, mtimeSec, mtimeNsec };
        return utimensat(dirfd, path, t, AT_SYMLINK_NOFOLLOW);
    }


    /// <summary>The target of a symbolic link (a /proc magic link: fd, exe, cwd...), or null (errno set).</summary>
    public static string? ReadLink(string path)
    {
        Span<byte> buf = stackalloc byte[4096];
        fixed (byte* b = buf)
        {
            nint n = Readlink(path, b, (nuint)buf.Length);
            return n < 0 ? null : System.Text.Encoding.UTF8.GetString(b, (int)n);
        }
    }

    /// <summary>
    /// The names in a directory (without "." and ".."), read with getdents64: no stat of each entry
    /// (Directory.Enumerate* stats every symbolic link, such as each /proc/PID/fd entry, to learn
    /// whether it leads to a directory). Null when the directory cannot be opened (errno set).
    /// </summary>
    public static List<string>? ListDir(string path) => ListDir(path, null);

    [LibraryImport("libc", EntryPoint = "fstatat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Fstatat(int dirfd, string path, StatBuf* st, int flags);

    /// <summary>
    /// Every entry of a directory such as /proc/PID/fd with the stat of what it leads to (fstatat from
    /// the open directory: no walk of the whole path per entry). False when the directory cannot be read.
    /// </summary>
    public static bool StatEntries(string path, Action<string, StatBuf> each)
        => ListDir(path, (dirfd, name) =>
        {
            StatBuf st;
            if (Fstatat(dirfd, name, &st, 0) == 0) each(name, st);
        }) != null;

    /// <summary>As <see cref="StatEntries"/>, with the stat of each entry itself (a symbolic link: the link).</summary>
    public static bool StatEntriesNoFollow(string path, Action<string, StatBuf> each)
        => ListDir(path, (dirfd, name) =>
        {
            StatBuf st;
            if (Fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) each(name, st);
        }) != null;

    private static List<string>? ListDir(string path, Action<int, string>? each)
    {
        int fd = Open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (fd < 0) return null;
        try
        {
            var names = new List<string>();
            byte* buf = stackalloc byte[16384];
            while (true)
            {
                long n = Sys.Call(217 /* getdents64 */, fd, (long)buf, 16384);
                if (n < 0) { if (Marshal.GetLastPInvokeError() == 4 /* EINTR */) continue; return null; }
                if (n == 0) return names;
                for (long off = 0; off < n;)
                {
                    // struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, char name[]
                    ushort reclen = *(ushort*)(buf + off + 16);
                    var name = System.Runtime.InteropServices.MemoryMarshal.CreateReadOnlySpanFromNullTerminated(buf + off + 19);
                    if (!(name.Length == 1 && name[0] == (byte)'.') && !(name.Length == 2 && name[0] == (byte)'.' && name[1] == (byte)'.'))
                    {
                        string s = System.Text.Encoding.UTF8.GetString(name);
                        if (each != null) each(fd, s); else names.Add(s);
                    }
                    off += reclen;
                }
            }
        }
        finally { Close(fd); }
    }

    /// <summary>
    /// The whole text of a small file such as /proc/PID/fdinfo/FD (open, read, close: no stream, and no
    /// buffer but the string made), or null when it cannot be opened or read (errno set).
    /// </summary>
    public static string? ReadSmallText(string path)
    {
        int fd = Open(path, O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0) return null;
        byte[]? rented = null;
        try
        {
            Span<byte> buf = stackalloc byte[4096];
            int len = 0;
            while (true)
            {
                if (len == buf.Length)
                {
                    var grown = System.Buffers.ArrayPool<byte>.Shared.Rent(buf.Length * 2);
                    buf.CopyTo(grown);
                    if (rented != null) System.Buffers.ArrayPool<byte>.Shared.Return(rented);
                    buf = rented = grown;
                }
                nint n;
                fixed (byte* b = buf) n = Read(fd, b + len, (nuint)(buf.Length - len));
                if (n < 0)
                {
                    if (Marshal.GetLastPInvokeError() == 4 /* EINTR */) continue;
                    return null;
                }
                if (n == 0) break;
                len += (int)n;
            }
            return System.Text.Encoding.UTF8.GetString(buf[..len]);
        }
        finally
        {
            int errno = Marshal.GetLastPInvokeError();
            Close(fd);
            if (rented != null) System.Buffers.ArrayPool<byte>.Shared.Return(rented);
            Marshal.SetLastPInvokeError(errno);
        }
    }

    /// <summary>
    /// The whole text of a file of /proc, /sys or /sys/fs/cgroup, as File.ReadAllText gives it and failing
    /// as it does (FileNotFoundException when it or its process is gone, UnauthorizedAccessException when
    /// not allowed, IOException otherwise), without its stream and buffers: ckpt reads several per process.
    /// </summary>
    public static string ReadText(string path)
    {
        if (ReadSmallText(path) is { } text) return text;
        throw ReadFailure(path, Marshal.GetLastPInvokeError());
    }

    /// <summary>
    /// Hands each line of a file of /proc or /sys (without its newline) to <paramref name="line"/> as it is
    /// read, a buffer at a time, failing as <see cref="ReadText"/> does: for files too large to be read
    /// whole into a string (the smaps of a process of many regions).
    /// </summary>
    public static void ReadLines(string path, Action<ReadOnlySpan<byte>> line)
    {
        int fd = Open(path, O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0) throw ReadFailure(path, Marshal.GetLastPInvokeError());
        var buf = System.Buffers.ArrayPool<byte>.Shared.Rent(64 << 10);
        try
        {
            int len = 0;
            while (true)
            {
                if (len == buf.Length)
                {
                    // a line longer than the buffer
                    var grown = System.Buffers.ArrayPool<byte>.Shared.Rent(buf.Length * 2);
                    buf.AsSpan(0, len).CopyTo(grown);
                    System.Buffers.ArrayPool<byte>.Shared.Return(buf);
                    buf = grown;
                }
                nint n;
                fixed (byte* b = buf) n = Read(fd, b + len, (nuint)(buf.Length - len));
                if (n < 0)
                {
                    int errno = Marshal.GetLastPInvokeError();
                    if (errno == Errors.EINTR) continue;
                    throw ReadFailure(path, errno);
                }
                if (n == 0) break;
                len += (int)n;
                // the complete lines; the last, partial one moves to the front
                var data = buf.AsSpan(0, len);
                int at = 0;
                for (int nl; (nl = data[at..].IndexOf((byte)'\n')) >= 0; at += nl + 1) line(data.Slice(at, nl));
                data[at..].CopyTo(buf);
                len -= at;
            }
            if (len > 0) line(buf.AsSpan(0, len));
        }
        finally
        {
            Close(fd);
            System.Buffers.ArrayPool<byte>.Shared.Return(buf);
        }
    }

    private static Exception ReadFailure(string path, int errno)
    {
        string message = $"{path}: {Errors.Describe(errno)}";
        return errno switch
        {
            2 /* ENOENT */ or 3 /* ESRCH */ => new FileNotFoundException(message, path),
            1 /* EPERM */ or 13 /* EACCES */ => new UnauthorizedAccessException(message),
            _ => new IOException(message, errno),
        };
    }

    /// <summary>Reads until dst is full or end of input; returns bytes read.</summary>
    public static int ReadFull(int fd, Span<byte> dst)
    {
        int done = 0;
        fixed (byte* p = dst)
        {
            while (done < dst.Length)
            {
                nint n = Read(fd, p + done, (nuint)(dst.Length - done));
                if (n == 0) break;
                if (n < 0)
                {
                    if (Marshal.GetLastPInvokeError() == Errors.EINTR) continue;
                    throw SyscallException.Last("read");
                }
                done += (int)n;
            }
        }
        return done;
    }

    /// <summary>Writes all of <paramref name="src"/>; retried on EINTR and short writes (failures name <paramref name="what"/>, the pid and detail).</summary>
    public static void WriteAll(int fd, ReadOnlySpan<byte> src, string what = "write", int pid = 0, string? detail = null)
    {
        fixed (byte* p = src)
        {
            int done = 0;
            while (done < src.Length)
            {
                nint n = Write(fd, p + done, (nuint)(src.Length - done));
                if (n < 0 && Marshal.GetLastPInvokeError() == Errors.EINTR) continue;
                if (n <= 0) throw SyscallException.Last(what, pid, detail);
                done += (int)n;
            }
        }
    }

    /// <summary>Writes all of <paramref name="src"/> at offset <paramref name="off"/>; retried on EINTR and short writes.</summary>
    public static void PwriteAll(int fd, ReadOnlySpan<byte> src, long off, string what = "pwrite")
    {
        fixed (byte* p = src)
        {
            long done = 0;
            while (done < src.Length)
            {
                nint n = Pwrite(fd, p + done, (nuint)(src.Length - done), off + done);
                if (n < 0 && Marshal.GetLastPInvokeError() == Errors.EINTR) continue;
                if (n <= 0) throw SyscallException.Last(what);
                done += n;
            }
        }
    }

    /// <summary>Writes the buffers <paramref name="iov"/> one after the other at offset <paramref name="off"/>; retried on EINTR and short writes.</summary>
    public static void PwritevAll(int fd, Span<Iovec> iov, long off, string what = "pwritev")
    {
        fixed (Iovec* v = iov)
        {
            int i = 0;
            while (i < iov.Length)
            {
                nint n = Pwritev(fd, v + i, iov.Length - i, off);
                if (n < 0 && Marshal.GetLastPInvokeError() == Errors.EINTR) continue;
                if (n <= 0) throw SyscallException.Last(what);
                off += n;
                // past the buffers written whole; into the one written in part
                while (i < iov.Length && n >= (nint)v[i].Len) { n -= (nint)v[i].Len; i++; }
                if (n > 0) { v[i].Base += n; v[i].Len -= (nuint)n; }
            }
        }
    }

    public static ulong MakeDev(ulong major, ulong minor)
        => ((major & 0xfffff000) << 32) | ((major & 0xfff) << 8) | ((minor & 0xffffff00) << 12) | (minor & 0xff);

    public static int MajorOf(ulong dev) => (int)(((dev >> 32) & 0xfffff000) | ((dev >> 8) & 0xfff));
    public static int MinorOf(ulong dev) => (int)(((dev >> 12) & 0xffffff00) | (dev & 0xff));

    [LibraryImport("libc", EntryPoint = "llistxattr", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint Llistxattr(string path, byte* list, nuint size);

    [LibraryImport("libc", EntryPoint = "lgetxattr", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint Lgetxattr(string path, string name, byte* value, nuint size);

    [LibraryImport("libc", EntryPoint = "lsetxattr", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Lsetxattr(string path, string name, byte* value, nuint size, int flags);

    /// <summary>
    /// The extended attributes of <paramref name="path"/> (not following a final symbolic link), names and
    /// values; empty where the file system has none. Null when they cannot be read (errno set).
    /// </summary>
    public static List<(string Name, byte[] Value)>? Xattrs(string path)
    {
        var list = new List<(string, byte[])>();
        nint n = Llistxattr(path, null, 0);
        if (n < 0) return Marshal.GetLastPInvokeError() is Errors.EOPNOTSUPP ? list : null;
        if (n == 0) return list;
        var names = new byte[n + 256];
        fixed (byte* b = names) n = Llistxattr(path, b, (nuint)names.Length);
        if (n < 0) return null;
        foreach (var name in System.Text.Encoding.UTF8.GetString(names, 0, (int)n).Split('\0', StringSplitOptions.RemoveEmptyEntries))
        {
            nint len = Lgetxattr(path, name, null, 0);
            if (len < 0) return null;
            var value = new byte[len];
            fixed (byte* v = value) len = Lgetxattr(path, name, v, (nuint)value.Length);
            if (len < 0) return null;
            list.Add((name, value.AsSpan(0, (int)len).ToArray()));
        }
        return list;
    }

    /// <summary>lsetxattr(2): sets extended attribute <paramref name="name"/> of <paramref name="path"/> (a final symbolic link itself). 0 or -1 (errno set).</summary>
    public static int SetXattr(string path, string name, ReadOnlySpan<byte> value)
    {
        fixed (byte* v = value) return Lsetxattr(path, name, v, (nuint)value.Length, 0);
    }
}

/// <summary>struct stat on x86-64 (144 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct StatBuf
{
    public ulong Dev;
    public ulong Ino;
    public ulong Nlink;
    public uint Mode;
    public uint Uid;
    public uint Gid;
    public int Pad0;
    public ulong Rdev;
    public long Size;
    public long Blksize;
    public long Blocks;
    public long AtimeSec, AtimeNsec, MtimeSec, MtimeNsec, CtimeSec, CtimeNsec;
    public long Reserved0, Reserved1, Reserved2;

    public const uint S_IFMT = 0xF000, S_IFREG = 0x8000, S_IFCHR = 0x2000, S_IFIFO = 0x1000, S_IFSOCK = 0xC000,
        S_IFDIR = 0x4000, S_IFLNK = 0xA000, S_IFBLK = 0x6000;
    public readonly uint Type => Mode & S_IFMT;
}
