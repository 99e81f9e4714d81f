using System.Text.Json;
using System.Text.RegularExpressions;
using Xunit;

namespace Ckpt.Tests.EndToEnd;

/// <summary>
/// Checkpoint, kill and restart of programs that each hold one kind of state; every program verifies
/// its own state after the restart and prints PASS or FAIL with the details.
/// </summary>
[Collection(EndToEndCollection.Name)]
public sealed class RoundTripTests(E2eEnvironment env)
{
    /// <summary>A process that unmapped [vdso] and [vvar] (vdsogone.c): they stay unmapped, the rest of the vDSO pieces stay put (the restart refused the layout before).</summary>
    [Fact]
    public void VdsoUnmapped()
    {
        env.Program("vdsogone");
        var r = new E2eScript(env, "vdsogone").Run(E2eScript.RoundTrip("\"$BIN/vdsogone\""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    /// <summary>
    /// The vDSO's functions called by a program after a restart (vdso.c: glibc's clock_gettime and the
    /// others, a thread calling clock_gettime without pause). "proxy": restarted with CKPT_VDSO_PROXY=1, as
    /// on a kernel whose vDSO differs (a migration): the checkpointed vDSO is put back with its functions
    /// leading to the kernel's, moved elsewhere (the restart refused a different vDSO before).
    /// </summary>
    [Theory]
    [InlineData("proxy")]
    [InlineData("same")]
    public void VdsoFunctions(string mode)
    {
        env.Program("vdso");
        var r = new E2eScript(env, "vdso-" + mode).Run(E2eScript.RoundTrip($"\"$BIN/vdso\" {mode}",
            before: mode == "proxy" ? "export CKPT_VDSO_PROXY=1" : ""));
        r.AssertPassed().AssertRestoredExit0();
        if (mode == "same") r.AssertSameLayout();
        else Assert.Contains("the checkpointed vDSO put back", r.File("rs.log"));
        r.Cleanup();
    }

    /// <summary>
    /// A process whose main thread exited (pthread_exit) while two threads run: a zombie thread-group
    /// leader (zleader.c), as the root and as a child of the root. After the restart the main thread is a
    /// zombie again, the threads have their ids, memory and file, and the process exits with 0 (it was
    /// refused before).
    /// </summary>
    [Theory]
    [InlineData("")]
    [InlineData("child")]
    public void MainThreadExited(string mode)
    {
        env.Program("zleader");
        var r = new E2eScript(env, "zleader" + mode).Run(E2eScript.RoundTrip($"\"$BIN/zleader\" {mode}"));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    [Fact]
    public void Memory()
    {
        env.Program("memory");
        var s = new E2eScript(env, "memory");
        var r = s.Run(E2eScript.RoundTrip("\"$BIN/memory\" \"$W\"", afterRestart: """
            ck info "$W/img" --json > "$W/info.json" || fail "ckpt info failed"
            stat -c %s "$W/img" > "$W/imgsize.txt"
            """));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();

        // the 64 GiB sparse region: only its touched pages are in the image
        var m = Regex.Match(r.File("out"), @"^SPARSE ([0-9a-f]+) ([0-9a-f]+) (\d+)$", RegexOptions.Multiline);
        Assert.True(m.Success, $"no SPARSE line{r.Diagnostics}");
        using var info = JsonDocument.Parse(r.File("info.json"));
        var regions = info.RootElement.GetProperty("memory").EnumerateArray().ToList();
        var sparse = regions.FirstOrDefault(x => x.GetProperty("range").GetString() == $"{m.Groups[1].Value}-{m.Groups[2].Value}");
        Assert.True(sparse.ValueKind == JsonValueKind.Object, $"the sparse region {m.Groups[1].Value}-{m.Groups[2].Value} is not in ckpt info{r.Diagnostics}");
        Assert.Equal(long.Parse(m.Groups[3].Value), sparse.GetProperty("pages_saved").GetInt64());
        Assert.Contains("noreserve", sparse.GetProperty("flags").GetString());
        long imageBytes = long.Parse(r.File("imgsize.txt").Trim());
        // 48 MiB mapping + 8 MiB malloc + 1 MiB brk + small things; nothing of the 64 GiB but 7 pages
        Assert.True(imageBytes < 72L << 20, $"image is {imageBytes} bytes{r.Diagnostics}");
        Assert.Equal(imageBytes, info.RootElement.GetProperty("totals").GetProperty("image_bytes").GetInt64());
        r.Cleanup();
    }

    /// <summary>
    /// Memory in 2 MiB blocks: with --huge-pages the blocks that were fully present come back as
    /// transparent huge pages, the others (and everything without the option) as 4 KiB pages; the data,
    /// the resident size and the regions' flags stay the same either way (the program checks).
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void HugePages(bool huge)
    {
        env.Program("hugemem");
        // a machine with THP turned off gets 4 KiB pages whatever the option says
        bool thp = !File.ReadAllText("/sys/kernel/mm/transparent_hugepage/enabled").Contains("[never]");
        var r = new E2eScript(env, huge ? "hugemem-huge" : "hugemem-small").Run(E2eScript.RoundTrip(
            $"\"$BIN/hugemem\" {(huge && thp ? "huge" : "small")}", restartArgs: huge ? "--huge-pages" : ""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        if (huge && thp) Assert.Matches(@"\b6 huge page\(s\)|\b[1-9][0-9]* huge page\(s\)", r.File("rs.log"));
        r.Cleanup();
    }

    [Fact]
    public void BlockedInPipeRead()
    {
        env.Program("pipe_read");
        var r = new E2eScript(env, "pipe_read").Run(E2eScript.RoundTrip("\"$BIN/pipe_read\""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    /// <summary>Restarted without --detach: ckpt waits and exits with the program's status.</summary>
    [Fact]
    public void InNanosleep()
    {
        env.Program("sleeper");
        var r = new E2eScript(env, "sleeper").Run("""
            start "$W/out" "$BIN/sleeper"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            sleep 0.5
            checkpoint_kill
            grep -q '^slept' "$W/out" && fail "the checkpoint was not taken during the first sleep"
            ck restart -i "$W/img" --log "$W/rs.log" -v -v; rc=$?
            echo "RESTART-STATUS: $rc"
            [ $rc -eq 0 ] || fail "restart (waiting for the program) exited with $rc"
            """);
        r.AssertPassed();
        Assert.Contains("RESTART-STATUS: 0", r.Stdout);
        r.Cleanup();
    }

    /// <summary>
    /// Relative sleeps (nanosleep, clock_nanosleep) given a buffer for the time left, checkpointed 3.5 s
    /// into 6 s: after the restart they sleep what was left instead of starting over (the program checks
    /// each lasted less than 8.5 s in all).
    /// </summary>
    [Fact]
    public void SleepsResumeForWhatWasLeft()
    {
        env.Program("longsleep");
        var r = new E2eScript(env, "longsleep").Run("""
            start "$W/out" "$BIN/longsleep"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            sleep 3.5
            checkpoint_kill
            grep -q '^SLEPT' "$W/out" && fail "the checkpoint was not taken during the sleeps"
            restart_detached
            wait_for "$W/out" '^SLEPT' 20 || fail "the sleeps did not end"
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>
    /// Threads blocked in calls the kernel ends with EINTR when their thread is stopped (epoll_wait,
    /// sigwaitinfo, semop, recv under SO_RCVTIMEO): neither a checkpoint that leaves the process running
    /// nor a restart lets them see EINTR; each gets its event afterwards.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void CallsEndedByStopsDoNotSeeEintr(bool restart)
    {
        env.Program("eintr");
        var r = new E2eScript(env, restart ? "eintr-restart" : "eintr-running").Run(restart
            ? E2eScript.RoundTrip("\"$BIN/eintr\"")
            : """
              start "$W/out" "$BIN/eintr"
              wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
              ck checkpoint $P -o "$W/img" --log "$W/ck.log" -v -v || fail "checkpoint failed"
              kill -USR1 $P
              wait_exit $P 20; echo "TARGET: $?"
              """);
        r.AssertPassed();
        if (restart) r.AssertRestoredExit0();
        else Assert.True(r.Stdout.Contains("TARGET: 0"), $"the program saw EINTR{r.Diagnostics}");
        r.Cleanup();
    }

    /// <summary>
    /// <c>ckpt checkpoint PID --kill | cat | ckpt restart</c> on one machine: the restart needs the pid,
    /// which the checkpoint frees only once it has written the whole image, more than the pipes hold; the
    /// restart drains the rest of the image into a spool file meanwhile, then restarts from it.
    /// </summary>
    [Fact]
    public void CheckpointKillPipedIntoRestart()
    {
        env.Program("hugemem");
        var r = new E2eScript(env, "piped").Run("""
            ( setsid sh -c 'echo $$ > "$1/pid"; exec "$2" small' sh "$W" "$BIN/hugemem" </dev/null >"$W/out" 2>&1 & )
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            P=$(cat "$W/pid")
            ck checkpoint $P --kill 2>"$W/ck.err" | cat | ck restart --detach --log "$W/rs.log" -v -v >"$W/restart.out" 2>"$W/rs.err"
            [ "$(cat "$W/restart.out")" = "$P" ] || fail "restart printed '$(cat "$W/restart.out")': $(cat "$W/ck.err" "$W/rs.err")"
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("spool file", r.File("rs.log"));
        r.Cleanup();
    }

    /// <summary>
    /// A process that raised its fd limit and holds nearly that many fds, each its own description
    /// (fdlimit.c), restarted by a ckpt whose soft limit is lower: ckpt raises its own for the vessel, and
    /// the fds are placed without room for twice as many (before: EMFILE when the temporaries were moved
    /// above the final numbers).
    /// </summary>
    [Fact]
    public void FdsUpToTheProcesssLimit()
    {
        env.Program("fdlimit");
        var r = new E2eScript(env, "fdlimit").Run("""
            start "$W/out" "$BIN/fdlimit"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            checkpoint_kill
            ulimit -Sn 1024
            restart_detached
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>
    /// /proc files of a process that exited after they were opened (deadproc.c): saved (the checkpoint
    /// refused them before) and opened again through a stand-in with that pid, killed once they are open:
    /// they read after the restart as before (stat fails with ESRCH), and the pid is free again.
    /// </summary>
    [Fact]
    public void ProcFilesOfAnExitedProcess()
    {
        env.Program("deadproc");
        var r = new E2eScript(env, "deadproc").Run(E2eScript.RoundTrip("\"$BIN/deadproc\"", afterRestart: E2eScript.SaveInfo));
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("exited_pid", r.File("info.txt"));
        r.Cleanup();
    }

    [Fact]
    public void Files()
    {
        env.Program("files");
        var r = new E2eScript(env, "files").Run(E2eScript.RoundTrip("\"$BIN/files\" \"$W/files\"", before: "mkdir -p \"$W/files\""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    /// <summary>
    /// A working directory that is the /proc directory of a process that has ended since (zdtm unhashed_proc):
    /// the restart failed ("cannot enter /proc/N (deleted)"); now a process of ckpt's gets the pid for a
    /// moment and the vessel enters its directory before it ends.
    /// </summary>
    [Fact]
    public void WorkingDirectoryOfAnEndedProcess()
    {
        env.Program("procgone");
        var r = new E2eScript(env, "procgone").Run(E2eScript.RoundTrip("\"$BIN/procgone\""));
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    [Fact]
    public void ThousandsOfFds()
    {
        env.Program("manyfds");
        var r = new E2eScript(env, "manyfds").Run(E2eScript.RoundTrip("\"$BIN/manyfds\" \"$BIN/manyfds\""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    [Fact]
    public void ThousandsOfSmallRegions()
    {
        env.Program("manyregions");
        var r = new E2eScript(env, "manyregions").Run(E2eScript.RoundTrip("\"$BIN/manyregions\""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    [Fact]
    public void Pipes()
    {
        env.Program("pipes");
        var r = new E2eScript(env, "pipes").Run(E2eScript.RoundTrip("\"$BIN/pipes\""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    /// <summary>Four threads (sleeping, in a futex wait, in read, spinning), each with its tid, TLS, name and mask.</summary>
    [Fact]
    public void Threads()
    {
        env.Program("mthreads");
        var r = new E2eScript(env, "mthreads").Run(E2eScript.RoundTrip("\"$BIN/mthreads\""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    /// <summary>
    /// Two threads (the main one too) spinning inside rseq critical sections: checkpoints that leave the
    /// process running, then one with --kill and a restart; no section may go on without its protection
    /// (a thread frozen in one goes on at its abort handler, in the running process as in the restarted).
    /// </summary>
    [Fact]
    public void RseqCriticalSections()
    {
        env.Program("rseqcs");
        var r = new E2eScript(env, "rseqcs").Run("""
            start "$W/out" "$BIN/rseqcs"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            for i in 1 2 3; do ck checkpoint $P -o /dev/null --log "$W/ck$i.log" -v || fail "checkpoint $i (leaving it running) failed"; done
            checkpoint_kill
            restart_detached
            sleep 0.2
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("rseq critical section", string.Concat(r.File("ck1.log"), r.File("ck2.log"), r.File("ck3.log"), r.File("ck.log")));
        r.Cleanup();
    }

    [Fact]
    public void Signals()
    {
        env.Program("signals");
        var r = new E2eScript(env, "signals").Run(E2eScript.RoundTrip("\"$BIN/signals\""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    [Fact]
    public void FpuAvx2()
    {
        Assert.SkipUnless(env.HasAvx2, "this CPU has no AVX2");
        env.Program("fpu_avx2");
        var r = new E2eScript(env, "fpu_avx2").Run(E2eScript.RoundTrip("\"$BIN/fpu_avx2\""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    [Fact]
    public void FpuAvx512()
    {
        Assert.SkipUnless(env.HasAvx512, "this CPU has no AVX-512 (the AVX2 part runs in FpuAvx2)");
        env.Program("fpu_avx512");
        var r = new E2eScript(env, "fpu_avx512").Run(E2eScript.RoundTrip("\"$BIN/fpu_avx512\""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    /// <summary>
    /// AVX-512 registers saved with another CPU's xstate layout (the image rewritten as a CPU whose
    /// extended components lie 256 bytes further on would have written it): the restart lays the threads'
    /// xstate out again for this CPU (it refused a buffer of another size before), and fpu_avx512 finds
    /// its registers intact.
    /// </summary>
    [Fact]
    public void XstateLaidOutForAnotherCpu()
    {
        Assert.SkipUnless(env.HasAvx512, "this CPU has no AVX-512");
        env.Program("fpu_avx512");
        var s = new E2eScript(env, "xstate-relayout");
        var first = s.Run("""
            start "$W/out" "$BIN/fpu_avx512"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            sleep 0.1
            echo $P > "$W/pid"
            checkpoint_kill
            echo CHECKPOINTED
            """);
        Assert.True(first.Stdout.Contains("CHECKPOINTED"), $"the checkpoint failed{first.Diagnostics}");
        string img = Path.Combine(s.W, "img");
        WithShiftedXstate(img, img + ".other", 256);
        File.Move(img + ".other", img, overwrite: true);
        var r = s.Run("""
            P=$(cat "$W/pid")
            restart_detached
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("xstate laid out again", r.File("rs.log"));
        r.Cleanup();
    }

    /// <summary>Copies an image, its xstate buffers (Thread records) and header as a CPU whose extended components lie <paramref name="shift"/> bytes further would have them.</summary>
    private static void WithShiftedXstate(string from, string to, uint shift)
    {
        using var input = File.OpenRead(from);
        var reader = new Ckpt.Image.ImageReader(input);
        var h = Ckpt.Image.ImageHeader.Read(reader);
        Assert.NotEmpty(h.XstateLayout);
        int size = (int)(h.XstateSize + shift);
        using var output = File.Create(to);
        using var w = new Ckpt.Image.ImageWriter(output);
        new Ckpt.Image.ImageHeader
        {
            ToolVersion = h.ToolVersion, KernelRelease = h.KernelRelease, Architecture = h.Architecture, PageSize = h.PageSize,
            Xcr0 = h.Xcr0, XstateSize = (uint)size, TimeUnixNs = h.TimeUnixNs, Hostname = h.Hostname, RootPid = h.RootPid,
            XstateLayout = h.XstateLayout.Select(c => (c.Bit, c.Offset + shift, c.Size)).ToArray(),
        }.Write(w);
        while (reader.Next() is { } rec)
        {
            var p = rec.Payload.ToArray();
            if (rec.Kind == Ckpt.Image.RecordKind.Thread)
            {
                const int at = 4 + 216;   // tid, user_regs_struct
                int len = BitConverter.ToInt32(p, at);
                Assert.Equal((int)h.XstateSize, len);
                var wide = new byte[size];
                p.AsSpan(at + 4, 576).CopyTo(wide);
                foreach (var (_, off, n) in h.XstateLayout) p.AsSpan(at + 4 + (int)off, (int)n).CopyTo(wide.AsSpan((int)(off + shift)));
                p = [.. p.AsSpan(0, at), .. BitConverter.GetBytes(size), .. wide, .. p.AsSpan(at + 4 + len)];
            }
            w.Write(rec.Kind, p, rec.Flags);
        }
        w.Finish();
    }

    [Fact]
    public void ProcessAttributes()
    {
        env.Program("attrs");
        var r = new E2eScript(env, "attrs").Run(E2eScript.RoundTrip("\"$BIN/attrs\""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    /// <summary>A session leader (started through setsid, like a daemon) still leads its session and group.</summary>
    [Fact]
    public void SessionLeader()
    {
        env.Program("attrs");
        var r = new E2eScript(env, "session-leader").Run(E2eScript.RoundTrip("setsid \"$BIN/attrs\"",
            before: "",
            afterRestart: "[ \"$(ps -o sid= -p $P | tr -d ' ')\" = $P ] && echo LEADER"));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        Assert.True(r.Stdout.Contains("LEADER"), $"the restored process does not lead its session{r.Diagnostics}");
        r.Cleanup();
    }

    /// <summary>
    /// The interval timer fired while SIGALRM was blocked: it waits for the signal to be dequeued before
    /// re-arming (getitimer reads a zero value, with its interval). After restart it must still tick.
    /// </summary>
    [Fact]
    public void ExpiredTimerWithPendingAlarm()
    {
        env.Program("attrs");
        var r = new E2eScript(env, "attrs-alarm-pending").Run(E2eScript.RoundTrip("\"$BIN/attrs\" alarm-pending"));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    /// <summary>
    /// SIGUSR1 arrives while the checkpoint holds the process (ckpt is kept waiting by a slow reader of
    /// its output): it must not be lost. With --kill it has to be in the image (the restored process
    /// gets it without being sent another one); without, the process gets it once released.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void SignalDuringCheckpoint(bool kill)
    {
        env.Program("pipe_read");
        var r = new E2eScript(env, $"signal-during-checkpoint-{(kill ? "kill" : "nokill")}").Run($$"""
            start "$W/out" "$BIN/pipe_read"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            { ck checkpoint $P {{(kill ? "--kill" : "")}} --log "$W/ck.log" -v -v; echo $? > "$W/ck.rc"; } | { sleep 1; cat > "$W/img"; } &
            C=$!
            n=100; until grep -qE '^TracerPid:[[:space:]]*[1-9]' /proc/$P/status; do n=$((n - 1)); [ $n -le 0 ] && fail "ckpt never attached"; sleep 0.01; done
            kill -USR1 $P
            wait_exit $C 30 >/dev/null || fail "the checkpoint pipeline did not end"
            [ "$(cat "$W/ck.rc")" = 0 ] || fail "checkpoint exited with $(cat "$W/ck.rc")"
            if {{(kill ? "true" : "false")}}; then
              wait $P 2>/dev/null
              restart_detached
              st=$(reaped $P 10) || fail "the restored process never got the SIGUSR1 sent during the checkpoint"
              echo "RESTORED: $st"
            else
              wait_exit $P 10 >/dev/null; echo "RESTORED: exit $?"
            fi
            """);
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>--frozen: the process is restored stopped; a signal sent meanwhile waits; SIGCONT lets it go on.</summary>
    [Fact]
    public void RestartFrozen()
    {
        env.Program("pipe_read");
        var r = new E2eScript(env, "frozen").Run("""
            start "$W/out" "$BIN/pipe_read"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            checkpoint_kill
            R=$(ck restart -i "$W/img" --frozen --log "$W/rs.log" -v -v); rc=$?
            [ $rc -eq 0 ] && [ "$R" = "$P" ] || fail "restart --frozen exited with $rc, printed '$R'"
            sleep 0.2
            grep -q '^State:[[:space:]]*T' /proc/$P/status || fail "not stopped: $(grep State /proc/$P/status)"
            seen=$(times_reaped $P)
            kill -USR1 $P
            sleep 0.3
            grep -q PASS "$W/out" && fail "the stopped process ran"
            grep -q '^State:[[:space:]]*T' /proc/$P/status || fail "not stopped any more: $(grep State /proc/$P/status)"
            kill -CONT $P
            st=$(reaped $P 10 "$seen") || fail "the process did not go on after SIGCONT"
            echo "RESTORED: $st"
            """);
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>
    /// Without --detach, restart waits and exits with the process's status: 0, or 128+signal. The image
    /// goes through standard output and comes back through standard input.
    /// </summary>
    [Fact]
    public void RestartReportsExitStatus()
    {
        env.Program("pipe_read");
        var r = new E2eScript(env, "exit-status").Run("""
            start "$W/out" "$BIN/pipe_read"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            # the image through standard output and standard input this time
            ck checkpoint $P --kill --log "$W/ck.log" > "$W/img" || fail "checkpoint to standard output failed"
            wait $P 2>/dev/null
            cp "$W/out" "$W/out.saved"
            # restarted, then SIGUSR1: the program passes and exits 0
            ck restart --log "$W/rs1.log" < "$W/img" & C=$!
            n=100; until alive $P; do n=$((n - 1)); [ $n -le 0 ] && fail "no restored process"; sleep 0.02; done
            sleep 0.2; kill -USR1 $P
            wait_exit $C 20; echo "STATUS-PASS: $?"
            # the same image again (its stdout file put back as it was): killed by SIGTERM
            cp "$W/out.saved" "$W/out"
            ck restart -i "$W/img" --log "$W/rs2.log" & C=$!
            n=100; until alive $P; do n=$((n - 1)); [ $n -le 0 ] && fail "no restored process"; sleep 0.02; done
            sleep 0.2; kill -TERM $P
            wait_exit $C 20; echo "STATUS-TERM: $?"
            """);
        r.AssertScriptOk();
        Assert.True(r.Stdout.Contains("STATUS-PASS: 0") && r.Stdout.Contains("STATUS-TERM: 143"), $"restart should exit 0, then 143{r.Diagnostics}");
        r.Cleanup();
    }

    /// <summary>Credentials after a privilege drop: uids, gids, groups, capability sets, bounding set.</summary>
    [Fact]
    public void Credentials()
    {
        env.Program("creds");
        var r = new E2eScript(env, "creds").Run(E2eScript.RoundTrip("\"$BIN/creds\""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    /// <summary>
    /// Securebits of three processes: a root one with locked bits, one that dropped to a user id with
    /// keep-caps left set (restored without CAP_SETPCAP), one with locked bits and CAP_SETPCAP only permitted.
    /// </summary>
    [Fact]
    public void Securebits()
    {
        env.Program("secbits");
        var r = new E2eScript(env, "secbits").Run(E2eScript.RoundTrip("\"$BIN/secbits\""));
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>
    /// File locks come back: a flock lock (its description shared with a child), POSIX read and write
    /// locks on ranges, an OFD lock, a read and a write lease; a process forked after the restart finds
    /// each held as before (its opens break the leases, signalling the holder), and the holder can
    /// release them.
    /// </summary>
    [Fact]
    public void FileLocks()
    {
        env.Program("locks");
        var r = new E2eScript(env, "locks").Run(E2eScript.RoundTrip("\"$BIN/locks\" \"$W\"", afterRestart: E2eScript.SaveInfo));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        Assert.Contains("kind=ofd  type=write  range=5-7", r.File("info.txt"));
        Assert.Contains("kind=lease  type=write  range=whole file", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>
    /// Signal-driven I/O comes back: owners set with F_SETOWN_EX (the process, one of its threads, its
    /// process group), F_SETSIG signals and O_ASYNC; data written after the restart raises each signal in
    /// its owner with the fd in its siginfo.
    /// </summary>
    [Fact]
    public void FileOwnersAndAsyncSignals()
    {
        env.Program("fown");
        var r = new E2eScript(env, "fown").Run(E2eScript.RoundTrip("\"$BIN/fown\"", afterRestart: E2eScript.SaveInfo));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        var info = r.File("info.txt");
        Assert.Matches(@"async=True  owner=thread \d+  signal=\d+", info);
        Assert.Matches(@"async=False  owner=process group \d+", info);
        r.Cleanup();
    }

    /// <summary>
    /// Linux AIO contexts come back at their addresses (the context ids), with their positions in the ring
    /// and the completed events not read yet; new requests complete after the restart.
    /// </summary>
    [Fact]
    public void AioContexts()
    {
        env.Program("aio");
        var r = new E2eScript(env, "aio").Run(E2eScript.RoundTrip("\"$BIN/aio\" \"$W\"", afterRestart: E2eScript.SaveInfo));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        Assert.Contains("AioRing", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>
    /// Classic BPF socket filters come back on UDP and unix sockets with their instructions and lock flag,
    /// and keep dropping or letting through what they did.
    /// </summary>
    [Fact]
    public void SocketFilters()
    {
        env.Program("sockfilter");
        var r = new E2eScript(env, "sockfilter").Run(E2eScript.RoundTrip("\"$BIN/sockfilter\"", afterRestart: E2eScript.SaveInfo));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        Assert.Contains("instructions=1  locked=True", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>
    /// Files that changed between checkpoint and restart: a log the process only writes grew (another
    /// writer, a rotation) and the restart goes on, the process writing at its own offset; a file it
    /// reads grew and the restart is refused (71) naming it, leaving nothing behind.
    /// </summary>
    [Fact]
    public void FilesChangedSinceTheCheckpoint()
    {
        env.Program("logfile");
        var r = new E2eScript(env, "logfile").Run("""
            start "$W/out" "$BIN/logfile" "$W"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            checkpoint_kill
            echo "other writer" >> "$W/log.txt"
            restart_detached
            finish_detached
            mkdir -p "$W/second"
            start "$W/out2" "$BIN/logfile" "$W/second"
            wait_for "$W/out2" '^READY' 15 || fail "the program did not print READY (second run)"
            checkpoint_kill
            echo "more data" >> "$W/second/data.txt"
            ck restart -i "$W/img" --detach 2>"$W/err.txt"; echo "RC: $?"
            sleep 0.2
            alive $P && echo "LEFT-BEHIND"
            exit 0
            """);
        r.AssertPassed().AssertRestoredExit0();
        Assert.Equal("before\nafter\nwriter\n", r.File("log.txt"));
        Assert.Contains("RC: 71", r.Stdout);
        Assert.Contains("data.txt", r.File("err.txt"));
        Assert.DoesNotContain("LEFT-BEHIND", r.Stdout);
        r.Cleanup();
    }

    /// <summary>A POSIX message queue opened twice comes back by name with both descriptions' flags; its messages (kept by the kernel) come out in priority order.</summary>
    [Fact]
    public void PosixMessageQueue()
    {
        env.Program("mqueue");
        var r = new E2eScript(env, "mqueue").Run(E2eScript.RoundTrip("\"$BIN/mqueue\""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    /// <summary>A lock taken by another process between checkpoint and restart: the restart fails (71) naming it and leaves nothing behind.</summary>
    [Fact]
    public void FileLockTakenMeanwhile()
    {
        env.Program("locks");
        var r = new E2eScript(env, "locks-taken").Run("""
            start "$W/out" "$BIN/locks" "$W"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            checkpoint_kill
            flock -x "$W/a" sleep 30 &
            holder=$!
            sleep 0.3
            ck restart -i "$W/img" --detach 2>"$W/err.txt"; echo "RC: $?"
            kill $holder
            alive $P && echo "LEFT-BEHIND"
            true
            """);
        r.AssertScriptOk();
        Assert.Matches(@"(?m)^RC: 71$", r.Stdout);
        Assert.DoesNotContain("LEFT-BEHIND", r.Stdout);
        Assert.Contains("flock lock", r.File("err.txt"));
        r.Cleanup();
    }

    /// <summary>
    /// Regions locked in memory (mlock, and mlock2 with MLOCK_ONFAULT) are locked again, with the same
    /// resident pages; mlockall(MCL_FUTURE [| MCL_ONFAULT]) still locks what is mapped after the restart.
    /// </summary>
    [Theory]
    [InlineData("")]
    [InlineData("future")]
    [InlineData("onfault")]
    public void LockedMemory(string future)
    {
        env.Program("mlocked");
        var r = new E2eScript(env, "mlocked" + future).Run(E2eScript.RoundTrip($"\"$BIN/mlocked\" {future}"));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    /// <summary>Regions with madvise advice that shows in VmFlags (fork, dump, THP, KSM, read-ahead) keep it, with their data.</summary>
    [Fact]
    public void AdvisedMemory()
    {
        env.Program("madvise");
        var r = new E2eScript(env, "madvise").Run(E2eScript.RoundTrip("\"$BIN/madvise\""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    /// <summary>
    /// Memory on huge pages comes back on huge pages: anonymous (MAP_HUGETLB) private with the same huge
    /// pages written and the others still free, shared with a child, a SysV SHM_HUGETLB segment, and a
    /// file of a hugetlbfs mount mapped shared and privately (the script gives the machine a pool of 40
    /// huge pages and mounts a hugetlbfs for the test).
    /// </summary>
    [Fact]
    public void HugetlbMemory()
    {
        env.Program("hugetlb");
        var r = new E2eScript(env, "hugetlb").Run(E2eScript.RoundTrip("\"$BIN/hugetlb\" \"$W/htfs\"", afterRestart: E2eScript.SaveInfo, before: """
            old=$(cat /proc/sys/vm/nr_hugepages)
            mkdir -p "$W/htfs"
            trap 'umount -l "$W/htfs" 2>/dev/null; echo $old > /proc/sys/vm/nr_hugepages' EXIT
            echo $((old + 40)) > /proc/sys/vm/nr_hugepages
            [ "$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)" -ge 40 ] || fail "the machine cannot give 40 huge pages of 2 MiB"
            mount -t hugetlbfs none "$W/htfs" || fail "cannot mount hugetlbfs"
            """));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        Assert.Contains("huge_page_kib=2048", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>A process under a seccomp filter stays in its sandbox after a restart: no_new_privs and the filter.</summary>
    [Fact]
    public void SeccompFilter()
    {
        env.Program("sandboxed");
        var r = new E2eScript(env, "seccomp-filter").Run(E2eScript.RoundTrip("\"$BIN/sandboxed\""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    /// <summary>
    /// Seccomp filters per thread and per process: a thread that added a filter of its own (with
    /// SECCOMP_FILTER_FLAG_LOG), a child that inherited only the first, a main thread that added another
    /// after both; each task is filtered after the restart exactly as before (the program checks).
    /// </summary>
    [Fact]
    public void SeccompFiltersPerThreadAndProcess()
    {
        env.Program("seccomp");
        var r = new E2eScript(env, "seccomp-threads").Run(E2eScript.RoundTrip("\"$BIN/seccomp\"", afterRestart: E2eScript.SaveInfo));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        Assert.Contains("filters: 3", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>
    /// A daemon that installed a seccomp filter as root and then dropped root (no no_new_privs) keeps its
    /// filter, in every thread, and stays unprivileged: the filter goes in before its credentials are set.
    /// </summary>
    [Fact]
    public void SeccompFilterOfADaemonThatDroppedRoot()
    {
        env.Program("seccompdrop");
        var r = new E2eScript(env, "seccomp-drop").Run(E2eScript.RoundTrip("\"$BIN/seccompdrop\""));
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>
    /// A filter installed before a thread was made is shared by both threads after the restart, as in the
    /// original: a filter added with SECCOMP_FILTER_FLAG_TSYNC (which needs the same filters in every thread)
    /// is accepted and applies to both.
    /// </summary>
    [Fact]
    public void SeccompFiltersStaySharedBetweenThreads()
    {
        env.Program("seccomptsync");
        var r = new E2eScript(env, "seccomp-tsync").Run(E2eScript.RoundTrip("\"$BIN/seccomptsync\""));
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>no_new_privs survives a restart (without it the process could gain privileges through exec).</summary>
    [Fact]
    public void NoNewPrivs()
    {
        env.Program("sandboxed");
        var r = new E2eScript(env, "no-new-privs").Run(E2eScript.RoundTrip("\"$BIN/sandboxed\" nnp-only"));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    /// <summary>A restored process can be checkpointed and restarted again (its state is as checkpointable as the original's).</summary>
    [Theory]
    [InlineData("memory")]
    [InlineData("files")]
    [InlineData("pipes")]
    [InlineData("signals")]
    [InlineData("attrs")]
    [InlineData("fpu_avx2")]
    public void TwiceInARow(string program)
    {
        env.Program(program);
        var r = new E2eScript(env, $"twice-{program}").Run($"""
            mkdir -p "$W/files"
            start "$W/out" "$BIN/{program}" {(program is "memory" ? "\"$W\"" : program is "files" ? "\"$W/files\"" : "")}
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            checkpoint_kill
            restart_detached
            mv "$W/ck.log" "$W/ck-1.log"; mv "$W/rs.log" "$W/rs-1.log"
            sleep 0.2
            ck checkpoint $P -o "$W/img" --kill --log "$W/ck.log" -v -v; rc=$?
            [ $rc -eq 0 ] || fail "the second checkpoint exited with $rc"
            st=$(reaped $P 10) || fail "the restored process did not die after the second checkpoint"
            [ "$st" = "signal 9" ] || fail "the restored process ended with $st before the second checkpoint killed it"
            restart_detached
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>
    /// A program nobody here wrote: python3 computing a sha256 chain, checkpointed mid-way, killed,
    /// restarted without --detach; its output must equal an uninterrupted run's.
    /// </summary>
    [Fact]
    public void Python()
    {
        Assert.SkipWhen(env.Python == null, "python3 is not installed");
        env.RequireCkpt();
        const string program = """
            import hashlib
            N = 2000000
            print("READY")
            h = b"ckpt"; s = 0
            for i in range(N):
                h = hashlib.sha256(h).digest()
                s = (s * 31 + h[0]) % 2305843009213693951
                if i % 250000 == 0: print(i, s, h.hex()[:16])
            print("RESULT", s, h.hex())
            """;
        var s = new E2eScript(env, "python");
        File.WriteAllText(Path.Combine(s.W, "work.py"), program);
        var r = s.Run("""
            "$PYTHON" -u "$W/work.py" </dev/null >"$W/reference.out" 2>&1 || fail "the uninterrupted run failed"
            start "$W/out" "$PYTHON" -u "$W/work.py"
            wait_for "$W/out" '^250000 ' 15 || fail "python did not get going"
            checkpoint_kill
            grep -q RESULT "$W/out" && fail "python finished before the checkpoint"
            ck restart -i "$W/img" --log "$W/rs.log" -v -v; rc=$?
            echo "RESTART-STATUS: $rc"
            [ $rc -eq 0 ] || fail "restart (waiting for python) exited with $rc"
            cmp "$W/reference.out" "$W/out" || fail "the output differs from the uninterrupted run"
            """);
        r.AssertScriptOk();
        Assert.Contains("RESTART-STATUS: 0", r.Stdout);
        Assert.Contains("RESULT ", r.File("out"));
        Assert.Equal(r.File("reference.out"), r.File("out"));
        r.Cleanup();
    }

    /// <summary>An existing image file is overwritten in place: a smaller image cut to its size, which restarts.</summary>
    [Fact]
    public void ImageFileOverwrittenBySmallerImage()
    {
        env.Program("memory");
        env.Program("pipe_read");
        var r = new E2eScript(env, "overwrite").Run("""
            "$BIN/memory" "$W" </dev/null > "$W/big.out" 2>&1 &
            B=$!
            wait_for "$W/big.out" '^READY' 15 || fail "the big program did not print READY"
            ck checkpoint $B -o "$W/img" || fail "the big checkpoint failed"
            big=$(stat -c %s "$W/img")
            kill -KILL $B; wait $B 2>/dev/null
            start "$W/out" "$BIN/pipe_read"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            checkpoint_kill
            small=$(stat -c %s "$W/img")
            echo "SIZES: $big $small"
            [ $small -lt $big ] || fail "the second image is not smaller ($small >= $big)"
            ck info "$W/img" --json > "$W/info.json" || fail "ckpt info of the overwritten image failed"
            grep -q "\"image_bytes\": $small" "$W/info.json" || fail "the file holds more than the image"
            restart_detached
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }
}
