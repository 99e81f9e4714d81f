using System.Text.Json;
using System.Text.RegularExpressions;
using Xunit;

namespace Ckpt.Tests.EndToEnd;

/// <summary>
/// Process trees: every descendant is saved with its parent links, groups, sessions and zombies, the
/// objects the processes share are saved once, and restart rebuilds the same tree with the same pids.
/// </summary>
[Collection(EndToEndCollection.Name)]
public sealed class TreeTests(E2eEnvironment env)
{
    /// <summary>
    /// A tree with a group leader child and its grandchild, a session leader child, three zombies (an exit
    /// status, SIGTERM and SIGKILL), a file description shared by all, a pipe between root and a child with data
    /// in flight, and a pipe whose write end no one holds. Every process checks itself after restart.
    /// </summary>
    [Fact]
    public void TreeWithGroupsSessionsZombiesAndSharedFiles()
    {
        env.Program("tree");
        var r = new E2eScript(env, "tree").Run("""
            start "$W/out" "$BIN/tree"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            set -- $(grep '^TREE' "$W/out"); shift
            pids="$*"
            ps -o pid=,ppid=,pgid=,sid=,stat= -s $P > "$W/ps-before.txt"
            checkpoint_kill
            gone 10 $pids || fail "the killed tree still holds its pids"
            ck info "$W/img" --json > "$W/info.json" || fail "ckpt info failed"
            restart_detached
            ps -o pid=,ppid=,pgid=,sid=,stat= -s $P > "$W/ps-after.txt"
            ps -o pid=,ppid=,pgid=,sid=,stat= -s $3 >> "$W/ps-after.txt"
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        var ids = Regex.Match(r.File("out"), @"^TREE (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$", RegexOptions.Multiline);
        Assert.True(ids.Success, $"no TREE line{r.Diagnostics}");
        int root = int.Parse(ids.Groups[1].Value), c1 = int.Parse(ids.Groups[2].Value), c2 = int.Parse(ids.Groups[3].Value);
        int z1 = int.Parse(ids.Groups[4].Value);

        using var info = JsonDocument.Parse(r.File("info.json"));
        var tree = info.RootElement.GetProperty("tree").EnumerateArray().ToList();
        Assert.Equal(7, tree.Count);
        Assert.Equal(root, tree[0].GetProperty("pid").GetInt32());
        var zombie = tree.Single(e => e.GetProperty("pid").GetInt32() == z1);
        Assert.True(zombie.GetProperty("zombie").GetBoolean());
        Assert.Equal("0x300", zombie.GetProperty("wait_status").GetString());
        Assert.Equal(c1, tree.Single(e => e.GetProperty("pid").GetInt32() == c1).GetProperty("pgid").GetInt32());
        Assert.Equal(c2, tree.Single(e => e.GetProperty("pid").GetInt32() == c2).GetProperty("sid").GetInt32());
        // stdout: one description held by every live process under fd 1 and 2
        var shared = info.RootElement.GetProperty("shared_files").EnumerateArray().ToList();
        var stdout = shared.FirstOrDefault(f => f.GetProperty("holders").EnumerateArray().Any(h => h.GetString() == $"{c2}:1"));
        Assert.True(stdout.ValueKind == JsonValueKind.Object, $"stdout is not shown as shared with {c2}{r.Diagnostics}");
        Assert.Contains($"{root}:1", stdout.GetProperty("holders").EnumerateArray().Select(h => h.GetString()));
        Assert.Equal(3, info.RootElement.GetProperty("descendants").GetArrayLength());   // c1, g, c2 (zombies have no state)
        r.Cleanup();
    }

    /// <summary>
    /// Sessions and groups that forking each process from its parent cannot make (sessions.c): a child left
    /// in the session its parent had before calling setsid, a parent with children in two sessions, orphans
    /// taken in by the subreaper root in a session or group whose leader has exited, and an orphan in the
    /// session of a live sibling; and zdtm's session02 tree: members of two sessions whose leaders exited
    /// under parents in other sessions, orphans adopted by a subreaper that is not the root, a leader born
    /// in an exited leader's session (restart forks those through go-betweens that exit so that the
    /// subreaper adopts them). The checkpoint refused these before; each process checks its parent,
    /// group and session after the restart, and the root reaps exactly its own children (no helper left).
    /// </summary>
    [Fact]
    public void SessionsAndGroupsOfExitedLeadersAndOrphans()
    {
        env.Program("sessions");
        var r = new E2eScript(env, "sessions").Run("""
            start "$W/out" "$BIN/sessions"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            set -- $(grep '^SESSIONS' "$W/out"); shift
            h=$3 g=$4
            checkpoint_kill
            for i in $(seq 100); do [ -z "$(ps -o pid= -s $P)" ] && [ -z "$(ps -o pid= -s $h)" ] && break; sleep 0.1; done
            restart_detached
            # the helpers standing for the exited leaders are gone; their session and group live on
            [ -e /proc/$h ] && fail "the helper for session $h is still there"
            [ -e /proc/$g ] && fail "the helper for group $g is still there"
            ps -o pid=,ppid=,pgid=,sid= -s $h > "$W/ps-h.txt"
            [ -s "$W/ps-h.txt" ] || fail "no process is in session $h after the restart"
            # (the orphans of P's part were forked by go-betweens and adopted by their subreapers)
            [ "$(grep -c 'adopted by' "$W/rs.log")" -ge 2 ] || fail "the restart log shows fewer than 2 processes adopted by a subreaper"
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>
    /// Pages a parent and its forked children share copy on write stay shared: a checkpoint that leaves the
    /// tree, or one child alone, running does not make them copies (process_vm_readv would), the image holds them once, and
    /// the restart forks the children from their restored parent, so that each child's pagemap shows the
    /// parent's very pages where neither wrote (the program checks it, contents too, after the restart),
    /// in anonymous memory and in a private mapping of a file (the copies its pages were written into).
    /// </summary>
    [Fact]
    public void CopyOnWritePagesStaySharedWithTheParent()
    {
        env.Program("cow");
        var r = new E2eScript(env, "cow").Run("""
            start "$W/out" "$BIN/cow" "$W/cowfile"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            ck checkpoint $P -o "$W/img0" --log "$W/ck0.log" -v || fail "the checkpoint that leaves the tree running failed"
            # a child alone (its parent, outside what is checkpointed, runs the same program)
            set -- $(grep '^COW' "$W/out")
            ck checkpoint $2 -o "$W/img1" --log "$W/ck1.log" -v || fail "the checkpoint of child $2 alone failed"
            checkpoint_kill_tree COW
            size=$(stat -c %s "$W/img")
            # three processes with the same 32 MiB region: the shared pages are saved once
            [ "$size" -lt $((48 << 20)) ] || fail "image of $size bytes: the shared pages were saved more than once"
            ck info "$W/img" | grep -q 'forked_late=True' || fail "ckpt info shows no process forked late"
            restart_detached
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>A running child and a zombie child: after restart the zombie's status is waited for, the running child signalled and reaped.</summary>
    [Fact]
    public void RunningAndZombieChildren()
    {
        env.Program("children");
        var r = new E2eScript(env, "children").Run("""
            start "$W/out" "$BIN/children"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            checkpoint_kill_tree CHILDREN
            restart_detached
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>
    /// Directories removed while in use (a working directory, an open directory fd, shared by a parent and
    /// its child) come back removed: still directories, empty, unnamed, one for both processes.
    /// </summary>
    [Fact]
    public void RemovedDirectories()
    {
        env.Program("removed");
        var r = new E2eScript(env, "removed").Run(E2eScript.RoundTrip("\"$BIN/removed\" \"$W\"", afterRestart: E2eScript.SaveInfo));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        Assert.Contains("gone-cwd (deleted)", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>
    /// The executable of a process and of its children was deleted while they run (a program upgraded
    /// under a long job): its contents come from the image, and /proc/PID/exe shows the same deleted path.
    /// </summary>
    [Fact]
    public void DeletedExecutable()
    {
        env.Program("children");
        var r = new E2eScript(env, "deleted-exe").Run("""
            cp "$BIN/children" "$W/upgraded"
            start "$W/out" "$W/upgraded"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            rm "$W/upgraded"
            checkpoint_kill_tree CHILDREN
            restart_detached
            readlink /proc/$P/exe > "$W/exe.txt"
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        Assert.Equal($"{r.W}/upgraded (deleted)", r.File("exe.txt").Trim());
        r.Cleanup();
    }

    /// <summary>
    /// A shell pipeline nobody here wrote (sh, seq, gzip, sha256sum), checkpointed mid-way, killed and
    /// restarted; its output equals an uninterrupted run's.
    /// </summary>
    [Fact]
    public void ShellPipeline()
    {
        env.RequireCkpt();
        var r = new E2eScript(env, "pipeline").Run("""
            job='seq 1 40000000 | gzip -1 | sha256sum > "$W/sum.txt"; echo DONE'
            sh -c "seq 1 40000000 | gzip -1 | sha256sum" > "$W/reference.txt" || fail "the uninterrupted run failed"
            start "$W/out" sh -c "$job"
            sleep 1
            grep -q DONE "$W/out" && fail "the pipeline finished before the checkpoint"
            kids=$(ps -o pid= --ppid $P | tr '\n' ' ')
            [ $(echo $kids | wc -w) -eq 3 ] || fail "expected 3 children of sh, got '$kids'"
            checkpoint_kill
            gone 10 $kids || fail "the killed pipeline still holds its pids"
            "$CKPT" info "$W/img" > "$W/info.txt" || fail "ckpt info failed"
            ck restart -i "$W/img" --log "$W/rs.log" -v; rc=$?
            echo "RESTART-STATUS: $rc"
            [ $rc -eq 0 ] || fail "restart (waiting for sh) exited with $rc"
            grep -q DONE "$W/out" || fail "the restored pipeline did not finish"
            cmp "$W/reference.txt" "$W/sum.txt" || fail "the output differs from the uninterrupted run"
            """, timeoutSeconds: 120);
        r.AssertScriptOk();
        Assert.Contains("RESTART-STATUS: 0", r.Stdout);
        Assert.Equal(r.File("reference.txt"), r.File("sum.txt"));
        r.Cleanup();
    }

    /// <summary>A pipe whose other end a process outside the tree holds: refused, naming that process, and the tree goes on.</summary>
    [Fact]
    public void PipeHeldOutsideTheTreeIsRefused()
    {
        env.Program("children");
        var r = new E2eScript(env, "outside").Run("""
            ( "$BIN/children" < /dev/null 2>&1 | cat > "$W/out" ) &
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            P=$(pgrep -o -f "^$BIN/children")
            C=$(pgrep -n -x cat)
            ck checkpoint $P -o "$W/img" 2>"$W/err.txt"; echo "RC: $?"
            echo "CAT: $C"
            kill -USR1 $P
            wait_for "$W/out" '^(PASS|FAIL)' 15 || fail "the program did not finish"
            """);
        r.AssertScriptOk();
        Assert.Contains("RC: 69", r.Stdout);
        var cat = Regex.Match(r.Stdout, @"CAT: (\d+)").Groups[1].Value;
        var err = r.File("err.txt");
        Assert.True(err.Contains($"pid {cat}") && err.Contains("fd 1 "), $"the message should name the outside holder {cat} and fd 1{r.Diagnostics}");
        Assert.Contains("PASS", r.File("out"));
    }

    /// <summary>Memory (shared anonymous, memfd, SysV), an eventfd and a file offset shared by parent and child through fork stay shared.</summary>
    [Fact]
    public void ObjectsSharedThroughFork()
    {
        env.Program("treeshare");
        var r = new E2eScript(env, "treeshare").Run("""
            start "$W/out" "$BIN/treeshare"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            checkpoint_kill_tree CHILD
            ck info "$W/img" > "$W/info.txt" || fail "ckpt info failed"
            grep -q 'shared_memory (3)' "$W/info.txt" || fail "ckpt info does not show the 3 memory objects both processes map"
            restart_detached
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>
    /// A tree that forks all the time (workers forking and reaping children in a loop), checkpointed with
    /// and without --freezer (a cgroup v2 or v1 freezer holding the tree): every worker is saved and goes
    /// on counting after restart.
    /// </summary>
    [Theory]
    [InlineData("none")]
    [InlineData("unified")]
    [InlineData("freezer")]
    public void TreeThatForksAllTheTime(string freezer)
    {
        env.Program("forker");
        if (freezer != "none") Assert.SkipUnless(Directory.Exists($"/sys/fs/cgroup/{freezer}"), $"no /sys/fs/cgroup/{freezer}");
        var r = new E2eScript(env, "forker-" + freezer).Run($$"""
            fz={{freezer}}
            opt=
            if [ $fz != none ]; then
              CG=/sys/fs/cgroup/$fz/ckpt-e2e-$$
              mkdir -p $CG || fail "cannot create $CG"
              trap 'rmdir $CG 2>/dev/null' EXIT
              opt="--freezer $CG"
              start "$W/out" sh -c "echo \$\$ > $CG/cgroup.procs && exec "$BIN/forker""
            else
              start "$W/out" "$BIN/forker"
            fi
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            ck checkpoint $P -o "$W/img" --kill $opt --log "$W/ck.log" -v -v || fail "checkpoint failed"
            wait $P 2>/dev/null
            n=0; while [ $n -lt 100 ] && [ -n "$(ls $CG/cgroup.procs 2>/dev/null && cat $CG/cgroup.procs 2>/dev/null)" ]; do n=$((n + 1)); sleep 0.05; done
            ck info "$W/img" --json > "$W/info.json" || fail "ckpt info failed"
            pids=$(grep -o '"pid": [0-9]*' "$W/info.json" | grep -o '[0-9]*' | sort -u)
            gone 10 $pids || fail "the killed tree still holds its pids"
            restart_detached
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        using var info = JsonDocument.Parse(r.File("info.json"));
        Assert.True(info.RootElement.GetProperty("tree").GetArrayLength() >= 7, $"the tree should hold the root and 6 workers{r.Diagnostics}");
        r.Cleanup();
    }

    /// <summary>A child made with clone(CLONE_FILES | CLONE_FS) shares its parent's fd table and cwd again after restart.</summary>
    [Fact]
    public void ChildSharingFdTableAndFs()
    {
        env.Program("clonefiles");
        var r = new E2eScript(env, "clonefiles").Run("""
            mkdir -p "$W/elsewhere"
            start "$W/out" "$BIN/clonefiles" "$W/elsewhere"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            checkpoint_kill_tree CHILD
            ck info "$W/img" --json > "$W/info.json" || fail "ckpt info failed"
            grep -q shares_with_parent "$W/info.json" || fail "ckpt info does not show the sharing"
            restart_detached
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>
    /// A daemon that forked twice (daemon.c): its session and group are those of a process that exited (a
    /// zombie at the checkpoint).
    /// Restart makes that session again (a helper with the old leader's pid calls setsid and forks the
    /// root for ckpt), so the daemon and its child are in it and its group, not in the session of the
    /// restarting shell; the daemon checks that itself. With that pid taken at restart, the daemon leads a
    /// session of its own instead (never the restarting shell's).
    /// </summary>
    [Fact]
    public void DaemonInTheSessionOfAnExitedLeader()
    {
        env.Program("daemon");
        var r = new E2eScript(env, "daemon").Run("""
            start "$W/out" "$BIN/daemon"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            set -- $(grep '^DAEMON' "$W/out"); shift
            MAIN=$P P=$1 A=$2
            [ "$(ps -o sid=,pgid= -p $P | xargs)" = "$A $A" ] || fail "the daemon is not in session and group $A before the checkpoint"
            case "$(ps -o stat= -p $A)" in Z*) ;; *) fail "the session's leader $A is not a zombie";; esac
            ck checkpoint $P -o "$W/img" --log "$W/ck.log" -v -v || fail "checkpoint failed"
            ck info "$W/img" | grep -q 'session_leader_exited=True' || fail "ckpt info does not show that the session's leader had exited"
            kill -KILL $MAIN $(ps -o pid= -s $A)
            gone 10 $P $A || fail "the daemon or its session's leader is still there"
            # the session's id taken: a session of its own
            "$BIN/daemon" hold $A > "$W/hold.txt" || fail "cannot take pid $A"
            restart_detached
            [ "$(ps -o sid=,pgid= -p $P | xargs)" = "$P $P" ] || fail "with pid $A taken, the daemon is in session and group '$(ps -o sid=,pgid= -p $P | xargs)', not its own"
            grep -q 'cannot be made again' "$W/rs.log" || fail "the restart log does not say why the session was not made again"
            kill -KILL $A $(ps -o pid= -s $P)
            gone 10 $P $A || fail "the held pid or the daemon is still there"
            # the session made again
            restart_detached
            [ "$(ps -o sid=,pgid= -p $P | xargs)" = "$A $A" ] || fail "the restored daemon is in session and group '$(ps -o sid=,pgid= -p $P | xargs)', want $A"
            [ -e /proc/$A ] && fail "the helper $A is still there"
            [ "$(ps -o sid= -p $$ | xargs)" = "$A" ] && fail "the script is in the daemon's session"
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>Script functions: <c>nspids</c> lists $P and its descendants (<c>desc PID</c>), each with its ids at every pid namespace level (NSpid).</summary>
    private const string NsIds = """
        desc() { echo $1; for c in $(cat /proc/$1/task/*/children 2>/dev/null); do desc $c; done; }
        nspids() { for p in $(desc $P | sort -n); do echo "$p $(sed -n 's/^NSpid:[[:space:]]*//p' /proc/$p/status | xargs)"; done; }
        """;

    /// <summary>
    /// A tree with pid namespaces of its own (pidns.c): a root in ckpt's namespace whose children go into a
    /// namespace it made (the first its init, the second forked in from outside), an orphan adopted by that
    /// init, a thread, a pidfd held inside, and a namespace nested in it. Every task keeps its ids at every
    /// level (checked here through NSpid, and by each process on its own ids), and the processes that had
    /// unshared still fork into the namespace they did.
    /// </summary>
    [Fact]
    public void PidNamespacesOfTheTree()
    {
        env.Program("pidns");
        var r = new E2eScript(env, "pidns").Run(NsIds + "\n" + """
            start "$W/out" "$BIN/pidns"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            set -- $(grep '^PIDNS' "$W/out"); shift
            A=$2 D=$3
            nspids > "$W/ids-before.txt"
            checkpoint_kill
            ck info "$W/img" --json > "$W/info.json" || fail "ckpt info failed"
            restart_detached
            nspids > "$W/ids-after.txt"
            cmp -s "$W/ids-before.txt" "$W/ids-after.txt" || fail "ids differ: $(paste "$W/ids-before.txt" "$W/ids-after.txt")"
            grep -q "^$A $A 1\$" "$W/ids-after.txt" || fail "A is not pid 1 of its namespace"
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        Assert.Equal(6, r.File("ids-after.txt").Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        using var info = JsonDocument.Parse(r.File("info.json"));
        Assert.Equal(2, info.RootElement.GetProperty("pid_namespaces").GetArrayLength());
        r.Cleanup();
    }

    /// <summary>
    /// The init of a pid namespace (<c>unshare --pid --fork</c>) checkpointed as the root, with its tree: it
    /// is restarted as pid 1 of a new namespace, its ids the same at both levels; and a process of a
    /// namespace whose init is not in the tree is refused, naming the init, and left running. The image is
    /// restarted again by a ckpt that is itself the init of a pid namespace (the tree's ids are relative to
    /// ckpt's namespace).
    /// </summary>
    [Fact]
    public void PidNamespaceInitAsTheRoot()
    {
        env.Program("tree");
        var r = new E2eScript(env, "pidns-init").Run(NsIds + "\n" + """
            start "$W/out" unshare --pid --fork "$BIN/tree"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            below_launcher
            grep -q '^NSpid:.*[[:space:]]1$' /proc/$P/status || fail "the program is not pid 1 of its namespace"
            C=$(pgrep -P $P | head -n 1)
            ck checkpoint $C -o "$W/img-c" --log "$W/ck-c.log" 2>"$W/err.txt"; echo "RC-CHILD: $?"
            alive $C || fail "the refused child died"
            nspids > "$W/ids-before.txt"
            checkpoint_kill
            wait $U 2>/dev/null
            restart_detached
            nspids > "$W/ids-after.txt"
            cmp -s "$W/ids-before.txt" "$W/ids-after.txt" || fail "ids differ: $(paste "$W/ids-before.txt" "$W/ids-after.txt")"
            finish_detached
            # the same image restarted by a ckpt that is itself the init of a pid namespace: the tree's
            # namespace is made one level deeper, its ids relative to ckpt's the same
            unshare --pid --fork --mount-proc sh -c '
              "$1" restart -i "$2" & ck=$!
              n=200; until grep -q "^TracerPid:[[:space:]]*0$" /proc/$3/status 2>/dev/null; do n=$((n - 1)); [ $n -gt 0 ] || break; sleep 0.05; done
              sed -n "s/^NSpid:[[:space:]]*//p" /proc/$3/status > "$4"
              kill -USR1 $3; wait $ck; echo "NS-RC: $?"' _ "$CKPT" "$W/img" $P "$W/nested-ids.txt" > "$W/ns.txt" 2>&1
            grep -q 'NS-RC: 0' "$W/ns.txt" || fail "the restart by a ckpt in a pid namespace did not end with 0: $(cat "$W/ns.txt")"
            """);
        r.AssertPassed().AssertRestoredExit0();
        // seen from inside ckpt's namespace: the root's old id there, and 1 in its own
        Assert.Matches(@"^\d+\s+1\s*$", r.File("nested-ids.txt"));
        Assert.Contains("RC-CHILD: 69", r.Stdout);
        Assert.Contains("whose init", r.File("err.txt"));
        Assert.True(r.File("ids-after.txt").Split('\n', StringSplitOptions.RemoveEmptyEntries).Length >= 3, $"too few processes{r.Diagnostics}");
        r.Cleanup();
    }

    /// <summary>
    /// The usual way to run a program in a pid namespace, <c>unshare --pid --fork --mount-proc</c>: a mount
    /// namespace of its own whose only mount of its own is a proc of the new pid namespace on /proc. The
    /// init is restarted in new namespaces of both kinds, its /proc a proc of its pid namespace again (the
    /// program checks /proc/self, what /proc lists and its child's NSpid). A mount namespace with a mount of
    /// its own ckpt cannot make again (a ramfs, whose files are not saved) is refused, naming it, and left running.
    /// </summary>
    [Fact]
    public void PidNamespaceWithItsOwnProc()
    {
        env.Program("procns");
        env.Program("signals");
        var r = new E2eScript(env, "procns").Run("""
            start "$W/out-tmpfs" unshare --mount sh -c 'mount -t ramfs none /mnt && exec "$1"' _ "$BIN/signals"
            wait_for "$W/out-tmpfs" '^READY' 15 || fail "the program with a tmpfs did not print READY"
            T=$P
            ck checkpoint $T -o "$W/img-t" --log "$W/ck-t.log" 2>"$W/err-tmpfs.txt"; echo "RC-TMPFS: $?"
            alive $T || fail "the refused program died"
            kill -KILL $T
            start "$W/out" unshare --pid --fork --mount-proc "$BIN/procns"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            below_launcher
            checkpoint_kill
            wait $U 2>/dev/null
            ck info "$W/img" > "$W/info.txt" || fail "ckpt info failed"
            restart_detached
            [ "$(readlink /proc/$P/ns/mnt)" != "$(readlink /proc/self/ns/mnt)" ] || fail "the restarted init is in the script's mount namespace"
            grep ' /proc .* - proc ' /proc/$P/mountinfo > "$W/proc-mounts.txt"
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("RC-TMPFS: 69", r.Stdout);
        Assert.Contains("ramfs mount (none) on /mnt", r.File("err-tmpfs.txt"));
        Assert.Contains("proc_mounts", r.File("info.txt"));
        // the copy of the script's /proc, and the tree's own on top of it (nosuid, nodev, noexec as unshare made it)
        var mounts = r.File("proc-mounts.txt").Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(mounts.Length == 2 && mounts[1].Contains("nosuid,nodev,noexec"), $"proc mounts: {r.File("proc-mounts.txt")}{r.Diagnostics}");
        r.Cleanup();
    }

    /// <summary>
    /// A process in a mount namespace of its own with mounts of every kind ckpt makes again (tests/programs/
    /// mounts.c): a tmpfs with files of every type, modes, owners, times, a hole, hard and symbolic links, a
    /// second tmpfs on a directory of it, read-only and file bind mounts of the host's, a bind mount of a part
    /// of its tmpfs, a sysfs, a tmpfs of the script's it removed, another it remounted read-only, and a
    /// tmpfs over a directory of the script's a file of which it holds open; it holds an fd at an offset, a
    /// shared mapping and its cwd in its tmpfs. It checks them all after the restart; the script's tmpfs is still
    /// mounted in the script's namespace, and `ckpt info` lists the mounts.
    /// </summary>
    [Fact]
    public void MountNamespaceWithMountsOfItsOwn()
    {
        env.Program("mounts");
        var r = new E2eScript(env, "mounts").Run("""
            D="$W/m"
            mkdir -p "$D/host" "$D/t" "$D/t2" "$D/sys" "$D/gone" "$D/flg" "$D/cov"
            printf 'from host' > "$D/host/hostfile"
            printf 'below' > "$D/cov/under"
            mount -t tmpfs ckpt-gone "$D/gone" || fail "cannot mount the script's tmpfs"
            mount -t tmpfs ckpt-flg "$D/flg" || fail "cannot mount the script's tmpfs"
            trap 'umount -l "$D/gone" "$D/flg" 2>/dev/null' EXIT
            start "$W/out" "$BIN/mounts" "$D"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            checkpoint_kill
            ck info "$W/img" > "$W/info.txt" || fail "ckpt info failed"
            restart_detached
            [ "$(readlink /proc/$P/ns/mnt)" != "$(readlink /proc/self/ns/mnt)" ] || fail "the restarted process is in the script's mount namespace"
            finish_detached
            grep -q " $D/gone .* - tmpfs ckpt-gone " /proc/self/mountinfo || fail "the script's tmpfs is gone from its namespace"
            grep -q " $D/flg rw,.* - tmpfs ckpt-flg " /proc/self/mountinfo || fail "the script's tmpfs is no longer read-write in its namespace"
            grep -q " $D/t " /proc/self/mountinfo && fail "the tree's tmpfs is in the script's namespace"
            true
            """);
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("TMPFS yes", r.File("out"));
        var info = r.File("info.txt");
        foreach (var kind in new[] { "kind=tmpfs", "kind=bind ", "kind=bindown", "kind=flags", "removed (1)", "tmpfs_files: 15" })
            Assert.True(info.Contains(kind), $"ckpt info has no '{kind}':\n{info}{r.Diagnostics}");
        r.Cleanup();
    }

    /// <summary>
    /// A minimal container: a program run as the init of new pid and mount namespaces in a root of its own
    /// (a directory bound on itself, an overlay of a lower and an upper directory as a container engine
    /// makes, or a directory of a tmpfs as bubblewrap makes, made the root with pivot_root, the old root
    /// removed; or, in one, a directory of the namespace it chroots to) with the host's /usr read-only, a tmpfs
    /// /tmp and /dev (a device node made in it), a file it wrote in its /tmp, a proc of its pid namespace
    /// and, on it, what container engines mount to mask parts of it (/dev/null on a file, /proc/sys bound
    /// read-only on itself, a read-only tmpfs on a directory); in one, a devpts instance of its own where a
    /// program holds a pty with output and input queued (tests/programs/ptys.c). The restart builds that root again and pivots to it, twice (the namespace a restart built
    /// is checkpointed again; procns checks its /proc, its child's ids there; the script, the mounts and files
    /// the restarted tree sees).
    /// </summary>
    [Theory]
    [InlineData("bind")]
    [InlineData("overlay")]
    [InlineData("subtree")]
    [InlineData("devpts")]
    [InlineData("chroot")]
    public void ContainerWithARootOfItsOwn(string root)
    {
        env.Program("procns");
        env.Program("ptys");
        var r = new E2eScript(env, "container-" + root).Run($$"""
            KIND={{root}}
            """ + """

            R="$W/root"
            L="$R"
            case $KIND in overlay|subtree) L="$W/lower"; mkdir -p "$R" "$W/upper" "$W/work" "$W/base" ;; esac
            mkdir -p "$L/usr" "$L/proc" "$L/tmp" "$L/dev" "$L/old" "$L/sbin2"
            ln -s usr/lib "$L/lib"; ln -s usr/lib64 "$L/lib64"; ln -s usr/bin "$L/bin"
            cp "$BIN/procns" "$BIN/ptys" "$L/sbin2/"
            # devpts: a devpts instance of its own (and /dev/ptmx leading to it) where ptys makes its pty
            PROG=procns PTS=true
            [ $KIND = devpts ] && PROG=ptys PTS="mkdir $R/dev/pts && mount -t devpts -o newinstance,ptmxmode=0666,mode=620 ckpt-pts $R/dev/pts && ln -s pts/ptmx $R/dev/ptmx"
            case $KIND in
              overlay) MAKE="mount -t overlay ckpt-ov -o lowerdir=$W/lower,upperdir=$W/upper,workdir=$W/work $R" ;;
              # (as bubblewrap makes its root: a directory of a tmpfs whose own mount goes with the old root)
              subtree) MAKE="eval mount -t tmpfs ckpt-base $W/base && cp -a $W/lower $W/base/newroot && mount --bind $W/base/newroot $R" ;;
              # (no root of its own: chroot into a directory of the namespace, the host's root still its root)
              chroot) MAKE=chroot ;;
              *) MAKE="mount --bind $R $R" ;;
            esac
            start "$W/out" unshare --mount --pid --fork sh -c '
              R=$1
              { [ "$2" = chroot ] || $2; } && mount --bind /usr "$R/usr" && mount -o remount,bind,ro "$R/usr" &&
              mount -t tmpfs ckpt-ctmp "$R/tmp" && echo kept > "$R/tmp/note" && echo upper > "$R/written" &&
              mount -t tmpfs -o mode=755 ckpt-cdev "$R/dev" && mknod -m 666 "$R/dev/null" c 1 3 && eval "$3" &&
              mount -t proc proc "$R/proc" && mount --bind "$R/dev/null" "$R/proc/uptime" &&
              mount --bind "$R/proc/sys" "$R/proc/sys" && mount -o remount,bind,ro "$R/proc/sys" && mount -t tmpfs -o ro ckpt-cfs "$R/proc/fs" &&
              if [ "$2" = chroot ]; then exec chroot "$R" /sbin2/$4; fi
              cd "$R" && pivot_root . old && umount -l /old && exec /sbin2/$4' _ "$R" "$MAKE" "$PTS" $PROG
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            below_launcher
            checkpoint_kill
            wait $U 2>/dev/null
            restart_detached
            # the namespace the restart built, checkpointed and restarted again
            checkpoint_kill
            restart_detached
            WANT=/; [ $KIND = chroot ] && WANT="$R"
            [ "$(readlink /proc/$P/root)" = "$WANT" ] || fail "the restarted init's root is $(readlink /proc/$P/root)"
            cut -d' ' -f4- /proc/$P/mountinfo > "$W/mounts.txt"
            cat "/proc/$P/root/tmp/note" > "$W/note.txt"
            cat "/proc/$P/root/written" > "$W/written.txt"
            stat -c '%F %t:%T' "/proc/$P/root/dev/null" > "$W/null.txt"
            [ -e "/proc/$P/root/old/usr" ] && fail "the host's root is in the restarted container"
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        var mounts = r.File("mounts.txt");
        // (chroot: the mounts under its root, as it sees them; the namespace's root is the host's)
        string rootLine = root switch { "overlay" => "/ / rw,relatime - overlay ckpt-ov ", "subtree" => "/ / rw,relatime - tmpfs ckpt-base ", "chroot" => "/usr /usr ro,", _ => "/root / rw," };
        foreach (var line in new[] { rootLine, "/usr /usr ro,", "/ /tmp rw,relatime - tmpfs ckpt-ctmp", "/ /dev rw,relatime - tmpfs ckpt-cdev", "/ /proc rw,relatime - proc proc",
                     "/null /proc/uptime rw,relatime - tmpfs ckpt-cdev", "/sys /proc/sys ro,relatime - proc proc", "/ /proc/fs ro,relatime - tmpfs ckpt-cfs" })
            Assert.True(mounts.Contains(line), $"the container has no mount '{line}':\n{mounts}{r.Diagnostics}");
        if (root == "devpts") Assert.True(mounts.Contains("/ /dev/pts rw,relatime - devpts ckpt-pts "), $"the container has no devpts of its own:\n{mounts}");
        Assert.Equal(root switch { "devpts" => 9, "chroot" => 7, _ => 8 }, mounts.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        Assert.Equal("kept", r.File("note.txt").Trim());
        Assert.Equal("upper", r.File("written.txt").Trim());
        Assert.Equal("character special file 1:3", r.File("null.txt").Trim());
        if (root == "overlay") Assert.True(File.Exists(Path.Combine(r.W, "upper", "written")), "the file written in the overlay is not in its upper directory");
        r.Cleanup();
    }

    /// <summary>
    /// Programs of other tests run as the init of new pid, mount and network namespaces (<c>unshare --pid
    /// --fork --mount-proc --net</c>, lo up) and verify themselves after the restart: pidfds of reaped
    /// processes (helpers made with any id inside the new namespace must not take an id the image still
    /// has to give: they did before ns_last_pid was set), sessions and groups whose leaders exited, POSIX
    /// timers signalling threads, one signalling a thread that exited (its id in the namespace read from the
    /// namespace's own proc: the program checks /proc/self/timers), and the tree of groups, sessions and zombies.
    /// </summary>
    [Theory]
    [InlineData("pidfds")]
    [InlineData("sessions")]
    [InlineData("timers")]
    [InlineData("deadtimer")]
    [InlineData("tree")]
    public void ProgramAsTheInitOfItsNamespaces(string program)
    {
        env.Program(program);
        var r = new E2eScript(env, $"nsinit-{program}").Run($$"""
            start "$W/out" unshare --pid --fork --mount-proc --net sh -c 'ip link set lo up && exec "$1"' _ "$BIN/{{program}}"
            """ + """

            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            below_launcher
            checkpoint_kill
            wait $U 2>/dev/null
            restart_detached
            grep -q '^NSpid:.*[[:space:]]1$' /proc/$P/status || fail "the restarted program is not pid 1 of its namespace"
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>
    /// A tree in a user namespace of its own, made four ways: by an unprivileged user with <c>unshare
    /// --map-root-user</c> (its uid mapped to 0, setgroups denied), the same user with every namespace the
    /// user namespace can own (UTS, IPC, network with lo up, mount with its own proc, cgroup, pid: the
    /// program is the init), root with <c>unshare --map-root-user --uts</c>, and the program making them
    /// itself as a rootless container engine does (0-65535 mapped to 100000-165535, setgroups allowed and
    /// used, a child that became uid 1000 inside, pid, mount, network and UTS namespaces owned by it). The
    /// program (userns.c) compares after the restart what it sees from inside: maps, ids, groups, capabilities,
    /// which namespaces its user namespace owns, and what that lets it do (set the host name, bring lo up),
    /// for its main thread, two threads (their tids, made from inside the namespace) and the child.
    /// </summary>
    [Theory]
    [InlineData("user")]
    [InlineData("owning")]
    [InlineData("root")]
    [InlineData("wide")]
    [InlineData("launcher")]
    public void ProgramInAUserNamespace(string how)
    {
        env.Program("userns");
        string start = how switch
        {
            "user" => "setpriv --reuid 1000 --regid 1000 --clear-groups unshare --map-root-user \"$D/userns\"",
            "launcher" => "setpriv --reuid 1000 --regid 1000 --clear-groups unshare --map-root-user --pid --fork --mount-proc \"$D/userns\"",
            "owning" => "setpriv --reuid 1000 --regid 1000 --clear-groups unshare --map-root-user --uts --ipc --net --mount --cgroup --pid --fork --mount-proc sh -c 'ip link set lo up && exec \"$1\"' _ \"$D/userns\"",
            "root" => "unshare --map-root-user --uts \"$D/userns\"",
            _ => "\"$D/userns\" wide",
        };
        // the program proper: the started process, its child (unshare --fork), or its grandchild (wide)
        int depth = how switch { "owning" => 1, "wide" => 2, _ => 0 };
        var r = new E2eScript(env, $"userns-{how}").Run($$"""
            # (a directory an unprivileged user can reach: the test's own is root's alone)
            D=$(mktemp -d /tmp/ckpt-userns.XXXXXX) && chmod 755 "$D" && cp "$BIN/userns" "$D/" || fail "cannot copy the program"
            trap 'rm -rf "$D"' EXIT
            start "$W/out" {{start}}
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            below_launcher {{depth}}
            [ "$(readlink /proc/$P/ns/user)" != "$(readlink /proc/self/ns/user)" ] || fail "the program is not in a user namespace of its own"
            checkpoint_kill
            wait $U 2>/dev/null
            restart_detached
            [ "$(readlink /proc/$P/ns/user)" != "$(readlink /proc/self/ns/user)" ] || fail "the restarted program is in the script's user namespace"
            cat /proc/$P/uid_map > "$W/uid_map.txt"
            {{E2eScript.SaveInfo}}
            {{(how == "launcher" ? """
                # unshare itself was checkpointed: its child, the program, gets the signal; unshare ends with it
                [ "$(readlink /proc/$P/ns/pid_for_children)" = "$(readlink /proc/$(pgrep -P $P)/ns/pid)" ] || fail "unshare's children do not go into the program's pid namespace"
                seen=$(times_reaped $P)
                kill -USR1 $(pgrep -P $P) || fail "no program under the restored unshare"
                st=$(reaped $P 30 "$seen") || fail "the restored unshare did not end within 30 s"
                echo "RESTORED: $st"
                """ : "finish_detached")}}
            """);
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("user_namespace", r.File("info.txt"));
        Assert.Matches(how == "wide" ? @"^\s*0\s+100000\s+65536\s*$" : how == "root" ? @"^\s*0\s+0\s+1\s*$" : @"^\s*0\s+1000\s+1\s*$", r.File("uid_map.txt"));
        r.Cleanup();
    }

    /// <summary>
    /// A process that made a tmpfs the root of its own mount namespace and removed the old root, as
    /// bubblewrap's first process stays in its sandbox (tests/programs/sandbox.c): its executable and
    /// libraries are files of the host its namespace no longer shows. The checkpoint saves them as files
    /// of ckpt's namespace and the restart maps them from there; the program runs on, in its root.
    /// </summary>
    [Fact]
    public void SandboxRunningAProgramItsRootNoLongerShows()
    {
        env.Program("sandbox");
        var r = new E2eScript(env, "sandbox").Run(E2eScript.RoundTrip("\"$BIN/sandbox\" \"$W\"", afterRestart: E2eScript.SaveInfo));
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("exe_in_ckpt_namespace: True", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>
    /// A pid of the tree still in use at restart: restart fails (71) naming it, and leaves no process behind;
    /// restarted in a pid namespace of its own, as the message says, the tree runs and ends well.
    /// </summary>
    [Fact]
    public void PidOfTheTreeInUseAtRestart()
    {
        env.Program("children");
        var r = new E2eScript(env, "tree-pid-in-use").Run("""
            start "$W/out" "$BIN/children"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            set -- $(grep '^CHILDREN' "$W/out"); shift
            RUNNING=$1
            ck checkpoint $P -o "$W/img" --log "$W/ck.log" -v || fail "checkpoint failed"
            kill -KILL $P; wait $P 2>/dev/null
            gone 10 $P || fail "the root's pid is still taken"
            alive $RUNNING || fail "the running child died with its parent"
            ck restart -i "$W/img" --detach --log "$W/rs.log" -v 2>"$W/err.txt"; echo "RC: $?"
            echo "RUNNING: $RUNNING"
            sleep 0.2
            [ -e /proc/$P ] && fail "the failed restart left pid $P behind"
            alive $RUNNING || fail "the process holding the pid was harmed"
            # in a pid namespace of its own (as the message says) every pid is free: the tree runs there, a
            # copy of the one still running here, and verifies itself (its children, the zombie's status)
            grep -q 'unshare --pid --fork --mount-proc' "$W/err.txt" || fail "the message does not say how to restart in a pid namespace of its own"
            unshare --pid --fork --mount-proc sh -c '
              "$1" restart -i "$2" & ck=$!
              n=200; until grep -q children /proc/$3/comm 2>/dev/null && grep -q "^TracerPid:[[:space:]]*0$" /proc/$3/status; do
                n=$((n - 1)); [ $n -gt 0 ] || break; sleep 0.05; done
              kill -USR1 $3; wait $ck; echo "NS-RC: $?"' _ "$CKPT" "$W/img" $P > "$W/ns.txt" 2>&1
            grep -q 'NS-RC: 0' "$W/ns.txt" || fail "the restart in a pid namespace of its own did not end with 0: $(cat "$W/ns.txt")"
            alive $RUNNING || fail "the process holding the pid was harmed"
            kill -KILL $RUNNING
            """);
        r.AssertScriptOk();
        Assert.Contains("RC: 71", r.Stdout);
        var running = Regex.Match(r.Stdout, @"RUNNING: (\d+)").Groups[1].Value;
        Assert.True(r.File("err.txt").Contains($"pid {running}") && r.File("err.txt").Contains("in use"), $"the message should name pid {running}{r.Diagnostics}");
    }

    /// <summary>A child stopped by job control (SIGSTOP) stays stopped through a checkpoint, and is restored stopped; SIGCONT lets it go on.</summary>
    [Fact]
    public void StoppedChild()
    {
        var r = new E2eScript(env, "stopped-child").Run("""
            start "$W/out" sh -c 'sleep 300 & echo "CHILD $!"; kill -STOP $!; echo READY; wait'
            wait_for "$W/out" '^READY' 15 || fail "the shell did not print READY"
            C=$(sed -n 's/^CHILD //p' "$W/out")
            st() { sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' /proc/$1/status; }
            for i in $(seq 50); do [ "$(st $C)" = T ] && break; sleep 0.02; done
            [ "$(st $C)" = T ] || fail "the child is not stopped before the checkpoint"
            ck checkpoint $P -o "$W/img" --log "$W/ck0.log" -v || fail "checkpoint failed"
            sleep 0.1
            echo "AFTER-CHECKPOINT: $(st $C)"
            checkpoint_kill
            gone 10 $C || fail "the killed child still holds its pid"
            restart_detached
            sleep 0.1
            echo "AFTER-RESTART: $(st $C)"
            kill -CONT $C
            sleep 0.1
            echo "AFTER-CONT: $(st $C)"
            kill -KILL $C $P
            """);
        r.AssertScriptOk();
        Assert.Contains("AFTER-CHECKPOINT: T", r.Stdout);
        Assert.Contains("AFTER-RESTART: T", r.Stdout);
        Assert.Contains("AFTER-CONT: S", r.Stdout);
    }

    /// <summary>A child stopped by SIGTSTP in a group of its own (jobstop.c) is stopped again by SIGTSTP: its parent's wait reports that signal, not SIGSTOP.</summary>
    [Fact]
    public void ChildStoppedByJobControlSignal()
    {
        env.Program("jobstop");
        var r = new E2eScript(env, "jobstop").Run("""
            start "$W/out" "$BIN/jobstop"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            checkpoint_kill_tree CHILD
            ck info "$W/img" > "$W/info.txt" || fail "ckpt info failed"
            restart_detached
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("stop_signal=20", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>A parent blocked in vfork: the checkpoint refuses at once (69), naming the vfork child, and both go on.</summary>
    [Fact]
    public void ParentInVforkIsRefused()
    {
        env.Program("vforker");
        var r = new E2eScript(env, "vfork").Run("""
            start "$W/out" "$BIN/vforker"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            for i in $(seq 50); do C=$(ps -o pid= --ppid $P | tr -d ' '); [ -n "$C" ] && break; sleep 0.02; done
            [ -n "$C" ] || fail "no vfork child"
            CK_TIMEOUT=20 ck checkpoint $P -o "$W/img" --log "$W/ck.log" -v 2>"$W/err.txt"; echo "RC: $?"
            echo "CHILD: $C"
            kill -USR2 $C
            wait_exit $P 20; echo "TARGET: $?"
            """);
        r.AssertScriptOk();
        Assert.Contains("RC: 69", r.Stdout);
        var child = Regex.Match(r.Stdout, @"CHILD: (\d+)").Groups[1].Value;
        Assert.True(r.File("err.txt").Contains($"pid {child}") && r.File("err.txt").Contains("vfork"), $"the message should name the vfork child {child}{r.Diagnostics}");
        Assert.Contains("TARGET: 0", r.Stdout);
        Assert.Contains("PASS", r.File("out"));
    }

    /// <summary>Checkpoints that do not kill leave the whole tree as it was: after two of them, every process still checks out (groups, sessions, zombies, pipe data, shared offset).</summary>
    [Fact]
    public void CheckpointLeavesTheTreeUnharmed()
    {
        env.Program("tree");
        var r = new E2eScript(env, "tree-unharmed").Run("""
            start "$W/out" "$BIN/tree"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            ck checkpoint $P -o "$W/img1" --log "$W/ck1.log" -v || fail "the first checkpoint failed"
            ck checkpoint $P -o "$W/img2" --log "$W/ck2.log" -v || fail "the second checkpoint failed"
            kill -USR1 $P
            wait_exit $P 20; echo "TARGET: $?"
            """);
        r.AssertPassed();
        Assert.Contains("TARGET: 0", r.Stdout);
    }

    /// <summary>FIFOs: one read by the parent and written by its child with bytes in flight, one open read-write by the parent alone.</summary>
    [Fact]
    public void Fifos()
    {
        env.Program("fifo");
        var r = new E2eScript(env, "fifo").Run("""
            mkdir -p "$W/fifos"
            start "$W/out" "$BIN/fifo" "$W/fifos"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            checkpoint_kill_tree CHILD
            ck info "$W/img" | grep -q 'kind=fifo' || fail "ckpt info shows no FIFO"
            ck info "$W/img" --json | grep -q '"holds_back_hangup": true' || fail "ckpt info does not show the control FIFO's ends holding back POLLHUP"
            restart_detached
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>Shared memory also mapped by a process outside the tree: the checkpoint of the child alone is refused, naming the parent; both go on.</summary>
    [Fact]
    public void SharedMemoryHeldOutsideTheTreeIsRefused()
    {
        env.Program("treeshare");
        var r = new E2eScript(env, "shm-outside").Run("""
            start "$W/out" "$BIN/treeshare"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            C=$(sed -n 's/^CHILD //p' "$W/out")
            ck checkpoint $C -o "$W/img" 2>"$W/err.txt"; echo "RC: $?"
            echo "PARENT: $P"
            kill -USR1 $P
            wait_exit $P 20; echo "TARGET: $?"
            """);
        r.AssertPassed();
        Assert.Contains("RC: 69", r.Stdout);
        var parent = Regex.Match(r.Stdout, @"PARENT: (\d+)").Groups[1].Value;
        Assert.True(r.File("err.txt").Contains($"pid {parent} outside the tree"), $"the message should name the parent {parent}{r.Diagnostics}");
        Assert.Contains("TARGET: 0", r.Stdout);
    }
}
