using Ckpt.Image;
using Ckpt.Kinds;
using Ckpt.Native;
using Ckpt.Proc;
using Ckpt.Tracing;

namespace Ckpt.Engine;

public sealed class CheckpointOptions
{
    /// <summary>Kill the target once the image is complete (for migration).</summary>
    public bool Kill { get; init; }
    public Log Log { get; init; } = Log.None;
    public Func<bool> Cancelled { get; init; } = () => false;
    /// <summary>Save pipe ends whose peer is outside the process as external (--external).</summary>
    public bool External { get; init; }
}

public sealed record CheckpointResult(long Bytes, long Records, TimeSpan Frozen);

/// <summary>
/// Checkpoint: freeze the target, run every state kind in table order into one image stream, then put
/// the target back exactly as it was (or kill it with --kill). Any failure leaves it running unharmed.
/// </summary>
public static class Checkpointer
{
    public static CheckpointResult Run(int pid, Stream output, CheckpointOptions opt)
    {
        Validate(pid);
        return TracerThread.Run(() => RunTraced(pid, output, opt));
    }

    private static void Validate(int pid)
    {
        if (pid <= 0 || !Directory.Exists($"/proc/{pid}"))
            throw new CkptException($"no process with pid {pid}", ExitCodes.NoTarget);
        if (pid == Environment.ProcessId) throw new CkptException("ckpt cannot checkpoint itself", ExitCodes.NoTarget);
        ProcStat f;
        ProcStatus status;
        try { f = ProcStat.Read(pid); status = ProcStatus.Read(pid); }
        catch (IOException) { throw new CkptException($"no process with pid {pid}", ExitCodes.NoTarget); }
        if (f.IsKernelThread) throw new NotCheckpointableException(pid, "it is a kernel thread");
        if (f.State == 'Z') throw new NotCheckpointableException(pid, "it is a zombie (exited, not yet reaped)");
        int tgid = status.Tgid, tracer = status.TracerPid;
        if (tgid != pid) throw new NotCheckpointableException(pid, $"it is a thread of process {tgid}; checkpoint the process");
        if (tracer != 0)
            throw new NotCheckpointableException(pid, $"it is already traced by pid {tracer} (a debugger or strace); detach that first");
        if (status.Seccomp != 0)
            throw new NotCheckpointableException(pid, $"it runs under seccomp ({(status.Seccomp == 1 ? "strict mode" : "a filter")}), which is not supported yet; restarting it without would take it out of its sandbox");
        CheckNoChildren(pid);
    }

    private static int[] ThreadIds(int pid)
        => Directory.GetDirectories($"/proc/{pid}/task").Select(d => int.Parse(Path.GetFileName(d))).ToArray();

    /// <summary>Seizes and stops every other thread, rescanning until no new thread appears.</summary>
    private static void SeizeThreads(int pid, List<(TracedTask Task, UserRegs Regs, ulong SigMask)> threads)
    {
        var seen = threads.Select(t => t.Task.Tid).ToHashSet();
        bool found = true;
        while (found)
        {
            found = false;
            foreach (int tid in ThreadIds(pid))
            {
                if (!seen.Add(tid)) continue;
                found = true;
                TracedTask t;
                try { t = TracedTask.SeizeAndStop(tid); }
                catch (SyscallException e) when (e.Errno == Errors.ESRCH) { continue; }   // it exited meanwhile
                catch (TaskGoneException) { continue; }
                threads.Add((t, t.GetRegs(), t.GetSigMask()));
                t.SetSigMask(ulong.MaxValue);
            }
        }
    }

    /// <summary>Children (running or zombie) are not saved: a restarted process would have lost them.</summary>
    private static void CheckNoChildren(int pid)
    {
        var kids = File.ReadAllText($"/proc/{pid}/task/{pid}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (kids.Length > 0)
            throw new NotCheckpointableException(pid, $"it has {kids.Length} child process{(kids.Length > 1 ? "es" : "")} (pid {kids[0]}{(kids.Length > 1 ? " and others" : "")}); process trees are not supported yet");
    }

    private static CheckpointResult RunTraced(int pid, Stream output, CheckpointOptions opt)
    {
        var log = opt.Log;
        var started = DateTime.UtcNow;
        // ptrace round trips are several times slower across CPUs: trace from the target's CPU
        if (int.TryParse(ProcStat.Read(pid).Field(39), out int cpu)) ProcessCalls.SetAffinity(0, ProcessCalls.SingleCpu(cpu));
        TracedTask task;
        try { task = TracedTask.SeizeAndStop(pid); }
        catch (SyscallException e) when (e.Errno == Errors.EPERM)
        {
            throw new CkptException($"cannot trace pid {pid}: {e.Message}; run ckpt as root or as the process's owner", ExitCodes.Permission);
        }
        catch (SyscallException e) when (e.Errno == Errors.ESRCH)
        {
            throw new CkptException($"no process with pid {pid}", ExitCodes.NoTarget);
        }
        var regs = task.GetRegs();
        // every signal is held pending while the process is ours: one dequeued by an injected call would
        // only be known to us (lost with --kill, and PTRACE_DETACH cannot deliver it from an interrupt
        // stop); pending, it is saved in the image and delivered once the original mask is back
        ulong sigmask = task.GetSigMask();
        task.SetSigMask(ulong.MaxValue);
        CheckpointContext? ctx = null;
        bool ok = false;
        var frozen = System.Diagnostics.Stopwatch.StartNew();
        var threads = new List<(TracedTask Task, UserRegs Regs, ulong SigMask)> { (task, regs, sigmask) };
        try
        {
            SeizeThreads(pid, threads);
            CheckNoChildren(pid);
            List<VmaInfo> vmas;
            using (log.Phase("read maps")) vmas = ProcMaps.ReadSmaps(pid);
            task.SyscallGadget = FindSyscallInstruction(pid, vmas);
            foreach (var t in threads) t.Task.SyscallGadget = task.SyscallGadget;
            var xstate = task.GetXState();
            var writer = new ImageWriter(output);
            ctx = new CheckpointContext { Pid = pid, Task = task, Image = writer, Log = log, Vmas = vmas, Regs = regs, SigMask = sigmask, Cancelled = opt.Cancelled, External = opt.External };
            long scratch = task.Inject(Nr.mmap, 0, CheckpointContext.ScratchSize, MemoryCalls.PROT_READ | MemoryCalls.PROT_WRITE,
                MemoryCalls.MAP_PRIVATE | MemoryCalls.MAP_ANONYMOUS, -1, 0);
            if (scratch < 0 && scratch > -4096) throw new SyscallException("mmap scratch (injected)", (int)-scratch, pid);
            ctx.Scratch = (ulong)scratch;
            ctx.Threads.AddRange(threads);
            new ImageHeader
            {
                ToolVersion = ToolInfo.Version, KernelRelease = File.ReadAllText("/proc/sys/kernel/osrelease").Trim(),
                Architecture = "x86_64", PageSize = 4096, Xcr0 = BitConverter.ToUInt64(xstate, 464), XstateSize = (uint)xstate.Length,
                TimeUnixNs = (long)(started - DateTime.UnixEpoch).TotalMicroseconds * 1000,
                Hostname = Environment.MachineName, RootPid = pid,
            }.Write(writer);
            foreach (var kind in KindTable.Ordered)
            {
                ctx.ThrowIfCancelled();
                using (log.Phase(kind.Name)) kind.Checkpoint(ctx);
            }
            writer.Finish();
            log.Info($"image complete: {writer.RecordCount} records, {writer.BytesWritten} bytes");
            ok = true;
            return new CheckpointResult(writer.BytesWritten, writer.RecordCount, frozen.Elapsed);
        }
        finally
        {
            Release(threads, ctx, kill: ok && opt.Kill, log);
            ctx?.Close();
            log.Info($"target frozen for {frozen.Elapsed.TotalMilliseconds:F3} ms");
        }
    }

    /// <summary>Undoes the injection (scratch page, registers) and lets the target go, or kills it.</summary>
    private static void Release(List<(TracedTask Task, UserRegs Regs, ulong SigMask)> threads, CheckpointContext? ctx, bool kill, Log log)
    {
        var leader = threads[0].Task;
        if (!leader.Attached) return;
        try
        {
            if (kill)
            {
                // SIGKILL while still stopped: it never runs another instruction. Its exit (freeing its
                // memory) is not waited for; its parent reaps it.
                leader.Kill();
                foreach (var t in threads) t.Task.TryDetach();
                return;
            }
            if (ctx != null && ctx.Scratch != 0) leader.Inject(Nr.munmap, (long)ctx.Scratch, CheckpointContext.ScratchSize);
            // the other threads first, the leader last
            foreach (var (t, regs, mask) in threads.Skip(1).Append(threads[0]))
            {
                t.RestoreRegsAfterInjection(regs);
                t.SetSigMask(mask);
                t.Detach();
            }
        }
        catch (Exception e)
        {
            log.Error($"releasing pid {leader.Tid}: {e}");
            foreach (var t in threads) t.Task.TryDetach();
            throw;
        }
    }

    /// <summary>Any 0f 05 (syscall) in the vDSO or, failing that, in executable code of the target.</summary>
    private static ulong FindSyscallInstruction(int pid, List<VmaInfo> vmas)
    {
        foreach (var v in vmas.Where(v => v.Exec && v.Path != "[vsyscall]").OrderBy(v => v.Path == "[vdso]" ? 0 : 1))
        {
            var buf = new byte[Math.Min(v.Length, 1UL << 20)];
            try { MemoryCalls.ReadRemote(pid, v.Start, buf); } catch (SyscallException) { continue; }
            for (int i = 0; i + 1 < buf.Length; i++)
                if (buf[i] == 0x0f && buf[i + 1] == 0x05) return v.Start + (ulong)i;
        }
        throw new NotCheckpointableException(pid, "no syscall instruction found in its executable mappings");
    }
}
