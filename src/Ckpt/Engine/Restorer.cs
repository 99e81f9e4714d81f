using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Tracing;

namespace Ckpt.Engine;

/// <summary>
/// Restart: read the image front to back, creating the vessel with the saved pid when the process
/// record arrives and rebuilding each piece of state as its record is read; once the trailer has been
/// verified, finish every kind in order, load the registers and release the process. On any failure
/// the vessel is killed, so nothing is left behind.
/// </summary>
public static class Restorer
{
    public static int Run(Stream input, RestoreOptions opt, Log log)
    {
        var reader = new ImageReader(input);
        var header = ImageHeader.Read(reader);
        CheckHeader(header);
        return TracerThread.Run(() => RunTraced(reader, header, opt, log));
    }

    public static void CheckHeader(ImageHeader h)
    {
        if (h.Architecture != "x86_64") throw new CkptException($"image is for {h.Architecture}; this machine is x86_64", ExitCodes.BadImage);
        if (h.PageSize != 4096) throw new CkptException($"image uses {h.PageSize}-byte pages; this machine uses 4096", ExitCodes.BadImage);
    }

    private static int RunTraced(ImageReader reader, ImageHeader header, RestoreOptions opt, Log log)
    {
        var ctx = new RestoreContext { Header = header, Log = log, Options = opt };
        try
        {
            using (log.Phase("read and rebuild"))
            {
                while (reader.Next() is { } rec)
                {
                    ctx.ThrowIfCancelled();
                    KindTable.ForRecord(rec).Restore(ctx, rec);
                }
            }
            if (ctx.Task == null) throw new ImageFormatException("image holds no process");
            foreach (var kind in KindTable.Ordered.OrderBy(k => k.FinishOrder))
                using (log.Phase("finish " + kind.Name)) kind.Finish(ctx);
            ctx.Close();
            ctx.Task.Detach(opt.Frozen ? TracedTask.SIGSTOP : 0);
            log.Info($"pid {ctx.Pid} released{(opt.Frozen ? " stopped (SIGSTOP)" : "")}");
            return ctx.Pid;
        }
        catch
        {
            ctx.Close();
            if (ctx.Pid > 0)
            {
                ProcessCalls.Kill(ctx.Pid, TracedTask.SIGKILL);
                try { while (Ptrace.Stopped(Ptrace.Wait(ctx.Pid))) { } } catch (SyscallException) { }
            }
            throw;
        }
    }
}
