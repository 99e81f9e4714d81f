using System.Text.Json;
using Xunit;

namespace Ckpt.Tests.EndToEnd;

/// <summary>
/// Memory whose backing has no name: a memfd mapped twice (RW and RX, as the .NET runtime's double
/// mapping) and privately, with an fd of it; shared anonymous memory; deleted files mapped shared and
/// privately (one also open as an fd). The program checks contents, sharing and names itself.
/// </summary>
[Collection(EndToEndCollection.Name)]
public sealed class ShmemTests(E2eEnvironment env)
{
    [Fact]
    public void ShmemMemfdSharedAnonDeletedFiles()
    {
        env.Program("shmem");
        var r = new E2eScript(env, "shmem").Run(E2eScript.RoundTrip("\"$BIN/shmem\" \"$W/files\"", before: "mkdir -p \"$W/files\"", afterRestart: """
            ck info "$W/img" --json > "$W/info.json" || fail "ckpt info failed"
            """));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();

        // every object once: the memfd (3 mappings and fd 42), the script memfd, shared anon, two deleted files (one also fd 43)
        using var info = JsonDocument.Parse(r.File("info.json"));
        var objects = info.RootElement.GetProperty("memory_objects").EnumerateObject().ToList();
        var types = objects.Select(o => o.Value.GetProperty("type").GetString()).Order().ToList();
        Assert.Equal(["deleted file", "deleted file", "memfd", "memfd", "shared anonymous"], types);
        var memfd = objects.Single(o => o.Value.GetProperty("type").GetString() == "memfd" && o.Value.GetProperty("name").GetString() != "script");
        Assert.Equal("ckpt-shmem-test", memfd.Value.GetProperty("name").GetString());
        // the hole [512K, 768K) is not saved
        Assert.Equal(768L * 1024, memfd.Value.GetProperty("saved_bytes").GetInt64());
        var regions = info.RootElement.GetProperty("memory").EnumerateArray()
            .Where(x => x.TryGetProperty("object", out var o) && o.GetUInt32().ToString() == memfd.Name).ToList();
        Assert.Equal(3, regions.Count);
        // the private mapping saved only its copy-on-write page
        Assert.Equal(1, regions.Single(x => x.GetProperty("prot").GetString() == "rw-p").GetProperty("pages_saved").GetInt64());
        r.Cleanup();
    }

    /// <summary>The restored process is checkpointed and restarted again: its objects are as checkpointable as the original's.</summary>
    /// <summary>
    /// A POSIX named semaphore shared by a process and its child (namedsem.c): its mapping shows the
    /// removed temporary name glibc made it under, of a file still linked by the semaphore's name; it was
    /// refused, it is mapped again by that name (Python's multiprocessing semaphores, forkserver and spawn
    /// start methods, are such). The two processes still share it, and it is still reached by its name.
    /// </summary>
    [Fact]
    public void NamedSemaphoreSharedWithAChild()
    {
        env.Program("namedsem");
        var r = new E2eScript(env, "namedsem").Run(E2eScript.RoundTrip("\"$BIN/namedsem\""));
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    [Fact]
    public void ShmemTwiceInARow()
    {
        env.Program("shmem");
        var r = new E2eScript(env, "shmem-twice").Run("""
            mkdir -p "$W/files"
            start "$W/out" "$BIN/shmem" "$W/files"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            layout $P before
            checkpoint_kill
            restart_detached
            mv "$W/ck.log" "$W/ck-1.log"; mv "$W/rs.log" "$W/rs-1.log"
            sleep 0.2
            ck checkpoint $P -o "$W/img" --kill --log "$W/ck.log" -v -v; rc=$?
            [ $rc -eq 0 ] || fail "the second checkpoint exited with $rc"
            st=$(reaped $P 10) || fail "the restored process did not die after the second checkpoint"
            restart_detached
            layout $P after
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    /// <summary>
    /// The same with a SysV segment (IPC_PRIVATE, marked for removal): recreated with its shmid, still marked,
    /// attached twice: whole, and in parts (a page unmapped, the rest made read-only), each part attached
    /// again at its place and offset (the checkpoint refused such parts before).
    /// </summary>
    [Fact]
    public void ShmemWithSysvSegment()
    {
        env.Program("shmem");
        var r = new E2eScript(env, "shmem-sysv").Run(E2eScript.RoundTrip("\"$BIN/shmem\" \"$W/files\" sysv", before: "mkdir -p \"$W/files\"", afterRestart: """
            ck info "$W/img" --json > "$W/info.json" || fail "ckpt info failed"
            """));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        using var info = JsonDocument.Parse(r.File("info.json"));
        var seg = Assert.Single(info.RootElement.GetProperty("sysv_segments").EnumerateObject()).Value;
        Assert.True(seg.GetProperty("removed").GetBoolean());
        Assert.Equal(3 * 4096 + 100, seg.GetProperty("size").GetInt64());
        r.Cleanup();
    }
}
