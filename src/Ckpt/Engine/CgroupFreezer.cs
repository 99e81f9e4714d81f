namespace Ckpt.Engine;

/// <summary>
/// Freezes a cgroup for the time the tree is seized (<c>checkpoint --freezer CGROUP</c>), for trees that
/// fork faster than they can be seized one by one: cgroup v2 <c>cgroup.freeze</c> or the v1 freezer's
/// <c>freezer.state</c>. CGROUP is a directory of the cgroup file system, or a name looked up under
/// /sys/fs/cgroup/{unified,freezer,}.
/// </summary>
public sealed class CgroupFreezer : IDisposable
{
    public string Path { get; }
    private readonly bool _v2;
    private bool _frozen;

    private CgroupFreezer(string path, bool v2) { Path = path; _v2 = v2; }

    public static CgroupFreezer Open(string cgroup)
    {
        var candidates = cgroup.StartsWith('/')
            ? [cgroup]
            : new[] { "/sys/fs/cgroup/unified", "/sys/fs/cgroup/freezer", "/sys/fs/cgroup" }.Select(r => System.IO.Path.Combine(r, cgroup)).ToArray();
        foreach (var dir in candidates)
        {
            if (File.Exists(System.IO.Path.Combine(dir, "cgroup.freeze"))) return new CgroupFreezer(dir, v2: true);
            if (File.Exists(System.IO.Path.Combine(dir, "freezer.state"))) return new CgroupFreezer(dir, v2: false);
        }
        throw new CkptException($"--freezer {cgroup}: not a cgroup with a freezer (no cgroup.freeze or freezer.state in {string.Join(" or ", candidates)})", ExitCodes.Usage);
    }

    /// <summary>The pids in the cgroup (all its tasks, for v1).</summary>
    public HashSet<int> Pids()
    {
        var set = new HashSet<int>();
        foreach (var l in File.ReadLines(System.IO.Path.Combine(Path, "cgroup.procs")))
            if (int.TryParse(l, out int p)) set.Add(p);
        return set;
    }

    /// <summary>
    /// Whether process <paramref name="pid"/> is in the cgroup: listed in cgroup.procs, or one of its threads
    /// listed in tasks (v1) or cgroup.threads (v2): a process whose main thread exited is not listed as a process.
    /// </summary>
    public bool Holds(int pid)
    {
        if (Pids().Contains(pid)) return true;
        string list = System.IO.Path.Combine(Path, _v2 ? "cgroup.threads" : "tasks");
        if (!File.Exists(list)) return false;
        var tids = new HashSet<int>();
        foreach (var l in File.ReadLines(list)) if (int.TryParse(l, out int t)) tids.Add(t);
        try { return Directory.GetDirectories($"/proc/{pid}/task").Any(d => int.TryParse(System.IO.Path.GetFileName(d), out int t) && tids.Contains(t)); }
        catch (IOException) { return false; }
    }

    /// <summary>Freezes the cgroup and waits until every task in it is frozen.</summary>
    public void Freeze(Log log)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        _frozen = true;
        if (_v2) File.WriteAllText(System.IO.Path.Combine(Path, "cgroup.freeze"), "1");
        else File.WriteAllText(System.IO.Path.Combine(Path, "freezer.state"), "FROZEN");
        while (!IsFrozen())
        {
            if (sw.Elapsed > TimeSpan.FromSeconds(10))
                throw new CkptException($"--freezer: {Path} did not freeze within 10 s", ExitCodes.NotCheckpointable);
            Thread.Sleep(1);
            if (!_v2) File.WriteAllText(System.IO.Path.Combine(Path, "freezer.state"), "FROZEN");   // v1 retries on its own only when asked again
        }
        log.Info($"cgroup {Path} frozen in {sw.Elapsed.TotalMilliseconds:F3} ms");
    }

    private bool IsFrozen()
    {
        if (_v2) return File.ReadLines(System.IO.Path.Combine(Path, "cgroup.events")).Any(l => l.Trim() == "frozen 1");
        return Native.FileCalls.ReadText(System.IO.Path.Combine(Path, "freezer.state")).Trim() == "FROZEN";
    }

    public void Thaw()
    {
        if (!_frozen) return;
        _frozen = false;
        if (_v2) File.WriteAllText(System.IO.Path.Combine(Path, "cgroup.freeze"), "0");
        else File.WriteAllText(System.IO.Path.Combine(Path, "freezer.state"), "THAWED");
    }

    public void Dispose() => Thaw();
}
