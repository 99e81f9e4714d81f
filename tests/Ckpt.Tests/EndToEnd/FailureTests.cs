using System.Text.RegularExpressions;
using Xunit;

namespace Ckpt.Tests.EndToEnd;

/// <summary>
/// What ckpt refuses or cannot do: each case must end with the documented exit code and a one-line
/// message, and must leave the target (or the pid) as it was.
/// </summary>
[Collection(EndToEndCollection.Name)]
public sealed class FailureTests(E2eEnvironment env)
{
    private static int Value(E2eResult r, string key)
    {
        var m = Regex.Match(r.Stdout, $@"^{Regex.Escape(key)}: (-?\d+)$", RegexOptions.Multiline);
        Assert.True(m.Success, $"the script printed no '{key}:' line{r.Diagnostics}");
        return int.Parse(m.Groups[1].Value);
    }

    /// <summary>Exactly one non-empty line, starting with "ckpt: ".</summary>
    private static string OneLine(E2eResult r, string file)
    {
        var lines = r.File(file).TrimEnd('\n').Split('\n');
        Assert.True(lines.Length == 1 && lines[0].StartsWith("ckpt: "), $"{file} should hold one 'ckpt: ...' line{r.Diagnostics}");
        return lines[0];
    }

    [Fact]
    public void CheckpointOfNonexistentPid()
    {
        var r = new E2eScript(env, "no-such-pid").Run("""
            for p in $(seq 32000 -1 20000); do [ -e /proc/$p ] || break; done
            echo "PID: $p"
            ck checkpoint $p -o "$W/img" --log "$W/ck.log" 2>"$W/err.txt"; echo "RC: $?"
            [ -e "$W/img" ] && echo "IMAGE-LEFT"
            exit 0
            """);
        r.AssertScriptOk();
        Assert.True(Value(r, "RC") == 66, $"exit code should be 66 (no target){r.Diagnostics}");
        Assert.Contains(Value(r, "PID").ToString(), OneLine(r, "err.txt"));
        Assert.DoesNotContain("IMAGE-LEFT", r.Stdout);
    }

    /// <summary>The target is traced by another tracer: refused (69), and it keeps running correctly.</summary>
    [Fact]
    public void CheckpointOfTracedProcess()
    {
        env.Program("tracer");
        env.Program("files");
        var r = new E2eScript(env, "traced").Run("""
            mkdir -p "$W/files"
            start "$W/out" "$BIN/files" "$W/files"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            "$BIN/tracer" $P >"$W/tracer.out" 2>&1 &
            T=$!
            wait_for "$W/tracer.out" '^TRACING' 10 || fail "the tracer did not attach"
            ck checkpoint $P -o "$W/img" --log "$W/ck.log" -v -v 2>"$W/err.txt"; echo "RC: $?"
            alive $P || fail "the target died"
            kill $T; wait_exit $T 10
            kill -USR1 $P
            wait_exit $P 20; echo "TARGET: $?"
            """);
        r.AssertPassed();
        Assert.True(Value(r, "RC") == 69, $"exit code should be 69 (not checkpointable){r.Diagnostics}");
        Assert.Contains("traced", OneLine(r, "err.txt"));
        Assert.Equal(0, Value(r, "TARGET"));
    }

    /// <summary>
    /// A socket ckpt does not support (a packet socket) is open: refused naming the fd and the kind of socket, after
    /// memory and a pipe were already read by injection; the target goes on unharmed (its blocking
    /// sigsuspend included).
    /// </summary>
    [Fact]
    public void CheckpointWithSocketOpen()
    {
        env.Program("sockets");
        var r = new E2eScript(env, "socket").Run(E2eScript.Refused("\"$BIN/sockets\""));
        var fd = Regex.Match(r.File("out"), @"^SOCKFD (\d+)$", RegexOptions.Multiline).Groups[1].Value;
        r.AssertRefused($"fd {fd} ", "packet socket");
    }

    /// <summary>
    /// The target runs in a namespace that is not saved (here a user namespace nested in another, made by
    /// unshare twice, which then execs it): the checkpoint refuses, naming the pid and the namespace.
    /// </summary>
    [Fact]
    public void CheckpointInOtherNamespaceIsRefused()
    {
        env.Program("signals");
        var r = new E2eScript(env, "namespace").Run(E2eScript.Refused("unshare --user --map-root-user unshare --user --map-root-user \"$BIN/signals\""));
        r.AssertRefused("user namespace", "nested");
    }

    /// <summary>
    /// An IPC namespace of the tree's own that holds a POSIX message queue the tree has open: such queues are
    /// not saved, so the checkpoint refuses naming it, and the queue is intact afterwards.
    /// </summary>
    [Fact]
    public void IpcNamespaceWithPosixQueueIsRefused()
    {
        env.Program("ipcns");
        var r = new E2eScript(env, "ipcns-mq").Run(E2eScript.Refused("\"$BIN/ipcns\" mq"));
        r.AssertRefused("message queue", "IPC namespace");
    }

    /// <summary>
    /// A process with as many mappings as vm.max_map_count allows: the checkpoint needs one more in it for a
    /// moment, so it is refused with a line that names the limit and how to raise it (it was an internal
    /// error, "mmap scratch (injected): ENOMEM"); the process keeps its mappings and data.
    /// </summary>
    [Fact]
    public void ProcessAtTheMappingLimitIsRefusedNamingIt()
    {
        env.Program("mapmax");
        var r = new E2eScript(env, "mapmax").Run(E2eScript.Refused("\"$BIN/mapmax\""));
        r.AssertRefused("memory mappings", "vm.max_map_count", "sysctl");
    }

    /// <summary>Standard output is a pipe to another process (the common `prog | tee log`): refused naming fd 1.</summary>
    [Fact]
    public void CheckpointWithPipeToAnotherProcess()
    {
        env.Program("pipes");
        var r = new E2eScript(env, "shared-pipe").Run("""
            "$BIN/pipes" </dev/null 2>&1 | cat > "$W/out" &
            n=100; until P=$(pgrep -P $$ -x pipes) || P=$(pgrep -n -x pipes); do n=$((n - 1)); [ $n -le 0 ] && fail "no pipes process"; sleep 0.02; done
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            ck checkpoint $P -o "$W/img" --log "$W/ck.log" -v -v 2>"$W/err.txt"; echo "RC: $?"
            alive $P || fail "the target died"
            kill -USR1 $P
            n=400; while alive $P; do n=$((n - 1)); [ $n -le 0 ] && fail "the target did not end"; sleep 0.05; done
            wait
            """);
        r.AssertPassed();
        Assert.True(Value(r, "RC") == 69, $"exit code should be 69 (not checkpointable){r.Diagnostics}");
        var line = OneLine(r, "err.txt");
        Assert.True(line.Contains("fd 1 ") && line.Contains("pipe"), $"the message should name fd 1 and the pipe{r.Diagnostics}");
    }

    /// <summary>
    /// A process under a seccomp filter that hands system calls to a supervisor (SECCOMP_RET_USER_NOTIF):
    /// the listener cannot be rebuilt, so the checkpoint must refuse (69), even with --kill; the process
    /// goes on, still filtered.
    /// </summary>
    [Fact]
    public void CheckpointOfSeccompSupervisedProcess()
    {
        env.Program("sandboxed");
        var r = new E2eScript(env, "seccomp-notify").Run("""
            start "$W/out" "$BIN/sandboxed" notify
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            ck checkpoint $P -o "$W/img" --kill --log "$W/ck.log" -v -v 2>"$W/err.txt"; echo "RC: $?"
            alive $P || fail "the target died (the checkpoint went through and killed it)"
            kill -USR1 $P
            wait_exit $P 20; echo "TARGET: $?"
            """);
        r.AssertPassed();
        Assert.True(Value(r, "RC") == 69, $"exit code should be 69 (not checkpointable){r.Diagnostics}");
        Assert.Contains("SECCOMP_RET_USER_NOTIF", OneLine(r, "err.txt"));
        Assert.Equal(0, Value(r, "TARGET"));
    }

    /// <summary>The image goes to a pipe whose reader goes away after 1000 bytes: the target survives unharmed.</summary>
    [Fact]
    public void CheckpointOutputClosedEarly()
    {
        env.Program("memory");
        var r = new E2eScript(env, "closed-output").Run("""
            start "$W/out" "$BIN/memory" "$W"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            ck checkpoint $P --log "$W/ck.log" -v -v 2>"$W/err.txt" | head -c 1000 >/dev/null
            echo "RC: ${PIPESTATUS[0]}"
            alive $P || fail "the target died"
            kill -USR1 $P
            wait_exit $P 20; echo "TARGET: $?"
            """);
        r.AssertPassed();
        Assert.True(Value(r, "RC") is not 0 and not 124 and not 137, $"checkpoint should fail when its output closes{r.Diagnostics}");
        OneLine(r, "err.txt");
        Assert.Equal(0, Value(r, "TARGET"));
    }

    /// <summary>
    /// Truncated, corrupted, extended and empty images: exit 65 with one line, and no process left with
    /// the pid (the vessel is created early, when the process record is read); then the intact image
    /// still restarts.
    /// </summary>
    [Fact]
    public void RestartOfBadImages()
    {
        env.Program("pipe_read");
        string[] kinds = ["trunc-head", "trunc-half", "trunc-last", "flip-half", "flip-trailer", "appended", "empty"];
        var r = new E2eScript(env, "bad-images").Run("""
            start "$W/out" "$BIN/pipe_read"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            checkpoint_kill
            size=$(stat -c %s "$W/img")
            # flip OFFSET FILE: changes one byte
            flip() {
              local b; b=$(od -An -tu1 -j$1 -N1 "$2" | tr -d ' ')
              printf "$(printf '\\%03o' $((b ^ 0x5a)))" | dd of="$2" bs=1 seek=$1 conv=notrunc status=none
            }
            head -c 40 "$W/img" > "$W/trunc-head.img"
            head -c $((size / 2)) "$W/img" > "$W/trunc-half.img"
            head -c $((size - 1)) "$W/img" > "$W/trunc-last.img"
            cp "$W/img" "$W/flip-half.img"; flip $((size / 2)) "$W/flip-half.img"
            cp "$W/img" "$W/flip-trailer.img"; flip $((size - 3)) "$W/flip-trailer.img"
            cmp -s "$W/img" "$W/flip-half.img" && fail "the byte was not changed"
            { cat "$W/img"; echo x; } > "$W/appended.img"
            : > "$W/empty.img"
            for k in trunc-head trunc-half trunc-last flip-half flip-trailer appended empty; do
              ck restart -i "$W/$k.img" --log "$W/rs-$k.log" -v -v >"$W/$k.stdout" 2>"$W/$k.err"; echo "$k-RC: $?"
              alive $P && echo "$k-LEFT: $P"
            done
            restart_detached
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        foreach (var k in kinds)
        {
            Assert.True(Value(r, $"{k}-RC") == 65, $"restart of the {k} image should exit 65{r.Diagnostics}");
            OneLine(r, $"{k}.err");
            Assert.DoesNotContain($"{k}-LEFT", r.Stdout);
        }
        r.Cleanup();
    }

    /// <summary>The pid is still in use (checkpoint without --kill): restart exits 71 naming the pid; the original goes on.</summary>
    [Fact]
    public void RestartWhenPidIsTaken()
    {
        env.Program("pipes");
        var r = new E2eScript(env, "pid-taken").Run("""
            start "$W/out" "$BIN/pipes"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            echo "PID: $P"
            ck checkpoint $P -o "$W/img" --log "$W/ck.log" -v -v || fail "checkpoint (without --kill) failed"
            alive $P || fail "the target died"
            ck restart -i "$W/img" --detach --log "$W/rs.log" -v -v >"$W/rs.stdout" 2>"$W/err.txt"; echo "RC: $?"
            kill -USR1 $P
            wait_exit $P 20; echo "TARGET: $?"
            """);
        r.AssertPassed();
        Assert.True(Value(r, "RC") == 71, $"restart should exit 71 (conflict){r.Diagnostics}");
        Assert.Contains($"pid {Value(r, "PID")}", OneLine(r, "err.txt"));
        Assert.Equal(0, Value(r, "TARGET"));
        r.Cleanup();
    }

    /// <summary>
    /// A checkpoint without --kill (with all its injected calls) leaves the target as it was: in the
    /// middle of nanosleep, spinning with live vector registers, with pending signals and a running
    /// interval timer, blocked in read().
    /// </summary>
    [Theory]
    [InlineData("sleeper")]
    [InlineData("fpu_avx2")]
    [InlineData("signals")]
    [InlineData("attrs")]
    [InlineData("pipe_read")]
    [InlineData("memory")]
    public void CheckpointWithoutKillLeavesTargetUnharmed(string program)
    {
        env.Program(program);
        var r = new E2eScript(env, $"no-kill-{program}").Run($"""
            start "$W/out" "$BIN/{program}" {(program == "memory" ? "\"$W\"" : "")}
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            sleep 0.3
            layout $P before
            ck checkpoint $P -o "$W/img" --log "$W/ck.log" -v -v; rc=$?
            [ $rc -eq 0 ] || fail "checkpoint exited with $rc"
            alive $P || fail "the target died"
            layout $P after
            [ {(program == "sleeper" ? 1 : 0)} = 1 ] || kill -USR1 $P
            wait_exit $P 20; echo "TARGET: $?"
            """);
        r.AssertPassed().AssertSameLayout();
        Assert.Equal(0, Value(r, "TARGET"));
        r.Cleanup();
    }

    /// <summary>The image file is created with mode 0600 whatever the umask, also when it already existed.</summary>
    [Fact]
    public void ImageFileMode0600()
    {
        env.Program("pipe_read");
        var r = new E2eScript(env, "mode-0600").Run("""
            start "$W/out" "$BIN/pipe_read"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            umask 000
            touch "$W/img2"; chmod 666 "$W/img2"
            ck checkpoint $P -o "$W/img1" --log "$W/ck1.log" || fail "checkpoint to a new file failed"
            ck checkpoint $P -o "$W/img2" --log "$W/ck2.log" || fail "checkpoint to an existing file failed"
            echo "MODES: $(stat -c %a "$W/img1") $(stat -c %a "$W/img2")"
            kill -USR1 $P
            wait_exit $P 20; echo "TARGET: $?"
            """);
        r.AssertPassed();
        Assert.True(r.Stdout.Contains("MODES: 600 600"), $"image files should have mode 0600{r.Diagnostics}");
        Assert.Equal(0, Value(r, "TARGET"));
        r.Cleanup();
    }
}
