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
    /// were removed while it was down (the restart makes them again).
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
                """,
            afterRestart: "cat /proc/$P/cgroup > \"$W/cg-after.txt\"");
        // the cgroups are removed while the process is down
        script = script.Replace("checkpoint_kill\n", "checkpoint_kill\nrmdir \"$V1\" \"$V2\" || fail \"cannot remove the test cgroups\"\n");
        var r = new E2eScript(env, "cgroups").Run(script);
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("pids:/ckpt-e2e-", r.File("cg-after.txt"));
        Assert.Matches(@"(?m)^0::/ckpt-e2e-", r.File("cg-after.txt"));
        r.Cleanup();
    }
}
