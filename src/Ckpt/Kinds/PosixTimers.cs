using System.Runtime.InteropServices;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;
using Ckpt.Tracing;
using static Ckpt.Proc.ProcTimers;

namespace Ckpt.Kinds;

/// <summary>
/// POSIX timers (<c>timer_create</c>): per timer its id, clock, notification (sigev_notify, signal,
/// sigev_value, the thread of a SIGEV_THREAD_ID timer — glibc's SIGEV_THREAD timers signal a helper
/// thread that way), time left and interval. Checkpoint: /proc/PID/timers (<see cref="ProcTimers"/>),
/// then an injected <c>timer_gettime</c> and <c>timer_getoverrun</c> per timer. Restart, in Finish
/// (order 95: after memory, signal handlers, fds and credentials, just before the threads' registers are
/// loaded and the process released): the other threads are created first if a timer names one
/// (<see cref="CpuState.CreateThreads"/>), then every timer is created with its own id —
/// <c>prctl(PR_TIMER_CREATE_RESTORE_IDS, ON)</c> (Linux 6.15+) makes <c>timer_create</c> take the id
/// from the timer_t it is given; without it, timers are created in ascending id order from the vessel's
/// first id, with filler timers created and deleted to skip gaps (refused if an id cannot be reached) —
/// and armed with <c>timer_settime</c> for the time it had left (relative: the time between checkpoint
/// and restart is not counted, and a timer armed with TIMER_ABSTIME comes back relative). A
/// SIGEV_THREAD_ID timer whose thread has exited (it signals no one) is made for a stand-in thread with
/// that tid, made before the credentials change (<see cref="StandIns"/>), which exits once the timers exist.
/// CPU-time clocks are restored as they are (CLOCK_PROCESS_CPUTIME_ID and pthread_getcpuclockid clocks
/// of the process's own threads count the CPU time used from the restart on); a CLOCK_THREAD_CPUTIME_ID
/// timer of a multi-threaded process (/proc does not tell which thread's time it measures), a timer on
/// the CPU clock of another process and one on a dynamic (fd) clock are refused at checkpoint.
/// </summary>
public sealed class PosixTimers : IStateKind
{
    public static readonly PosixTimers Instance = new();
    public string Name => "posix-timers";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.PosixTimers];
    public int FinishOrder => 95;

    public const int PR_TIMER_CREATE_RESTORE_IDS = 77, PR_TIMER_CREATE_RESTORE_IDS_OFF = 0, PR_TIMER_CREATE_RESTORE_IDS_ON = 1;
    public const int CLOCK_PROCESS_CPUTIME_ID = 2, CLOCK_THREAD_CPUTIME_ID = 3;
    /// <summary>Without PR_TIMER_CREATE_RESTORE_IDS: at most this many filler timers to reach the saved ids.</summary>
    public const int MaxFillers = 4096;

    /// <summary>One saved timer: what /proc showed, and what timer_gettime/getoverrun returned (ns).</summary>
    public readonly record struct Saved(int Id, int Clock, int Notify, int Signal, ulong SigValue, int Target, long Value, long Interval, int Overrun);

    private sealed class SavedTimers { public readonly List<Saved> List = new(); }

    public void Checkpoint(CheckpointContext ctx)
    {
        int pid = ctx.Pid;
        if (!ProcTimers.Available(pid))
        {
            ctx.Log.Info($"warning: pid {pid}: this kernel has no /proc/PID/timers (CONFIG_CHECKPOINT_RESTORE): POSIX timers, if any, are not saved");
            return;
        }
        List<ProcTimers.Timer> timers;
        try { timers = ProcTimers.Read(pid); }
        catch (FormatException e) { throw new NotCheckpointableException(pid, $"cannot parse /proc/{pid}/timers: {e.Message}"); }
        if (timers.Count == 0) return;   // no record: images without timers stay readable by older versions
        var tids = ctx.Threads.Select(t => t.Task.Tid).ToHashSet();
        var p = new PayloadWriter().U32((uint)timers.Count);
        foreach (var t in timers)
        {
            Check(pid, t, tids);
            ctx.Inject($"timer_gettime({t.Id})", Nr.timer_gettime, t.Id, (long)ctx.Scratch);
            var its = MemoryMarshal.Cast<byte, long>(ctx.ReadScratch(0, 32).AsSpan());
            long interval = its[0] * 1_000_000_000 + its[1], value = its[2] * 1_000_000_000 + its[3];
            int overrun = (int)ctx.Inject($"timer_getoverrun({t.Id})", Nr.timer_getoverrun, t.Id);
            p.I32(t.Id).I32(t.ClockId).I32(t.Notify).I32(t.Signal).U64(t.Value).I32(t.NotifyPid)
                .I64(value).I64(interval).I32(overrun);
            ctx.Log.Debug($"pid {pid}: POSIX timer {t.Id}: {ClockName(t.ClockId)}, {NotifyText(t.Notify, t.Signal, t.Value, t.NotifyPid)}, value {Seconds(value)}, interval {Seconds(interval)}");
        }
        ctx.Image.Write(RecordKind.PosixTimers, p);
    }

    /// <summary>Refuses what the restart could not rebuild faithfully.</summary>
    private static void Check(int pid, in ProcTimers.Timer t, HashSet<int> tids)
    {
        // (a timer that signals a thread that has exited signals no one: restart makes it for a thread
        // with that tid that exits once the timer exists, StandIns)
        if ((t.Notify & ~SIGEV_THREAD_ID) is not (SIGEV_SIGNAL or SIGEV_NONE or SIGEV_THREAD) || t.Notify == (SIGEV_NONE | SIGEV_THREAD_ID))
            throw new NotCheckpointableException(pid, $"POSIX timer {t.Id} has an unknown notification {t.Notify}");
        if (t.ClockId >= 0) return;
        var (cpid, perThread, type) = DecodeCpuClock(t.ClockId);
        if (type == CLOCKFD)
            throw new NotCheckpointableException(pid, $"POSIX timer {t.Id} runs on a dynamic (fd) clock ({t.ClockId})");
        if (perThread)
        {
            if (cpid == 0 && tids.Count > 1)
                throw new NotCheckpointableException(pid, $"POSIX timer {t.Id} measures CLOCK_THREAD_CPUTIME_ID of the thread that created it, and this process has {tids.Count} threads: which one is not visible");
            if (cpid != 0 && !tids.Contains(cpid))
                throw new NotCheckpointableException(pid, $"POSIX timer {t.Id} measures the CPU time of thread {cpid}, which is not a thread of this process");
        }
        else if (cpid != 0 && cpid != pid)
            throw new NotCheckpointableException(pid, $"POSIX timer {t.Id} measures the CPU time of another process, pid {cpid}");
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint n = r.U32();
        var list = ctx.State<SavedTimers>().List;
        for (uint i = 0; i < n; i++)
        {
            var s = new Saved(r.I32(), r.I32(), r.I32(), r.I32(), r.U64(), r.I32(), r.I64(), r.I64(), r.I32());
            if (list.Count > 0 && s.Id <= list[^1].Id)
                throw new ImageFormatException($"PosixTimers record at offset {rec.Offset}: timer ids are not in ascending order ({list[^1].Id}, then {s.Id})");
            if (s.Id < 0) throw new ImageFormatException($"PosixTimers record at offset {rec.Offset}: timer id {s.Id}");
            list.Add(s);
        }
        r.End();
    }

    public void Finish(RestoreContext ctx)
    {
        var list = ctx.State<SavedTimers>().List;
        if (list.Count == 0) return;
        // a timer that signals a thread, or measures one's CPU time, needs that thread to exist; one that
        // signals a thread that had exited, a thread with that tid for the moment (StandIns)
        var tids = CpuState.SavedTids(ctx).ToHashSet();
        bool needThreads = false;
        foreach (var t in list)
        {
            int thread = (t.Notify & SIGEV_THREAD_ID) != 0 ? t.Target
                : t.Clock < 0 && DecodeCpuClock(t.Clock) is { PerThread: true, Pid: var c } && c != 0 ? c : ctx.Pid;
            if (thread == ctx.Pid) continue;
            if (!tids.Contains(thread))
            {
                if ((t.Notify & SIGEV_THREAD_ID) == 0 || thread <= 0)
                    throw new ImageFormatException($"POSIX timer {t.Id} of pid {ctx.Pid} names thread {thread}, which the image does not hold");
                continue;
            }
            needThreads = true;
        }
        if (needThreads) CpuState.CreateThreads(ctx);
        var standIns = StandIns(ctx);

        long on = ctx.Vessel.Inject(Nr.prctl, PR_TIMER_CREATE_RESTORE_IDS, PR_TIMER_CREATE_RESTORE_IDS_ON);
        bool byId = on == 0;
        if (!byId) ctx.Log.Info($"pid {ctx.Pid}: prctl(PR_TIMER_CREATE_RESTORE_IDS): {Errors.Describe((int)-on)}; POSIX timers are created in id order");
        foreach (var t in list) Create(ctx, t, byId);
        if (byId) ctx.Inject("prctl(PR_TIMER_CREATE_RESTORE_IDS, OFF)", Nr.prctl, PR_TIMER_CREATE_RESTORE_IDS, PR_TIMER_CREATE_RESTORE_IDS_OFF);
        // the threads standing for exited ones exit: their timers signal no one again, as they did
        foreach (var t in standIns)
        {
            try { t.Inject(Nr.exit, 0); }
            catch (TaskGoneException) { }
        }
        // armed last, all together, so that they start as close as possible to the release
        foreach (var t in list)
        {
            if (t.Value == 0 && t.Interval == 0) continue;   // disarmed (or an expired one-shot SIGEV_NONE timer)
            var its = new long[] { t.Interval / 1_000_000_000, t.Interval % 1_000_000_000, t.Value / 1_000_000_000, t.Value % 1_000_000_000 };
            ulong a = ctx.PutScratch(0, MemoryMarshal.AsBytes(its.AsSpan()));
            ctx.Inject($"timer_settime({t.Id})", Nr.timer_settime, t.Id, 0, (long)a, 0);
        }
        ctx.Log.Debug($"pid {ctx.Pid}: {list.Count} POSIX timer(s) restored{(byId ? "" : " (in id order)")}");
    }

    private sealed class MadeStandIns { public List<TracedTask>? List; }

    /// <summary>
    /// A thread of the process for each tid a timer signals whose thread had exited (a SIGEV_THREAD_ID
    /// timer outlives the thread it was made for, and signals no one then): made with that tid, traced
    /// and stopped, for <c>timer_create</c> to accept the tid; it exits once the timers exist. Made once:
    /// by Credentials before the process's own credentials take away the privilege clone3's set_tid needs.
    /// </summary>
    public static List<TracedTask> StandIns(RestoreContext ctx)
    {
        var state = ctx.State<MadeStandIns>();
        if (state.List != null) return state.List;
        var tids = CpuState.SavedTids(ctx).ToHashSet();
        var exited = new SortedSet<int>();
        foreach (var t in ctx.State<SavedTimers>().List)
            if ((t.Notify & SIGEV_THREAD_ID) != 0 && t.Target > 0 && t.Target != ctx.Pid && !tids.Contains(t.Target)) exited.Add(t.Target);
        var made = state.List = new List<TracedTask>();
        foreach (int tid in exited)
        {
            // in a pid namespace of the tree, where the exited thread's id there is not known: a thread with
            // ids of its own stands for it (the timer signals no one either way)
            if (PidNamespace.Current is { } layout && layout.NsOf(ctx.Pid) > 0 && !layout.Tasks.ContainsKey(tid))
            {
                var any = CpuState.CreateThread(ctx, 0);
                layout.Aliases[tid] = any.Tid;
                made.Add(any);
                ctx.Log.Debug($"pid {ctx.Pid}: thread {any.Tid} stands for exited thread {tid} a POSIX timer signals (its id in the process's pid namespace is not known)");
                continue;
            }
            made.Add(CpuState.CreateThread(ctx, tid, "stop the process that holds it (a POSIX timer of the process signals a thread of that id, which had exited)"));
            ctx.Log.Debug($"pid {ctx.Pid}: thread {tid} stands for an exited thread a POSIX timer signals");
        }
        return made;
    }

    /// <summary>The kernel's struct sigevent (64 bytes on x86-64): value, signo, notify, then the tid.</summary>
    private static byte[] SigEvent(in Saved t, int viewer)
    {
        var b = new byte[64];
        BitConverter.TryWriteBytes(b.AsSpan(0), t.SigValue);
        BitConverter.TryWriteBytes(b.AsSpan(8), t.Signal);
        BitConverter.TryWriteBytes(b.AsSpan(12), t.Notify);
        // (the thread as the process's pid namespace sees it)
        if ((t.Notify & SIGEV_THREAD_ID) != 0) BitConverter.TryWriteBytes(b.AsSpan(16), PidNamespace.Seen(viewer, t.Target));
        return b;
    }

    private static void Create(RestoreContext ctx, in Saved t, bool byId)
    {
        ulong ev = ctx.PutScratch(0, SigEvent(t, ctx.Vessel.Tid));
        ulong idp = ctx.PutScratch(64, BitConverter.GetBytes(t.Id));
        for (int fillers = 0; ; fillers++)
        {
            long rc = ctx.Vessel.Inject(Nr.timer_create, t.Clock, (long)ev, (long)idp);
            if (rc < 0)
                throw new CkptException($"restart: cannot create POSIX timer {t.Id} of pid {ctx.Pid} ({ClockName(t.Clock)}): timer_create: {Errors.Describe((int)-rc)}",
                    rc == -Errors.EBUSY ? ExitCodes.RestoreConflict : ExitCodes.Internal);
            int got = BitConverter.ToInt32(ctx.GetScratch(64, 4));
            if (got == t.Id) return;
            if (byId || got > t.Id || fillers >= MaxFillers)
                throw new CkptException($"restart: POSIX timer {t.Id} of pid {ctx.Pid} cannot get its id back (timer_create gave {got}; " +
                    (byId ? "PR_TIMER_CREATE_RESTORE_IDS was ignored)" : "this kernel lacks PR_TIMER_CREATE_RESTORE_IDS, Linux 6.15+)"), ExitCodes.RestoreConflict);
            // a filler: the next id is one higher (the kernel hands ids out in increasing order)
            ctx.Inject($"timer_delete({got})", Nr.timer_delete, got);
            ctx.PutScratch(64, BitConverter.GetBytes(t.Id));
        }
    }

    public static string ClockName(int clock)
    {
        if (clock >= 0)
            return clock switch
            {
                CLOCK_PROCESS_CPUTIME_ID => "CLOCK_PROCESS_CPUTIME_ID", CLOCK_THREAD_CPUTIME_ID => "CLOCK_THREAD_CPUTIME_ID",
                11 => "CLOCK_TAI", _ => TimerFd.ClockName(clock),
            };
        var (pid, perThread, type) = DecodeCpuClock(clock);
        if (type == CLOCKFD) return $"fd clock {clock}";
        string kind = type switch { 0 => "prof", 1 => "virt", _ => "sched" };
        if (pid == 0) return perThread ? (type == 2 ? "CLOCK_THREAD_CPUTIME_ID" : $"thread CPU clock ({kind})") : (type == 2 ? "CLOCK_PROCESS_CPUTIME_ID" : $"process CPU clock ({kind})");
        return perThread ? $"CPU clock of thread {pid} ({kind})" : $"CPU clock of pid {pid} ({kind})";
    }

    public static string NotifyText(int notify, int signal, ulong value, int target)
    {
        string to = (notify & SIGEV_THREAD_ID) != 0 ? $"thread {target}" : $"pid {target}";
        return (notify & ~SIGEV_THREAD_ID) switch
        {
            SIGEV_NONE => "SIGEV_NONE",
            SIGEV_THREAD => $"SIGEV_THREAD signal {signal} value 0x{value:x} to {to}",
            _ => $"{((notify & SIGEV_THREAD_ID) != 0 ? "SIGEV_THREAD_ID" : "SIGEV_SIGNAL")} signal {signal} value 0x{value:x} to {to}",
        };
    }

    private static string Seconds(long ns) => $"{ns / 1_000_000_000}.{ns % 1_000_000_000:D9}s";

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint n = r.U32();
        var list = info.List("posix_timers");
        for (uint i = 0; i < n; i++)
        {
            int id = r.I32(), clock = r.I32(), notify = r.I32(), signal = r.I32();
            ulong value = r.U64();
            int target = r.I32();
            long left = r.I64(), interval = r.I64();
            int overrun = r.I32();
            var t = new InfoNode().Set("id", id).Set("clock", ClockName(clock)).Set("notify", NotifyText(notify, signal, value, target))
                .Set("armed", left != 0).Set("value", Seconds(left)).Set("interval", Seconds(interval));
            if (overrun != 0) t.Set("overrun", overrun);
            list.Add(t);
        }
    }
}
