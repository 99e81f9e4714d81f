using System.Text.RegularExpressions;
using Xunit;

namespace Ckpt.Tests.EndToEnd;

/// <summary>
/// POSIX timers (timer_create): restored with their ids, clocks, notifications and time left; verified by
/// tests/programs/timers.c itself. A CLOCK_THREAD_CPUTIME_ID timer of a multi-threaded process is refused.
/// </summary>
[Collection(EndToEndCollection.Name)]
public sealed class TimerTests(E2eEnvironment env)
{
    [Fact]
    public void PosixTimersRoundTrip()
    {
        env.Program("timers");
        var r = new E2eScript(env, "timers").Run(E2eScript.RoundTrip("\"$BIN/timers\"",
            afterRestart: "ck info \"$W/img\" > \"$W/info.txt\" || fail \"ckpt info failed\""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        var m = Regex.Match(r.File("out"), @"^IDS (\d+) (\d+) (\d+) (\d+) (\d+)$", RegexOptions.Multiline);
        Assert.True(m.Success, $"no IDS line{r.Diagnostics}");
        var info = r.File("info.txt");
        Assert.True(info.Contains("posix_timers (5)"), $"ckpt info does not list 5 POSIX timers{r.Diagnostics}");
        for (int i = 1; i <= 5; i++)
            Assert.True(Regex.IsMatch(info, $@"\bid={m.Groups[i].Value}\b"), $"ckpt info does not show timer id {m.Groups[i].Value}{r.Diagnostics}");
        foreach (var s in new[] { "SIGEV_THREAD_ID signal", "SIGEV_NONE", "CLOCK_PROCESS_CPUTIME_ID", "value 0x1092", "interval=0.050000000s" })
            Assert.True(info.Contains(s), $"ckpt info does not show '{s}'{r.Diagnostics}");
        r.Cleanup();
    }

    /// <summary>
    /// A SIGEV_THREAD_ID timer whose thread has exited (deadtimer.c; zdtm's dead_thread_posix_timer): the
    /// checkpoint refused it before; restart makes it for a thread with that tid that exits once the
    /// timer exists, so the timer is there under its id, names that tid, keeps its interval and still
    /// signals no one.
    /// </summary>
    [Fact]
    public void TimerOfAThreadThatExited()
    {
        env.Program("deadtimer");
        var r = new E2eScript(env, "deadtimer").Run(E2eScript.RoundTrip("\"$BIN/deadtimer\""));
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>A checkpoint without --kill reads the timers without disturbing them.</summary>
    [Fact]
    public void CheckpointLeavesTimersRunning()
    {
        env.Program("timers");
        var r = new E2eScript(env, "timers-nokill").Run("""
            start "$W/out" "$BIN/timers"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            ck checkpoint $P -o "$W/img" --log "$W/ck.log" -v -v; rc=$?
            [ $rc -eq 0 ] || fail "checkpoint exited with $rc"
            alive $P || fail "the target died"
            sleep 0.2
            kill -USR1 $P
            wait_exit $P 20; echo "TARGET: $?"
            """);
        r.AssertPassed();
        Assert.Contains("TARGET: 0", r.Stdout);
        r.Cleanup();
    }

    /// <summary>CLOCK_THREAD_CPUTIME_ID in a process of two threads: which thread it measures is not visible, so refused (69).</summary>
    [Fact]
    public void ThreadCpuTimerOfMultiThreadedProcessIsRefused()
    {
        env.Program("timers_threadcpu");
        var r = new E2eScript(env, "timers-threadcpu").Run(E2eScript.Refused("\"$BIN/timers_threadcpu\""));
        r.AssertRefused("CLOCK_THREAD_CPUTIME_ID", "POSIX timer");
        r.Cleanup();
    }
}
