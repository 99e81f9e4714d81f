using System.Text.RegularExpressions;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>
/// timerfd (<c>anon_inode:[timerfd]</c>): clock, settime flags, time left before the next expiration,
/// interval and the expirations not yet read (fdinfo <c>clockid</c>, <c>settime flags</c>, <c>it_value</c>,
/// <c>it_interval</c>, <c>ticks</c>), O_NONBLOCK. Restart: injected <c>timerfd_create</c>, then
/// <c>timerfd_settime</c>:
/// <list type="bullet">
/// <item>a relative timer gets the time it had left at checkpoint (it does not run while the process
/// is not: the gap between checkpoint and restart is not counted);</item>
/// <item>an absolute CLOCK_REALTIME(_ALARM) timer gets its original deadline back (checkpoint wall time
/// plus the time left), with TFD_TIMER_CANCEL_ON_SET if it had it; an absolute timer on another clock
/// gets the time left from now (those clocks do not survive a reboot or a move);</item>
/// <item>a periodic timer that expired and was not read yet (fdinfo shows it_value 0, ticks &gt; 0) is
/// armed for one interval from now (the phase of its period is lost).</item>
/// </list>
/// Expirations not read (ticks) are put back with the TFD_IOC_SET_TICKS ioctl (after timerfd_settime,
/// which zeroes them); a read then returns exactly that count (the overruns the kernel would have added
/// for time elapsed before the checkpoint are not counted).
/// </summary>
public sealed partial class TimerFd : IFileKind
{
    public static readonly TimerFd Instance = new();
    public string Name => "timerfd";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.TimerFd];
    public int FinishOrder => 42;

    public bool Handles(in OpenFile f) => f.Link == "anon_inode:[timerfd]";

    public void Checkpoint(CheckpointContext ctx) { }

    [GeneratedRegex(@"^\(\s*(\d+),\s*(\d+)\)$")]
    private static partial Regex TimespecRe();

    private static long ParseTimespec(ProcFdInfo info, string key)
    {
        var m = TimespecRe().Match(info.Require(key));
        if (!m.Success) throw new NotCheckpointableException(info.Pid, $"fd {info.Fd}: cannot parse '{key}: {info.Field(key)}' in its fdinfo");
        return ProcFdInfo.Dec(m.Groups[1].Value) * 1_000_000_000 + ProcFdInfo.Dec(m.Groups[2].Value);
    }

    public void CheckpointFile(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        var info = ProcFdInfo.Read(ctx.Pid, f.Fd);
        long wall = EventCalls.ClockNs(EventCalls.CLOCK_REALTIME);
        int clock = (int)ProcFdInfo.Dec(info.Require("clockid"));
        ulong ticks = ProcFdInfo.UDec(info.Require("ticks"));
        int setFlags = ProcFdInfo.Oct(info.Require("settime flags"));
        long value = ParseTimespec(info, "it_value"), interval = ParseTimespec(info, "it_interval");
        ctx.Image.Write(RecordKind.TimerFd, new PayloadWriter().U32(objref).I32(f.Flags & ~FileCalls.O_CLOEXEC).I32(clock)
            .I32(setFlags).U64(ticks).I64(value).I64(interval).I64(wall));
    }

    public unsafe void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint objref = r.U32(); int flags = r.I32(); int clock = r.I32(); int setFlags = r.I32(); ulong ticks = r.U64();
        long value = r.I64(), interval = r.I64(), wall = r.I64();
        r.End();
        int fd = (int)ctx.Inject("timerfd_create", Nr.timerfd_create, clock, FileCalls.O_CLOEXEC | (flags & FileCalls.O_NONBLOCK));
        if (value == 0 && interval != 0) value = ticks > 0 ? interval : 1;   // expired, not yet read / due now
        if (value != 0)
        {
            int tflags = 0;
            if ((setFlags & EventCalls.TFD_TIMER_ABSTIME) != 0)
            {
                tflags = setFlags & (EventCalls.TFD_TIMER_ABSTIME | EventCalls.TFD_TIMER_CANCEL_ON_SET);
                value += clock is EventCalls.CLOCK_REALTIME or EventCalls.CLOCK_REALTIME_ALARM ? wall : EventCalls.ClockNs(clock);
            }
            var its = new long[] { interval / 1_000_000_000, interval % 1_000_000_000, value / 1_000_000_000, value % 1_000_000_000 };
            ulong p = ctx.PutScratch(0, System.Runtime.InteropServices.MemoryMarshal.AsBytes(its.AsSpan()));
            ctx.Inject("timerfd_settime", Nr.timerfd_settime, fd, tflags, (long)p, 0);
        }
        if (ticks > 0)
        {
            ulong p = ctx.PutScratch(0, BitConverter.GetBytes(ticks));
            long rc = ctx.Vessel.Inject(Nr.ioctl, fd, EventCalls.TFD_IOC_SET_TICKS, (long)p);
            if (rc < 0)
                throw new CkptException($"restart: cannot put back the {ticks} unread expiration(s) of a timerfd: ioctl(TFD_IOC_SET_TICKS): {Errors.Describe((int)-rc)} (this kernel lacks CONFIG_CHECKPOINT_RESTORE?)", ExitCodes.RestoreConflict);
        }
        ctx.Files.SetRestored(objref, fd);
    }

    public void Finish(RestoreContext ctx) { }

    public static string ClockName(int clock) => clock switch
    {
        EventCalls.CLOCK_REALTIME => "CLOCK_REALTIME", EventCalls.CLOCK_MONOTONIC => "CLOCK_MONOTONIC",
        EventCalls.CLOCK_BOOTTIME => "CLOCK_BOOTTIME", EventCalls.CLOCK_REALTIME_ALARM => "CLOCK_REALTIME_ALARM",
        EventCalls.CLOCK_BOOTTIME_ALARM => "CLOCK_BOOTTIME_ALARM", _ => $"clock {clock}",
    };

    private static string Seconds(long ns) => $"{ns / 1_000_000_000}.{ns % 1_000_000_000:D9}s";

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint objref = r.U32(); int flags = r.I32(); int clock = r.I32(); int setFlags = r.I32(); ulong ticks = r.U64();
        long value = r.I64(), interval = r.I64();
        info.Child("files").Set(objref.ToString(), new InfoNode().Set("kind", "timerfd").Set("path", "anon_inode:[timerfd]")
            .Set("flags", RegularFile.OpenFlags(flags)).Set("clock", ClockName(clock))
            .Set("armed", value != 0 || interval != 0)
            .Set("value", Seconds(value)).Set("interval", Seconds(interval)).Set("ticks", ticks)
            .Set("settime_flags", ((setFlags & 1) != 0 ? "TFD_TIMER_ABSTIME" : "0") + ((setFlags & 2) != 0 ? "|TFD_TIMER_CANCEL_ON_SET" : "")));
    }
}
