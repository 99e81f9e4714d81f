using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>
/// Cgroup membership: each line of /proc/PID/cgroup (hierarchy id, controllers, path; cgroup v2 is
/// <c>0::/path</c>). Restart: right after the vessel takes its Process record, before its memory is
/// filled (pages are charged to the memory cgroup of the process that gets them), the vessel is written
/// into <c>cgroup.procs</c> of every hierarchy where it is not already in the saved cgroup. The
/// directory is found through the hierarchy's mount (matched by controllers, or cgroup2) and made when it
/// no longer exists (a cgroup removed with its last process, or a migration to another machine). The
/// limits and weights of each cgroup (<see cref="Settings"/>, those its directory has) are saved with it
/// and written into a cgroup made again, before the process joins it (a v1 cpuset cannot be joined
/// before it has CPUs and memory nodes); a cgroup that exists is left as its owner set it. A v2 controller
/// the parent does not enable for its children is logged. A hierarchy not mounted here,
/// or a cgroup the vessel cannot join, is logged and the process stays where it is. Threads of a process
/// in different v1 cgroups are logged, and restored in the process's.
/// </summary>
public sealed class Cgroups : IStateKind
{
    public static readonly Cgroups Instance = new();
    public string Name => "cgroups";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.Cgroups];
    public int FinishOrder => 0;

    public readonly record struct Membership(uint Hierarchy, string Controllers, string Path);

    /// <summary>Parses /proc/PID/cgroup ("ID:CONTROLLERS:PATH" per line).</summary>
    public static List<Membership> Parse(string text)
    {
        var list = new List<Membership>();
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            int a = line.IndexOf(':'), b = a < 0 ? -1 : line.IndexOf(':', a + 1);
            if (b < 0 || !uint.TryParse(line.AsSpan(0, a), out uint id)) throw new FormatException($"cannot parse the cgroup line '{line}'");
            list.Add(new Membership(id, line[(a + 1)..b], line[(b + 1)..]));
        }
        return list;
    }

    public void Checkpoint(CheckpointContext ctx)
    {
        var own = Parse(Native.FileCalls.ReadText($"/proc/{ctx.Pid}/cgroup"));
        foreach (var t in ctx.Threads)
        {
            if (t.Task.Tid == ctx.Pid) continue;
            try
            {
                if (Native.FileCalls.ReadText($"/proc/{ctx.Pid}/task/{t.Task.Tid}/cgroup") is var text && !Parse(text).SequenceEqual(own))
                    ctx.Session.Log.Info($"pid {ctx.Pid}: thread {t.Task.Tid} is in other cgroups than its process; it is restored in the process's");
            }
            catch (IOException) { }
        }
        var p = new PayloadWriter().U32((uint)own.Count);
        foreach (var m in own) p.U32(m.Hierarchy).Str(m.Controllers).Str(m.Path);
        // appended field: each cgroup's settings, in the order of the memberships
        var known = ctx.Session.State<SettingsRead>();
        foreach (var m in own)
        {
            if (!known.ByCgroup.TryGetValue(m, out var values))
                known.ByCgroup[m] = values = ReadSettings(m, CgroupMounts(ctx.Session));
            p.Strs(values);
        }
        // optional: an older reader restarts the process in its own cgroups, as it did before
        ctx.Image.Write(RecordKind.Cgroups, p, RecordFlags.Optional);
    }

    /// <summary>The settings of the cgroups met so far in this checkpoint (a tree's processes mostly share theirs).</summary>
    private sealed class SettingsRead
    {
        public readonly Dictionary<Membership, List<string>> ByCgroup = new();
    }

    /// <summary>
    /// The settings of one cgroup ("name=value", in <see cref="Settings"/> order), those its directory has.
    /// None for a root cgroup: a restart never has to make it.
    /// </summary>
    private static List<string> ReadSettings(Membership m, List<Mount> mounts)
    {
        var values = new List<string>();
        if (m.Path == "/" || DirOf(m, mounts) is not { } dir) return values;
        HashSet<string> present;
        try { present = Directory.EnumerateFiles(dir).Select(Path.GetFileName).OfType<string>().ToHashSet(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return values; }
        foreach (var name in Settings)
        {
            if (!present.Contains(name)) continue;
            try { if (Native.FileCalls.ReadText(Path.Combine(dir, name)).TrimEnd('\n') is var v && v.Length > 0 && !v.Contains('\n')) values.Add(name + "=" + v); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }   // unreadable here
        }
        return values;
    }

    /// <summary>
    /// The settings saved with a cgroup, in the order they are written back (cpuset first: v1 needs its
    /// CPUs and nodes before anything joins; a lower memory limit before a higher one would be refused
    /// only in v1, where memsw must stay above the plain limit). One-line files only.
    /// </summary>
    public static readonly string[] Settings =
    [
        // both versions
        "cpuset.cpus", "cpuset.mems", "pids.max",
        // cgroup v2
        "cgroup.max.descendants", "cgroup.max.depth", "memory.min", "memory.low", "memory.high", "memory.max",
        "memory.swap.max", "memory.oom.group", "cpu.max", "cpu.weight", "cpu.idle", "io.weight",
        // cgroup v1
        "memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.soft_limit_in_bytes", "memory.swappiness",
        "cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us", "blkio.weight",
    ];

    private static List<(Membership Cgroup, string[] Settings)> Read(Record rec)
    {
        var r = rec.Reader();
        uint n = r.U32();
        var list = new List<Membership>();
        for (uint i = 0; i < n; i++) list.Add(new Membership(r.U32(), r.Str(), r.Str()));
        var settings = new List<string[]>();
        foreach (var _ in list) settings.Add(r.AtEnd ? [] : r.Strs());
        r.End();
        if (list.Any(m => !m.Path.StartsWith('/') || m.Path.Split('/').Contains("..")))
            throw new ImageFormatException($"Cgroups record at offset {rec.Offset} has a path that is not absolute");
        if (settings.SelectMany(x => x).Any(kv => kv.IndexOf('=') is var eq && (eq <= 0 || !Settings.Contains(kv[..eq]))))
            throw new ImageFormatException($"Cgroups record at offset {rec.Offset} has a setting ckpt does not know");
        return list.Zip(settings).ToList();
    }

    /// <summary>A cgroup filesystem mounted here: its type, super options and the part of the hierarchy it shows.</summary>
    private sealed record Mount(string Point, string Root, bool V2, HashSet<string> Options);

    private sealed class Mounts { public List<Mount>? List; }

    /// <summary>The cgroup mounts here, read once per checkpoint or restart.</summary>
    private static List<Mount> CgroupMounts(StateBag operation) => operation.State<Mounts>().List ??= ReadMounts();

    /// <summary>The directory of a cgroup here, through the mount of its hierarchy that shows it; null if none does.</summary>
    private static string? DirOf(Membership m, List<Mount> mounts)
    {
        var wanted = m.Controllers.Split(',', StringSplitOptions.RemoveEmptyEntries);
        var mount = mounts.FirstOrDefault(x =>
            (m.Hierarchy == 0 ? x.V2 : !x.V2 && wanted.All(x.Options.Contains))
            && (x.Root == "/" || m.Path == x.Root || m.Path.StartsWith(x.Root + "/", StringComparison.Ordinal)));
        if (mount == null) return null;
        string rel = mount.Root == "/" ? m.Path : m.Path[mount.Root.Length..];
        return mount.Point.TrimEnd('/') + rel;
    }

    private static List<Mount> ReadMounts()
    {
        var list = new List<Mount>();
        foreach (var f in ProcMounts.Lines())
        {
            int dash = Array.IndexOf(f, "-");
            if (dash < 6 || f.Length < dash + 4) continue;
            string type = f[dash + 1];
            if (type is not ("cgroup" or "cgroup2")) continue;
            list.Add(new Mount(ProcMounts.Unescape(f[4]), ProcMounts.Unescape(f[3]), type == "cgroup2", f[dash + 3].Split(',').ToHashSet()));
        }
        return list;
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var saved = Read(rec);
        var now = Parse(Native.FileCalls.ReadText($"/proc/{ctx.Pid}/cgroup"));
        foreach (var (m, settings) in saved)
        {
            // the same hierarchy here: cgroup v2, or the v1 one with the same controllers (ids differ between machines)
            var cur = now.FirstOrDefault(x => x.Controllers == m.Controllers && (x.Hierarchy == 0) == (m.Hierarchy == 0));
            if (cur.Path == m.Path) continue;
            string what = m.Hierarchy == 0 ? $"cgroup v2 {m.Path}" : $"cgroup {m.Controllers}:{m.Path}";
            if (DirOf(m, CgroupMounts(ctx.Session)) is not { } dir)
            {
                ctx.Session.Log.Info($"pid {ctx.Pid}: {what} is not reachable here (hierarchy not mounted, or mounted without that part); it stays in {cur.Path}");
                continue;
            }
            try
            {
                if (!Directory.Exists(dir))
                {
                    Directory.CreateDirectory(dir);
                    ctx.Session.Log.Info($"pid {ctx.Pid}: {what} did not exist; made{(settings.Length > 0 ? " with its saved settings" : "")}");
                    Apply(ctx, what, dir, settings);
                }
                // a frozen cgroup would freeze the vessel in the middle of its restart (it would never stop for ckpt)
                if (Frozen(dir))
                {
                    ctx.Session.Log.Info($"pid {ctx.Pid}: {what} is frozen; the process stays in {cur.Path}");
                    continue;
                }
                File.WriteAllText(Path.Combine(dir, "cgroup.procs"), ctx.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture));
                ctx.Session.Log.Debug($"pid {ctx.Pid}: joined {what}");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                ctx.Session.Log.Info($"pid {ctx.Pid}: cannot join {what} ({e.Message}); it stays in {cur.Path}");
            }
        }
    }

    /// <summary>
    /// Moves process <paramref name="pid"/> into cgroup <paramref name="m"/> (made, without settings, when
    /// it does not exist); null, or why it could not (not reachable here, frozen, refused).
    /// </summary>
    internal static string? Join(RestoreSession s, int pid, Membership m)
    {
        if (DirOf(m, CgroupMounts(s)) is not { } dir) return "not reachable here (hierarchy not mounted, or mounted without that part)";
        try
        {
            if (!Directory.Exists(dir)) Directory.CreateDirectory(dir);
            if (Frozen(dir)) return "frozen";
            File.WriteAllText(Path.Combine(dir, "cgroup.procs"), pid.ToString(System.Globalization.CultureInfo.InvariantCulture));
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return e.Message; }
    }

    /// <summary>Writes the saved settings into a cgroup just made; one that cannot be written is logged.</summary>
    private static void Apply(RestoreContext ctx, string what, string dir, string[] settings)
    {
        foreach (var kv in settings)
        {
            int eq = kv.IndexOf('=');
            string name = kv[..eq], value = kv[(eq + 1)..], file = Path.Combine(dir, name);
            if (!File.Exists(file))
            {
                ctx.Session.Log.Info($"pid {ctx.Pid}: {what}: {name} {value} not set: no such setting here (a v2 controller the parent does not enable for its children?)");
                continue;
            }
            try
            {
                // (a v2 read gives several values on one line for a few files, e.g. cpu.max "max 100000", io.weight "default 100": written back as read)
                File.WriteAllText(file, value);
                ctx.Session.Log.Debug($"pid {ctx.Pid}: {what}: {name} = {value}");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                ctx.Session.Log.Info($"pid {ctx.Pid}: {what}: {name} {value} not set ({e.Message})");
            }
        }
    }

    /// <summary>A v1 freezer cgroup not THAWED, or a v2 cgroup with cgroup.freeze set (itself or through an ancestor).</summary>
    private static bool Frozen(string dir)
    {
        string v1 = Path.Combine(dir, "freezer.state"), freeze = Path.Combine(dir, "cgroup.freeze"), events = Path.Combine(dir, "cgroup.events");
        if (File.Exists(v1) && Native.FileCalls.ReadText(v1).Trim() != "THAWED") return true;
        if (File.Exists(freeze) && Native.FileCalls.ReadText(freeze).Trim() == "1") return true;
        return File.Exists(events) && File.ReadAllLines(events).Any(l => l.Trim() == "frozen 1");
    }

    public void Finish(RestoreContext ctx) { }

    public void Describe(Record rec, InfoNode info)
    {
        var list = info.List("cgroups");
        foreach (var (m, settings) in Read(rec))
        {
            var node = new InfoNode().Set("hierarchy", m.Hierarchy).Set("controllers", m.Controllers).Set("path", m.Path);
            if (settings.Length > 0) node.Set("settings", settings.ToList());
            list.Add(node);
        }
    }
}
