using System.Text.Json;
using Xunit;

namespace Ckpt.Tests.EndToEnd;

/// <summary>
/// Process and thread attributes beyond attrs.c (personality, child subreaper, dumpable, THP disable,
/// per-thread timer slack, parent-death signal, scheduling policy, nice and CPU affinity): the program
/// and its child verify them after the restart; <c>ckpt info</c> shows them.
/// </summary>
[Collection(EndToEndCollection.Name)]
public sealed class AttributeTests(E2eEnvironment env)
{
    [Fact]
    public void ProcessAndThreadAttributes()
    {
        env.Program("attrs2");
        var r = new E2eScript(env, "attrs2").Run(E2eScript.RoundTrip("\"$BIN/attrs2\"", afterRestart: """
            ck info "$W/img" --json > "$W/info.json" || fail "ckpt info failed"
            """));
        r.AssertPassed().AssertRestoredExit0();

        using var info = JsonDocument.Parse(r.File("info.json"));
        var json = info.RootElement.ToString();
        var root = FindProcess(info.RootElement) ?? throw new Xunit.Sdk.XunitException($"no process in ckpt info{r.Diagnostics}\n{json}");
        var p = root.GetProperty("process");
        Assert.True(p.GetProperty("child_subreaper").GetBoolean(), json);
        Assert.Equal(0, p.GetProperty("dumpable").GetInt32());
        Assert.Equal("0x1", p.GetProperty("thp_disable").GetString());
        Assert.NotEqual(0u, Convert.ToUInt32(p.GetProperty("personality").GetString()!, 16) & 0x0040000u);   // ADDR_NO_RANDOMIZE
        if (!r.File("out").Contains("login uid cannot be set"))
            Assert.Equal(4321u, p.GetProperty("loginuid").GetUInt32());
        var threads = root.GetProperty("threads").EnumerateArray().ToList();
        Assert.Equal(4, threads.Count);
        Assert.Equal(123456, threads[0].GetProperty("timer_slack_ns").GetInt64());
        Assert.Equal((int)'\u001c', threads[0].GetProperty("pdeathsig").GetInt32());   // SIGWINCH (28)
        Assert.Contains(threads, t => t.GetProperty("policy").GetString() == "batch" && t.GetProperty("nice").GetInt32() == 5
            && t.GetProperty("affinity").GetString() == "0" && t.GetProperty("timer_slack_ns").GetInt64() == 654321);
        Assert.Contains(threads, t => t.GetProperty("policy").GetString() == "idle" && t.GetProperty("nice").GetInt32() == 3);
        if (!r.File("out").Contains("no RT scheduling here"))
            Assert.Contains(threads, t => t.GetProperty("policy").GetString() == "fifo|reset_on_fork" && t.GetProperty("rt_priority").GetInt32() == 7
                && t.GetProperty("nice").GetInt32() == -2);
        // the root's parent was outside the tree: its parent-death signal is not restored, and says so
        Assert.Contains("parent-death signal 28 not restored", r.File("rs.log"));
        r.Cleanup();
    }

    /// <summary>The first object that has a "process" member with a pid (the root comes first).</summary>
    private static JsonElement? FindProcess(JsonElement e)
    {
        if (e.ValueKind == JsonValueKind.Object)
        {
            if (e.TryGetProperty("process", out var p) && p.ValueKind == JsonValueKind.Object && p.TryGetProperty("pid", out _)) return e;
            foreach (var m in e.EnumerateObject()) if (FindProcess(m.Value) is { } f) return f;
        }
        else if (e.ValueKind == JsonValueKind.Array)
            foreach (var x in e.EnumerateArray()) if (FindProcess(x) is { } f) return f;
        return null;
    }

    /// <summary>
    /// A process in its own cgroups (a v1 hierarchy and cgroup v2) comes back in them, even after they
    /// were removed while it was down (the restart makes them again, with the limits they had).
    /// </summary>
    [Fact]
    public void CgroupMembership()
    {
        env.Program("cgroups");
        var script = E2eScript.RoundTrip("\"$BIN/cgroups\" \"$V1\" \"$V2\"",
            before: """
                V1=/sys/fs/cgroup/pids/ckpt-e2e-$$; V2=/sys/fs/cgroup/unified/ckpt-e2e-$$
                mkdir -p "$V1" "$V2" || fail "cannot make test cgroups"
                trap 'rmdir "$V1" "$V2" 2>/dev/null' EXIT
                echo 1234 > "$V1/pids.max" && echo 7 > "$V2/cgroup.max.descendants" || fail "cannot set the test cgroups' limits"
                """,
            afterRestart: """
                cat /proc/$P/cgroup > "$W/cg-after.txt"
                echo "pids.max $(cat "$V1/pids.max") cgroup.max.descendants $(cat "$V2/cgroup.max.descendants")" > "$W/settings-after.txt"
                """);
        // the cgroups are removed while the process is down
        script = script.Replace("checkpoint_kill\n", "checkpoint_kill\nrmdir \"$V1\" \"$V2\" || fail \"cannot remove the test cgroups\"\n");
        var r = new E2eScript(env, "cgroups").Run(script);
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("pids:/ckpt-e2e-", r.File("cg-after.txt"));
        Assert.Matches(@"(?m)^0::/ckpt-e2e-", r.File("cg-after.txt"));
        // made again with the limits they had
        Assert.Equal("pids.max 1234 cgroup.max.descendants 7", r.File("settings-after.txt").Trim());
        r.Cleanup();
    }

    /// <summary>
    /// A process in a cgroup namespace of its own (<c>unshare --cgroup</c> from a test cgroup, then a cgroup
    /// below it joined): /proc/self/cgroup shows its cgroups relative to the namespace's root, and reads the
    /// same after the restart (the program checks), which rebuilt the namespace rooted at the same cgroup
    /// (made again: it is removed while the process is down).
    /// </summary>
    [Fact]
    public void CgroupNamespaceOfItsOwn()
    {
        env.Program("cgroups");
        var script = E2eScript.RoundTrip("sh -c 'echo $$ > \"$1/cgroup.procs\" && exec unshare --cgroup \"$2\" \"$1/sub\"' _ \"$V1\" \"$BIN/cgroups\"",
            before: """
                V1=/sys/fs/cgroup/pids/ckpt-e2e-ns-$$
                mkdir -p "$V1/sub" || fail "cannot make test cgroups"
                trap 'rmdir "$V1/sub" "$V1" 2>/dev/null' EXIT
                """,
            afterRestart: E2eScript.SaveInfo + """
                [ "$(readlink /proc/$P/ns/cgroup)" != "$(readlink /proc/self/ns/cgroup)" ] || fail "the restarted process is in the script's cgroup namespace"
                grep pids /proc/$P/cgroup > "$W/cg-after.txt"
                """);
        script = script.Replace("checkpoint_kill\n", "checkpoint_kill\nrmdir \"$V1/sub\" \"$V1\" || fail \"cannot remove the test cgroups\"\n");
        var r = new E2eScript(env, "cgroupns").Run(script);
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("pids:/ckpt-e2e-ns-", r.File("cg-after.txt"));
        Assert.Contains("cgroup_namespace", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>
    /// A process in a time namespace of its own (started under unshare --time with day-long offsets), with
    /// an absolute monotonic sleep under way: the checkpoint saves the namespace's offsets, the restart
    /// makes one with the same offsets, and the clocks go on where they were (a restart with the machine's
    /// clocks would move them back by a day). Checkpointed again once restored, and restarted again.
    /// </summary>
    [Fact]
    public void TimeNamespaceOffsetsAreKept()
    {
        env.Program("clocks");
        var r = new E2eScript(env, "clocks-timens").Run("""
            start "$W/out" unshare --time --fork --monotonic 86400 --boottime 86400 "$BIN/clocks" 86400
            U=$P
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            P=$(sed -n 's/^PID //p' "$W/out")
            ck checkpoint $P -o "$W/img" --kill --log "$W/ck.log" -v -v || fail "checkpoint failed"
            wait $U
            gone 10 $P || fail "pid $P still taken"
            restart_detached
            ck checkpoint $P -o "$W/img2" --kill --log "$W/ck2.log" -v -v || fail "second checkpoint failed"
            gone 10 $P || fail "pid $P still taken after the second checkpoint"
            r=$(ck restart -i "$W/img2" --detach --log "$W/rs2.log" -v -v) || fail "second restart failed"
            wait_for "$W/out" '^WOKE' 15 || fail "the sleep did not end"
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("time namespace of its own", r.File("ck.log"));
        Assert.Contains("offsets monotonic", r.File("rs.log"));
        r.Cleanup();
    }

    /// <summary>restart --time-namespace: the tree runs in a time namespace of its own whose clocks go on from the checkpoint's.</summary>
    [Fact]
    public void RestartInATimeNamespace()
    {
        env.Program("clocks");
        var r = new E2eScript(env, "clocks-forced").Run(E2eScript.RoundTrip("\"$BIN/clocks\"", restartArgs: "--time-namespace",
            afterRestart: "readlink /proc/$P/ns/time > \"$W/ns-after.txt\"; readlink /proc/self/ns/time > \"$W/ns-own.txt\""));
        r.AssertPassed().AssertRestoredExit0();
        Assert.NotEqual(r.File("ns-own.txt").Trim(), r.File("ns-after.txt").Trim());
        Assert.StartsWith("time:[", r.File("ns-after.txt"));
        r.Cleanup();
    }

    [Fact]
    public void MembarrierRegistrations()
    {
        env.Program("membarrier");
        var r = new E2eScript(env, "membarrier").Run(E2eScript.RoundTrip("\"$BIN/membarrier\"", afterRestart: """
            ck info "$W/img" --json > "$W/info.json" || fail "ckpt info failed"
            """));
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("\"membarrier\": \"global_expedited|private_expedited|private_expedited_sync_core|private_expedited_rseq\"", r.File("info.json"));
        r.Cleanup();
    }

    /// <summary>
    /// A tree (parent and child) in a UTS namespace of its own with its own host and domain names: the
    /// restart makes a namespace with those names for the whole tree, and the machine's names are untouched.
    /// </summary>
    [Fact]
    public void UtsNamespaceNamesAreKept()
    {
        env.Program("uts");
        var r = new E2eScript(env, "uts").Run(E2eScript.RoundTrip("\"$BIN/uts\"",
            before: "hostname > \"$W/host-before.txt\"",
            afterRestart: "hostname > \"$W/host-after.txt\""));
        r.AssertPassed().AssertRestoredExit0();
        Assert.Equal(r.File("host-before.txt"), r.File("host-after.txt"));
        var ns = System.Text.RegularExpressions.Regex.Match(r.File("out"), @"(?m)^NS (\S+)").Groups[1].Value;
        Assert.StartsWith("uts:[", ns);
        Assert.NotEqual(new FileInfo("/proc/self/ns/uts").LinkTarget, ns);
        r.Cleanup();
    }

    /// <summary>
    /// Namespace files held open (the network and mount namespaces the process runs in, a UTS namespace of
    /// its own and the one it left) name the same namespaces after the restart and setns works with them;
    /// a file of a network namespace the process left, which the restart does not rebuild, is refused
    /// naming the fd, and the process goes on.
    /// </summary>
    [Fact]
    public void NamespaceFilesAreReopened()
    {
        env.Program("nsfiles");
        var r = new E2eScript(env, "nsfiles").Run(E2eScript.RoundTrip("\"$BIN/nsfiles\"", afterRestart: E2eScript.SaveInfo));
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("net namespace (the restart's)", r.File("info.txt"));
        Assert.Contains("uts namespace (its own)", r.File("info.txt"));
        r.Cleanup();
        var refused = new E2eScript(env, "nsfiles-other").Run(E2eScript.Refused("\"$BIN/nsfiles\" other"));
        var fd = System.Text.RegularExpressions.Regex.Match(refused.File("out"), @"(?m)^SOCKFD (\d+)$").Groups[1].Value;
        refused.AssertRefused($"fd {fd} ", "net namespace");
        refused.Cleanup();
    }

    /// <summary>
    /// A tree (parent and child) in an empty IPC namespace of its own: the restart makes a new one for the
    /// whole tree (a semaphore set made in it afterwards is its first, id 0), not ckpt's.
    /// </summary>
    [Fact]
    public void EmptyIpcNamespaceIsKept()
    {
        env.Program("ipcns");
        var r = new E2eScript(env, "ipcns").Run(E2eScript.RoundTrip("\"$BIN/ipcns\""));
        r.AssertPassed().AssertRestoredExit0();
        var ns = System.Text.RegularExpressions.Regex.Match(r.File("out"), @"(?m)^NS (\S+)").Groups[1].Value;
        Assert.StartsWith("ipc:[", ns);
        Assert.NotEqual(new FileInfo("/proc/self/ns/ipc").LinkTarget, ns);
        r.Cleanup();
    }

    /// <summary>
    /// Threads with credentials of their own (a thread acting for a user, a thread with its own
    /// file-system uid) keep them: each thread compares its /proc/thread-self/status lines.
    /// </summary>
    [Fact]
    public void ThreadsKeepTheirOwnCredentials()
    {
        env.Program("threadcreds");
        var r = new E2eScript(env, "threadcreds").Run(E2eScript.RoundTrip("\"$BIN/threadcreds\"", afterRestart: E2eScript.SaveInfo));
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("own_credentials=uid 1000 gid 2000", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>
    /// An IPC namespace holding SysV objects (message queues with messages, a semaphore set, an attached
    /// and an unattached segment, with gaps in their ids) and a raised limit: each comes back with its id,
    /// key, mode and contents, as the parent and the child of the tree see them.
    /// </summary>
    [Fact]
    public void IpcNamespaceObjectsAreKept()
    {
        env.Program("ipcns");
        var r = new E2eScript(env, "ipcns-objects").Run(E2eScript.RoundTrip("\"$BIN/ipcns\" objects", afterRestart: E2eScript.SaveInfo));
        r.AssertPassed().AssertRestoredExit0();
        var info = r.File("info.txt");
        Assert.Contains("kind=message queue", info);
        Assert.Contains("values=1,2,3", info);
        r.Cleanup();
    }
}
