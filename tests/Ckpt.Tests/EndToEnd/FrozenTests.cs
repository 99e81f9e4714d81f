using Xunit;

namespace Ckpt.Tests.EndToEnd;

/// <summary>
/// restart --frozen from a shell with job control (as a person at a terminal runs it): the process stays
/// stopped after ckpt exits — it must not die of the SIGHUP sent to an orphaned stopped process group —
/// and carries on after SIGCONT.
/// </summary>
[Collection(EndToEndCollection.Name)]
public sealed class FrozenTests(E2eEnvironment env)
{
    [Fact]
    public void FrozenSurvivesUnderJobControl()
    {
        env.Program("sleeper");
        var r = new E2eScript(env, "frozen-jobcontrol").Run("""
            command -v script >/dev/null || fail "script (util-linux) is missing"
            cat > "$W/inner.sh" <<INNER
            set -m
            exec 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
            "$BIN/sleeper" > "$W/out" 2>&1 < /dev/null &
            P=\$!
            for i in \$(seq 1 500); do grep -q READY "$W/out" && break; sleep 0.01; done
            "$CKPT" checkpoint \$P -o "$W/img" --kill --log "$W/ck.log" || exit 10
            wait \$P 2>/dev/null
            "$CKPT" restart -i "$W/img" --frozen --log "$W/rs.log" > "$W/pid" || exit 11
            sleep 0.5
            echo "STATE: \$(awk '{print \$3}' /proc/\$P/stat 2>/dev/null || echo gone)" > "$W/state"
            kill -CONT \$P
            INNER
            script -qec "bash $W/inner.sh" /dev/null > "$W/script.txt" 2>&1; echo "INNER: $?"
            cat "$W/state"
            P=$(cat "$W/pid")
            [ -n "$P" ] || fail "no pid printed"
            wait_exit $P 30; echo "TARGET: $?"
            """);
        Assert.Contains("INNER: 0", r.Stdout);
        Assert.Contains("STATE: T", r.Stdout);
    }

    /// <summary>
    /// checkpoint --leave-stopped: every process of the tree is stopped when ckpt exits and stays so; after
    /// SIGCONT the original goes on and verifies itself (the fallback of a migration), and the image
    /// restarts as well once it has ended. --kill with it is a usage error.
    /// </summary>
    [Fact]
    public void CheckpointLeavesTheTreeStopped()
    {
        env.Program("children");
        var r = new E2eScript(env, "leave-stopped").Run("""
            start "$W/out" "$BIN/children"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            set -- $(grep '^CHILDREN' "$W/out"); shift
            C=$1
            ck checkpoint $P --kill --leave-stopped -o "$W/x" 2>"$W/usage.txt"; echo "BOTH: $?"
            ck checkpoint $P -o "$W/img" --leave-stopped --log "$W/ck.log" -v || fail "checkpoint failed"
            for p in $P $C; do [ "$(awk '{print $3}' /proc/$p/stat)" = T ] || fail "pid $p is not stopped when ckpt exits"; done
            sleep 0.3
            for p in $P $C; do [ "$(awk '{print $3}' /proc/$p/stat)" = T ] || fail "pid $p did not stay stopped"; done
            kill -CONT $P $C
            kill -USR1 $P
            wait $P; echo "ORIGINAL: $?"
            gone 10 $P $C || fail "the original tree is still there"
            restart_detached
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0().Cleanup();
        Assert.Contains("BOTH: 64", r.Stdout);
        Assert.Contains("ORIGINAL: 0", r.Stdout);
    }

    /// <summary>
    /// A checkpoint leaves a stopped process's signals as they were: sent SIGSTOP again while stopped (the
    /// signal stays pending until SIGCONT discards it), it still has it pending afterwards, and it still
    /// goes on after SIGCONT; restarted, it is stopped with the SIGSTOP pending too. Before, the
    /// checkpoint's injected calls took the pending SIGSTOP and dropped it (and a SIGSTOP sent while the
    /// checkpoint held a running process was lost: it went on running).
    /// </summary>
    [Fact]
    public void CheckpointKeepsAStoppedProcessPendingStop()
    {
        env.Program("sleeper");
        var r = new E2eScript(env, "pending-stop").Run("""
            start "$W/out" "$BIN/sleeper"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            stop_twice() {
              kill -STOP $P
              for i in $(seq 100); do [ "$(awk '{print $3}' /proc/$P/stat)" = T ] && break; sleep 0.02; done
              kill -STOP $P
            }
            stop_twice
            pending() { printf '%d' $(( 0x$(sed -n 's/^ShdPnd:[[:space:]]*//p' /proc/$P/status) >> 18 & 1 )); }
            [ "$(pending)" = 1 ] || fail "no SIGSTOP pending before the checkpoint"
            ck checkpoint $P -o "$W/img" --log "$W/ck.log" -v || fail "checkpoint failed"
            echo "STATE: $(awk '{print $3}' /proc/$P/stat) PENDING: $(pending)"
            kill -CONT $P
            sleep 0.2
            echo "AFTER CONT: $(awk '{print $3}' /proc/$P/stat)"
            # the image holds it too: restarted stopped, with the SIGSTOP pending, and going on after SIGCONT
            stop_twice
            checkpoint_kill
            restart_detached
            echo "RESTARTED: $(awk '{print $3}' /proc/$P/stat) PENDING: $(pending)"
            kill -CONT $P
            sleep 0.2
            echo "RESTARTED AFTER CONT: $(awk '{print $3}' /proc/$P/stat)"
            kill -9 $P
            """);
        r.AssertScriptOk();
        Assert.Contains("STATE: T PENDING: 1", r.Stdout);
        Assert.DoesNotContain("AFTER CONT: T", r.Stdout);
        Assert.Contains("RESTARTED: T PENDING: 1", r.Stdout);
        Assert.DoesNotContain("RESTARTED AFTER CONT: T", r.Stdout);
        r.Cleanup();
    }

    /// <summary>
    /// A SIGSTOP sent to one thread alone (tkill) of a stopped process stays pending for that thread, not the
    /// process, through a checkpoint that leaves it running and through a restart (the checkpoint's calls
    /// take it out of the queue: it is given back to that thread, and saved as that thread's).
    /// </summary>
    [Fact]
    public void CheckpointKeepsAThreadsPendingStop()
    {
        env.Program("twothreads");
        env.Program("tkill");
        var r = new E2eScript(env, "thread-pending-stop").Run("""
            start "$W/out" "$BIN/twothreads"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            T=$(sed -n 's/^THREAD //p' "$W/out")
            # the other thread, then the main one (which takes what the restart's release sends it first)
            for X in $T $P; do
              stop_twice() {
                "$BIN/tkill" $X 19
                for i in $(seq 100); do [ "$(awk '{print $3}' /proc/$P/stat)" = T ] && break; sleep 0.02; done
                "$BIN/tkill" $X 19
              }
              bit() { printf '%d' $(( 0x$(sed -n "s/^$2:[[:space:]]*//p" $1) >> 18 & 1 )); }
              pending() { echo "thread $(bit /proc/$P/task/$X/status SigPnd) process $(bit /proc/$P/status ShdPnd)"; }
              stop_twice
              echo "BEFORE $X: $(pending)"
              ck checkpoint $P -o "$W/img" --log "$W/ck.log" -v || fail "checkpoint failed"
              echo "STATE $X: $(awk '{print $3}' /proc/$P/stat) PENDING: $(pending)"
              kill -CONT $P
              stop_twice
              checkpoint_kill
              restart_detached
              echo "RESTARTED $X: $(awk '{print $3}' /proc/$P/stat) PENDING: $(pending)"
              kill -CONT $P
              sleep 0.2
              echo "RESTARTED AFTER CONT $X: $(awk '{print $3}' /proc/$P/stat)"
            done
            finish_detached
            """);
        r.AssertScriptOk();
        var lines = r.Stdout.Split('\n');
        Assert.Equal(2, lines.Count(l => l.StartsWith("BEFORE ") && l.EndsWith(": thread 1 process 0")));
        Assert.Equal(2, lines.Count(l => l.StartsWith("STATE ") && l.EndsWith(": T PENDING: thread 1 process 0")));
        Assert.True(2 == lines.Count(l => l.StartsWith("RESTARTED ") && !l.Contains("AFTER") && l.EndsWith(": T PENDING: thread 1 process 0")), r.Stdout);
        Assert.DoesNotContain(lines, l => l.StartsWith("RESTARTED AFTER CONT") && l.EndsWith(": T"));
        r.AssertRestoredExit0().Cleanup();
    }
}
