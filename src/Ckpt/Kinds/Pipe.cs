using System.Runtime.InteropServices;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// Pipes: each end is its own open file description (Pipe record: pipe id, which end, flags, capacity);
/// the bytes queued in the pipe are read without being consumed (tee from a pidfd_getfd copy of the
/// read end) and written once per pipe (PipeData record) right after its first end.
/// </summary>
public sealed unsafe class Pipe : IFileKind
{
    public static readonly Pipe Instance = new();
    public string Name => "pipe";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.Pipe, RecordKind.PipeData];
    public int FinishOrder => 46;

    public bool Handles(in OpenFile f) => f.Link.StartsWith("pipe:[");

    public void Checkpoint(CheckpointContext ctx) { }

    private sealed class CheckpointState { public readonly HashSet<ulong> Seen = new(); }

    public void CheckpointFile(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        ulong id = f.Stat.Ino;
        var link = f.Link;
        bool hasRead = ctx.OpenFiles.Any(o => o.Link == link && o.AccessMode == FileCalls.O_RDONLY);
        bool hasWrite = ctx.OpenFiles.Any(o => o.Link == link && o.AccessMode == FileCalls.O_WRONLY);
        if ((!hasRead || !hasWrite) && ctx.External)
        {
            ExternalFile.Instance.CheckpointFile(ctx, f, objref);
            return;
        }
        if (!hasRead || !hasWrite)
            throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd} is one end of {link}, whose {(hasRead ? "write" : "read")} end is not held by the process (pipes shared with other processes are not supported yet; --external saves it as external, to be replaced at restart)");
        bool first = ctx.State<CheckpointState>().Seen.Add(id);
        int capacity = 0;
        byte[] data = [];
        if (first)
        {
            int mine = ctx.GrabFd(f.Fd);
            try
            {
                capacity = FileCalls.Fcntl(mine, FileCalls.F_GETPIPE_SZ, 0);
                int readFd = f.AccessMode == FileCalls.O_RDONLY ? mine
                    : ctx.GrabFd(ctx.OpenFiles.First(o => o.Link == link && o.AccessMode == FileCalls.O_RDONLY).Fd);
                try { data = Peek(readFd, capacity, ctx.Pid); }
                finally { if (readFd != mine) FileCalls.Close(readFd); }
            }
            finally { FileCalls.Close(mine); }
        }
        var p = new PayloadWriter().U32(objref).U64(id).U8((byte)(f.AccessMode == FileCalls.O_RDONLY ? 0 : 1))
            .I32(f.Flags & ~FileCalls.O_CLOEXEC).I32(capacity).Bool(first);
        ctx.Image.Write(RecordKind.Pipe, p);
        if (first) ctx.Image.Write(RecordKind.PipeData, new PayloadWriter().U64(id).Span, data);
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
        public readonly Dictionary<ulong, (int Read, int Write)> Pipes = new();
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var st = ctx.State<RestoreState>();
        var r = rec.Reader();
        if (rec.Kind == RecordKind.PipeData)
        {
            ulong pid = r.U64();
            var data = rec.Payload.Span[8..];
            if (!st.Pipes.TryGetValue(pid, out var ends)) throw new ImageFormatException($"PipeData record at offset {rec.Offset} for an unknown pipe");
            if (data.Length > 0)
            {
                int w = ctx.GrabFd(ends.Write);
                try { FileCalls.WriteAll(w, data); } finally { FileCalls.Close(w); }
            }
            return;
        }
        uint objref = r.U32(); ulong id = r.U64(); int end = r.U8(); int flags = r.I32(); int capacity = r.I32(); r.Bool();
        r.End();
        if (!st.Pipes.TryGetValue(id, out var e))
        {
            long rc = ctx.Inject("pipe2", Nr.pipe2, (long)ctx.Scratch, FileCalls.O_CLOEXEC);
            var fds = ctx.GetScratch(0, 8);
            e = (BitConverter.ToInt32(fds), BitConverter.ToInt32(fds.AsSpan(4)));
            if (capacity > 0) ctx.Inject("fcntl(F_SETPIPE_SZ)", Nr.fcntl, e.Read, FileCalls.F_SETPIPE_SZ, capacity);
            st.Pipes[id] = e;
        }
        int fd = end == 0 ? e.Read : e.Write;
        if (ctx.Files.Restored.Any(kv => kv.Value == fd))
            fd = ctx.OpenInVessel($"/proc/self/fd/{fd}", (flags & FileCalls.O_ACCMODE) | FileCalls.O_CLOEXEC);
        ctx.Inject("fcntl(F_SETFL)", Nr.fcntl, fd, FileCalls.F_SETFL, flags & (FileCalls.O_NONBLOCK | FileCalls.O_APPEND));
        ctx.Files.SetRestored(objref, fd);
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
        uint objref = r.U32(); ulong pid = r.U64(); int end = r.U8(); int flags = r.I32(); int cap = r.I32();
        info.Child("files").Set(objref.ToString(), new InfoNode().Set("kind", end == 0 ? "pipe read end" : "pipe write end")
            .Set("path", $"pipe:[{pid}]").Set("flags", RegularFile.OpenFlags(flags)).Set("capacity", cap));
    }
}
