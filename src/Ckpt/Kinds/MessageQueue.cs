using System.Text;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// POSIX message queues (mq_open: a file of the mqueue file system, its fd link <c>/NAME</c>). The queue
/// is a named object of the IPC namespace that outlives the process, like a file on disk: saved by name
/// with the description's flags (access mode, O_NONBLOCK), its attributes for the record, and reopened
/// by name at restart (its messages are in it). A queue that was unlinked, or has a notification
/// registered (mq_notify), is refused. Reached from <see cref="RegularFile"/> for a file whose path does
/// not resolve and whose file system is mqueue.
/// </summary>
public sealed unsafe class MessageQueue : IStateKind
{
    public static readonly MessageQueue Instance = new();
    public string Name => "message queue";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.MessageQueue];
    public int FinishOrder => 46;

    public const long MqueueMagic = 0x19800202;

    public void Checkpoint(CheckpointContext ctx) { }

    public static void CheckpointFile(CheckpointContext ctx, in OpenFile f, uint objref, int mine)
    {
        string name = f.Link;
        // reading the queue's file gives "QSIZE:... NOTIFY:... SIGNO:... NOTIFY_PID:..." (pread: the offset stays)
        var buf = new byte[256];
        long n;
        fixed (byte* b = buf) n = FileCalls.Pread(mine, b, (nuint)buf.Length, 0);
        string info = n > 0 ? Encoding.ASCII.GetString(buf, 0, (int)n) : "";
        if (IpcNamespace.OutsideOwn(ctx.Pid))
            throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd} is the POSIX message queue {name} of an IPC namespace of its own; the objects of a private IPC namespace are not saved");
        if (f.Stat.Nlink == 0 || name.EndsWith(" (deleted)"))
            throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd} is the POSIX message queue {name}, which was unlinked (mq_unlink): it cannot be opened again");
        int at = info.IndexOf("NOTIFY_PID:", StringComparison.Ordinal);
        if (at >= 0 && !info.AsSpan(at + 11).TrimStart().StartsWith("0"))
            throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd} is the POSIX message queue {name}, with a notification registered (mq_notify), which is not supported yet");
        ctx.Image.Write(RecordKind.MessageQueue, new PayloadWriter().U32(objref).Str(name).I32(f.Flags & ~FileCalls.O_CLOEXEC).Str(info.Trim()));
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint objref = r.U32(); string name = r.Str(); int flags = r.I32(); r.Str();
        r.End();
        if (!name.StartsWith('/') || name.Length < 2 || name.IndexOf('/', 1) >= 0)
            throw new ImageFormatException($"MessageQueue record at offset {rec.Offset}: name '{name}'");
        // mq_open(2) takes the name without its leading slash
        ulong p = ctx.PutScratch(RestoreContext.ScratchSize - 4096, Encoding.UTF8.GetBytes(name[1..] + "\0"));
        int oflag = (flags & (FileCalls.O_ACCMODE | FileCalls.O_NONBLOCK)) | FileCalls.O_CLOEXEC;
        long fd = ctx.Vessel.Inject(Nr.mq_open, (long)p, oflag, 0, 0);
        if (fd < 0)
            throw new CkptException($"restart: cannot open the POSIX message queue {name}: {Errors.Describe((int)-fd)}{(fd == -2 ? " (it does not exist here)" : "")}", ExitCodes.RestoreConflict);
        ctx.Files.SetRestored(objref, (int)fd);
    }

    public void Finish(RestoreContext ctx) { }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint objref = r.U32(); string name = r.Str(); int flags = r.I32(); string state = r.Str();
        info.Child("files").Set(objref.ToString(), new InfoNode().Set("kind", "message queue").Set("path", name)
            .Set("flags", RegularFile.OpenFlags(flags)).Set("state", state));
    }
}
