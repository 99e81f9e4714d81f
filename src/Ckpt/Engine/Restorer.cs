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
        var reader = new ImageReader(input, payloadRing: ReadAhead + 2);
        var header = ImageHeader.Read(reader);
        CheckHeader(header);
        return TracerThread.Run(() => RunTraced(reader, header, opt, log));
    }

    /// <summary>Records read and verified ahead of the one being restored.</summary>
    private const int ReadAhead = 2;

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
                using var ahead = new ReadAheadQueue(reader, ReadAhead);
                while (ahead.Next() is { } rec)
                {
                    ctx.ThrowIfCancelled();
                    KindTable.ForRecord(rec).Restore(ctx, rec);
                }
            }
            if (ctx.Task == null) throw new ImageFormatException("image holds no process");
            foreach (var kind in KindTable.Ordered.OrderBy(k => k.FinishOrder))
                using (log.Phase("finish " + kind.Name)) kind.Finish(ctx);
            ctx.Close();
            if (ctx.VesselAffinity != null) ProcessCalls.SetAffinity(ctx.Pid, ctx.VesselAffinity);
            ctx.Task.Detach(opt.Frozen ? TracedTask.SIGSTOP : 0);
            foreach (var t in ctx.OtherThreads) t.Detach(opt.Frozen ? TracedTask.SIGSTOP : 0);
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

/// <summary>
/// Reads and verifies records on its own thread, a few ahead of the tracer thread that restores them
/// (the reader's payload ring keeps those records valid). Errors arrive in stream order.
/// </summary>
internal sealed class ReadAheadQueue : IDisposable
{
    private readonly System.Collections.Concurrent.BlockingCollection<(Record? Rec, Exception? Error)> _queue;
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _thread;

    public ReadAheadQueue(ImageReader reader, int ahead)
    {
        _queue = new(boundedCapacity: ahead);
        _thread = new Thread(() =>
        {
            try
            {
                while (true)
                {
                    Record? r;
                    try { r = reader.Next(); }
                    catch (Exception e) { _queue.Add((null, e), _stop.Token); return; }
                    _queue.Add((r, null), _stop.Token);
                    if (r == null) return;
                }
            }
            catch (OperationCanceledException) { }
        }) { Name = "ckpt-read", IsBackground = true };
        _thread.Start();
    }

    public Record? Next()
    {
        var (rec, error) = _queue.Take();
        if (error != null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(error);
        return rec;
    }

    public void Dispose()
    {
        _stop.Cancel();
        _thread.Join(1000); // a reader blocked on a slow input pipe is a background thread: leave it
    }
}
