using System.Text.RegularExpressions;
using Xunit;

namespace Ckpt.Tests.EndToEnd;

/// <summary>
/// Real programs nobody here wrote (python3 with threads, a .NET app on the real runtime, make -j2 of a
/// C project), checkpointed mid-computation, killed and restarted: each must finish with the same result
/// as an uninterrupted run. The checkpoint and restart times and the image size are written to the test
/// output (a FIGURES line).
/// </summary>
[Collection(EndToEndCollection.Name)]
public sealed class RealProgramTests(E2eEnvironment env)
{
    /// <summary>
    /// Script helpers: <c>timed_checkpoint_kill</c> is checkpoint_kill with its wall time noted;
    /// <c>figures NAME</c> prints the wall time, the frozen time and the image size of the checkpoint and
    /// the time the restart took until the tree was released (from the logs).
    /// </summary>
    private const string Helpers = """
        timed_checkpoint_kill() {
          local t0=$(date +%s%N); checkpoint_kill; local t1=$(date +%s%N)
          echo $(( (t1 - t0) / 1000000 )) > "$W/ck-wall.txt"
        }
        # restart_waiting WHAT: restarts $W/img and waits for it (prints RESTART-STATUS); fails unless it ended with 0
        restart_waiting() {
          ck restart -i "$W/img" --log "$W/rs.log" -v -v; local rc=$?
          echo "RESTART-STATUS: $rc"
          [ $rc -eq 0 ] || fail "restart (waiting for $1) exited with $rc"
        }
        figures() {
          local frozen released
          frozen=$(grep -oE 'frozen for [0-9.]+ ms' "$W/ck.log" | grep -oE '[0-9.]+')
          released=$(grep -E 'released$' "$W/rs.log" | tail -n 1 | grep -oE '^\[ *[0-9.]+' | tr -d '[ ')
          echo "FIGURES $1: checkpoint $(cat "$W/ck-wall.txt") ms wall (frozen $frozen ms), image $(stat -c %s "$W/img") bytes, restart $released ms until released"
        }

        """;

    /// <summary>
    /// python3 with four threading.Thread workers, each computing a sha256 chain, a Lock-protected
    /// shared counter and a queue.Queue handing progress and results to the main thread, which prints
    /// them. Restarted without --detach: ckpt waits for python and returns its status.
    /// </summary>
    [Fact]
    public void PythonThreads()
    {
        Assert.SkipWhen(env.Python == null, "python3 is not installed");
        env.RequireCkpt();
        const string program = """
            import hashlib, queue, threading
            WORKERS, N, EVERY = 4, 3000000, 250000
            lock = threading.Lock()
            counter = [0]
            q = queue.Queue()
            def work(k):
                h = ("ckpt-%d" % k).encode()
                for i in range(N):
                    h = hashlib.sha256(h).digest()
                    if i % EVERY == EVERY - 1:
                        with lock:
                            counter[0] += 1
                        q.put(("progress", k, i + 1, h.hex()[:16]))
                q.put(("result", k, N, h.hex()))
            print("READY", flush=True)
            threads = [threading.Thread(target=work, args=(k,)) for k in range(WORKERS)]
            for t in threads: t.start()
            progress = {k: [] for k in range(WORKERS)}
            results = {}
            while len(results) < WORKERS:
                kind, k, i, hx = q.get()
                if kind == "progress":
                    progress[k].append((i, hx))
                    print("progress", sum(len(v) for v in progress.values()), flush=True)
                else:
                    results[k] = hx
            for t in threads: t.join()
            for k in range(WORKERS):
                for i, hx in progress[k]: print("W", k, i, hx)
                print("RESULT", k, results[k])
            print("COUNTER", counter[0])
            """;
        var s = new E2eScript(env, "python-threads");
        File.WriteAllText(Path.Combine(s.W, "threads.py"), program);
        var r = s.Run(Helpers + """
            "$PYTHON" -u "$W/threads.py" </dev/null >"$W/reference.out" 2>&1 || fail "the uninterrupted run failed"
            start "$W/out" "$PYTHON" -u "$W/threads.py"
            wait_for "$W/out" '^progress 2$' 60 || fail "python did not get going"
            n=$(ls /proc/$P/task | wc -l)
            [ $n -eq 5 ] || fail "python has $n threads, expected 5"
            timed_checkpoint_kill
            grep -q RESULT "$W/out" && fail "python finished before the checkpoint"
            restart_waiting "python"
            cmp "$W/reference.out" "$W/out" || fail "the output differs from the uninterrupted run"
            figures python-threads
            """, timeoutSeconds: 240);
        Finish(r, "reference.out", "out", "COUNTER 48");
    }

    /// <summary>
    /// A .NET console app (tests/programs/dotnet-app) run on the shared runtime with <c>dotnet app.dll</c>:
    /// Parallel.For rounds over SHA-256 with plenty of garbage, on a runtime with its many threads
    /// (thread pool, finalizer, tiered compilation, signal handler), the W^X double mapping of JIT code
    /// (memfd "doublemapper") and signal handlers, with its default settings: the diagnostic IPC listens
    /// on a unix socket (/tmp/dotnet-diagnostic-PID-...-socket), which is saved and listens again.
    /// </summary>
    [Fact]
    public void DotnetApp()
    {
        var app = BuildDotnetApp();
        var r = new E2eScript(env, "dotnet-app").Run(Helpers + $"""
            app="{app}"
            """ + """

            dotnet "$app" </dev/null >"$W/reference.out" 2>&1 || fail "the uninterrupted run failed"
            start "$W/out" dotnet "$app"
            wait_for "$W/out" '^round 40 ' 60 || fail "the app did not get going"
            echo "THREADS: $(ls /proc/$P/task | wc -l)"
            grep -q doublemapper /proc/$P/maps || fail "no doublemapper mapping: the runtime's W^X double mapping is off"
            ls /tmp/dotnet-diagnostic-$P-* >/dev/null 2>&1 || fail "the runtime's diagnostic socket is not there"
            timed_checkpoint_kill
            grep -q RESULT "$W/out" && fail "the app finished before the checkpoint"
            restart_waiting "the app"
            cmp "$W/reference.out" "$W/out" || fail "the output differs from the uninterrupted run"
            figures dotnet-app
            """, timeoutSeconds: 240);
        Finish(r, "reference.out", "out", "gc=yes");
    }

    /// <summary>
    /// The same app in its events mode: a FileSystemWatcher (an inotify instance with a watch) counts the
    /// files an async loop creates, fed through a Channel by a producer awaiting Task.Delay; the watcher
    /// must go on seeing every file created after the restart.
    /// </summary>
    [Fact]
    public void DotnetAppWithWatcherAndTimers()
    {
        var app = BuildDotnetApp();
        var r = new E2eScript(env, "dotnet-events").Run(Helpers + $"""
            app="{app}"
            """ + """

            dotnet "$app" events "$W/watched-ref" </dev/null >"$W/reference.out" 2>&1 || fail "the uninterrupted run failed"
            start "$W/out" dotnet "$app" events "$W/watched"
            wait_for "$W/out" '^item 20$' 60 || fail "the app did not get going"
            ls -l /proc/$P/fd | grep -q inotify || fail "the app holds no inotify instance"
            timed_checkpoint_kill
            grep -q RESULT "$W/out" && fail "the app finished before the checkpoint"
            restart_waiting "the app"
            cmp "$W/reference.out" "$W/out" || fail "the output differs from the uninterrupted run"
            figures dotnet-events
            """, timeoutSeconds: 240);
        Finish(r, "reference.out", "out", "created=80");
    }

    private static readonly Lock s_buildLock = new();

    /// <summary>tests/programs/dotnet-app built (once per run) with dotnet build in a copy under the run's root; the dll's path.</summary>
    private string BuildDotnetApp()
    {
        env.RequireCkpt();
        var proj = Path.Combine(env.Root, "dotnet-app");
        var dll = Path.Combine(proj, "out", "dotnet-app.dll");
        lock (s_buildLock)
        {
            if (File.Exists(dll)) return dll;
            Directory.CreateDirectory(proj);
            var src = Path.Combine(env.RepoRoot, "tests", "programs", "dotnet-app");
            foreach (var f in new[] { "dotnet-app.csproj", "Program.cs" })
                File.Copy(Path.Combine(src, f), Path.Combine(proj, f), overwrite: true);
            var b = Exec.Run("dotnet", ["build", proj, "-c", "Release", "-o", Path.Combine(proj, "out"), "--disable-build-servers", "-nologo"],
                TimeSpan.FromMinutes(5), cwd: proj);
            Assert.True(b.Code == 0 && File.Exists(dll), $"dotnet build of the test app failed (exit {b.Code}):\n{b.Stdout}\n{b.Stderr}");
            return dll;
        }
    }

    /// <summary>
    /// make -j2 of a generated C project (30 files, each a function gcc -O2 takes a while over, and a
    /// main), checkpointed while compiling: a tree of make, sh, cc and cc1/as, with make's jobserver
    /// pipe and gcc's temporary files. After the restart the build completes and the program prints
    /// the result of a reference build (gcc -O0, all in one go: the arithmetic is the same).
    /// </summary>
    [Fact]
    public void MakeJ2()
    {
        env.RequireCkpt();
        var s = new E2eScript(env, "make");
        GenerateCProject(Path.Combine(s.W, "src"), 30);
        var r = s.Run(Helpers + """
            cp -r "$W/src" "$W/build"
            ( cd "$W/src" && cc -O0 -o "$W/reference" *.c ) || fail "the reference build failed"
            "$W/reference" > "$W/reference.out" || fail "the reference program failed"
            cd "$W/build"
            start "$W/out" make -j2
            wait_for "$W/out" '^CC f6\.c' 120 || fail "make did not get going"
            desc() { local c; for c in $(ps -o pid= --ppid $1); do echo $c; desc $c; done; }
            kids=$(desc $P | tr '\n' ' ')
            ps -o pid=,ppid=,comm= $P $kids > "$W/tree.txt"
            [ -n "$kids" ] || fail "make had no children at the checkpoint"
            timed_checkpoint_kill
            gone 10 $kids || fail "the killed build still holds its pids"
            [ -e "$W/build/prog" ] && fail "the build finished before the checkpoint"
            restart_waiting "make"
            [ $(grep -c '^CC ' "$W/out") -eq 31 ] || fail "make did not compile each file exactly once"
            "$W/build/prog" > "$W/prog.out" || fail "the built program failed"
            cmp "$W/reference.out" "$W/prog.out" || fail "the built program's result differs from the reference"
            figures make-j2
            """, timeoutSeconds: 600);
        Finish(r, "reference.out", "prog.out", "RESULT ");
        Assert.Contains(" make", r.File("tree.txt"));
        Assert.Contains(" cc1", r.File("tree.txt"));
    }

    private static void Finish(E2eResult r, string reference, string output, string mark)
    {
        r.AssertScriptOk();
        Assert.Contains("RESTART-STATUS: 0", r.Stdout);
        Assert.Contains(mark, r.File(output));
        Assert.Equal(r.File(reference), r.File(output));
        var figures = Regex.Match(r.Stdout, "^FIGURES .*$", RegexOptions.Multiline);
        Assert.True(figures.Success, $"no FIGURES line{r.Diagnostics}");
        TestContext.Current.TestOutputHelper?.WriteLine(figures.Value);
        r.Cleanup();
    }

    /// <summary>
    /// N files f1.c..fN.c, each an unsigned-arithmetic function of 400 statements and a few loops (about
    /// half a second of gcc -O2), a main.c that combines them and prints <c>RESULT n</c>, and a Makefile
    /// whose recipes go through sh (<c>echo CC ...; cc ...</c>).
    /// </summary>
    private static void GenerateCProject(string dir, int n)
    {
        Directory.CreateDirectory(dir);
        for (int i = 1; i <= n; i++)
        {
            var f = new System.Text.StringBuilder();
            f.Append($"unsigned long f{i}(unsigned long x) {{\n");
            f.Append($"  unsigned long a = x + {i}, b = x ^ {i * 7919}, c = {i};\n");
            for (int j = 1; j <= 400; j++)
            {
                f.Append($"  a = a * {j * 2 + 1} + (b >> {j % 13 + 1}); b ^= a + c * {j}; c += (a & {j}) ? b : a;\n");
                if (j % 40 == 0) f.Append($"  for (int k = 0; k < {j}; k++) {{ a += k * c; b -= a >> 3; }}\n");
            }
            f.Append("  return a ^ b ^ c;\n}\n");
            File.WriteAllText(Path.Combine(dir, $"f{i}.c"), f.ToString());
        }
        var m = new System.Text.StringBuilder("#include <stdio.h>\n");
        for (int i = 1; i <= n; i++) m.Append($"unsigned long f{i}(unsigned long);\n");
        m.Append("int main(void) {\n  unsigned long s = 0;\n");
        for (int i = 1; i <= n; i++) m.Append($"  s = s * 31 + f{i}(s + {i});\n");
        m.Append("  printf(\"RESULT %lu\\n\", s);\n  return 0;\n}\n");
        File.WriteAllText(Path.Combine(dir, "main.c"), m.ToString());
        var objs = string.Join(' ', Enumerable.Range(1, n).Select(i => $"f{i}.o"));
        File.WriteAllText(Path.Combine(dir, "Makefile"),
            $"CFLAGS = -O2\nprog: main.o {objs}\n\t@echo LD $@; $(CC) -o $@ $^\n%.o: %.c\n\t@echo CC $<; $(CC) $(CFLAGS) -c -o $@ $<\n");
    }
}
