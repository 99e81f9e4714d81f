using System.Text.RegularExpressions;
using Xunit;

namespace Ckpt.Tests.EndToEnd;

/// <summary>
/// Anon-inode event objects (eventfd, timerfd, signalfd, epoll, inotify): a round trip verified by the
/// program itself, and the refusal of an epoll watch whose fd was closed.
/// </summary>
[Collection(EndToEndCollection.Name)]
public sealed class EventObjectTests(E2eEnvironment env)
{
    [Fact]
    public void EventObjectsRoundTrip()
    {
        env.Program("eventobjs");
        var r = new E2eScript(env, "eventobjs").Run(E2eScript.RoundTrip("\"$BIN/eventobjs\" \"$W/watched\"",
            before: "rm -rf \"$W/watched\"; mkdir -p \"$W/watched\"",
            afterRestart: "ck info \"$W/img\" > \"$W/info.txt\" || fail \"ckpt info failed\""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        var info = r.File("info.txt");
        foreach (var kind in new[] { "kind: eventfd", "kind: timerfd", "kind: signalfd", "kind: epoll", "kind: inotify" })
            Assert.True(info.Contains(kind), $"ckpt info does not show '{kind}'{r.Diagnostics}");
        Assert.Contains("data=0xdeadbeefcafe0001", info);
        r.Cleanup();
    }

    /// <summary>
    /// fanotify groups come back with their flags and every mark (inode with an ignore mask, mount,
    /// filesystem with FID reports): the program compares their fdinfo and checks each mark reports.
    /// </summary>
    [Fact]
    public void FanotifyRoundTrip()
    {
        env.Program("fanotify");
        var r = new E2eScript(env, "fanotify").Run(E2eScript.RoundTrip("\"$BIN/fanotify\" \"$W/fan\"",
            before: "trap 'umount -l \"$W/fan/m\" 2>/dev/null' EXIT",   // the program's tmpfs, whatever happens
            afterRestart: "ck info \"$W/img\" > \"$W/info.txt\" || fail \"ckpt info failed\""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        var info = r.File("info.txt");
        Assert.Contains("kind: fanotify", info);
        Assert.Contains("on=filesystem", info);
        r.Cleanup();
    }

    /// <summary>Checkpoint without --kill reads the objects without changing them: counts, ticks, pending signals, queues.</summary>
    [Fact]
    public void CheckpointLeavesEventObjectsUnharmed()
    {
        env.Program("eventobjs");
        var r = new E2eScript(env, "eventobjs-nokill").Run("""
            rm -rf "$W/watched"; mkdir -p "$W/watched"
            start "$W/out" "$BIN/eventobjs" "$W/watched"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            layout $P before
            ck checkpoint $P -o "$W/img" --log "$W/ck.log" -v -v; rc=$?
            [ $rc -eq 0 ] || fail "checkpoint exited with $rc"
            alive $P || fail "the target died"
            layout $P after
            kill -USR1 $P
            wait_exit $P 20; echo "TARGET: $?"
            """);
        r.AssertPassed().AssertSameLayout();
        Assert.True(Regex.IsMatch(r.Stdout, @"^TARGET: 0$", RegexOptions.Multiline), $"the target did not pass{r.Diagnostics}");
        r.Cleanup();
    }

    /// <summary>
    /// The epoll watches a dup that was then closed (the file stays open through the original fd, so the
    /// kernel keeps the watch): refused with 69, naming the epoll fd and the closed fd; the target goes on.
    /// </summary>
    /// <summary>
    /// inotify events queued when the tree is frozen (they cannot be saved), by a process that reads them
    /// a moment later: the checkpoint lets the tree run until they are read, then goes on.
    /// </summary>
    [Fact]
    public void InotifyEventsReadSoonAreWaitedFor()
    {
        env.Program("eventobjs");
        new E2eScript(env, "slowwatch").Run(E2eScript.TakenSoon("\"$BIN/eventobjs\" slowwatch \"$W/watched\"",
            before: "rm -rf \"$W/watched\"; mkdir -p \"$W/watched\"", trigger: "touch \"$W/watched/made\""))
            .AssertCheckpointWaited("inotify events to be read").Cleanup();
    }

    /// <summary>
    /// A process watching the directory ckpt writes its image and log in (ASP.NET Core watches its content
    /// root): the log waits in memory until the queues are found empty, and events queued after that
    /// (the image being written) come after the checkpoint's moment, so neither refuses the checkpoint.
    /// </summary>
    [Fact]
    public void WatchedDirectoryOfTheImageAndLog()
    {
        env.Program("eventobjs");
        var r = new E2eScript(env, "watchdir").Run("""
            rm -rf "$W/watched"; mkdir -p "$W/watched"
            start "$W/out" "$BIN/eventobjs" watchdir "$W/watched"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            ck checkpoint $P -o "$W/watched/img" --log "$W/watched/ck.log" -v -v --kill 2>"$W/err.txt" || fail "checkpoint failed: $(cat "$W/err.txt")"
            wait $P 2>/dev/null
            r=$(ck restart -i "$W/watched/img" --detach --log "$W/rs.log" -v -v 2>>"$W/err.txt") || fail "restart failed: $(cat "$W/err.txt")"
            finish_detached
            """);
        r.AssertPassed();
        Assert.Contains("RESTORED: exit 0", r.Stdout);
        r.Cleanup();
    }

    /// <summary>An io_uring instance, with its rings mapped (the usual case) or only its fd, is refused by name; the ring still works afterwards.</summary>
    [Theory]
    [InlineData("mapped", "is the ring of an io_uring instance")]
    [InlineData("fd", "io_uring")]
    public void IoUringIsRefused(string mode, string words)
    {
        env.Program("iouring");
        var r = new E2eScript(env, "iouring-" + mode).Run(E2eScript.Refused($"\"$BIN/iouring\" {mode}"));
        r.AssertRefused(words);
    }

    /// <summary>
    /// An inotify watch of a log file removed while still open (rotated under `tail -F`) comes back with
    /// its wd, on the rebuilt removed file: a write to it is reported.
    /// </summary>
    [Fact]
    public void InotifyWatchOfARemovedFile()
    {
        env.Program("eventobjs");
        var r = new E2eScript(env, "inotify-rotated").Run(E2eScript.RoundTrip("\"$BIN/eventobjs\" rotated \"$W/logs\"", before: "mkdir -p \"$W/logs\""));
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>
    /// An epoll watch whose fd was closed after it was added (the file still open under another fd) comes
    /// back keyed by the closed fd's number, which stays closed; one whose file only a child holds is refused.
    /// </summary>
    [Fact]
    public void EpollWatchOfClosedFd()
    {
        env.Program("eventobjs");
        var r = new E2eScript(env, "epoll-closed").Run(E2eScript.RoundTrip("\"$BIN/eventobjs\" closed", afterRestart: E2eScript.SaveInfo));
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("closed watches", r.File("info.txt"));
        r.Cleanup();
        var refused = new E2eScript(env, "epoll-closedother").Run(E2eScript.Refused("\"$BIN/eventobjs\" closedother"));
        string ep = Regex.Match(refused.File("out"), @"^EPFD (\d+)$", RegexOptions.Multiline).Groups[1].Value;
        string tfd = Regex.Match(refused.File("out"), @"^TFD (\d+)$", RegexOptions.Multiline).Groups[1].Value;
        refused.AssertRefused($"epoll fd {ep} watches fd {tfd}", "another process holds it");
        refused.Cleanup();
    }

    /// <summary>
    /// pidfds of processes of the tree: a running child's (non-blocking) and a zombie child's. After the
    /// restart the running child is signalled and waited for through its pidfd, and the zombie's gives
    /// its exit status.
    /// </summary>
    [Fact]
    public void PidFds()
    {
        env.Program("pidfds");
        var r = new E2eScript(env, "pidfds").Run(E2eScript.RoundTrip("\"$BIN/pidfds\""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }
}
