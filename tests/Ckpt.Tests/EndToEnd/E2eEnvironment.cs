using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using Xunit;

namespace Ckpt.Tests.EndToEnd;

/// <summary>
/// The end-to-end tests run one at a time (they create processes with chosen pids and measure time),
/// after the tests that may run in parallel.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class EndToEndCollection : ICollectionFixture<E2eEnvironment>
{
    public const string Name = "EndToEnd";
}

/// <summary>
/// Built once per test run: the Native AOT ckpt binary (through the ./ckpt entry script), and every C
/// program of tests/programs compiled with gcc into a temporary directory. A C file may ask for extra
/// builds with lines <c>build: NAME FLAGS...</c> in its comments; otherwise it is built as its own name.
/// </summary>
public sealed class E2eEnvironment : IDisposable
{
    public string RepoRoot { get; }
    public string Ckpt { get; }
    /// <summary>Temporary root of this run: bin/ (compiled programs) and one work directory per test.</summary>
    public string Root { get; }
    public string Bin { get; }
    public bool HasAvx2 { get; }
    public bool HasAvx512 { get; }
    /// <summary>The real python3 executable (not a pyenv shim), or null.</summary>
    public string? Python { get; }

    private readonly string? _ckptError;
    private readonly ConcurrentDictionary<string, string> _compileErrors = new();
    private int _workDirs;

    public E2eEnvironment()
    {
        RepoRoot = FindRepoRoot();
        Ckpt = Path.Combine(RepoRoot, "artifacts", "native", "ckpt");
        Root = Directory.CreateTempSubdirectory("ckpt-e2e-").FullName;
        Bin = Path.Combine(Root, "bin");
        Directory.CreateDirectory(Bin);
        var flags = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags"))?.Split(' ') ?? [];
        HasAvx2 = flags.Contains("avx2");
        HasAvx512 = flags.Contains("avx512f");

        var build = Task.Run(() =>
        {
            var r = Exec.Run(Path.Combine(RepoRoot, "ckpt"), ["--help"], TimeSpan.FromMinutes(10), cwd: RepoRoot);
            if (r.Code != 0 || !File.Exists(Ckpt))
                return $"building ckpt with ./ckpt --help failed (exit {r.Code}{(r.TimedOut ? ", timed out" : "")}):\n{r.Stdout}\n{r.Stderr}";
            return null;
        });
        var jobs = new List<(string Src, string Name, string[] Flags)>();
        foreach (var src in Directory.GetFiles(Path.Combine(RepoRoot, "tests", "programs"), "*.c"))
        {
            var builds = File.ReadLines(src).Select(l => l.Trim().TrimStart('*', '/', ' '))
                .Where(l => l.StartsWith("build: ")).Select(l => l[7..].Split(' ', StringSplitOptions.RemoveEmptyEntries)).ToList();
            if (builds.Count == 0) jobs.Add((src, Path.GetFileNameWithoutExtension(src), []));
            foreach (var b in builds) jobs.Add((src, b[0], b[1..]));
        }
        Parallel.ForEach(jobs, new ParallelOptions { MaxDegreeOfParallelism = 2 }, j =>
        {
            string[] args = ["-O1", "-g", "-Wall", .. j.Flags, "-o", Path.Combine(Bin, j.Name), j.Src];
            var r = Exec.Run("gcc", args, TimeSpan.FromMinutes(2));
            if (r.Code != 0) _compileErrors[j.Name] = $"gcc {string.Join(' ', args)} failed (exit {r.Code}):\n{r.Stdout}{r.Stderr}";
        });
        _ckptError = build.Result;

        var py = Exec.Run("python3", ["-c", "import sys; print(sys.executable)"], TimeSpan.FromSeconds(30));
        Python = py.Code == 0 && File.Exists(py.Stdout.Trim()) ? py.Stdout.Trim() : null;
    }

    /// <summary>Whether <paramref name="name"/> is a command on the PATH (or in /usr/sbin, /sbin).</summary>
    public static bool HasCommand(string name)
        => (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Append("/usr/sbin").Append("/sbin")
            .Any(d => d.Length > 0 && File.Exists(Path.Combine(d, name)));

    /// <summary>Fails the test unless ckpt was built.</summary>
    public void RequireCkpt()
    {
        if (!Environment.IsPrivilegedProcess) Assert.Fail("the end-to-end tests need root (ptrace of any process, clone3 with a chosen pid)");
        if (_ckptError != null) Assert.Fail(_ckptError);
    }

    /// <summary>The path of a compiled test program; fails the test if it did not compile.</summary>
    public string Program(string name)
    {
        RequireCkpt();
        if (_compileErrors.TryGetValue(name, out var e)) Assert.Fail(e);
        var p = Path.Combine(Bin, name);
        if (!File.Exists(p)) Assert.Fail($"no test program {name} in tests/programs");
        return p;
    }

    /// <summary>A fresh work directory for one test.</summary>
    public string NewWorkDir(string name)
    {
        var d = Path.Combine(Root, $"{Interlocked.Increment(ref _workDirs):D2}-{name}");
        Directory.CreateDirectory(d);
        return d;
    }

    private static string FindRepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "ckpt.slnx")) && File.Exists(Path.Combine(d.FullName, "ckpt")))
                return d.FullName;
        throw new InvalidOperationException($"cannot find the repository root above {AppContext.BaseDirectory}");
    }

    public void Dispose()
    {
        if (Environment.GetEnvironmentVariable("CKPT_E2E_KEEP") == "1") return;
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <summary>Runs a helper command (never a traced program) with a timeout.</summary>
public static class Exec
{
    public sealed record Result(int Code, string Stdout, string Stderr, bool TimedOut);

    public static Result Run(string file, IEnumerable<string> args, TimeSpan timeout, string? cwd = null,
        IReadOnlyDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true,
            UseShellExecute = false, WorkingDirectory = cwd ?? Environment.CurrentDirectory,
            StandardOutputEncoding = Encoding.UTF8, StandardErrorEncoding = Encoding.UTF8,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (env != null) foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {file}");
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        bool timedOut = !p.WaitForExit(timeout);
        if (timedOut)
        {
            try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            p.WaitForExit(TimeSpan.FromSeconds(10));
        }
        // a leftover holding the pipes open must not hang the test
        string Get(Task<string> t) => t.Wait(TimeSpan.FromSeconds(10)) ? t.Result : "(output still open after exit)";
        return new Result(timedOut ? -1 : p.ExitCode, Get(stdout), Get(stderr), timedOut);
    }
}
