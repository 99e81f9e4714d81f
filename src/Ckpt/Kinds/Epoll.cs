using System.Buffers.Binary;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>
/// epoll (<c>anon_inode:[eventpoll]</c>): O_NONBLOCK and every watch of its fdinfo
/// (<c>tfd: N events: X data: Y pos: ino: sdev:</c>), with the EPOLLET / EPOLLONESHOT / EPOLLEXCLUSIVE /
/// EPOLLWAKEUP bits. A watch is keyed by the file and the fd number it was added with, so each watched
/// fd must still be open in the process and refer to that same file (checked with
/// kcmp(KCMP_EPOLL_TFD)). A watch whose fd was closed (the kernel keeps watching the file while another
/// fd holds it) is saved with another fd of the process that refers to the same file, which the restart
/// puts at the watch's number for the moment of EPOLL_CTL_ADD; one whose file only another process holds,
/// or whose file carries POSIX locks of the process (closing that moment's fd would drop them), or whose
/// fd was reused for another file, is refused.
/// Restart: injected <c>epoll_create1</c> when the record is read; the watches are added in
/// <see cref="Finish"/>, once the fd table has put every fd at its final number:
/// <c>epoll_ctl(EPOLL_CTL_ADD, tfd, {events, data})</c> in the vessel.
/// Known differences: the ready list is rebuilt by the kernel when each watch is added, so an
/// edge-triggered watch whose fd is ready reports that readiness once more; a one-shot watch that had
/// already fired (disarmed: only its flag bits are left) comes back reporting EPOLLERR and EPOLLHUP,
/// which EPOLL_CTL_ADD always adds.
/// </summary>
public sealed class Epoll : IFileKind
{
    public static readonly Epoll Instance = new();
    public string Name => "epoll";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.Epoll];
    /// <summary>After the fd table (40) has placed the fds, whose final numbers the watches need.</summary>
    public int FinishOrder => 49;

    public bool Handles(in OpenFile f) => f.Link == "anon_inode:[eventpoll]";

    public void Checkpoint(CheckpointContext ctx) { }

    public readonly record struct Watch(int Tfd, uint Events, ulong Data);

    /// <summary>The watches of an epoll's fdinfo, in the order the kernel lists them.</summary>
    public static List<(Watch W, ulong Ino)> ParseWatches(ProcFdInfo info)
    {
        var list = new List<(Watch, ulong)>();
        foreach (var line in info.Lines)
        {
            if (!line.StartsWith("tfd:", StringComparison.Ordinal)) continue;
            var w = ProcFdInfo.Words(line);
            if (!w.TryGetValue("tfd", out var tfd) || !w.TryGetValue("events", out var ev) || !w.TryGetValue("data", out var data))
                throw new NotCheckpointableException(info.Pid, $"fd {info.Fd}: cannot parse the epoll watch '{line.Trim()}' in its fdinfo");
            list.Add((new Watch((int)ProcFdInfo.Dec(tfd), (uint)ProcFdInfo.Hex(ev), ProcFdInfo.Hex(data)),
                w.TryGetValue("ino", out var ino) ? ProcFdInfo.Hex(ino) : 0));
        }
        return list;
    }

    public void CheckpointFile(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        var watches = ParseWatches(ProcFdInfo.Read(ctx.Pid, f.Fd));
        // how many watches each fd number has: several when an fd was closed, its number reused and added again
        var count = watches.CountBy(x => x.Item1.Tfd).ToDictionary();
        var seen = new Dictionary<int, int>();
        var closed = new List<(int Index, int Via)>();
        for (int i = 0; i < watches.Count; i++)
        {
            var (w, ino) = watches[i];
            string which = $"epoll fd {f.Fd} watches fd {w.Tfd}";
            int tfd = w.Tfd;
            // the n-th watch of one fd number: kcmp's toff
            int toff = seen.TryGetValue(tfd, out int k) ? k : 0;
            seen[tfd] = toff + 1;
            var target = ctx.FileAt(tfd);
            // a watch of an fd closed since: the file it watches is not the one at that number now
            if (target is not { } open || count[tfd] > 1 && EventCalls.KcmpEpollTfd(ctx.Pid, tfd, f.Fd, tfd, toff) != 0)
            {
                closed.Add((i, ClosedWatchVia(ctx, f.Fd, tfd, toff, which)));
                // the fd open at that number is set aside at restart for that moment: closing it would drop its POSIX locks
                if (target is { } now && HasPosixLocks(now))
                    throw new NotCheckpointableException(ctx.Pid, $"{which} of a file closed since, while fd {tfd} now holds POSIX locks on another file, which re-adding the watch at restart would drop");
                continue;
            }
            long same = EventCalls.KcmpEpollTfd(ctx.Pid, tfd, f.Fd, tfd, toff);
            bool differs = same < 0 && same != -Errors.ENOENT ? open.Stat.Ino != ino   // no kcmp: compare the inode
                : same != 0;
            if (differs)
                throw new NotCheckpointableException(ctx.Pid, $"{which}, but fd {tfd} now refers to another file ({open.Link}) than the one it watches (closed and reused after being added)");
        }
        var p = new PayloadWriter().U32(objref).I32(f.Flags & ~FileCalls.O_CLOEXEC).U32((uint)watches.Count);
        foreach (var (w, _) in watches) p.I32(w.Tfd).U32(w.Events).U64(w.Data);
        // appended field: the watches whose fd was closed, each with another fd of the same file
        p.U32((uint)closed.Count);
        foreach (var (index, via) in closed) p.I32(index).I32(via);
        ctx.Image.Write(RecordKind.Epoll, p);
    }

    /// <summary>Whether the process holds POSIX locks on the file of <paramref name="f"/> (its fdinfo "lock:" lines, read with the fd).</summary>
    private static bool HasPosixLocks(in OpenFile f) => f.Locks?.Any(l => l.Contains(" POSIX ")) == true;

    /// <summary>
    /// Another fd of the process that refers to the file a watch of a closed fd still watches
    /// (kcmp(KCMP_EPOLL_TFD) against each fd); refused when there is none, or when the process holds
    /// POSIX locks on that file (the restart's temporary fd, closed again, would drop them).
    /// </summary>
    private static int ClosedWatchVia(CheckpointContext ctx, int epfd, int tfd, int toff, string which)
    {
        foreach (var c in ctx.OpenFiles)
        {
            if (c.InFlight || EventCalls.KcmpEpollTfd(ctx.Pid, c.Fd, epfd, tfd, toff) != 0) continue;
            if (HasPosixLocks(c))
                throw new NotCheckpointableException(ctx.Pid, $"{which}, which was closed after being added; its file (fd {c.Fd}) holds POSIX locks, which re-adding the watch at restart would drop");
            return c.Fd;
        }
        throw new NotCheckpointableException(ctx.Pid, $"{which}, which was closed after being added, and no other fd of the process refers to the file it watches (another process holds it); such a watch cannot be re-added at restart");
    }

    private sealed class RestoreState
    {
        /// <summary>Closed: watch index → the fd that refers to the file of that watch of a closed fd (put at the watch's number for the moment it is added).</summary>
        public readonly List<(uint Objref, List<Watch> Watches, Dictionary<int, int> Closed)> Epolls = new();
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint objref = r.U32(); int flags = r.I32(); uint n = r.U32();
        if (n > (uint)r.Remaining / 16) throw new ImageFormatException($"Epoll record at offset {rec.Offset}: {n} watches do not fit");
        var watches = new List<Watch>();
        for (int i = 0; i < n; i++) watches.Add(new Watch(r.I32(), r.U32(), r.U64()));
        var closed = new Dictionary<int, int>();
        for (uint i = 0, m = r.AtEnd ? 0 : r.U32(); i < m; i++)
        {
            int index = r.I32(), via = r.I32();
            if (index < 0 || index >= watches.Count || via < 0 || !closed.TryAdd(index, via))
                throw new ImageFormatException($"Epoll record at offset {rec.Offset}: closed watch {index} (via {via})");
        }
        r.End();
        int fd = (int)ctx.Inject("epoll_create1", Nr.epoll_create1, FileCalls.O_CLOEXEC);
        if ((flags & FileCalls.O_NONBLOCK) != 0) ctx.SetOffsetAndFlags(fd, 0, FileCalls.O_NONBLOCK, "an epoll instance");
        ctx.Files.SetRestored(objref, fd);
        if (watches.Count > 0) ctx.State<RestoreState>().Epolls.Add((objref, watches, closed));
    }

    public void Finish(RestoreContext ctx)
    {
        foreach (var (objref, watches, closed) in ctx.State<RestoreState>().Epolls)
        {
            var fds = FdTable.FinalFds(ctx, objref);
            // an epoll only in flight in a unix socket's queue: ckpt's copy is put in the process for the moment
            int epfd = fds.Count > 0 ? fds[0] : ctx.Session.Masters.TryGetValue(objref, out int master) ? ctx.Install(master) : -1;
            if (epfd < 0) continue;   // held by no fd (cannot happen with an image of one process)
            try { AddWatches(ctx, epfd, watches, closed); }
            finally
            {
                if (fds.Count == 0)
                {
                    ctx.Vessel.Inject(Nr.close, epfd);
                    ctx.CloseInstaller();
                }
            }
        }
    }

    /// <summary>Adds the saved watches to the epoll at fd <paramref name="epfd"/> of the process.</summary>
    private static void AddWatches(RestoreContext ctx, int epfd, List<Watch> watches, Dictionary<int, int> closed)
    {
        Span<byte> ev = stackalloc byte[12];   // struct epoll_event is packed on x86-64
        for (int i = 0; i < watches.Count; i++)
        {
            var w = watches[i];
            BinaryPrimitives.WriteUInt32LittleEndian(ev, w.Events);
            BinaryPrimitives.WriteUInt64LittleEndian(ev[4..], w.Data);
            ulong p = ctx.PutScratch(0, ev);
            // a watch of a closed fd: its file is put at that number for the moment it is added (the fd
            // open at that number now, if any, is set aside meanwhile)
            bool temporary = closed.TryGetValue(i, out int via);
            long aside = -1, asideFlags = -1;
            if (temporary)
            {
                asideFlags = ctx.Vessel.Inject(Nr.fcntl, w.Tfd, FileCalls.F_GETFD);
                if (asideFlags >= 0)
                {
                    aside = ctx.Vessel.Inject(Nr.fcntl, w.Tfd, 1030 /* F_DUPFD_CLOEXEC */, 0);
                    if (aside < 0) throw new CkptException($"restart: epoll fd {epfd}: fd {w.Tfd} cannot be set aside: {Errors.Describe((int)-aside)}", ExitCodes.RestoreConflict);
                }
                long d = ctx.Vessel.Inject(Nr.dup3, via, w.Tfd, FileCalls.O_CLOEXEC);
                if (d < 0) throw new CkptException($"restart: epoll fd {epfd} cannot watch the file of fd {via} as fd {w.Tfd} again: dup3: {Errors.Describe((int)-d)}", ExitCodes.RestoreConflict);
            }
            long rc = ctx.Vessel.Inject(Nr.epoll_ctl, epfd, EventCalls.EPOLL_CTL_ADD, w.Tfd, (long)p);
            if (temporary)
            {
                if (aside >= 0)
                {
                    // the fd that was there comes back, with its close-on-exec flag
                    ctx.Vessel.Inject(Nr.dup3, aside, w.Tfd, (asideFlags & 1 /* FD_CLOEXEC */) != 0 ? FileCalls.O_CLOEXEC : 0);
                    ctx.Vessel.Inject(Nr.close, aside);
                }
                else ctx.Vessel.Inject(Nr.close, w.Tfd);
            }
            if (rc < 0)
                throw new CkptException($"restart: epoll fd {epfd} cannot watch fd {w.Tfd} again (events {w.Events:x}): epoll_ctl: {Errors.Describe((int)-rc)}", ExitCodes.RestoreConflict);
        }
        ctx.Log.Debug($"epoll fd {epfd}: {watches.Count} watch(es) added");
    }

    public static string EventNames(uint ev)
    {
        var names = new List<string>();
        (uint Bit, string Name)[] bits = [(0x1, "IN"), (0x2, "PRI"), (0x4, "OUT"), (0x8, "ERR"), (0x10, "HUP"), (0x40, "RDNORM"),
            (0x80, "RDBAND"), (0x100, "WRNORM"), (0x200, "WRBAND"), (0x400, "MSG"), (0x2000, "RDHUP"),
            (EventCalls.EPOLLEXCLUSIVE, "EXCLUSIVE"), (EventCalls.EPOLLWAKEUP, "WAKEUP"), (EventCalls.EPOLLONESHOT, "ONESHOT"), (EventCalls.EPOLLET, "ET")];
        foreach (var (b, name) in bits) if ((ev & b) != 0) { names.Add(name); ev &= ~b; }
        if (ev != 0) names.Add($"0x{ev:x}");
        return string.Join('|', names);
    }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint objref = r.U32(); int flags = r.I32(); uint n = r.U32();
        var node = new InfoNode().Set("kind", "epoll").Set("path", "anon_inode:[eventpoll]").Set("flags", RegularFile.OpenFlags(flags));
        var list = node.List("watches");
        for (int i = 0; i < n; i++)
        {
            int tfd = r.I32(); uint ev = r.U32(); ulong data = r.U64();
            list.Add(new InfoNode().Set("fd", tfd).Set("events", EventNames(ev)).Set("data", $"0x{data:x}"));
        }
        for (uint i = 0, m = r.AtEnd ? 0 : r.U32(); i < m; i++)
        {
            int index = r.I32(), via = r.I32();
            node.Child("closed watches").Set($"watch {index}", $"of a closed fd; its file is fd {via}'s");
        }
        info.Child("files").Set(objref.ToString(), node);
    }
}
