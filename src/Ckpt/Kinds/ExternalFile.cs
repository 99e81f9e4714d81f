using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// An open file description whose other side lives outside the checkpointed process (for now: a pipe
/// end whose peer another process holds, such as stdout piped to the caller), saved only when the user
/// marks such objects external (<c>checkpoint --external</c>). Nothing of it is saved but the fd that
/// held it and its flags; restart hands in a replacement: by default its own fd of the same number
/// (stdin/stdout/stderr of <c>ckpt restart</c>), or the one named with <c>--inherit-fd IMAGEFD:FD</c>.
/// </summary>
public sealed class ExternalFile : IStateKind
{
    public static readonly ExternalFile Instance = new();
    public string Name => "external file";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.External];
    public int FinishOrder => 48;

    public void Checkpoint(CheckpointContext ctx) { }

    public void CheckpointFile(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        // an external fd is handed in at restart by its number, and a file in flight has none
        if (f.InFlight)
            throw new NotCheckpointableException(ctx.Pid, $"{f} is also held by a process outside the tree; a file in flight cannot be saved as external");
        ctx.Log.Info($"fd {f.Fd} ({f.Link}) saved as external");
        ctx.Image.Write(RecordKind.External, new PayloadWriter().U32(objref).I32(f.Fd).Str(f.Link).I32(f.Flags & ~FileCalls.O_CLOEXEC));
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint objref = r.U32(); int fd = r.I32(); string link = r.Str(); int flags = r.I32();
        r.End();
        int source = ctx.Options.InheritFds.TryGetValue(fd, out var s) ? s : fd;
        // a process forked late from its restored parent has none of ckpt's fds: given now
        if (ctx.LateForked && !ctx.Inherited.ContainsKey(source) && MmState.InheritableFds(ctx.Options).Contains(source)
            && FileCalls.Fcntl(source, 1 /* F_GETFD */, 0) >= 0)
            ctx.Inherited[source] = ctx.Install(source);
        if (!ctx.Inherited.TryGetValue(source, out int vesselFd))
            throw new CkptException($"restart: fd {fd} of the image was external ({link}); hand in a replacement with --inherit-fd {fd}:FD", ExitCodes.RestoreConflict);
        ctx.SetOffsetAndFlags(vesselFd, 0, flags & (FileCalls.O_NONBLOCK | FileCalls.O_APPEND), "an external file");
        ctx.Files.SetRestored(objref, vesselFd);
        ctx.Log.Info($"fd {fd} ({link}) replaced by fd {source} of ckpt");
    }

    public void Finish(RestoreContext ctx) { }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint objref = r.U32(); int fd = r.I32(); string link = r.Str(); int flags = r.I32();
        info.Child("files").Set(objref.ToString(), new InfoNode().Set("kind", "external").Set("path", link)
            .Set("flags", RegularFile.OpenFlags(flags)));
    }
}
