using Ckpt.Image;
using Ckpt.Kinds;
using Ckpt.Native;
using Ckpt.Proc;
using Ckpt.Tracing;
using System.Runtime.InteropServices;

namespace Ckpt.Engine;

public sealed class CheckpointOptions
{
    /// <summary>Kill the tree once the image is complete (for migration).</summary>
    public bool Kill { get; init; }
    /// <summary>
    /// Leave every process of the tree stopped (SIGSTOP) once the image is complete (--leave-stopped): a
    /// migration that can still fall back (SIGCONT) or end it (SIGKILL) once the restart elsewhere worked.
    /// </summary>
    public bool LeaveStopped { get; init; }
    public Log Log { get; init; } = Log.None;
    public Func<bool> Cancelled { get; init; } = () => false;
    /// <summary>Save objects shared with processes outside the tree as external (--external).</summary>
    public bool External { get; init; }
    /// <summary>
    /// Leave out TCP connections waiting to be accepted by a listener of the tree that it has not accepted
    /// after a moment (--skip-in-flight); their clients see them reset once the listener is gone.
    /// </summary>
    public bool SkipInFlight { get; init; }
    /// <summary>A cgroup frozen while the tree is seized (--freezer), for trees that fork faster than they are seized.</summary>
    public string? Freezer { get; init; }
    /// <summary>Files ckpt itself writes during the checkpoint (the image, the log), for messages about their side effects.</summary>
    public IReadOnlyList<string> OwnFiles { get; init; } = [];
    /// <summary>
    /// A regular file (not O_APPEND) to write the image into by position, from its offset, instead of
    /// the output stream: the threads that read pages write them too. -1: the stream.
    /// </summary>
    public int PositionalFile { get; init; } = -1;
    /// <summary>With <see cref="PositionalFile"/>: told the bytes written so far, for a progress display.</summary>
    public Action<long>? Progress { get; init; }
}

public sealed record CheckpointResult(long Bytes, long Records, TimeSpan Frozen, int Processes = 1, int Threads = 1, int SkippedInFlight = 0);

/// <summary>
/// Checkpoint of the process tree rooted at a pid: freeze every task of the tree (rescanning until no
/// new task appears), write the tree, then run every state kind in table order for each process, in
/// creation order, into one image stream; then put every task back exactly as it was (or kill the
/// tree with --kill). Any failure leaves every task running unharmed.
/// </summary>
public static class Checkpointer
{
    public static CheckpointResult Run(int pid, Stream output, CheckpointOptions opt)
    {
        // real-time until the tree is frozen (RunTraced): the tracer thread, made by this one, starts so
        // (and this one, waiting for it, is back at once when it ends)
        using var unpreempted = TracerThread.UnpreemptedFromHere();
        ValidateRoot(pid);
        return TracerThread.Run(() => RunTraced(pid, output, opt));
    }

    private static void ValidateRoot(int pid)
    {
        if (pid <= 0 || !Directory.Exists($"/proc/{pid}"))
            throw new CkptException($"no process with pid {pid}", ExitCodes.NoTarget);
        if (pid == Environment.ProcessId) throw new CkptException("ckpt cannot checkpoint itself", ExitCodes.NoTarget);
        ProcStat f;
        try { f = ProcStat.Read(pid); }
        catch (IOException) { throw new CkptException($"no process with pid {pid}", ExitCodes.NoTarget); }
        if (f.IsKernelThread) throw new NotCheckpointableException(pid, "it is a kernel thread");
        int live = LiveThread(pid, f);
        if (live == 0) throw new NotCheckpointableException(pid, "it is a zombie (exited, not yet reaped)");
        if (IsAncestorOfCkpt(pid))
            throw new NotCheckpointableException(pid, "it is an ancestor of ckpt itself (the tree would include ckpt); run ckpt from outside the tree");
        Validate(pid, live);
    }

    /// <summary>Whether <paramref name="pid"/> is <paramref name="root"/> or one of its descendants (parent links in /proc).</summary>
    private static bool Descends(int pid, int root)
    {
        for (int p = pid, steps = 0; p > 1 && steps < 4096; steps++)
        {
            if (p == root) return true;
            try { p = ProcStat.Read(p).PPid; }
            catch (IOException) { return false; }
        }
        return false;
    }

    private static bool IsAncestorOfCkpt(int pid) => Descends(ProcessCalls.GetPPid(), pid);

    /// <summary>
    /// The task through which process <paramref name="pid"/> is read: itself, or, when its main thread
    /// exited while others run (a zombie leader), the first of those; 0 when the whole process exited.
    /// </summary>
    private static int LiveThread(int pid, ProcStat f)
    {
        if (f.State is not ('Z' or 'X')) return pid;
        try { return f.State == 'Z' ? ThreadIds(pid).FirstOrDefault(t => t != pid) : 0; }
        catch (IOException) { return 0; }
    }

    /// <summary>Checks that hold for every live process of the tree, before it is seized (read through <paramref name="live"/>, <see cref="LiveThread"/>).</summary>
    private static void Validate(int pid, int live, int root = 0)
    {
        ProcStatus status;
        try { status = ProcStatus.Read(live); }
        catch (IOException) { throw new CkptException($"no process with pid {pid}", ExitCodes.NoTarget); }
        if (status.Tgid != pid) throw new NotCheckpointableException(pid, $"it is a thread of process {status.Tgid}; checkpoint the process");
        if (status.TracerPid != 0 && status.TracerPid != ProcessCalls.GetTid())   // seized by us already (--freezer)
            throw new NotCheckpointableException(pid, root != 0 && Descends(status.TracerPid, root)
                ? $"it is traced by pid {status.TracerPid}, a process of the tree being checkpointed (a debugger or strace in the tree), and a trace cannot be saved; checkpoint once the tracer has detached or ended"
                : $"it is already traced by pid {status.TracerPid} (a debugger or strace); detach that first");
    }

    private static int[] ThreadIds(int pid)
        => Directory.GetDirectories($"/proc/{pid}/task").Select(d => int.Parse(Path.GetFileName(d))).Order().ToArray();

    private static List<int> Children(int pid)
    {
        var kids = new List<int>();
        foreach (int tid in ThreadIds(pid))
        {
            try
            {
                foreach (var s in Native.FileCalls.ReadText($"/proc/{pid}/task/{tid}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries))
                    kids.Add(int.Parse(s));
            }
            catch (IOException) { }   // the thread exited meanwhile
        }
        kids.Sort();
        return kids;
    }

    /// <summary>Seizes and stops every other thread, rescanning until no new thread appears.</summary>
    private static void SeizeThreads(CheckpointSession s, int pid, List<(TracedTask Task, UserRegs Regs, ulong SigMask)> threads, int exited = 0)
    {
        var seen = threads.Select(t => t.Task.Tid).ToHashSet();
        if (exited != 0) seen.Add(exited);   // a main thread that exited (a zombie: it cannot be traced)
        bool found = true;
        while (found)
        {
            found = false;
            // every new thread is asked to stop before any stop is waited for: a busy thread stops only
            // once it is scheduled, and one at a time that took a time slice each on a busy machine
            var asked = new List<(TracedTask Task, bool Stopped)>();
            foreach (int tid in ThreadIds(pid))
            {
                if (!seen.Add(tid)) continue;
                found = true;
                if (s.Preseized.Remove(tid, out var pre)) { asked.Add((pre, true)); continue; }
                try { asked.Add((TracedTask.SeizeNoWait(tid), false)); }
                catch (SyscallException e) when (e.Errno == Errors.ESRCH) { }   // it exited meanwhile
            }
            foreach (var (t, stopped) in asked)
            {
                if (!stopped)
                {
                    try { t.WaitForInterrupt(); }
                    catch (TaskGoneException) { continue; }
                }
                // every signal is held pending while the task is ours: one dequeued by an injected call
                // would only be known to us; pending, it is saved and delivered once the mask is back
                threads.Add((t, CpuState.FrozenRegs(pid, t, s.Log), t.GetSigMask()));
                t.SetSigMask(ulong.MaxValue);
            }
        }
    }

    /// <summary>
    /// Freezes the tree: seizes each process (all its threads) top-down, reads its children, and
    /// rescans every frozen process until no new child appears. Zombies are recorded, not seized.
    /// </summary>
    private static void Freeze(CheckpointSession s, int root)
    {
        var pending = new Queue<(int Pid, int Parent)>();
        pending.Enqueue((root, 0));
        var known = new HashSet<int> { root };
        var byPid = new Dictionary<int, TreeEntry>();
        var kids = new Dictionary<int, List<int>>();
        while (true)
        {
            while (pending.Count > 0)
            {
                s.ThrowIfCancelled();
                var (pid, parent) = pending.Dequeue();
                var entry = SeizeOne(s, pid, parent, root);
                if (entry == null) { known.Remove(pid); continue; }   // gone (reaped) before we got to it
                byPid[pid] = entry;
                kids.GetValueOrDefault(parent)?.Add(pid);
                if (!entry.Zombie)
                {
                    kids[pid] = new List<int>();
                    foreach (int c in Children(pid))
                        if (known.Add(c)) pending.Enqueue((c, pid));
                }
            }
            // every live process is stopped now: only children it had before the stop can appear
            foreach (var (pid, e) in byPid)
                if (!e.Zombie)
                    foreach (int c in Children(pid))
                        if (known.Add(c)) pending.Enqueue((c, pid));
            if (pending.Count == 0) break;
        }
        // creation order: depth first, a parent before its children, siblings by pid
        void Visit(int pid)
        {
            s.Tree.Add(byPid[pid]);
            if (kids.TryGetValue(pid, out var list)) foreach (int c in list.Order()) Visit(c);
        }
        Visit(root);
        var ctxs = s.Processes.ToDictionary(p => p.ProcessId);
        // (a loop: Select on what Where returns is a generic virtual call, which a Native AOT program
        // resolves at its first use through its type loader, ~0.5 ms of a small checkpoint)
        var ordered = new List<CheckpointContext>(ctxs.Count);
        foreach (var e in s.Tree) if (!e.Zombie) ordered.Add(ctxs[e.Pid]);
        s.Processes.Clear();
        s.Processes.AddRange(ordered);
    }

    /// <summary>
    /// With --freezer: freezes the cgroup, seizes every task of the tree without waiting (a frozen task
    /// stops only once thawed), thaws, and waits for the stops. Forks are impossible meanwhile, so the
    /// tree read under the freeze is complete; <see cref="Freeze"/> then takes these tasks as seized.
    /// </summary>
    private static void PreseizeFrozen(CheckpointSession s, int root, string cgroup)
    {
        using var fz = CgroupFreezer.Open(cgroup);
        if (!fz.Holds(root))
            throw new CkptException($"--freezer: pid {root} is not in {fz.Path}; move the tree into it first (echo PID > {fz.Path}/cgroup.procs)", ExitCodes.Usage);
        fz.Freeze(s.Log);
        var order = new List<TracedTask>();
        try
        {
            var pending = new Queue<int>([root]);
            var seen = new HashSet<int> { root };
            while (pending.Count > 0)
            {
                int pid = pending.Dequeue();
                ProcStat f;
                try { f = ProcStat.Read(pid); } catch (IOException) { continue; }
                int live = LiveThread(pid, f);
                if (live == 0) continue;
                Validate(pid, live, root);
                foreach (int tid in ThreadIds(live))
                {
                    if (tid == pid && live != pid) continue;   // a main thread that exited
                    try { order.Add(s.Preseized[tid] = TracedTask.SeizeNoWait(tid)); }
                    catch (SyscallException e) when (e.Errno == Errors.ESRCH) { }
                }
                foreach (int c in Children(live)) if (seen.Add(c)) pending.Enqueue(c);
            }
        }
        finally { fz.Thaw(); }
        foreach (var t in order)
        {
            try { t.WaitForInterrupt(); }
            catch (TaskGoneException) { s.Preseized.Remove(t.Tid); }
        }
        s.Log.Info($"{order.Count} task(s) seized under the frozen cgroup");
    }

    /// <summary>Seizes one process with all its threads; a zombie is only recorded. Null if it is gone.</summary>
    private static TreeEntry? SeizeOne(CheckpointSession s, int pid, int parent, int root)
    {
        ProcStat f;
        try { f = ProcStat.Read(pid); } catch (IOException) { return null; }
        // the task that stands for the process: its main thread, or one still running if that exited
        int live = LiveThread(pid, f);
        if (live == 0)
        {
            if (pid == root) throw new NotCheckpointableException(pid, "it exited");
            return new TreeEntry(pid, parent, f.Pgrp, f.Session, f.ExitSignal, f.Comm) { Zombie = true, WaitStatus = f.ExitCode, Threads = 0 };
        }
        var leader = f;   // (a zombie leader's stat keeps the process's name and exit signal)
        if (live != pid)
        {
            try { f = ProcStat.Read(live); } catch (IOException) { return SeizeOne(s, pid, parent, root); }   // it ended meanwhile
            s.Log.Debug($"pid {pid}: its main thread exited; thread {live} stands for it");
        }
        if (pid != root) Validate(pid, live, root);
        // a parent waiting for its vfork child to exec or exit cannot be stopped (the interrupt would
        // wait for as long as the child): find such a child before seizing
        foreach (int c in Children(live))
            if (ProcessCalls.Kcmp(live, c, ProcessCalls.KCMP_VM, 0, 0) == 0 && !IsZombie(c))
                throw new VforkPendingException(c, $"it shares the memory of its parent {pid} (a vfork child that has not called exec yet, or a child created with CLONE_VM), which is not supported");
        bool stopped = f.State == 'T';
        TracedTask task;
        try { task = s.Preseized.Remove(live, out var pre) ? pre : TracedTask.SeizeAndStop(live); }
        catch (SyscallException e) when (e.Errno == Errors.EPERM && pid != root && live == pid && IsZombie(pid)) { return SeizeOne(s, pid, parent, root); }
        catch (SyscallException e) when (e.Errno == Errors.EPERM)
        {
            throw new CkptException($"cannot trace pid {pid}: {e.Message}; " + (ProcessCalls.GetEuid() == 0
                ? "the kernel refuses it even to root (a protected process: by a security module or a ptrace policy, or one of another user namespace)"
                : "run ckpt as root or as the process's owner"), ExitCodes.Permission);
        }
        catch (SyscallException e) when (e.Errno == Errors.ESRCH)
        {
            if (live != pid) return SeizeOne(s, pid, parent, root);
            if (pid == root) throw new CkptException($"no process with pid {pid}", ExitCodes.NoTarget);
            return IsZombie(pid) ? SeizeOne(s, pid, parent, root) : null;
        }
        catch (TaskGoneException) when (pid != root || live != pid) { return IsZombie(pid) ? SeizeOne(s, pid, parent, root) : null; }
        var ctx = new CheckpointContext { Session = s, Pid = live, Tgid = live != pid ? pid : 0 };
        ctx.Threads.Add((task, CpuState.FrozenRegs(live, task, s.Log), task.GetSigMask()));
        s.Processes.Add(ctx);   // from here on, released (or killed) with the others
        task.SetSigMask(ulong.MaxValue);
        SeizeThreads(s, live, ctx.Threads, exited: live != pid ? pid : 0);
        f = ProcStat.Read(live);
        // job control's stop signal (a task stopped by SIGTSTP, SIGTTIN or SIGTTOU is stopped so again)
        int stopSignal = !stopped ? 0 : TracedTask.IsJobControlStop(task.EventStopSignal) ? task.EventStopSignal : TracedTask.SIGSTOP;
        if (stopped) s.Log.Debug($"pid {pid} is stopped (signal {task.EventStopSignal})");
        return new TreeEntry(pid, pid == root ? f.PPid : parent, f.Pgrp, f.Session, leader.ExitSignal, leader.Comm)
            { Threads = ctx.Threads.Count, Stopped = stopped, StopSignal = stopSignal, LeaderExited = live != pid };
    }

    /// <summary>Releases every process of a tree frozen but not yet injected into, to freeze it again.</summary>
    private static void LetGo(CheckpointSession s, Log log)
    {
        foreach (var ctx in Enumerable.Reverse(s.Processes)) { Release(ctx, kill: false, log); ctx.Close(); }
        s.Processes.Clear();
        s.Tree.Clear();
    }

    /// <summary>Times a tree whose listeners have connections waiting is let go for a moment to accept them (about 1 s in all).</summary>
    private const int QuiesceRetries = 25;
    /// <summary>
    /// While TCP connections are being opened: about 3.5 s, past the first retransmission of a lost
    /// connection request (1 s) and the second (3 s).
    /// </summary>
    private const int QuiesceRetriesOpening = 75;

    /// <summary>Attempts at freezing a tree that has a vfork child (about 2 s in all).</summary>
    private const int VforkRetries = 110;

    /// <summary>A child shares its parent's memory: refused if it still does after every retry.</summary>
    private sealed class VforkPendingException(int pid, string what)
        : CkptException($"cannot checkpoint pid {pid}: {what}", ExitCodes.NotCheckpointable);

    private static bool IsZombie(int pid)
    {
        try { return ProcStat.Read(pid).State is 'Z' or 'X'; } catch (IOException) { return false; }
    }

    /// <summary>Relations between the tasks of the tree that restart cannot rebuild: refused now, by name.</summary>
    private static void CheckRelations(CheckpointSession s)
    {
        var byPid = s.Tree.ToDictionary(e => e.Pid);
        foreach (var e in s.Tree.Skip(1))
        {
            if (!e.Zombie)
            {
                // (through the tasks that stand for processes whose main thread exited)
                int me = s.Find(e.Pid)?.Pid ?? e.Pid, parent = s.Find(e.PPid)?.Pid ?? e.PPid;
                string? shared = null;
                if (ProcessCalls.Kcmp(me, parent, ProcessCalls.KCMP_VM, 0, 0) == 0)
                    shared = "its memory (a vfork child, or created with CLONE_VM)";
                else if (ProcessCalls.Kcmp(me, parent, ProcessCalls.KCMP_SIGHAND, 0, 0) == 0) shared = "its signal handlers (CLONE_SIGHAND)";
                if (shared != null)
                    throw new NotCheckpointableException(e.Pid, $"it shares {shared} with its parent {e.PPid}, which is not supported");
                // an fd table or fs shared with the parent (clone with CLONE_FILES / CLONE_FS) is shared again
                if (ProcessCalls.Kcmp(me, parent, ProcessCalls.KCMP_FILES, 0, 0) == 0) e.Shares |= ShareFlags.Files;
                if (ProcessCalls.Kcmp(me, parent, ProcessCalls.KCMP_FS, 0, 0) == 0) e.Shares |= ShareFlags.Fs;
            }
        }
        // sessions and groups: as restart will build them (a leader that exited gets a helper there)
        bool AliveOutside(int id) => !byPid.ContainsKey(id) && (ProcessCalls.Kill(id, 0) == 0 || Marshal.GetLastPInvokeError() != Errors.ESRCH);
        try { ProcessTree.Plan(s.Tree, AliveOutside); }
        catch (ProcessTree.TreePlanException e) { throw new NotCheckpointableException(e.Pid, e.Message); }
        // the root's session: one whose leader has exited (a zombie not reaped yet too) is made again at
        // restart (a session id of 0 is one of an ancestor pid namespace's)
        var top = s.Tree[0];
        top.SessionLeaderExited = top.Sid > 0 && top.Sid != top.Pid && !byPid.ContainsKey(top.Sid) && (!AliveOutside(top.Sid) || IsZombie(top.Sid));
    }

    private static CheckpointResult RunTraced(int pid, Stream output, CheckpointOptions opt)
    {
        var log = opt.Log;
        var started = DateTime.UtcNow;
        // real-time until the tree is frozen: each seize and stop is a hand-over between this thread and a
        // thread of the tree, and a tree whose many threads wake often (1000 threads in 1 ms sleep loops on
        // 2 CPUs) kept this one waiting for a CPU at each: 10 to 200 s to freeze it instead of 0.3 s. (The
        // helper threads work at the ordinary policy; the release is real-time again.)
        var unpreempted = TracerThread.Unpreempted();
        // (ptrace round trips are several times slower across CPUs: once the tree is frozen, the work on
        // each process is done from its CPU, FollowCpu; not before: a CPU busy with the tree's own threads
        // could starve this one there, when another CPU has room)
        // 64 KiB staging buffers: what is staged between two page chunks is small, and each buffer handed
        // to the writer thread is replaced by a spare or a new one (1 MiB ones cost a GC per small checkpoint)
        using var writer = opt.PositionalFile >= 0
            ? ImageWriter.Positional(opt.PositionalFile, 64 << 10, opt.Progress)
            : new ImageWriter(output, bufferSize: 64 << 10, background: true);
        var s = new CheckpointSession { Image = writer, Log = log, Cancelled = opt.Cancelled, External = opt.External, SkipInFlight = opt.SkipInFlight, OwnFiles = opt.OwnFiles };
        bool ok = false;
        string? quiesceTable = null;
        var quiesceHeld = new HashSet<string>();
        var frozen = System.Diagnostics.Stopwatch.StartNew();
        // the log's lines wait in memory until the tree's queues are found empty (a log file in a directory
        // the tree watches would queue an inotify event per line)
        var held = log.Hold();
        bool holding = true;
        try
        {
            byte[]? xstate = null;
            bool opening = false;
            // the tree's TCP sockets as the last freeze found them (none after the last moment let go)
            List<(int Pid, int Fd, byte[] Local, int State, uint Waiting)>? tcpAtFreeze = null;
            for (int quiesce = 0; ; quiesce++)
            {
                using (log.Phase("freeze"))
                    for (int attempt = 1; ; attempt++)
                    {
                        try
                        {
                            if (opt.Freezer != null) PreseizeFrozen(s, pid, opt.Freezer);
                            Freeze(s, pid);
                            break;
                        }
                        catch (VforkPendingException e) when (attempt < VforkRetries)
                        {
                            // a child between vfork and exec (a shell or make spawning a command) is gone in
                            // a moment: let the tree go and freeze it again
                            LetGo(s, log);
                            log.Debug($"{e.Message}; freezing again ({attempt})");
                            Thread.Sleep(Math.Min(attempt, 20));
                        }
                        finally
                        {
                            // tasks seized under the freezer and not taken into the tree (exited, or a failure): let go
                            foreach (var t in s.Preseized.Values) t.TryDetach();
                            s.Preseized.Clear();
                        }
                    }
                log.Info($"tree of {s.Tree.Count} process(es), {s.Processes.Sum(p => p.Threads.Count)} thread(s) frozen");
                CheckRelations(s);
                // (before any socket is looked at: sock_diag and the /proc/thread-self/net tables of the tree's namespace)
                NetNamespace.JoinTreeNamespace(s);
                using (log.Phase("read maps and fds"))
                    foreach (var ctx in s.Processes)
                    {
                        ctx.Vmas = MemoryRegion.ReadRegions(ctx);
                        ulong gadget = TracedTask.FindSyscallInstruction(ctx.Pid, ctx.Vmas);
                        if (gadget == 0) throw new NotCheckpointableException(ctx.Pid, "no syscall instruction found in its executable mappings");
                        foreach (var t in ctx.Threads) t.Task.SyscallGadget = gadget;
                        ctx.OpenFiles.AddRange(FdTable.ReadOpenFiles(ctx.Pid));
                        xstate ??= ctx.Task.GetXState();
                    }
                // listeners with connections waiting to be accepted (a server frozen under new connections
                // gathers them): new TCP requests are held back by nf_tables, the tree runs a moment to
                // accept what waits, and it is frozen again; unix listeners and inotify instances with
                // events queued get the same moment
                // (the tree ran since the last look: its queues are looked at again when saved)
                if (quiesce >= (opening ? QuiesceRetriesOpening : QuiesceRetries)) { s.Forget<QueuesAtFreeze>(); break; }
                // (each looked at, so that the inotify and netlink queues are known as they were at this moment)
                s.Set(new QueuesAtFreeze());
                var tcp = InetSocket.TcpSockets(s);
                if (InetSocket.HoldListeners(s, tcp, ref quiesceTable, quiesceHeld)) tcp = InetSocket.TcpSockets(s);
                opening = InetSocket.ConnectionsOpening(s, tcp);
                bool wait = InetSocket.ListenersWaiting(tcp) | opening
                    | UnixSocket.HasWaitingConnections(s) | Inotify.HasQueuedEvents(s) | NetlinkSocket.HasQueuedMessages(s)
                    | InetSocket.HasQueuedRawPackets(s) | PacketSocket.HasQueuedPackets(s);
                if (!wait)
                {
                    InetSocket.SettleConnections(s, tcp);
                    tcpAtFreeze = tcp;
                    break;
                }
                s.Forget<QueuesAtFreeze>();
                log.Debug($"connections wait to be accepted or are being opened, or inotify events to be read, or netlink messages or raw packets to be read: the tree runs a moment to take them ({quiesce + 1})");
                LetGo(s, log);
                Thread.Sleep(Math.Min(5 * (quiesce + 1), 50));
            }
            // nothing reaches the tree's connections from here on until the end of the checkpoint
            InetSocket.HoldConnections(s, tcpAtFreeze ?? InetSocket.TcpSockets(s));
            unpreempted.Dispose();
            held.Dispose();
            holding = false;
            foreach (var ctx in s.Processes)
            {
                FollowCpu(ctx.Pid);
                // executable too, for the batch routine in its last page (many calls per ptrace round
                // trip); where executable anonymous memory is refused, the calls go one by one
                const int rw = MemoryCalls.PROT_READ | MemoryCalls.PROT_WRITE;
                long scratch = ctx.Task.Inject(Nr.mmap, 0, CheckpointContext.ScratchSize, rw | MemoryCalls.PROT_EXEC,
                    MemoryCalls.MAP_PRIVATE | MemoryCalls.MAP_ANONYMOUS, -1, 0);
                bool exec = !(scratch < 0 && scratch > -4096);
                if (!exec)
                    scratch = ctx.Task.Inject(Nr.mmap, 0, CheckpointContext.ScratchSize, rw, MemoryCalls.MAP_PRIVATE | MemoryCalls.MAP_ANONYMOUS, -1, 0);
                if (scratch == -Errors.ENOMEM && AtMapCountLimit(ctx) is { } limit)
                    throw new NotCheckpointableException(ctx.Pid, $"it has {ctx.Vmas.Count} memory mappings, as many as vm.max_map_count ({limit}) allows, and the checkpoint needs one more in it for a moment; raise the limit (sysctl vm.max_map_count={limit + 1024}) and checkpoint again");
                if (scratch < 0 && scratch > -4096) throw new SyscallException("mmap scratch (injected)", (int)-scratch, ctx.Pid);
                ctx.Scratch = (ulong)scratch;
                if (exec)
                {
                    ctx.BatchCode = ctx.Scratch + CheckpointContext.ScratchSize - 4096;
                    SyscallBatch.Install(ctx.Pid, ctx.BatchCode);
                }
                UnixSocket.InstallInFlight(ctx);
            }
            new ImageHeader
            {
                ToolVersion = ToolInfo.Version, KernelRelease = Native.FileCalls.ReadText("/proc/sys/kernel/osrelease").Trim(),
                Architecture = "x86_64", PageSize = 4096, Xcr0 = BitConverter.ToUInt64(xstate!, 464), XstateSize = (uint)xstate!.Length,
                TimeUnixNs = (long)(started - DateTime.UnixEpoch).TotalMicroseconds * 1000,
                Hostname = Environment.MachineName, RootPid = pid,
                XstateLayout = XstateLayout.Of(BitConverter.ToUInt64(xstate!, 464)),
            }.Write(writer);
            // the tree's namespaces (clocks first) before the Tree: the restart makes them before it forks any process of it
            foreach (var ns in KindTable.Ordered.OfType<ITreeNamespace>()) ns.Write(s);
            ProcessTree.Write(s);
            foreach (var ctx in s.Processes)
                foreach (var kind in KindTable.Ordered)
                {
                    if (kind == KindTable.Ordered[0]) FollowCpu(ctx.Pid);
                    ctx.ThrowIfCancelled();
                    using (log.Phase(s.Processes.Count > 1 ? $"{kind.Name} {ctx.Pid}" : kind.Name)) kind.Checkpoint(ctx);
                }
            // a tree about to be killed: once the image is out (a slow output may take a while), its
            // connections must still hold what the image says; only the trailer is left to write then
            string? lockTable = null;
            if (opt.Kill && InetSocket.HasConnections(s))
            {
                writer.Flush();
                InetSocket.VerifyConnections(s);
            }
            // a tree about to be killed with TCP connections or listeners: their peers wait for the restart (an
            // nf_tables table drops their packets meanwhile; it matches only those connections, so a restart
            // that never comes leaves nothing in the way of anything else), and new clients' connection
            // requests are held for a while (they are sent again) instead of being answered with a reset
            var listeners = opt.Kill ? InetSocket.TcpListeners(s).Select(l => l.Local).ToList() : [];
            if (opt.Kill && (InetSocket.HasConnections(s) || listeners.Count > 0)) lockTable = InetSocket.WriteNetworkLock(s);
            writer.Finish();
            // the peers' packets are held back from now until the restart (the tree is killed next)
            if (lockTable != null) InetSocket.LockConnections(s, lockTable, listeners);
            log.Info($"image complete: {writer.RecordCount} records, {writer.BytesWritten} bytes");
            ok = true;
            return new CheckpointResult(writer.BytesWritten, writer.RecordCount, frozen.Elapsed, s.Tree.Count, s.Processes.Sum(p => p.Threads.Count), s.SkippedInFlight);
        }
        finally
        {
            if (holding) held.Dispose();
            Exception? first = null;
            MemoryRegion.EndCheckpoint(s);   // page readers started ahead stop before the processes run again
            // TCP connections read in repair mode leave it before the tree runs again (a thread reading one
            // in repair mode gets EPERM); a tree being killed closes them in it (silently) afterwards
            bool killing = ok && opt.Kill;
            if (!killing) InetSocket.EndCheckpoint(s, killed: false);
            // children first: a parent released early could see a child still stopped (every thread of ckpt
            // real-time from here on: see RaiseAll)
            TracerThread.RaiseAll();
            using (TracerThread.UnpreemptedFromHere())
                foreach (var ctx in Enumerable.Reverse(s.Processes))
                {
                    if (!(ok && opt.Kill)) FollowCpu(ctx.Pid);
                    try { Release(ctx, kill: ok && opt.Kill, log, stop: ok && opt.LeaveStopped); }
                    catch (Exception e) { first ??= e; }
                    ctx.Close();
                }
            if (killing) InetSocket.EndCheckpoint(s, killed: true);
            if (ok && opt.LeaveStopped) WaitStopped(s, log);
            InetSocket.EndHold(s);
            InetSocket.EndQuiesce(s, quiesceTable);
            log.Info($"tree frozen for {frozen.Elapsed.TotalMilliseconds:F3} ms");
            log.GcSummary();
            if (first != null && ok) throw first;
        }
    }

    /// <summary>vm.max_map_count when the process has (nearly) that many mappings, else null.</summary>
    private static long? AtMapCountLimit(CheckpointContext ctx)
    {
        try
        {
            long limit = long.Parse(Native.FileCalls.ReadText("/proc/sys/vm/max_map_count").Trim(), System.Globalization.CultureInfo.InvariantCulture);
            return ctx.Vmas.Count + 2 >= limit ? limit : null;
        }
        catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException) { return null; }
    }

    [ThreadStatic] private static int t_cpu;

    /// <summary>
    /// Moves the tracer thread to the CPU the process last ran on (where a stopped task resumes for an
    /// injected call): ptrace round trips are several times slower across CPUs.
    /// </summary>
    private static void FollowCpu(int pid)
    {
        try
        {
            if (!int.TryParse(ProcStat.Read(pid).Field(39), out int cpu) || cpu + 1 == t_cpu) return;
            if (ProcessCalls.SetAffinity(0, ProcessCalls.SingleCpu(cpu))) t_cpu = cpu + 1;
        }
        catch (IOException) { }
    }

    /// <summary>Waits (up to about a second in all) until every process of the tree has stopped on the SIGSTOP its release left pending.</summary>
    private static void WaitStopped(CheckpointSession s, Log log)
    {
        var until = DateTime.UtcNow.AddSeconds(1);
        foreach (var ctx in s.Processes)
        {
            int pid = ctx.Tgid != 0 ? ctx.Tgid : ctx.Pid;
            while (true)
            {
                char state;
                try { state = ProcStat.Read(ctx.Pid).State; } catch (IOException) { break; }
                if (state is 'T' or 't' or 'Z' or 'X' || DateTime.UtcNow > until) break;
                Thread.Sleep(1);
            }
            log.Debug($"pid {pid} left stopped");
        }
    }

    /// <summary>Undoes the injection (scratch page, registers) and lets the process go, or kills it.</summary>
    /// <param name="stop">leave it stopped: a SIGSTOP is queued while it is still held, and stops it once let go</param>
    private static void Release(CheckpointContext ctx, bool kill, Log log, bool stop = false)
    {
        var threads = ctx.Threads;
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
            foreach (int fd in ctx.InFlightFds) leader.Inject(Nr.close, fd);
            if (ctx.Scratch != 0) leader.Inject(Nr.munmap, (long)ctx.Scratch, CheckpointContext.ScratchSize);
            // every thread that ran injected calls is brought to a fresh stop, all at once while none
            // runs yet (see TracedTask.BeginFreshStop)
            foreach (var (t, _, _) in threads) t.BeginFreshStop();
            foreach (var (t, _, _) in threads) t.EndFreshStop();
            // (queued once no thread runs again while held: a thread resumed before the detach would stop
            // for its tracer on it instead)
            if (stop) ProcessCalls.Kill(ctx.Tgid != 0 ? ctx.Tgid : ctx.Pid, TracedTask.SIGSTOP);
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

}
