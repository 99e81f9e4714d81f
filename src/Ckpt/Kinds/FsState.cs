using System.Text;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>Filesystem context: current directory, root directory and umask.</summary>
public sealed class FsState : IStateKind
{
    public static readonly FsState Instance = new();
    public string Name => "fs";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.FsState];
    public int FinishOrder => 30;

    private sealed class Saved { public string Cwd = "/", Root = "/"; public uint Umask; }

    public void Checkpoint(CheckpointContext ctx)
    {
        string cwd = MmState.ProcLink($"/proc/{ctx.Pid}/cwd"), root = MmState.ProcLink($"/proc/{ctx.Pid}/root");
        if (cwd.EndsWith(" (deleted)")) throw new NotCheckpointableException(ctx.Pid, $"its current directory {cwd} was deleted");
        uint umask = (uint)(ProcStatus.Read(ctx.Pid).Umask ?? 18 /* 022 */);
        ctx.Image.Write(RecordKind.FsState, new PayloadWriter().Str(cwd).Str(root).U32(umask));
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        var s = ctx.State<Saved>();
        s.Cwd = r.Str(); s.Root = r.Str(); s.Umask = r.U32();
        r.End();
    }

    public void Finish(RestoreContext ctx)
    {
        var s = ctx.State<Saved>();
        ulong p = ctx.PutScratch(0, Encoding.UTF8.GetBytes(s.Cwd + "\0"));
        long rc = ctx.Vessel.Inject(Nr.chdir, (long)p);
        if (rc < 0) throw new CkptException($"restart: cannot enter the working directory {s.Cwd}: {Errors.Describe((int)-rc)}", ExitCodes.RestoreConflict);
        if (s.Root != "/")
        {
            p = ctx.PutScratch(0, Encoding.UTF8.GetBytes(s.Root + "\0"));
            ctx.Inject("chroot", Nr.chroot, (long)p);
        }
        ctx.Inject("umask", Nr.umask, s.Umask);
    }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        info.Child("process").Set("cwd", r.Str()).Set("root", r.Str()).Set("umask", Convert.ToString(r.U32(), 8).PadLeft(4, '0'));
    }
}
