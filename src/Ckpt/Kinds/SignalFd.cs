using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>
/// signalfd (<c>anon_inode:[signalfd]</c>): the signal mask it reads (fdinfo <c>sigmask:</c>) and
/// O_NONBLOCK. It holds no queue of its own: the signals it returns are the process's pending signals,
/// saved by <see cref="SignalState"/> and <see cref="CpuState"/>. Restart: injected
/// <c>signalfd4(-1, mask, 8, flags)</c>.
/// </summary>
public sealed class SignalFd : IFileKind
{
    public static readonly SignalFd Instance = new();
    public string Name => "signalfd";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.SignalFd];
    public int FinishOrder => 43;

    public bool Handles(in OpenFile f) => f.Link == "anon_inode:[signalfd]";

    public void Checkpoint(CheckpointContext ctx) { }

    public void CheckpointFile(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        ulong mask = ProcFdInfo.Hex(ProcFdInfo.Read(ctx.Pid, f.Fd).Require("sigmask"));
        ctx.Image.Write(RecordKind.SignalFd, new PayloadWriter().U32(objref).U64(mask).I32(f.Flags & ~FileCalls.O_CLOEXEC));
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint objref = r.U32(); ulong mask = r.U64(); int flags = r.I32();
        r.End();
        ulong p = ctx.PutScratch(0, BitConverter.GetBytes(mask));
        int fd = (int)ctx.Inject("signalfd4", Nr.signalfd4, -1, (long)p, 8, FileCalls.O_CLOEXEC | (flags & FileCalls.O_NONBLOCK));
        ctx.Files.SetRestored(objref, fd);
    }

    public void Finish(RestoreContext ctx) { }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint objref = r.U32(); ulong mask = r.U64(); int flags = r.I32();
        info.Child("files").Set(objref.ToString(), new InfoNode().Set("kind", "signalfd").Set("path", "anon_inode:[signalfd]")
            .Set("flags", RegularFile.OpenFlags(flags)).Set("signals", Signals(mask)));
    }

    /// <summary>"1 10 34" for the signals in a mask (bit N-1 is signal N).</summary>
    public static string Signals(ulong mask)
        => string.Join(' ', Enumerable.Range(1, 64).Where(s => (mask & (1UL << (s - 1))) != 0));
}
