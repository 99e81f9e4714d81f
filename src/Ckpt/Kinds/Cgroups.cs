using Ckpt.Engine;
using Ckpt.Image;

namespace Ckpt.Kinds;

/// <summary>
/// Cgroup membership: each line of /proc/PID/cgroup (hierarchy id, controllers, path; cgroup v2 is
/// <c>0::/path</c>). Restart: right after the vessel takes its Process record, before its memory is
/// filled (pages are charged to the memory cgroup of the process that gets them), the vessel is written
/// into <c>cgroup.procs</c> of every hierarchy where it is not already in the saved cgroup. The
/// directory is found through the hierarchy's mount (matched by controllers, or cgroup2) and made when it
/// no longer exists (a cgroup removed with its last process, or a migration to another machine). The
/// cgroups' settings are not saved: a cgroup made again has the defaults. A hierarchy not mounted here,
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
        var own = Parse(File.ReadAllText($"/proc/{ctx.Pid}/cgroup"));
        foreach (var t in ctx.Threads)
        {
            if (t.Task.Tid == ctx.Pid) continue;
            try
            {
                if (File.ReadAllText($"/proc/{ctx.Pid}/task/{t.Task.Tid}/cgroup") is var text && !Parse(text).SequenceEqual(own))
                    ctx.Session.Log.Info($"pid {ctx.Pid}: thread {t.Task.Tid} is in other cgroups than its process; it is restored in the process's");
            }
            catch (IOException) { }
        }
        var p = new PayloadWriter().U32((uint)own.Count);
        foreach (var m in own) p.U32(m.Hierarchy).Str(m.Controllers).Str(m.Path);
        // optional: an older reader restarts the process in its own cgroups, as it did before
        ctx.Image.Write(RecordKind.Cgroups, p, RecordFlags.Optional);
    }

    private static List<Membership> Read(Record rec)
    {
        var r = rec.Reader();
        uint n = r.U32();
        var list = new List<Membership>();
        for (uint i = 0; i < n; i++) list.Add(new Membership(r.U32(), r.Str(), r.Str()));
        r.End();
        if (list.Any(m => !m.Path.StartsWith('/') || m.Path.Split('/').Contains("..")))
            throw new ImageFormatException($"Cgroups record at offset {rec.Offset} has a path that is not absolute");
        return list;
    }

    /// <summary>A cgroup filesystem mounted here: its type, super options and the part of the hierarchy it shows.</summary>
    private sealed record Mount(string Point, string Root, bool V2, HashSet<string> Options);

    private sealed class Mounts { public List<Mount>? List; }

    private static List<Mount> CgroupMounts(RestoreContext ctx)
    {
        var st = ctx.Session.State<Mounts>();
        if (st.List != null) return st.List;
        var list = new List<Mount>();
        foreach (var line in File.ReadAllLines("/proc/self/mountinfo"))
        {
            // ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
            var f = line.Split(' ');
            int dash = Array.IndexOf(f, "-");
            if (dash < 6 || f.Length < dash + 4) continue;
            string type = f[dash + 1];
            if (type is not ("cgroup" or "cgroup2")) continue;
            list.Add(new Mount(Unescape(f[4]), Unescape(f[3]), type == "cgroup2", f[dash + 3].Split(',').ToHashSet()));
        }
        return st.List = list;
    }

    /// <summary>mountinfo escapes space, tab, newline and backslash as \ooo.</summary>
    private static string Unescape(string s)
        => !s.Contains('\\') ? s : System.Text.RegularExpressions.Regex.Replace(s, @"\\([0-7]{3})", m => ((char)Convert.ToInt32(m.Groups[1].Value, 8)).ToString());

    public void Restore(RestoreContext ctx, Record rec)
    {
        var saved = Read(rec);
        var now = Parse(File.ReadAllText($"/proc/{ctx.Pid}/cgroup"));
        foreach (var m in saved)
        {
            // the same hierarchy here: cgroup v2, or the v1 one with the same controllers (ids differ between machines)
            var cur = now.FirstOrDefault(x => x.Controllers == m.Controllers && (x.Hierarchy == 0) == (m.Hierarchy == 0));
            if (cur.Path == m.Path) continue;
            string what = m.Hierarchy == 0 ? $"cgroup v2 {m.Path}" : $"cgroup {m.Controllers}:{m.Path}";
            var wanted = m.Controllers.Split(',', StringSplitOptions.RemoveEmptyEntries);
            var mount = CgroupMounts(ctx).FirstOrDefault(x =>
                (m.Hierarchy == 0 ? x.V2 : !x.V2 && wanted.All(x.Options.Contains))
                && (x.Root == "/" || m.Path == x.Root || m.Path.StartsWith(x.Root + "/", StringComparison.Ordinal)));
            if (mount == null)
            {
                ctx.Session.Log.Info($"pid {ctx.Pid}: {what} is not reachable here (hierarchy not mounted, or mounted without that part); it stays in {cur.Path}");
                continue;
            }
            string rel = mount.Root == "/" ? m.Path : m.Path[mount.Root.Length..];
            string dir = mount.Point.TrimEnd('/') + rel;
            try
            {
                if (!Directory.Exists(dir))
                {
                    Directory.CreateDirectory(dir);
                    ctx.Session.Log.Info($"pid {ctx.Pid}: {what} did not exist; made (with default settings)");
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

    /// <summary>A v1 freezer cgroup not THAWED, or a v2 cgroup with cgroup.freeze set (itself or through an ancestor).</summary>
    private static bool Frozen(string dir)
    {
        string v1 = Path.Combine(dir, "freezer.state"), freeze = Path.Combine(dir, "cgroup.freeze"), events = Path.Combine(dir, "cgroup.events");
        if (File.Exists(v1) && File.ReadAllText(v1).Trim() != "THAWED") return true;
        if (File.Exists(freeze) && File.ReadAllText(freeze).Trim() == "1") return true;
        return File.Exists(events) && File.ReadAllLines(events).Any(l => l.Trim() == "frozen 1");
    }

    public void Finish(RestoreContext ctx) { }

    public void Describe(Record rec, InfoNode info)
    {
        var list = info.List("cgroups");
        foreach (var m in Read(rec))
            list.Add(new InfoNode().Set("hierarchy", m.Hierarchy).Set("controllers", m.Controllers).Set("path", m.Path));
    }
}
