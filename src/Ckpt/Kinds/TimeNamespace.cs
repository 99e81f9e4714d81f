using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// The tree's CLOCK_MONOTONIC and CLOCK_BOOTTIME. They count from the machine's boot, so after a restart
/// on another machine (or after a reboot) they would jump, backwards as likely as forwards: a sleep until
/// an absolute monotonic time, a timer or a timeout computed from one, would last hours or end at once.
/// <para>
/// Checkpoint: one Clocks record, before the Tree record: the machine's boot id, its two clocks and the
/// wall clock at the freeze, and the offsets of the tree's time namespace when it has one of its own
/// (a tree restarted in one, or started under <c>unshare --time</c>: every process of the tree must share
/// it; /proc/PID/timens_offsets).
/// </para>
/// <para>
/// Restart: on the machine and boot of the checkpoint, a tree that had no time namespace of its own gets
/// none (its clocks went on like everyone's); one that had gets a new one with the same offsets. After a
/// reboot or on another machine, or with <c>restart --time-namespace</c>, the tree gets a time namespace
/// whose clocks read what they read at the checkpoint plus the time the wall clock says passed since:
/// as if the tree had run on. The namespace is made from the root's fresh vessel before any other
/// vessel is forked from it (<see cref="Enter"/>), so that every process of the tree is in it.
/// </para>
/// </summary>
public sealed class TimeNamespace : ITreeNamespace
{
    public static readonly TimeNamespace Instance = new();
    public string Name => "time namespace";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.Clocks];
    public int FinishOrder => 0;

    private const int CLOCK_REALTIME = 0, CLOCK_MONOTONIC = 1, CLOCK_BOOTTIME = 7;
    private const long CLONE_NEWTIME = 0x80;
    private const int NsPerSec = 1_000_000_000;

    public readonly record struct Clocks(string BootId, long Realtime, long Monotonic, long Boottime, long MonotonicOffset, long BoottimeOffset);

    /// <summary>This boot's id; "" where it cannot be read (the boot is then taken to be the same).</summary>
    private static string BootId()
    {
        try { return Native.FileCalls.ReadText("/proc/sys/kernel/random/boot_id").Trim(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return ""; }
    }

    /// <summary>Parses /proc/PID/timens_offsets ("monotonic S NS", "boottime S NS") into nanoseconds.</summary>
    public static (long Monotonic, long Boottime) ParseOffsets(string text)
    {
        long mono = 0, boot = 0;
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length != 3 || !long.TryParse(f[1], out long sec) || !long.TryParse(f[2], out long nsec))
                throw new FormatException($"cannot parse the time namespace offset '{line}'");
            long ns = sec * NsPerSec + nsec;
            if (f[0] is "monotonic" or "1") mono = ns;
            else if (f[0] is "boottime" or "7") boot = ns;
        }
        return (mono, boot);
    }

    /// <summary>The two lines written to timens_offsets for offsets in nanoseconds (nanoseconds always 0..999999999).</summary>
    public static string FormatOffsets(long monotonic, long boottime)
    {
        static string One(string clock, long ns) => $"{clock} {Math.DivRem(ns, NsPerSec) switch { (var q, var r) when r < 0 => $"{q - 1} {r + NsPerSec}", (var q, var r) => $"{q} {r}" }}";
        return One("monotonic", monotonic) + "\n" + One("boottime", boottime) + "\n";
    }

    /// <summary>
    /// Every process of the frozen tree is in the root's time namespace, and none has made another for its
    /// children (unshare): the one namespace is saved by its offsets. True when it is not ckpt's.
    /// </summary>
    private static bool OwnNamespace(CheckpointSession s)
    {
        var (root, own) = s.TreeNamespace("time", "time");
        if (root == null) return false;   // a kernel without time namespaces
        foreach (var ctx in s.Processes)
        {
            string? children = FileCalls.ReadLink($"/proc/{ctx.Pid}/ns/time_for_children");
            if (children != root)
                throw new NotCheckpointableException(ctx.Pid, $"it made a time namespace for its future children ({children}; unshare), which is not saved");
        }
        return own;
    }

    /// <summary>Writes the Clocks record (once, before the Tree record); the tree is frozen.</summary>
    public void Write(CheckpointSession s)
    {
        bool ownNamespace = OwnNamespace(s);
        var (mono, boot) = ownNamespace ? ParseOffsets(Native.FileCalls.ReadText($"/proc/{s.Tree[0].Pid}/timens_offsets")) : (0, 0);
        var c = new Clocks(BootId(), EventCalls.ClockNs(CLOCK_REALTIME), EventCalls.ClockNs(CLOCK_MONOTONIC), EventCalls.ClockNs(CLOCK_BOOTTIME), mono, boot);
        var p = new PayloadWriter().Str(c.BootId).I64(c.Realtime).I64(c.Monotonic).I64(c.Boottime).I64(c.MonotonicOffset).I64(c.BoottimeOffset);
        // optional: an older reader restarts the tree with the machine's clocks, as it did before
        s.Image.Write(RecordKind.Clocks, p, RecordFlags.Optional);
        if (ownNamespace) s.Log.Info($"the tree is in a time namespace of its own (offsets: monotonic {mono} ns, boottime {boot} ns)");
    }

    private static Clocks Read(Record rec)
    {
        var r = rec.Reader();
        var c = new Clocks(r.Str(), r.I64(), r.I64(), r.I64(), r.I64(), r.I64());
        r.End();
        return c;
    }

    /// <summary>The offsets of the time namespace the tree is to run in, decided by <see cref="Restore"/>.</summary>
    private sealed class Pending { public long Monotonic, Boottime; public string Why = ""; }

    /// <summary>
    /// Before the first vessel is forked: decides whether the tree needs a time namespace of its own and
    /// with which offsets (see the class summary); <see cref="Enter"/> makes it once the root's vessel exists.
    /// </summary>
    public void Restore(RestoreSession s, Record rec)
    {
        var c = Read(rec);
        string now = BootId();
        bool sameBoot = c.BootId == now || c.BootId == "" || now == "";
        long mono, boot;
        string why;
        if (sameBoot && !s.Options.TimeNamespace)
        {
            if (c.MonotonicOffset == 0 && c.BoottimeOffset == 0) return;
            (mono, boot, why) = (c.MonotonicOffset, c.BoottimeOffset, "the tree had a time namespace of its own");
        }
        else
        {
            // the tree's clocks at the checkpoint, plus the time that passed since by the wall clock
            long passed = Math.Max(0, EventCalls.ClockNs(CLOCK_REALTIME) - c.Realtime);
            mono = c.Monotonic + c.MonotonicOffset + passed - EventCalls.ClockNs(CLOCK_MONOTONIC);
            boot = c.Boottime + c.BoottimeOffset + passed - EventCalls.ClockNs(CLOCK_BOOTTIME);
            why = sameBoot ? "asked for (--time-namespace)" : "the checkpoint was taken on another machine or before a reboot";
        }
        s.Set(new Pending { Monotonic = mono, Boottime = boot, Why = why });
    }

    /// <summary>
    /// Puts the root's fresh vessel (single-threaded, not yet emptied) into a new time namespace with the
    /// offsets decided: injected unshare(CLONE_NEWTIME) makes it for the vessel's children, its offsets are
    /// written to /proc/PID/timens_offsets before anyone is in it, and injected setns moves the vessel in
    /// (the kernel then gives it the namespace's vDSO clock page). Every other process of the tree is
    /// forked from the vessels, inside it. A kernel or user that cannot make one is logged: the tree then
    /// gets the machine's clocks.
    /// </summary>
    public void Enter(RestoreContext root)
    {
        var s = root.Session;
        if (s.Existing<Pending>() is not { } p) return;
        if (UserNamespace.Current?.Owns("time") == true)
        {
            // owned by the tree's user namespace: made inside it by a helper, whose offsets ckpt writes, then entered
            int made = UserNamespace.MakeOwned(s, (int)CLONE_NEWTIME, "time_for_children",
                before: helper => File.WriteAllText($"/proc/{helper}/timens_offsets", FormatOffsets(p.Monotonic, p.Boottime)));
            long joined = UserNamespace.Enter(root.Vessel, Engine.Vessel.Scratch, made, (int)CLONE_NEWTIME);
            s.CloseOwn(made);
            if (joined < 0) throw new CkptException($"restart: cannot enter the tree's time namespace (setns): {Errors.Describe((int)-joined)}", ExitCodes.RestoreConflict);
            s.Log.Info($"the tree runs in a time namespace of its user namespace ({p.Why}): offsets monotonic {p.Monotonic} ns, boottime {p.Boottime} ns");
            return;
        }
        long r = root.Vessel.Inject(Nr.unshare, CLONE_NEWTIME);
        if (r < 0)
        {
            s.Log.Error($"cannot make a time namespace for the tree ({p.Why}): unshare: {Errors.Describe((int)-r)}; its clocks are the machine's");
            return;
        }
        try { File.WriteAllText($"/proc/{root.Pid}/timens_offsets", FormatOffsets(p.Monotonic, p.Boottime)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // (CAP_SYS_TIME is needed) the namespace keeps the machine's clocks; entered all the same, so that
            // the root and the processes forked from its vessel share one
            s.Log.Error($"cannot set the clocks of the tree's time namespace ({p.Why}): {e.Message}; its clocks are the machine's");
            p = new Pending { Why = p.Why };
        }
        int fd = root.OpenInVessel("/proc/self/ns/time_for_children", FileCalls.O_RDONLY | FileCalls.O_CLOEXEC);
        long entered = root.Vessel.Inject(Nr.setns, fd, CLONE_NEWTIME);
        root.Vessel.Inject(Nr.close, fd);
        if (entered < 0) throw new CkptException($"restart: cannot enter the tree's time namespace (setns): {Errors.Describe((int)-entered)}", ExitCodes.RestoreConflict);
        s.Log.Info($"the tree runs in a time namespace ({p.Why}): offsets monotonic {p.Monotonic} ns, boottime {p.Boottime} ns");
    }

    public void Describe(Record rec, InfoNode info)
    {
        var c = Read(rec);
        info.Child("clocks").Set("boot_id", c.BootId).Set("monotonic_ns", c.Monotonic).Set("boottime_ns", c.Boottime)
            .Set("time_namespace_offsets_ns", $"monotonic {c.MonotonicOffset}, boottime {c.BoottimeOffset}");
    }
}
