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
/// kcmp(KCMP_EPOLL_TFD)); a watch whose fd was closed (the kernel keeps watching the file while another
/// fd or process holds it) or reused for another file is refused.
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
        var seen = new HashSet<int>();
        foreach (var (w, ino) in watches)
        {
            string which = $"epoll fd {f.Fd} watches fd {w.Tfd}";
            if (!seen.Add(w.Tfd))
                throw new NotCheckpointableException(ctx.Pid, $"{which} twice (the fd was closed and reused after the first was added; one of them watches a file the fd no longer refers to)");
            int tfd = w.Tfd;
            if (ctx.FileAt(tfd) is not { } target)
                throw new NotCheckpointableException(ctx.Pid, $"{which}, which was closed after being added (the epoll still watches its file through another holder); such a watch cannot be re-added at restart");
            long same = EventCalls.KcmpEpollTfd(ctx.Pid, tfd, f.Fd, tfd);
            bool differs = same < 0 && same != -Errors.ENOENT ? target.Stat.Ino != ino   // no kcmp: compare the inode
                : same != 0;
            if (differs)
                throw new NotCheckpointableException(ctx.Pid, $"{which}, but fd {tfd} now refers to another file ({target.Link}) than the one it watches (closed and reused after being added)");
        }
        var p = new PayloadWriter().U32(objref).I32(f.Flags & ~FileCalls.O_CLOEXEC).U32((uint)watches.Count);
        foreach (var (w, _) in watches) p.I32(w.Tfd).U32(w.Events).U64(w.Data);
        ctx.Image.Write(RecordKind.Epoll, p);
    }

    private sealed class RestoreState
    {
        public readonly List<(uint Objref, List<Watch> Watches)> Epolls = new();
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint objref = r.U32(); int flags = r.I32(); uint n = r.U32();
        if (n > (uint)r.Remaining / 16) throw new ImageFormatException($"Epoll record at offset {rec.Offset}: {n} watches do not fit");
        var watches = new List<Watch>();
        for (int i = 0; i < n; i++) watches.Add(new Watch(r.I32(), r.U32(), r.U64()));
        r.End();
        int fd = (int)ctx.Inject("epoll_create1", Nr.epoll_create1, FileCalls.O_CLOEXEC);
        if ((flags & FileCalls.O_NONBLOCK) != 0) ctx.Inject("fcntl(F_SETFL)", Nr.fcntl, fd, FileCalls.F_SETFL, FileCalls.O_NONBLOCK);
        ctx.Files.SetRestored(objref, fd);
        if (watches.Count > 0) ctx.State<RestoreState>().Epolls.Add((objref, watches));
    }

    public void Finish(RestoreContext ctx)
    {
        Span<byte> ev = stackalloc byte[12];   // struct epoll_event is packed on x86-64
        foreach (var (objref, watches) in ctx.State<RestoreState>().Epolls)
        {
            var fds = FdTable.FinalFds(ctx, objref);
            if (fds.Count == 0) continue;   // held by no fd (cannot happen with an image of one process)
            int epfd = fds[0];
            foreach (var w in watches)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(ev, w.Events);
                BinaryPrimitives.WriteUInt64LittleEndian(ev[4..], w.Data);
                ulong p = ctx.PutScratch(0, ev);
                long rc = ctx.Vessel.Inject(Nr.epoll_ctl, epfd, EventCalls.EPOLL_CTL_ADD, w.Tfd, (long)p);
                if (rc < 0)
                    throw new CkptException($"restart: epoll fd {epfd} cannot watch fd {w.Tfd} again (events {w.Events:x}): epoll_ctl: {Errors.Describe((int)-rc)}", ExitCodes.RestoreConflict);
            }
            ctx.Log.Debug($"epoll fd {epfd}: {watches.Count} watch(es) added");
        }
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
        info.Child("files").Set(objref.ToString(), node);
    }
}
