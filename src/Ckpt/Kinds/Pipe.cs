using System.Runtime.InteropServices;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>
/// Pipes: each end is its own open file description (Pipe record: pipe id, which end, flags, capacity);
/// the bytes queued in the pipe are read without being consumed (tee from a pidfd_getfd copy of the
/// read end) and written once per pipe (PipeData record) right after its first end. The ends may be
/// held by different processes of the tree; an end held outside the tree is refused (or saved as
/// external with --external), an end held by no one stays closed. FIFOs (named pipes) are the same,
/// with their path: restart opens the FIFO, which must exist, keeps it open read-write in ckpt while the
/// queued bytes are written back and the processes open their ends by path. A FIFO whose name was
/// removed while open is made again under its old name (or a name beside it when that is taken, or in
/// the temporary directory when its directory is gone) and its name removed at once: the ends are opened
/// through ckpt's own fd of it (/proc/self/fd), as only the holders of a removed FIFO can reach it.
/// </summary>
public sealed unsafe class Pipe : IFileKind
{
    public static readonly Pipe Instance = new();
    public string Name => "pipe";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.Pipe, RecordKind.PipeData];
    public int FinishOrder => 46;

    public bool Handles(in OpenFile f) => f.Link.StartsWith("pipe:[") || IsFifo(f);

    private static bool IsFifo(in OpenFile f) => f.Stat.Type == StatBuf.S_IFIFO && f.Link.StartsWith('/');

    private static bool SamePipe(in OpenFile a, in OpenFile b)
        => a.Stat.Ino == b.Stat.Ino && a.Stat.Dev == b.Stat.Dev && a.Stat.Type == b.Stat.Type && IsFifo(a) == IsFifo(b);

    /// <summary>The id that ties the ends and the data of one pipe: its inode (a FIFO's, marked, with its device).</summary>
    private static ulong PipeId(in OpenFile f) => IsFifo(f) ? (1UL << 63) | (f.Stat.Dev << 40) ^ f.Stat.Ino : f.Stat.Ino;

    public void Checkpoint(CheckpointContext ctx) { }

    private sealed class CheckpointState { public readonly HashSet<ulong> Seen = new(); }

    public void CheckpointFile(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        ulong id = PipeId(f);
        var link = f.Link;
        bool fifo = IsFifo(f);
        bool removed = fifo && link.EndsWith(Deleted, StringComparison.Ordinal);
        (CheckpointContext P, OpenFile F)? reader = null, writer = null;
        foreach (var (p, o) in ctx.Session.HoldersOf(f.Stat.Dev, f.Stat.Ino))
            if (SamePipe(o, f))
            {
                if (o.AccessMode != FileCalls.O_WRONLY) reader ??= (p, o);
                if (o.AccessMode != FileCalls.O_RDONLY) writer ??= (p, o);
            }
        bool holdsBackHangup = false;
        if ((reader == null || writer == null) && !NoOtherEnd(ctx, f, reader == null, out bool hangup))
        {
            // a FIFO's read end opened (O_NONBLOCK) when it had no writer, none having come since: the
            // kernel holds back POLLHUP for it (a program polling its control FIFO relies on that: it
            // would spin)
            holdsBackHangup = fifo && writer == null && f.AccessMode == FileCalls.O_RDONLY && !hangup;
            // the other end: held outside the tree (refused, or external), or by no one at all (closed)
            // an outside holder of the missing end: its access mode, or read-write (a FIFO)
            int mode = reader == null ? FileCalls.O_RDONLY : FileCalls.O_WRONLY;
            var outside = ctx.Session.State<OutsideHolders>().FindFd(ctx.Session, link, (pid, fd) =>
            {
                var flags = ProcFdInfo.Read(pid, fd).Field("flags");
                int acc = flags == null ? -1 : Convert.ToInt32(flags, 8) & FileCalls.O_ACCMODE;
                return acc == mode || acc == FileCalls.O_RDWR;
            });
            if (outside != null && ctx.External)
            {
                ExternalFile.Instance.CheckpointFile(ctx, f, objref);
                return;
            }
            if (outside != null)
                throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd} is one end of {link}, whose {(reader == null ? "read" : "write")} end is held outside the tree by pid {outside.Value.Pid} (fd {outside.Value.Fd}); checkpoint a tree that holds both ends, or save it as external with --external and hand in a replacement at restart");
        }
        bool first = ctx.Session.State<CheckpointState>().Seen.Add(id);
        int capacity = 0;
        byte[] data = [];
        if (first)
        {
            int mine = ctx.GrabFd(f.Fd);
            try
            {
                capacity = FileCalls.Fcntl(mine, FileCalls.F_GETPIPE_SZ, 0);
                int readFd = -1;
                if (reader is { } rd) readFd = rd.P == ctx && rd.F.Fd == f.Fd ? mine : rd.P.GrabFd(rd.F.Fd);
                // a FIFO no process of the tree reads: a read end of our own, opened by name
                else if (fifo) readFd = FileCalls.Open(removed ? $"/proc/{ctx.Pid}/fd/{f.Fd}" : link, FileCalls.O_RDONLY | FileCalls.O_NONBLOCK | FileCalls.O_CLOEXEC, 0);
                if (readFd >= 0)
                {
                    try { data = Peek(readFd, capacity, ctx.Pid); }
                    finally { if (readFd != mine) FileCalls.Close(readFd); }
                }
            }
            finally { FileCalls.Close(mine); }
        }
        var w = new PayloadWriter().U32(objref).U64(id).U8((byte)(f.AccessMode == FileCalls.O_RDONLY ? 0 : 1))
            .I32(f.Flags & ~FileCalls.O_CLOEXEC).I32(capacity).Bool(first).Str(fifo ? link : "").Bool(holdsBackHangup);
        ctx.Image.Write(RecordKind.Pipe, w);
        if (first) ctx.Image.Write(RecordKind.PipeData, new PayloadWriter().U64(id).Span, data);
    }

    /// <summary>
    /// Whether the end missing from the tree is held by no one at all (so no process outside need be
    /// looked for): a write end whose pipe has no reader polls POLLERR, a read end whose pipe has had no
    /// writer since a writer was there polls POLLHUP (a FIFO's read end opened when no writer had come
    /// polls neither: looked for).
    /// </summary>
    private static bool NoOtherEnd(CheckpointContext ctx, in OpenFile f, bool readerMissing, out bool hangup)
    {
        int mine = ctx.GrabFd(f.Fd);
        try
        {
            var pfd = new PollFd { Fd = mine, Events = (short)(TerminalCalls.POLLIN | TerminalCalls.POLLOUT) };
            hangup = TerminalCalls.Poll(&pfd, 1, 0) >= 0 && (pfd.Revents & TerminalCalls.POLLHUP) != 0;
            return (pfd.Revents & (readerMissing ? TerminalCalls.POLLERR : TerminalCalls.POLLHUP)) != 0;
        }
        finally { FileCalls.Close(mine); }
    }

    /// <summary>Copies what is queued in a pipe without consuming it: tee into a pipe of our own, then read that.</summary>
    private static byte[] Peek(int readFd, int capacity, int pid)
    {
        int* p = stackalloc int[2];
        if (FileCalls.Pipe2(p, FileCalls.O_CLOEXEC | FileCalls.O_NONBLOCK) != 0) throw SyscallException.Last("pipe2");
        try
        {
            FileCalls.Fcntl(p[1], FileCalls.F_SETPIPE_SZ, Math.Max(capacity, 4096));
            const uint SPLICE_F_NONBLOCK = 2;
            nint n = FileCalls.Tee(readFd, p[1], int.MaxValue, SPLICE_F_NONBLOCK);
            if (n < 0)
            {
                int e = Marshal.GetLastPInvokeError();
                if (e == Errors.EAGAIN) return [];
                throw new SyscallException("tee", e, pid);
            }
            var buf = new byte[n];
            int got = FileCalls.ReadFull(p[0], buf);
            return got == n ? buf : buf[..got];
        }
        finally { FileCalls.Close(p[0]); FileCalls.Close(p[1]); }
    }

    private sealed class RestoreState
    {
        /// <summary>Pipes created so far, in ckpt itself: id → (read end, write end, ends already given to a description).</summary>
        public readonly Dictionary<ulong, (int Read, int Write)> Pipes = new();
        public readonly HashSet<int> Used = new();
        /// <summary>FIFO read ends that hold back POLLHUP, opened once their FIFO's queued bytes are in: FIFO id → the end.</summary>
        public readonly Dictionary<ulong, (RestoreContext Ctx, uint Objref, string Path, int Flags)> HangupHeldBack = new();
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var st = ctx.Session.State<RestoreState>();
        var r = rec.Reader();
        if (rec.Kind == RecordKind.PipeData)
        {
            ulong pid = r.U64();
            var data = rec.Payload.Span[8..];
            if (!st.Pipes.TryGetValue(pid, out var ends)) throw new ImageFormatException($"PipeData record at offset {rec.Offset} for an unknown pipe");
            if (data.Length > 0) FileCalls.WriteAll(ends.Write, data);
            if (st.HangupHeldBack.Remove(pid, out var held)) OpenHoldingBackHangup(held.Ctx, st, held.Objref, pid, held.Path, held.Flags);
            return;
        }
        uint objref = r.U32(); ulong id = r.U64(); int end = r.U8(); int flags = r.I32(); int capacity = r.I32(); bool first = r.Bool();
        string fifo = r.AtEnd ? "" : r.Str();
        bool holdsBackHangup = !r.AtEnd && r.Bool();
        r.End();
        if (fifo.Length > 0)
        {
            RestoreFifoEnd(ctx, st, objref, id, fifo, flags, capacity, first, holdsBackHangup);
            return;
        }
        if (!st.Pipes.TryGetValue(id, out var e))
        {
            // the pipe is made by ckpt, which keeps both ends until the end of the restart: every
            // process of the tree gets its ends from there, and an end no process held is closed then
            int* p = stackalloc int[2];
            if (FileCalls.Pipe2(p, FileCalls.O_CLOEXEC) != 0) throw SyscallException.Last("pipe2");
            e = (ctx.Session.Own(p[0]), ctx.Session.Own(p[1]));
            if (capacity > 0 && FileCalls.Fcntl(e.Read, FileCalls.F_SETPIPE_SZ, capacity) < 0)
                throw SyscallException.Last($"fcntl(F_SETPIPE_SZ {capacity})");
            st.Pipes[id] = e;
        }
        int mine = end == 0 ? e.Read : e.Write;
        int fd;
        if (st.Used.Add(mine)) fd = ctx.Install(mine);
        // a second description of the same end (the pipe reopened through /proc): open it anew
        else fd = ctx.OpenInVessel($"/proc/{Environment.ProcessId}/fd/{mine}", (flags & FileCalls.O_ACCMODE) | FileCalls.O_CLOEXEC);
        // (a fresh description, ckpt's pipe2's or reopened, has neither flag)
        if ((flags & StatusFlags) != 0) ctx.SetOffsetAndFlags(fd, 0, flags & StatusFlags, "a pipe end");
        ctx.Files.SetRestored(objref, fd);
    }

    /// <summary>
    /// An end of a FIFO: ckpt opens it read-write first (so that no open blocks and the queued bytes have
    /// somewhere to live), then the process opens its end by name with its access mode and flags. A read
    /// end that held back POLLHUP (opened with no writer, none having come since) is opened once ckpt's
    /// writer is gone, after the queued bytes went in (<see cref="OpenHoldingBackHangup"/>); any other read
    /// end opened then is opened while a writer of ckpt's is there, so that it reports POLLHUP as before
    /// (which makes the kernel's writer count move on: one of each kind on a FIFO, the one that held back
    /// POLLHUP restored first, loses that).
    /// </summary>
    private static void RestoreFifoEnd(RestoreContext ctx, RestoreState st, uint objref, ulong id, string path, int flags, int capacity, bool first, bool holdsBackHangup)
    {
        bool removed = path.EndsWith(Deleted, StringComparison.Ordinal);
        if (!st.Pipes.TryGetValue(id, out var ends))
        {
            int m = removed ? MakeRemovedFifo(path[..^Deleted.Length]) : -1;
            if (!removed)
            {
                if (!FileCalls.TryStat(path, out var sb) || sb.Type != StatBuf.S_IFIFO)
                    throw new CkptException($"restart: the FIFO {path} (open in the image) no longer exists", ExitCodes.RestoreConflict);
                m = FileCalls.Open(path, FileCalls.O_RDWR | FileCalls.O_NONBLOCK | FileCalls.O_CLOEXEC, 0);
                if (m < 0) throw new CkptException($"restart: cannot open the FIFO {path}: {Errors.Describe(Marshal.GetLastPInvokeError())}", ExitCodes.RestoreConflict);
            }
            ctx.Session.Own(m);
            if (capacity > 0 && FileCalls.Fcntl(m, FileCalls.F_SETPIPE_SZ, capacity) < 0)
                throw SyscallException.Last($"fcntl(F_SETPIPE_SZ {capacity})");
            st.Pipes[id] = ends = (m, m);
        }
        if (holdsBackHangup)
        {
            // its queued bytes come next (PipeData) and need ckpt's writer: opened after them
            if (first) st.HangupHeldBack[id] = (ctx, objref, path, flags);
            else OpenHoldingBackHangup(ctx, st, objref, id, path, flags);
            return;
        }
        int writer = -1;
        if (ends.Write < 0 && (flags & FileCalls.O_ACCMODE) == FileCalls.O_RDONLY)
        {
            writer = FileCalls.Open($"/proc/self/fd/{ends.Read}", FileCalls.O_WRONLY | FileCalls.O_NONBLOCK | FileCalls.O_CLOEXEC, 0);
            if (writer < 0) throw SyscallException.Last($"open {path} (a writer while a read end is opened)");
        }
        try { Open(ctx, objref, EndPath(path, ends.Read), flags); }
        finally { if (writer >= 0) FileCalls.Close(writer); }
    }

    /// <summary>
    /// A FIFO's read end that held back POLLHUP: ckpt's writer is closed first (a read-only fd of ckpt's
    /// keeps the FIFO and its bytes), so that the end is opened with no writer, as it was.
    /// </summary>
    private static void OpenHoldingBackHangup(RestoreContext ctx, RestoreState st, uint objref, ulong id, string path, int flags)
    {
        var ends = st.Pipes[id];
        if (ends.Write >= 0)
        {
            int ro = FileCalls.Open($"/proc/self/fd/{ends.Read}", FileCalls.O_RDONLY | FileCalls.O_NONBLOCK | FileCalls.O_CLOEXEC, 0);
            if (ro < 0) throw SyscallException.Last($"open {path} (read-only, for a read end that holds back POLLHUP)");
            ctx.Session.Own(ro);
            ctx.Session.CloseOwn(ends.Write);
            st.Pipes[id] = ends = (ro, -1);
        }
        Open(ctx, objref, EndPath(path, ends.Read), flags);
    }

    /// <summary>The status flags of an end that a restart sets (the access mode comes with its open).</summary>
    private const int StatusFlags = FileCalls.O_NONBLOCK | FileCalls.O_APPEND;

    /// <summary>What a FIFO end is opened by: its name, or ckpt's fd of it when its name was removed.</summary>
    private static string EndPath(string path, int ckptFd)
        => path.EndsWith(Deleted, StringComparison.Ordinal) ? $"/proc/{Environment.ProcessId}/fd/{ckptFd}" : path;

    /// <summary>The process opens a FIFO end by <paramref name="path"/> (never blocking), then gets its own flags.</summary>
    private static void Open(RestoreContext ctx, uint objref, string path, int flags)
    {
        int fd = ctx.OpenInVessel(path, (flags & FileCalls.O_ACCMODE) | FileCalls.O_NONBLOCK | FileCalls.O_CLOEXEC);
        ctx.SetOffsetAndFlags(fd, 0, flags & StatusFlags, $"the FIFO {path}");
        ctx.Files.SetRestored(objref, fd);
    }

    private const string Deleted = " (deleted)";

    /// <summary>
    /// A FIFO for one whose name was removed: made under <paramref name="name"/> if free (else beside it,
    /// or in the temporary directory), opened read-write by ckpt, its name removed at once.
    /// </summary>
    private static int MakeRemovedFifo(string name)
    {
        string? dir = Path.GetDirectoryName(name);
        string[] candidates = [name, $"{name}.ckpt-{Environment.ProcessId}", Path.Combine(Path.GetTempPath(), $"ckpt-fifo-{Environment.ProcessId}-{Path.GetFileName(name)}")];
        foreach (var c in candidates)
        {
            if (c != candidates[2] && (dir == null || !Directory.Exists(dir))) continue;
            if (FileCalls.MkFifo(c, 0x180 /* 0600 */) != 0) continue;
            int m = FileCalls.Open(c, FileCalls.O_RDWR | FileCalls.O_NONBLOCK | FileCalls.O_CLOEXEC, 0);
            int e = Marshal.GetLastPInvokeError();
            FileCalls.Unlink(c);
            if (m < 0) throw new CkptException($"restart: cannot open the FIFO made again for {name} (removed): {Errors.Describe(e)}", ExitCodes.Internal);
            return m;
        }
        throw new CkptException($"restart: cannot make a FIFO again for {name} (removed), neither there nor in {Path.GetTempPath()}", ExitCodes.RestoreConflict);
    }

    public void Finish(RestoreContext ctx) { }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        if (rec.Kind == RecordKind.PipeData)
        {
            ulong id = r.U64();
            info.Child("pipes").Set($"pipe:[{id}]", $"{rec.Payload.Length - 8} bytes queued");
            return;
        }
        uint objref = r.U32(); ulong pid = r.U64(); int end = r.U8(); int flags = r.I32(); int cap = r.I32(); r.Bool();
        string fifo = r.AtEnd ? "" : r.Str();
        bool holdsBackHangup = !r.AtEnd && r.Bool();
        string what = fifo.Length > 0 ? ((flags & FileCalls.O_ACCMODE) == FileCalls.O_RDWR ? "fifo (read-write)" : end == 0 ? "fifo read end" : "fifo write end")
            : end == 0 ? "pipe read end" : "pipe write end";
        var node = new InfoNode().Set("kind", what)
            .Set("path", fifo.Length > 0 ? fifo : $"pipe:[{pid}]").Set("flags", RegularFile.OpenFlags(flags)).Set("capacity", cap);
        if (holdsBackHangup) node.Set("holds_back_hangup", true);
        info.Child("files").Set(objref.ToString(), node);
    }
}
