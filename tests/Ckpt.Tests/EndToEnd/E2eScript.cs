using System.Text;
using System.Text.RegularExpressions;
using Xunit;

namespace Ckpt.Tests.EndToEnd;

/// <summary>
/// One end-to-end scenario: a bash script run under the reaper (a child subreaper that reaps orphans at
/// once, logs their exit status to $REAPER_LOG and kills leftovers when the script ends), in its own
/// work directory $W. Traced programs are only ever started by the script, never by this process.
/// </summary>
public sealed class E2eScript
{
    /// <summary>Helpers available to every script.</summary>
    public const string Preamble = """
        set -u
        cd "$W"
        # fail MESSAGE: ends the script with a reason the test shows
        fail() { echo "SCRIPT-FAIL: $*"; exit 99; }
        # wait_for FILE REGEX SECONDS: until FILE has a line matching REGEX
        wait_for() {
          local n=$(( $3 * 20 ))
          until grep -qE "$2" "$1" 2>/dev/null; do n=$((n - 1)); [ $n -le 0 ] && return 1; sleep 0.05; done
        }
        # start OUTFILE CMD...: CMD in the background, stdin from /dev/null, stdout and stderr to OUTFILE; sets P
        start() {
          local o=$1; shift
          "$@" </dev/null >"$o" 2>&1 &
          P=$!
        }
        # reaped PID SECONDS [SEEN]: waits until the reaper reaped PID (an orphan) more than SEEN (default 0)
        # times; prints how the last one ended: "exit N" or "signal N"
        reaped() {
          local n=$(( $2 * 20 ))
          until [ "$(grep -cE "^$1 " "$REAPER_LOG" 2>/dev/null)" -gt "${3:-0}" ]; do n=$((n - 1)); [ $n -le 0 ] && return 1; sleep 0.05; done
          grep -E "^$1 " "$REAPER_LOG" | tail -n 1 | cut -d' ' -f2-
        }
        # times_reaped PID: how many times the reaper reaped PID so far
        times_reaped() { grep -cE "^$1 " "$REAPER_LOG" 2>/dev/null; }
        # alive PID: a process (not a zombie) has PID
        alive() { [ -e /proc/$1 ] && ! grep -q '^State:[[:space:]]*Z' /proc/$1/status 2>/dev/null; }
        # wait_exit PID SECONDS: waits for the end of PID, a child of this script; returns its status (124 after
        # SECONDS, once it was killed)
        wait_exit() {
          local n=$(( $2 * 20 ))
          while alive $1; do
            n=$((n - 1))
            if [ $n -le 0 ]; then echo "wait_exit: $1 still running after $2 s, killed" >&2; kill -9 $1; wait $1 2>/dev/null; return 124; fi
            sleep 0.05
          done
          wait $1
        }
        # layout PID TAG: snapshots the memory map and the fds (with what they refer to) of PID into
        # $W/maps-TAG.txt and $W/fds-TAG.txt (compared by E2eResult.AssertSameLayout)
        # (through a live thread where the main thread exited: a zombie's own entries are empty)
        layout() {
          local d=/proc/$1
          if grep -q '^State:[[:space:]]*Z' $d/status 2>/dev/null; then
            for t in $d/task/*; do grep -q '^State:[[:space:]]*Z' $t/status 2>/dev/null || { d=$t; break; }; done
          fi
          cat $d/maps > "$W/maps-$2.txt"
          for f in $d/fd/*; do echo "${f##*/} $(readlink "$f")"; done > "$W/fds-$2.txt"
        }
        # gone SECONDS PID...: waits until no process (not even a zombie) holds any of the PIDs
        gone() {
          local n=$(( $1 * 20 )); shift
          for p in "$@"; do
            while [ -e /proc/$p ]; do n=$((n - 1)); [ $n -le 0 ] && return 1; sleep 0.05; done
          done
        }
        # checkpoint_kill_tree PREFIX: checkpoint_kill, then waits until the pids the program printed on its
        # line "PREFIX pid..." (the other processes of its tree, killed too) are free again
        checkpoint_kill_tree() {
          local pids; pids=$(grep "^$1 " "$W/out" | head -n 1 | cut -d' ' -f2-)
          [ -n "$pids" ] || fail "no $1 line"
          checkpoint_kill
          gone 10 $pids || fail "the killed tree still holds its pids ($pids)"
        }
        # below_launcher [DEPTH]: the started process ($P, a launcher such as unshare --fork) becomes $U and the
        # program it started, DEPTH generations below (1 unless said; 0: the launcher itself), becomes $P
        below_launcher() {
          U=$P
          local n=${1:-1}
          while [ $n -gt 0 ]; do P=$(pgrep -P $P | head -n 1); [ -n "$P" ] || fail "no program under the launcher $U"; n=$((n - 1)); done
        }
        # ck ARGS...: the ckpt binary, with a timeout
        ck() { timeout -k 5 "${CK_TIMEOUT:-60}" "$CKPT" "$@"; }
        # checkpoint_kill: checkpoints $P into $W/img with --kill and reaps it
        checkpoint_kill() {
          ck checkpoint $P -o "$W/img" --kill --log "$W/ck.log" -v -v; local rc=$?
          [ $rc -eq 0 ] || fail "checkpoint exited with $rc"
          wait $P 2>/dev/null
          # (killed, not waited for: a process with much memory or large socket buffers takes a moment to end)
          # (a tree with a GiB of memory, on a loaded machine, took more than 5 s here)
          local n=400
          while alive $P && [ $n -gt 0 ]; do n=$((n - 1)); sleep 0.05; done
          alive $P && fail "pid $P is still running 20 s after checkpoint --kill"
          return 0
        }
        # restart_detached [ARGS...]: restarts $W/img with --detach (and ARGS) and checks it printed $P
        restart_detached() {
          local r; r=$(ck restart -i "$W/img" --detach --log "$W/rs.log" -v -v "$@"); local rc=$?
          [ $rc -eq 0 ] || fail "restart exited with $rc"
          [ "$r" = "$P" ] || fail "restart printed '$r', expected pid $P"
        }
        # finish_detached: SIGUSR1 to the restored $P, then waits for its end and reports its status
        finish_detached() {
          local seen; seen=$(times_reaped $P)
          kill -USR1 $P || fail "cannot signal the restored process $P"
          local st; st=$(reaped $P 30 "$seen") || fail "the restored process $P did not end within 30 s"
          echo "RESTORED: $st"
        }

        """;

    private readonly E2eEnvironment _env;
    public string Name { get; }
    public string W { get; }

    public E2eScript(E2eEnvironment env, string name)
    {
        _env = env;
        Name = name;
        W = env.NewWorkDir(name);
    }

    /// <summary>Runs the script body (after the preamble) and returns what happened.</summary>
    public E2eResult Run(string body, int timeoutSeconds = 90)
    {
        _env.RequireCkpt();
        var reaper = _env.Program("reaper");
        var script = Path.Combine(W, "script.sh");
        File.WriteAllText(script, Preamble + body + "\n");
        var env = new Dictionary<string, string>
        {
            ["W"] = W, ["CKPT"] = _env.Ckpt, ["BIN"] = _env.Bin, ["REAPER_LOG"] = Path.Combine(W, "reaper.log"),
            ["PYTHON"] = _env.Python ?? "python3", ["LC_ALL"] = "C",
        };
        var r = Exec.Run(reaper, ["bash", script], TimeSpan.FromSeconds(timeoutSeconds), cwd: W, env: env);
        return new E2eResult(this, r);
    }

    /// <summary>The standard round trip: start, READY, checkpoint --kill, restart --detach, SIGUSR1, verdict.</summary>
    /// <summary>
    /// A checkpoint that must be refused: starts <paramref name="command"/>, waits for READY, checkpoints
    /// it (prints "RC: code"; "IMAGE-LEFT" if an image file remains), checks it is alive and unchanged
    /// (layout before/after), then lets it verify itself (prints "TARGET: status"). Checked by
    /// <see cref="E2eResult.AssertRefused"/>.
    /// </summary>
    public static string Refused(string command) => $"""
        start "$W/out" {command}
        wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
        layout $P before
        ck checkpoint $P -o "$W/img" --log "$W/ck.log" -v -v 2>"$W/err.txt"; echo "RC: $?"
        [ -e "$W/img" ] && echo "IMAGE-LEFT"
        alive $P || fail "the target died"
        layout $P after
        sleep 0.2
        kill -USR1 $P
        wait_exit $P 20; echo "TARGET: $?"
        """;

    /// <summary>A script step (after a restart) that keeps what <c>ckpt info</c> says of the image in $W/info.txt.</summary>
    public const string SaveInfo = """
        ck info "$W/img" > "$W/info.txt" || fail "ckpt info failed"

        """;

    /// <summary>
    /// A program with something queued at the freeze that it takes a moment later (<paramref name="trigger"/>
    /// makes it come, after READY): the checkpoint, leaving it running, waits for it; the program prints
    /// SEEN once it took it, and exits 0 after SIGUSR1 if it still works. Checked by
    /// <see cref="E2eResult.AssertCheckpointWaited"/>.
    /// </summary>
    public static string TakenSoon(string command, string trigger = "", string before = "") => $"""
        {before}
        start "$W/out" {command}
        wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
        {trigger}
        ck checkpoint $P -o "$W/img" --log "$W/ck.log" -v -v 2>"$W/err.txt"; echo "RC: $?"
        wait_for "$W/out" '^SEEN' 15 || fail "the program did not take what was queued"
        kill -USR1 $P
        wait_exit $P 20; echo "TARGET: $?"
        """;

    public static string RoundTrip(string command, string afterRestart = "", string before = "", string restartArgs = "",
        string afterStart = "", string afterLayout = "") => $"""
        {before}
        start "$W/out" {command}
        {afterStart}
        wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
        sleep 0.1
        layout $P before
        {afterLayout}
        checkpoint_kill
        restart_detached {restartArgs}
        layout $P after
        {afterRestart}
        finish_detached
        """;
}

public sealed class E2eResult(E2eScript script, Exec.Result run)
{
    public int Code => run.Code;
    public string Stdout => run.Stdout;
    public string Stderr => run.Stderr;
    public string W => script.W;

    public string File(string name)
    {
        var p = Path.Combine(W, name);
        return System.IO.File.Exists(p) ? System.IO.File.ReadAllText(p) : "";
    }

    /// <summary>Everything there is to know when a test fails: the script's output and every log.</summary>
    public string Diagnostics
    {
        get
        {
            var sb = new StringBuilder();
            sb.Append($"\n===== {script.Name}: script exit {run.Code}{(run.TimedOut ? " (TIMED OUT, killed)" : "")}, work dir {W}\n");
            sb.Append($"----- script stdout\n{run.Stdout}\n----- script stderr\n{run.Stderr}\n");
            var files = Directory.GetFiles(W).Select(Path.GetFileName).OfType<string>()
                .Where(f => f.EndsWith(".log") || f.EndsWith(".out") || f == "out" || f.EndsWith(".err") || f.EndsWith(".txt"))
                .OrderBy(f => f == "out" ? "" : f);
            foreach (var f in files)
            {
                var text = File(f);
                if (text.Length > 20000) text = text[..10000] + "\n[...]\n" + text[^10000..];
                sb.Append($"----- {f}\n{text}\n");
            }
            return sb.ToString();
        }
    }

    /// <summary>The script ended normally (exit 0, no timeout).</summary>
    public E2eResult AssertScriptOk()
    {
        Assert.True(run.Code == 0 && !run.TimedOut, $"the scenario script failed{Diagnostics}");
        return this;
    }

    /// <summary>The program's verdict: a PASS line and no FAIL line in <paramref name="outFile"/>.</summary>
    public E2eResult AssertPassed(string outFile = "out")
    {
        AssertScriptOk();
        var o = File(outFile);
        var lines = o.Split('\n');
        Assert.True(lines.Contains("PASS") && !lines.Any(l => l.StartsWith("FAIL") || l.StartsWith("SETUP-ERROR")),
            $"the program did not verify its state (no PASS in {outFile}){Diagnostics}");
        return this;
    }

    /// <summary>
    /// The process has the same memory map and fds at <paramref name="after"/> as at <paramref name="before"/>
    /// (snapshots taken by the script's <c>layout PID TAG</c>). Compared: ranges, permissions, offsets and
    /// paths, with adjacent pieces of one mapping coalesced (the kernel may split or merge equivalent
    /// VMAs differently); fd numbers and their targets, pipe inode numbers and the names of unlinked
    /// files aside (a restored unlinked file is an O_TMPFILE file: "DIR/#INODE (deleted)").
    /// </summary>
    public E2eResult AssertSameLayout(string before = "before", string after = "after")
    {
        foreach (var kind in new[] { "maps", "fds" })
        {
            string fb = $"{kind}-{before}.txt", fa = $"{kind}-{after}.txt";
            Assert.True(System.IO.File.Exists(Path.Combine(W, fb)) && System.IO.File.Exists(Path.Combine(W, fa)),
                $"no {fb} or {fa} snapshot{Diagnostics}");
            var b = kind == "maps" ? Maps(File(fb)) : Fds(File(fb));
            var a = kind == "maps" ? Maps(File(fa)) : Fds(File(fa));
            if (b.Count == 0) Assert.Fail($"{fb} is empty{Diagnostics}");
            if (!b.SequenceEqual(a))
                Assert.Fail($"the {(kind == "maps" ? "memory map" : "fd table")} differs ({before} / {after}):\n"
                    + string.Join("\n", b.Except(a).Select(l => "- " + l).Concat(a.Except(b).Select(l => "+ " + l))) + Diagnostics);
        }
        return this;
    }

    private static List<string> Maps(string text)
    {
        var list = new List<(ulong Start, ulong End, string Perms, ulong Off, string Path)>();
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var f = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
            var range = f[0].Split('-');
            ulong s = Convert.ToUInt64(range[0], 16), e = Convert.ToUInt64(range[1], 16), off = Convert.ToUInt64(f[2], 16);
            string path = f.Length > 5 ? f[5].Trim() : "";
            if (list.Count > 0 && list[^1] is var p && p.End == s && p.Perms == f[1] && p.Path == path
                && (path == "" || off == p.Off + (p.End - p.Start)))
                list[^1] = (p.Start, e, p.Perms, p.Off, p.Path);
            else list.Add((s, e, f[1], off, path));
        }
        return list.Select(x => $"{x.Start:x}-{x.End:x} {x.Perms} {x.Off:x} {x.Path}").ToList();
    }

    private static List<string> Fds(string text) => text.Split('\n', StringSplitOptions.RemoveEmptyEntries)
        .Select(l => Regex.Replace(Regex.Replace(l, @"(pipe|socket):\[\d+\]$", "$1"), @"/[^/]* \(deleted\)$", "/(unlinked)")).ToList();

    /// <summary>
    /// A <see cref="E2eScript.Refused"/> script: exit 69, no image left, the target unharmed (same layout,
    /// verified itself); returns the one-line message, which must contain every one of <paramref name="words"/>.
    /// </summary>
    public string AssertRefused(params string[] words)
    {
        AssertPassed();
        Assert.True(run.Stdout.Contains("RC: 69\n"), $"the checkpoint should be refused with 69 (not checkpointable){Diagnostics}");
        Assert.True(run.Stdout.Contains("TARGET: 0\n"), $"the target did not verify itself after the refused checkpoint{Diagnostics}");
        Assert.False(run.Stdout.Contains("IMAGE-LEFT"), $"a refused checkpoint left an image file{Diagnostics}");
        AssertSameLayout();
        var lines = File("err.txt").TrimEnd('\n').Split('\n');
        Assert.True(lines.Length == 1 && lines[0].StartsWith("ckpt: "), $"err.txt should hold one 'ckpt: ...' line{Diagnostics}");
        foreach (var w in words) Assert.True(lines[0].Contains(w), $"the message should contain '{w}': {lines[0]}{Diagnostics}");
        return lines[0];
    }

    /// <summary>A <see cref="E2eScript.TakenSoon"/> checkpoint succeeded after waiting (its log says <paramref name="logged"/>), and the program went on.</summary>
    public E2eResult AssertCheckpointWaited(string logged)
    {
        AssertPassed();
        Assert.True(run.Stdout.Contains("RC: 0"), $"the checkpoint failed: {File("err.txt")}{Diagnostics}");
        Assert.Contains(logged, File("ck.log"));
        Assert.Contains("TARGET: 0", run.Stdout);
        return this;
    }

    /// <summary>The restored process ended with exit 0 (logged by the reaper through finish_detached).</summary>
    public E2eResult AssertRestoredExit0()
    {
        Assert.True(run.Stdout.Contains("RESTORED: exit 0"), $"the restored process did not exit with status 0{Diagnostics}");
        return this;
    }

    public void Cleanup()
    {
        // images are large: drop them once a test has passed
        foreach (var f in Directory.GetFiles(W, "*img*")) System.IO.File.Delete(f);
    }
}
