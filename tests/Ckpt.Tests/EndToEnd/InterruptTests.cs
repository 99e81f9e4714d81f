using System.Text.RegularExpressions;
using Xunit;

namespace Ckpt.Tests.EndToEnd;

/// <summary>
/// A checkpoint interrupted by SIGTERM or SIGINT part-way through: ckpt exits 130 with one line, and the
/// target carries on exactly as before (it then verifies its own state).
/// </summary>
[Collection(EndToEndCollection.Name)]
public sealed class InterruptTests(E2eEnvironment env)
{
    [Theory]
    [InlineData("TERM")]
    [InlineData("INT")]
    public void CheckpointInterruptedBySignal(string signal)
    {
        env.Program("memory");
        // the image goes into a pipe nobody reads until the signal was sent (0.3 s more; 20 s at most): ckpt
        // is stuck mid-image when the signal comes, however slowly the script runs
        // (with the signal's default action: a test run started in the background of a shell inherits SIGINT
        // ignored, which .NET then leaves ignored, as a program started so should)
        var r = new E2eScript(env, "interrupted-" + signal).Run($$"""
            start "$W/out" "$BIN/memory" "$W"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            ( env --default-signal={{signal}} "$CKPT" checkpoint $P --log "$W/ck.log" 2>"$W/err.txt"; echo $? > "$W/rc" ) | ( for i in $(seq 1 400); do [ -e "$W/sent" ] && break; sleep 0.05; done; sleep 0.3; cat >/dev/null ) &
            pipeline=$!
            for i in $(seq 1 100); do C=$(pgrep -f "^$CKPT checkpoint $P" | head -1); [ -n "$C" ] && break; sleep 0.02; done
            [ -n "$C" ] || fail "ckpt did not start"
            # mid-image for sure (and its handlers installed): the tree is frozen and the output blocked
            wait_for "$W/ck.log" 'frozen' 20 || fail "ckpt did not freeze the target"
            sleep 0.2
            kill -{{signal}} $C
            touch "$W/sent"
            wait $pipeline
            echo "RC: $(cat "$W/rc")"
            alive $P || fail "the target died"
            grep -q '^State:[[:space:]]*[RS]' /proc/$P/status || fail "the target was left $(grep State /proc/$P/status)"
            kill -USR1 $P
            wait_exit $P 20; echo "TARGET: $?"
            """);
        r.AssertPassed();
        var rc = Regex.Match(r.Stdout, @"^RC: (\d+)$", RegexOptions.Multiline);
        Assert.True(rc.Success && rc.Groups[1].Value == "130", $"an interrupted checkpoint exits 130{r.Diagnostics}");
        var err = r.File("err.txt").TrimEnd('\n').Split('\n');
        Assert.True(err.Length == 1 && err[0].StartsWith("ckpt: ") && err[0].Contains("interrupted"), $"one line naming the interruption{r.Diagnostics}");
        Assert.Matches(@"TARGET: 0", r.Stdout);
    }
}
