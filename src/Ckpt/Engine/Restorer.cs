using Ckpt.Image;
using Ckpt.Kinds;
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
        // small payloads stay valid from the oldest record in use to the newest: the one being restored,
        // the records queued ahead and the one the reader is filling; large ones until the tracer thread
        // goes on to the next record, or the page-writing helper is done with them
        // (a small buffer: large payloads are read straight into their own buffer, not copied through it)
        // Pages records are checked by the thread that writes them into their process, before it does
        var reader = new ImageReader(input, bufferSize: 64 << 10, smallPayloadRing: ReadAheadSmall + 4, consumerReleases: true)
            { ConsumerVerifies = RecordKind.Pages };
        var header = ImageHeader.Read(reader);
        CheckHeader(header);
        Vessel.Input = opt.Spool;
        Vessel.WaitLog = m => log.Info(m);
        try
        {
            int pid = TracerThread.Run(() => RunTraced(reader, header, opt, log));
            // (a mapped image, once everything read from it is done with; after a failure a helper thread
            // may still be letting go of its pages: left mapped until ckpt exits)
            reader.Dispose();
            return pid;
        }
        finally { Vessel.Input = null; Vessel.WaitLog = null; }
    }

    /// <summary>
    /// Records read and verified ahead of the one being restored: up to <see cref="ReadAheadSmall"/> small
    /// ones (a process of many regions is a long run of small records: handed over one or two at a time,
    /// the two threads took turns to sleep and wake for each, ~28 us a record here), fewer large ones, up to
    /// <see cref="ReadAheadBytes"/> (a tree of small processes: the reader reads the next process's pages
    /// while the tracer thread rebuilds the rest of this one).
    /// </summary>
    private const int ReadAheadSmall = 64, ReadAheadBytes = 4 << 20;

    public static void CheckHeader(ImageHeader h)
    {
        if (h.Architecture != "x86_64") throw new CkptException($"image is for {h.Architecture}; this machine is x86_64", ExitCodes.BadImage);
        if (h.PageSize != 4096) throw new CkptException($"image uses {h.PageSize}-byte pages; this machine uses 4096", ExitCodes.BadImage);
    }

    private static int RunTraced(ImageReader reader, ImageHeader header, RestoreOptions opt, Log log)
    {
        var s = new RestoreSession { Header = header, Log = log, Options = opt };
        PidNamespace.Reset();
        UserNamespace.Reset();
        UserNamespace.CurrentSession = s;
        try
        {
            using (log.Phase("read and rebuild"))
            {
                using var ahead = new ReadAheadQueue(reader, ReadAheadSmall, ReadAheadBytes);
                // time spent per record kind (and waiting for the next record), for the log
                var spent = new Dictionary<RecordKind, (long Ticks, int Count, long Bytes)>();
                long waited = 0, t0 = System.Diagnostics.Stopwatch.GetTimestamp(), a0 = GC.GetAllocatedBytesForCurrentThread();
                // the time and allocation since the last mark go to one kind's account
                void Charge(RecordKind kind, int records)
                {
                    long now = System.Diagnostics.Stopwatch.GetTimestamp(), allocated = GC.GetAllocatedBytesForCurrentThread();
                    var (ticks, n, bytes) = spent.GetValueOrDefault(kind);
                    spent[kind] = (ticks + now - t0, n + records, bytes + allocated - a0);
                    t0 = now;
                    a0 = allocated;
                }
                while (ahead.Next() is { } rec)
                {
                    long t1 = System.Diagnostics.Stopwatch.GetTimestamp();
                    waited += t1 - t0;
                    t0 = t1;
                    s.ThrowIfCancelled();
                    // pages handed to the page-writing helper are in place before any other record
                    if (rec.Kind != RecordKind.Pages) MemoryRegion.WaitForPages(s, processDone: rec.Kind is RecordKind.Process or RecordKind.Tree);
                    // calls queued by Vma records run before any record but a Vma or Pages record (a
                    // Pages record that needs its mapping now runs them itself; small ones wait for them)
                    if (rec.Kind is not (RecordKind.Vma or RecordKind.Pages) && s.Current is { } cur)
                    {
                        MemoryRegion.RunMappingsAndDeferredPages(cur);
                        Charge(RecordKind.Vma, 0);
                    }
                    if (s.Tree == null && KindTable.ForRecord(rec) is ITreeNamespace ns) ns.Restore(s, rec);
                    else if (rec.Kind == RecordKind.Tree) ProcessTree.Restore(s, rec);
                    else
                    {
                        if (rec.Kind == RecordKind.Process) Enter(s, rec);
                        var ctx = s.Current ?? throw new ImageFormatException($"record {rec.Kind} at offset {rec.Offset} comes before any Process record");
                        KindTable.ForRecord(rec).Restore(ctx, rec);
                    }
                    Charge(rec.Kind, 1);
                }
                MemoryRegion.WaitForPages(s, processDone: true);
                if (s.Current is { } last) MemoryRegion.RunMappingsAndDeferredPages(last);
                static string Ms(long ticks) => (ticks * 1000.0 / System.Diagnostics.Stopwatch.Frequency).ToString("F3");
                foreach (var (kind, (ticks, n, bytes)) in spent.OrderByDescending(x => x.Value.Ticks))
                    log.Debug($"restore of {n} {kind} record(s): {Ms(ticks)} ms, {bytes >> 10} KiB allocated");
                log.Debug($"waiting for records: {Ms(waited)} ms");
                foreach (var p in s.Processes)
                {
                    p.FlushBatch();
                    var (flushes, calls) = p.BatchStats;
                    if (calls > 0) log.Debug($"pid {p.Pid}: {calls} batched call(s) in {flushes} round trip(s)");
                }
            }
            if (s.Processes.Count == 0) throw new ImageFormatException("image holds no process");
            if (s.Late.Count > 0) throw new ImageFormatException($"image holds no state for pid {s.Late.Keys.First()} of its tree");
            if (s.Processes.FirstOrDefault(p => !p.Started) is { } missing)
                throw new ImageFormatException($"image holds no state for pid {missing.Pid} of its tree");
            // kind by kind, each for every process: a step that ties processes together (a connection waiting
            // on another process's listener) finds every process at the same point (credentials set...)
            foreach (var kind in KindTable.Ordered.OrderBy(k => k.FinishOrder))
                foreach (var ctx in s.Processes)
                    using (log.Phase(s.MultiProcess ? $"finish {kind.Name} {ctx.Pid}" : "finish " + kind.Name)) kind.Finish(ctx);
            // the tree's own proc mounts, once no call injected into it names a /proc/PID of ckpt's namespace
            MountNamespace.MountProcs(s);
            s.Close();
            opt.Job?.HandTo(s.Processes[0].Pid);
            // children first, so that a parent released early never sees a child still stopped
            TracerThread.RaiseAll();
            using var unpreempted = TracerThread.UnpreemptedFromHere();
            foreach (var ctx in Enumerable.Reverse(s.Processes))
            {
                CpuState.Release(ctx);   // per-thread policy, nice and affinity (the vessels ran pinned to the tracer's CPU)
                bool stop = opt.Frozen || ctx.Stopped;
                int job = !opt.Frozen && ctx.Stopped && TracedTask.IsJobControlStop(ctx.StopSignal) ? ctx.StopSignal : 0;
                if (job != 0)
                {
                    // stopped again by the signal that had stopped it (what wait reports); the other threads
                    // are let go once the group stop began, so that they stop with it. A process group that
                    // became orphaned does not stop for job control's signals: SIGSTOP then
                    ctx.Vessel.Detach(job);
                    if (!TracedTask.WaitStopped(ctx.Pid))
                    {
                        ProcessCalls.Kill(ctx.Pid, TracedTask.SIGSTOP);
                        log.Info($"pid {ctx.Pid}: signal {job} did not stop it (an orphaned process group); SIGSTOP instead");
                    }
                    foreach (var t in ctx.OtherThreads) t.Detach(0);
                }
                else
                {
                    ctx.Vessel.Detach(stop ? TracedTask.SIGSTOP : 0);
                    // the other threads are let go once the group stop began: one let go before would take a
                    // SIGSTOP pending for it alone to stop the group (the detach's own signal is not given to a
                    // thread in another kind of stop), and it would be pending no more (seen under load)
                    if (stop && ctx.OtherThreads.Count > 0) TracedTask.WaitStopped(ctx.Pid);
                    foreach (var t in ctx.OtherThreads) t.Detach(stop ? TracedTask.SIGSTOP : 0);
                }
                log.Info($"pid {ctx.Pid} released{(stop ? $" stopped (signal {(job != 0 ? job : TracedTask.SIGSTOP)})" : "")}");
            }
            log.GcSummary();
            return s.Processes[0].Pid;
        }
        catch
        {
            // ckpt's tracer thread back in its mount namespace (if it was in the tree's), while its fd is open
            try { MountNamespace.Leave(s); } catch (SyscallException e) { log.Info($"cannot go back to ckpt's mount namespace: {e.Message}"); }
            s.Close();
            KillAll(s);
            opt.Job?.TakeBack();
            throw;
        }
        finally
        {
            MemoryRegion.StopPageWriter(s);
        }
    }

    /// <summary>At a Process record: the process whose records follow (created with the tree, or now for a one-process image).</summary>
    private static void Enter(RestoreSession s, Record rec)
    {
        int pid = rec.Reader().I32();
        RestoreContext ctx;
        if (s.Tree != null)
        {
            // a process forked from its parent now that the parent's memory is in place
            if (s.Late.Remove(pid, out var late)) ProcessTree.ForkLate(s, late);
            ctx = s.Find(pid) ?? throw new ImageFormatException($"Process record at offset {rec.Offset}: pid {pid} is not a live process of the tree");
            if (ctx.Started) throw new ImageFormatException($"Process record at offset {rec.Offset}: pid {pid} twice");
        }
        else
        {
            if (s.Processes.Count > 0) throw new ImageFormatException($"Process record at offset {rec.Offset}: a second process in an image without a tree");
            ctx = new RestoreContext { Session = s };
            s.Processes.Add(ctx);
        }
        ctx.Started = true;
        s.Current = ctx;
    }

    /// <summary>Waits (up to 200 ms) until the main thread of <paramref name="pid"/> is stopped (state T).</summary>
    /// <summary>A failed restart leaves nothing behind: every vessel is killed and reaped.</summary>
    private static void KillAll(RestoreSession s)
    {
        if (s.Processes.Count == 0 || s.Processes.All(p => p.Pid <= 0)) return;
        // orphaned vessels come to ckpt to be reaped, not to pid 1 (which may take seconds)
        ProcessCalls.Prctl(36 /* PR_SET_CHILD_SUBREAPER */, 1, 0, 0, 0);
        foreach (var ctx in s.Processes) if (ctx.Pid > 0) ProcessCalls.Kill(ctx.Pid, TracedTask.SIGKILL);
        try { while (Ptrace.WaitAny(out _, 0x40000000 /* __WALL */) > 0) { } } catch (SyscallException) { }
        ProcessCalls.Prctl(36, 0, 0, 0, 0);
    }
}

/// <summary>
/// Reads and verifies records on its own thread, a few ahead of the tracer thread that restores them
/// (the reader's payload ring keeps those records valid). Errors arrive in stream order.
/// </summary>
internal sealed class ReadAheadQueue : IDisposable
{
    private readonly HandoffQueue<(Record? Rec, Exception? Error, int Weight)> _queue;
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _thread;

    private Record? _current;

    /// <param name="records">Records queued at most.</param>
    /// <param name="bytes">
    /// Payload bytes of the large records queued at most, once enough was read (<see cref="ImageReader.LeadFor"/>).
    /// A large record counts as many records as it holds that many bytes / <paramref name="records"/>.
    /// </param>
    public ReadAheadQueue(ImageReader reader, int records, int bytes)
    {
        _queue = new(capacity: records, weight: x => x.Weight);
        _thread = TracerThread.StartHelper("ckpt-read", () =>
        {
            try
            {
                long read = 0;
                while (true)
                {
                    Record? r;
                    try { r = reader.Next(); }
                    catch (Exception e) { _queue.Add((null, e, 1), _stop.Token); return; }
                    int weight = 1;
                    if (r is { } rec && rec.Payload.Length > ImageReader.SmallPayload)
                    {
                        long ahead = ImageReader.LeadFor(read, bytes);
                        long unit = Math.Max(1, ahead / records);
                        weight = (int)Math.Min(records, (rec.Payload.Length + unit - 1) / unit);
                        read += rec.Payload.Length;
                    }
                    _queue.Add((r, null, weight), _stop.Token);
                    if (r == null) return;
                }
            }
            catch (OperationCanceledException) { }
        });
    }

    /// <summary>The next record; the one returned before is done with (its payload buffer may be reused).</summary>
    public Record? Next()
    {
        _current?.Release();
        _current = null;
        var (rec, error, _) = _queue.Take();
        _current = rec;
        if (error != null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(error);
        return rec;
    }

    public void Dispose()
    {
        _stop.Cancel();
        _thread.Join(1000); // a reader blocked on a slow input pipe is a background thread: leave it
    }
}
