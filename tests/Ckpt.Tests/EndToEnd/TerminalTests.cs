using Xunit;

namespace Ckpt.Tests.EndToEnd;

/// <summary>
/// A program whose stdin, stdout and stderr are a terminal, checkpointed in one terminal (a `script`
/// session) and restarted from another: it carries on in the terminal it was restarted from.
/// </summary>
[Collection(EndToEndCollection.Name)]
public sealed class TerminalTests(E2eEnvironment env)
{
    [Fact]
    public void ProgramMovesToTheTerminalOfTheRestart()
    {
        env.Program("sleeper");
        var r = new E2eScript(env, "terminal").Run(TwoTerminals("sleeper",
            firstBeforeCheckpoint: """
                sleep 0.5
                readlink /proc/\$P/fd/1 > "$W/tty1"
                """,
            second: """
                tty > "$W/tty2"
                "$CKPT" restart -i "$W/img" --log "$W/rs.log" -v; echo "RESTART-STATUS: \$?"
                """,
            after: """
                echo "TTY1: $(cat "$W/tty1")"
                echo "TTY2: $(cat "$W/tty2")"
                """));
        r.AssertScriptOk();
        Assert.Contains("FIRST: 0", r.Stdout);
        var first = r.File("first.txt");
        var second = r.File("second.txt");
        Assert.True(first.Contains("READY") && !first.Contains("PASS"), $"the first terminal should only show READY{r.Diagnostics}");
        Assert.True(second.Contains("PASS") && second.Contains("RESTART-STATUS: 0"), $"the program should finish in the second terminal{r.Diagnostics}");
        Assert.Contains("replaced by", r.File("rs.log"));
    }

    /// <summary>
    /// A program started from a shell with job control leads a process group of its own. Restarted by a
    /// `ckpt restart` that a shell with job control runs in the foreground of another terminal, its group
    /// must get that terminal's foreground (else its first read or tcsetattr stops it for good, SIGTTIN or
    /// SIGTTOU). Stopped as by Ctrl-Z, ckpt stops too, so the shell sees its job stopped; `fg` continues the
    /// program with the terminal (the program checks its group, tcgetpgrp and tcsetattr before and after).
    /// </summary>
    [Fact]
    public void ForegroundJobOfTheRestartingShell()
    {
        env.Program("fgjob");
        var r = new E2eScript(env, "fgjob").Run(TwoTerminals("fgjob", jobControl: true,
            firstBeforeCheckpoint: """
                for i in \$(seq 100); do [ "\$(awk '{print \$5}' /proc/\$P/stat)" = \$P ] && break; sleep 0.05; done
                sleep 0.3
                """,
            second: """
                P=\$(cat "$W/pid")
                ( sleep 1; kill -USR1 \$P ) &
                "$CKPT" restart -i "$W/img" --log "$W/rs.log" -v; echo "RESTART-STATUS: \$?"
                fg; echo "FG-STATUS: \$?"
                """));
        r.AssertScriptOk();
        Assert.Contains("FIRST: 0", r.Stdout);
        var second = r.File("second.txt");
        Assert.True(r.File("first.txt").Contains("READY"), $"the program did not start in the first terminal{r.Diagnostics}");
        Assert.True(second.Contains("STOPPING") && second.Contains("CONTINUED") && second.Contains("PASS") && !second.Contains("FAIL"),
            $"the program should pass its checks in the second terminal{r.Diagnostics}");
        Assert.True(second.Contains("RESTART-STATUS: 148") && second.Contains("FG-STATUS: 0"),
            $"ckpt should stop with the program (148: SIGTSTP) and end with it after fg (0){r.Diagnostics}");
        Assert.Contains("SECOND: 0", r.Stdout);
    }

    /// <summary>
    /// The leader of a session on a terminal outside the tree (ctty.c, started by ptyhost as a terminal
    /// window starts its shell), checkpointed and restarted by a `ckpt restart` that waits in the
    /// foreground of another window. The terminal of the restart is the controlling terminal of the
    /// caller's session already: the leader gets a new pty, relayed to it (before: no controlling terminal
    /// at all, tcgetsid and /dev/tty failing, no job control). The program checks its session, foreground
    /// group, /dev/tty, a child's group taking the foreground, its echo-off setting, the new window's size
    /// with SIGWINCH, and reads the line typed into the new window; ckpt exits with its status.
    /// </summary>
    [Fact]
    public void SessionLeaderGetsATerminalThroughTheRestart()
    {
        env.Program("ctty");
        env.Program("ptyhost");
        var r = new E2eScript(env, "ctty").Run("""
            "$BIN/ptyhost" 80 24 "$W/first.txt" "$W/in1" "$BIN/ctty" </dev/null >/dev/null 2>&1 &
            H=$!
            wait_for "$W/first.txt" '^READY' 15 || fail "the program did not start in the first window"
            P=$(sed -n 's/^READY pid=\([0-9]*\).*/\1/p' "$W/first.txt" | head -n 1)
            checkpoint_kill
            wait $H
            ck info "$W/img" | grep -q 'outside the tree' || fail "ckpt info does not show the controlling terminal outside the tree"
            "$BIN/ptyhost" 100 30 "$W/second.txt" "$W/in2" bash -c "\"$CKPT\" restart -i \"$W/img\" --log \"$W/rs.log\" -v; echo RESTART-STATUS: \$?" </dev/null >/dev/null 2>&1 &
            H=$!
            wait_for "$W/rs.log" "pid $P released" 20 || fail "no restart in the second window"
            kill -USR1 $P
            wait_for "$W/second.txt" '^READING' 15 || fail "the restored program did not get to its read"
            printf 'hello\n' >> "$W/in2"
            wait_exit $H 20; echo "HOST: $?"
            """);
        r.AssertScriptOk();
        var second = r.File("second.txt");
        Assert.True(second.Contains("PASS") && !second.Contains("FAIL") && second.Contains("RESTART-STATUS: 0"),
            $"the program should pass its checks in the second window, and ckpt end with it{r.Diagnostics}");
        Assert.Contains("HOST: 0", r.Stdout);
        Assert.Contains("stands for it", r.File("rs.log"));
    }

    /// <summary>
    /// A pseudo-terminal whose master the tree holds (as tmux or script do): a child leads a session with
    /// the pty as its controlling terminal, a grandchild's group in the foreground. After the restart the
    /// pty has its old name and settings, and the grandchild, reading it, finds the same controlling
    /// terminal, session, foreground group and window size (the program checks, through the pty).
    /// </summary>
    [Fact]
    public void PtyHeldByTheTree()
    {
        env.Program("ptys");
        var r = new E2eScript(env, "ptys").Run(E2eScript.RoundTrip("\"$BIN/ptys\"", afterRestart: E2eScript.SaveInfo));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        Assert.Contains("pty master", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>
    /// Input typed on a pty in canonical mode and not read yet (whole lines, one with a literal ^C, and a
    /// partial line that FIONREAD does not count) survives a checkpoint that leaves the tree running and a
    /// restart: the same lines are read, nothing is echoed again, the partial line completes (the program
    /// checks). The checkpoint refused such a pty before.
    /// </summary>
    [Fact]
    public void CanonicalInputNotReadYet()
    {
        env.Program("ptycanon");
        var r = new E2eScript(env, "ptycanon").Run("""
            start "$W/out" "$BIN/ptycanon"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            ck checkpoint $P -o "$W/img0" --log "$W/ck0.log" -v || fail "the checkpoint that leaves it running failed"
            checkpoint_kill
            restart_detached
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        r.Cleanup();
    }

    /// <summary>
    /// A scenario of two terminals (`script` sessions): in the first a shell starts PROGRAM in the
    /// background (with job control: `set -m`, a process group of its own), runs
    /// <paramref name="firstBeforeCheckpoint"/>, checkpoints it with --kill and keeps its terminal a few
    /// seconds; once the pid is free, the second terminal runs <paramref name="second"/> (at most 30 s),
    /// then <paramref name="after"/>. Its output: first.txt, second.txt, "SECOND: status", "FIRST: status".
    /// In the two shell scripts, `\$` stands for a `$` of the script itself.
    /// </summary>
    /// <summary>
    /// Terminals that were hung up (hangup.c: a pty whose master was closed, as a job left behind by a
    /// closed terminal window or ssh session has): restart gives them back hung up (reads end of file,
    /// writes EIO), not the terminal now at that name, which another pty holds meanwhile (before: the
    /// restart opened that one, or failed when there was none). zdtm's pty04 is such a case.
    /// </summary>
    [Fact]
    public void HungUpTerminal()
    {
        env.Program("hangup");
        var r = new E2eScript(env, "hangup").Run("""
            start "$W/out" "$BIN/hangup"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            name=$(sed -n 's/^HUNG //p' "$W/out")
            checkpoint_kill
            ck info "$W/img" | grep -q 'terminal: hung up' || fail "ckpt info does not show a hung-up terminal"
            # another pty takes the name meanwhile (the lowest free index)
            python3 -c 'import os,sys,time; m,s=os.openpty(); print(os.ttyname(s), flush=True); time.sleep(60)' > "$W/other" &
            H=$!
            wait_for "$W/other" '^/dev/pts/' 10 || fail "no other pty"
            echo "NAME: $name OTHER: $(cat "$W/other")"
            restart_detached
            finish_detached
            kill $H
            """);
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    private static string TwoTerminals(string program, string firstBeforeCheckpoint, string second, string after = "", bool jobControl = false) => $$"""
        command -v script >/dev/null || fail "script (util-linux) is missing"
        cat > "$W/first.sh" <<FIRST
        {{(jobControl ? "set -m" : "")}}
        exec 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
        "$BIN/{{program}}" &
        P=\$!
        echo \$P > "$W/pid"
        {{firstBeforeCheckpoint}}
        "$CKPT" checkpoint \$P -o "$W/img" --kill --log "$W/ck.log" -v || exit 10
        wait \$P 2>/dev/null
        touch "$W/first-done"
        sleep 4   # keeps this terminal, so that the second one is another
        exit 0
        FIRST
        cat > "$W/second.sh" <<SECOND
        {{(jobControl ? "set -m" : "")}}
        exec 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
        {{second}}
        SECOND
        script -qec "bash $W/first.sh" /dev/null > "$W/first.txt" 2>&1 &
        S=$!
        wait_for "$W/ck.log" 'image complete' 20 || fail "no checkpoint in the first terminal"
        for i in $(seq 100); do [ -e "$W/first-done" ] && break; sleep 0.05; done
        P=$(cat "$W/pid")
        gone 10 $P || fail "the first program still holds its pid"
        timeout 30 script -qec "bash $W/second.sh" /dev/null > "$W/second.txt" 2>&1; echo "SECOND: $?"
        kill -9 $P 2>/dev/null
        wait $S; echo "FIRST: $?"
        {{after}}
        """;
}
