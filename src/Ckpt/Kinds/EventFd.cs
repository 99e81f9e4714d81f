using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>
/// eventfd (<c>anon_inode:[eventfd]</c>): the counter (fdinfo <c>eventfd-count</c>), EFD_SEMAPHORE
/// (fdinfo <c>eventfd-semaphore</c>, shown since Linux 6.6; refused where the kernel does not show it,
/// since reads would behave differently) and O_NONBLOCK. Restart: injected <c>eventfd2(count, flags)</c>;
/// a count above 2^32-1 (eventfd2 takes an unsigned int) is written into the new eventfd through a
/// pidfd_getfd copy instead.
/// </summary>
public sealed class EventFd : IFileKind
{
    public static readonly EventFd Instance = new();
    public string Name => "eventfd";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.EventFd];
    public int FinishOrder => 41;

    public bool Handles(in OpenFile f) => f.Link == "anon_inode:[eventfd]";

    public void Checkpoint(CheckpointContext ctx) { }

    public void CheckpointFile(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        var info = ProcFdInfo.Read(ctx.Pid, f.Fd);
        ulong count = ProcFdInfo.Hex(info.Require("eventfd-count"));   // printed in hex
        bool semaphore = ProcFdInfo.Dec(info.Require("eventfd-semaphore")) != 0;
        ctx.Image.Write(RecordKind.EventFd, new PayloadWriter().U32(objref).U64(count).I32(f.Flags & ~FileCalls.O_CLOEXEC).Bool(semaphore));
    }

    public unsafe void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint objref = r.U32(); ulong count = r.U64(); int flags = r.I32(); bool semaphore = r.Bool();
        r.End();
        if (count == ulong.MaxValue) throw new ImageFormatException($"EventFd record at offset {rec.Offset}: count 2^64-1 is impossible");
        int efdFlags = FileCalls.O_CLOEXEC | (flags & FileCalls.O_NONBLOCK) | (semaphore ? EventCalls.EFD_SEMAPHORE : 0);
        bool fits = count <= uint.MaxValue;
        int fd = (int)ctx.Inject("eventfd2", Nr.eventfd2, fits ? (long)count : 0, efdFlags);
        if (!fits)
        {
            int mine = ctx.GrabFd(fd);
            try
            {
                ulong v = count;
                if (FileCalls.Write(mine, (byte*)&v, 8) != 8) throw SyscallException.Last("write (eventfd count)", ctx.Pid);
            }
            finally { FileCalls.Close(mine); }
        }
        ctx.Files.SetRestored(objref, fd);
    }

    public void Finish(RestoreContext ctx) { }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint objref = r.U32(); ulong count = r.U64(); int flags = r.I32(); bool semaphore = r.Bool();
        info.Child("files").Set(objref.ToString(), new InfoNode().Set("kind", "eventfd").Set("path", "anon_inode:[eventfd]")
            .Set("flags", RegularFile.OpenFlags(flags) + (semaphore ? "|EFD_SEMAPHORE" : "")).Set("count", count));
    }
}
