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

    private sealed class Saved
    {
        public string Cwd = "/", Root = "/";
        public uint Umask;
        /// <summary>The working directory was removed (Cwd without " (deleted)"), and what it was.</summary>
        public bool CwdRemoved;
        public StatBuf CwdStat;
        /// <summary>The working directory was /proc/N of a process N that has ended since (Cwd "/proc/N (deleted)"): N, else 0.</summary>
        public int GoneProc;
    }

    public void Checkpoint(CheckpointContext ctx)
    {
        string cwd = MmState.ProcLink($"/proc/{ctx.Pid}/cwd"), root = MmState.ProcLink($"/proc/{ctx.Pid}/root");
        if (root.EndsWith(" (deleted)")) throw new NotCheckpointableException(ctx.Pid, $"its root directory {root} was deleted");
        // a removed working directory (the process went on in it) is empty: it is made and removed again at restart
        bool removed = false;
        StatBuf st = default;
        if (cwd.EndsWith(" (deleted)") && FileCalls.TryStat($"/proc/{ctx.Pid}/cwd", out st) && st.Nlink == 0)
        {
            removed = true;
            cwd = cwd[..^10];
        }
        // the /proc directory of a process that has ended since (its entry is unhashed): one is made so again
        int goneProc = 0;
        if (!removed && cwd.EndsWith(" (deleted)") && cwd.StartsWith("/proc/", StringComparison.Ordinal) && int.TryParse(cwd[6..^10], out int gone)
            && gone > 0 && FileCalls.TryStat($"/proc/{ctx.Pid}/cwd", out var cs) && FileCalls.TryStat("/proc", out var ps) && cs.Dev == ps.Dev)
            goneProc = gone;
        uint umask = (uint)(ctx.Status.Umask ?? 18 /* 022 */);
        var p = new PayloadWriter().Str(cwd).Str(root).U32(umask).Bool(removed);
        if (removed) p.U64(st.Dev).U64(st.Ino).U32(st.Mode).U32(st.Uid).U32(st.Gid);
        p.I32(goneProc);
        ctx.Image.Write(RecordKind.FsState, p);
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        var s = ctx.State<Saved>();
        s.Cwd = r.Str(); s.Root = r.Str(); s.Umask = r.U32();
        s.CwdRemoved = !r.AtEnd && r.Bool();
        if (s.CwdRemoved) s.CwdStat = new StatBuf { Dev = r.U64(), Ino = r.U64(), Mode = r.U32(), Uid = r.U32(), Gid = r.U32() };
        s.GoneProc = r.AtEnd ? 0 : r.I32();
        r.End();
    }

    public void Finish(RestoreContext ctx)
    {
        var s = ctx.State<Saved>();
        // one batch: one ptrace round trip
        var batch = ctx.Batch;
        void Entered(long rc)
        {
            if (rc < 0) throw new CkptException($"restart: cannot enter the working directory {s.Cwd}{(s.CwdRemoved ? " (removed)" : "")}: {Errors.Describe((int)-rc)}", ExitCodes.RestoreConflict);
        }
        var cwd = Encoding.UTF8.GetBytes(s.Cwd + "\0");
        var root = Encoding.UTF8.GetBytes(s.Root + "\0");
        batch.Reserve(4, cwd.Length + root.Length);
        if (s.GoneProc > 0)
        {
            // a process of ckpt's for a moment (with the pid it had, if free): the vessel enters its /proc
            // directory, then it ends and is reaped, and the directory is unhashed as it was
            int helper = Vessel.StandIn(s.GoneProc, "the ended process whose /proc directory was the working directory");
            try
            {
                batch.Add(Nr.chdir, (long)batch.AddData(Encoding.UTF8.GetBytes($"/proc/{helper}\0")), stopOnError: true, check: Entered);
                batch.Flush();
            }
            finally { Vessel.KillAndReap(helper); }
            if (helper != s.GoneProc) ctx.Log.Info($"pid {ctx.Pid}: working directory /proc/{helper} (deleted) instead of {s.Cwd}: pid {s.GoneProc} is in use");
        }
        else if (s.CwdRemoved)
        {
            var st = s.CwdStat;
            int dir = RegularFile.DeletedDirectory(ctx.Session, st.Dev, st.Ino, s.Cwd, st.Mode, st.Uid, st.Gid);
            int vfd = ctx.OpenInVessel($"/proc/{Environment.ProcessId}/fd/{dir}", FileCalls.O_PATH | FileCalls.O_DIRECTORY | FileCalls.O_CLOEXEC);
            batch.Add(Nr.fchdir, vfd, stopOnError: true, check: Entered);
            batch.AddChecked("close", Nr.close, vfd);
        }
        else batch.Add(Nr.chdir, (long)batch.AddData(cwd), stopOnError: true, check: Entered);
        if (s.Root != "/") batch.AddChecked("chroot", Nr.chroot, (long)batch.AddData(root));
        batch.AddChecked("umask", Nr.umask, s.Umask);
        batch.Flush();
    }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        string cwd = r.Str(), root = r.Str();
        uint umask = r.U32();
        if (!r.AtEnd && r.Bool()) cwd += " (deleted)";
        info.Child("process").Set("cwd", cwd).Set("root", root).Set("umask", Convert.ToString(umask, 8).PadLeft(4, '0'));
    }
}
