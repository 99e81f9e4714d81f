using System.Text.Json;
using System.Text.RegularExpressions;
using Xunit;

namespace Ckpt.Tests.EndToEnd;

/// <summary>
/// Unix domain sockets: pairs (stream, datagram, seqpacket) with their queued data and message
/// boundaries, a pair split between parent and child, shutdown, a closed peer, listeners (path and
/// abstract), an accepted connection, a bound datagram receiver; and what is refused (a peer held
/// outside the tree, fds in flight).
/// </summary>
[Collection(EndToEndCollection.Name)]
public sealed class UnixSocketTests(E2eEnvironment env)
{
    /// <summary>Every kind of unix socket the program holds comes back with its queues; parent and child talk again.</summary>
    [Fact]
    public void UnixSocketsAcrossRestart()
    {
        env.Program("unixsock");
        var r = new E2eScript(env, "unixsock").Run("""
            start "$W/out" "$BIN/unixsock"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            set -- $(grep '^CHILD' "$W/out"); shift
            checkpoint_kill
            gone 10 "$@" || fail "the killed child still holds its pid"
            ck info "$W/img" --json > "$W/info.json" || fail "ckpt info failed"
            restart_detached
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        using var info = JsonDocument.Parse(r.File("info.json"));
        var text = info.RootElement.ToString();
        Assert.Contains("unix datagram socket", text);
        Assert.Contains("unix seqpacket socket", text);
        Assert.Contains("listening (backlog 7)", text);
        Assert.Contains("peer closed", text);
        r.Cleanup();
    }

    /// <summary>
    /// Peer credentials (SO_PEERCRED) come back as they were, not as ckpt's: a pair made by a child with
    /// other ids that exited, a pair the process made, an accepted connection whose client runs with other
    /// ids (each end names the other process), a pair made by a child with other ids that passed one end
    /// on. Checked after a second checkpoint of the restored tree too.
    /// </summary>
    [Fact]
    public void UnixPeerCredentialsAcrossRestart()
    {
        env.Program("peercred");
        var r = new E2eScript(env, "peercred").Run("""
            start "$W/out" "$BIN/peercred"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            set -- $(sed -n 's/^CHILD //p' "$W/out")
            checkpoint_kill
            gone 10 "$@" || fail "the killed children still hold their pids"
            restart_detached
            ck checkpoint $P -o "$W/img2" --kill || fail "the second checkpoint failed"
            gone 10 $P "$@" || fail "the killed tree still holds its pids"
            ck restart -i "$W/img2" --detach > /dev/null || fail "the second restart failed"
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        r.Cleanup();
    }

    /// <summary>The other end of a socketpair is held by a process outside the tree: refused naming it (or saved as external), and the program goes on.</summary>
    [Fact]
    public void UnixPeerOutsideTheTreeIsRefused()
    {
        env.Program("unixsock");
        var r = new E2eScript(env, "unixsock-outside").Run("""
            start "$W/out" "$BIN/unixsock" outside
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            ck checkpoint $P -o "$W/img" 2>"$W/err.txt"; echo "RC: $?"
            ck checkpoint $P -o "$W/img2" --external 2>"$W/err2.txt"; echo "RC2: $?"
            ck info "$W/img2" > "$W/info2.txt"
            kill -USR1 $P
            wait_exit $P 20; echo "TARGET: $?"
            """);
        r.AssertPassed();
        Assert.Contains("RC: 69", r.Stdout);
        Assert.Contains("RC2: 0", r.Stdout);
        Assert.Contains("TARGET: 0", r.Stdout);
        var holder = Regex.Match(r.File("out"), @"^HOLDER (\d+)$", RegexOptions.Multiline).Groups[1].Value;
        var fd = Regex.Match(r.File("out"), @"^SOCKFD (\d+)$", RegexOptions.Multiline).Groups[1].Value;
        var err = r.File("err.txt");
        Assert.True(err.Contains($"pid {holder}") && err.Contains($"fd {fd} "), $"the message should name fd {fd} and the outside holder {holder}{r.Diagnostics}");
        Assert.Contains("external", r.File("info2.txt"));
        r.Cleanup();
    }

    /// <summary>
    /// Sockets whose file another file took (a listener), or whose directory was removed (a datagram socket):
    /// bound again by their names where no path reaches them, the other file untouched (refused before);
    /// and datagram sockets bound to one name in turn, each with a client (the first two removed before the
    /// next was bound): each client reaches its own socket again (refused before: zdtm sk-unix01); and
    /// sockets bound by relative names whose files were removed (a FIFO took one name) before the cwd
    /// changed: bound again in the directory the kernel names (SIOCUNIXFILE), not the cwd of the checkpoint
    /// (refused before: zdtm fifo_upon_unix_socket01).
    /// </summary>
    [Fact]
    public void UnixSocketsWhoseFileWasReplacedOrWhoseDirectoryWent()
    {
        env.Program("unixsock");
        var r = new E2eScript(env, "unixsock-replaced").Run("""
            start "$W/out" "$BIN/unixsock" replaced "$W"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            checkpoint_kill
            restart_detached
            finish_detached
            findmnt -rn -o TARGET | grep -q "^$W" && fail "a mount was left on the work directory"
            true
            """);
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>
    /// Datagram sockets connected to bound ones that are not connected back (a client of a server of the
    /// process, a socket connected to itself, a client of a server outside the tree) connect to them again:
    /// each sends to its peer only, the queued datagrams are there, the outside server answers.
    /// </summary>
    [Fact]
    public void UnixDatagramClientsOfBoundSockets()
    {
        env.Program("unixsock");
        var r = new E2eScript(env, "unixsock-dgramconn").Run("""
            start "$W/out" "$BIN/unixsock" dgramconn "$W"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            holder=$(sed -n 's/^HOLDER //p' "$W/out")
            checkpoint_kill
            ck info "$W/img" > "$W/info.txt" || fail "ckpt info failed"
            restart_detached
            finish_detached
            gone 10 $holder || { kill -9 $holder; fail "the outside server did not end"; }
            """);
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("connected to socket:[", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>
    /// Files in flight (SCM_RIGHTS) in datagram and stream queues come back with their messages: a pipe end
    /// the process also holds (one description), a file and an eventfd only in flight, a socket in flight
    /// with data of its own queued. A checkpoint that leaves the process running leaves no fd behind.
    /// </summary>
    [Fact]
    public void UnixFilesInFlight()
    {
        env.Program("unixsock");
        var r = new E2eScript(env, "unixsock-rights").Run("""
            start "$W/out" "$BIN/unixsock" rights "$W"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            ck checkpoint $P -o "$W/img0" || fail "the checkpoint that leaves it running failed"
            layout $P before
            checkpoint_kill
            restart_detached
            layout $P after
            ck info "$W/img" > "$W/info.txt" || fail "ckpt info failed"
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        Assert.Contains("files in flight", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>
    /// A connection waiting to be accepted when the tree is frozen, by a listener that accepts it a moment
    /// later: the checkpoint lets the tree run until it is accepted, then saves the connection with its data.
    /// </summary>
    [Fact]
    public void UnixConnectionAcceptedSoonIsWaitedFor()
    {
        env.Program("unixsock");
        var r = new E2eScript(env, "unixsock-slowaccept").Run("""
            start "$W/out" "$BIN/unixsock" slowaccept
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            kill -USR2 $(sed -n 's/^CHILD //p' "$W/out")
            wait_for "$W/out" '^CONNECTED' 15 || fail "the child did not connect"
            ck checkpoint $P -o "$W/img" --log "$W/ck.log" -v -v 2>"$W/err.txt"; echo "RC: $?"
            kill -USR1 $P
            wait_exit $P 20; echo "TARGET: $?"
            """);
        r.AssertPassed();
        Assert.True(r.Stdout.Contains("RC: 0"), $"the checkpoint failed: {r.File("err.txt")}{r.Diagnostics}");
        Assert.Contains("connections wait to be accepted", r.File("ck.log"));
        Assert.Contains("TARGET: 0", r.Stdout);
        r.Cleanup();
    }

    /// <summary>
    /// Connections waiting to be accepted (two on one listener, from the process and from its child, one on
    /// a seqpacket listener whose socket file was removed) come back waiting, in the same order, with the
    /// child's credentials, and carry data once accepted; the removed file stays removed.
    /// </summary>
    [Fact]
    public void UnixPendingConnectionsAcrossRestart()
    {
        env.Program("unixsock");
        var r = new E2eScript(env, "unixsock-pending").Run("""
            start "$W/out" "$BIN/unixsock" pending
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            set -- $(grep '^CHILD' "$W/out"); shift
            checkpoint_kill
            gone 10 "$@" || fail "the killed child still holds its pid"
            ck info "$W/img" > "$W/info.txt" || fail "ckpt info failed"
            restart_detached
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("waiting to be accepted by socket:[", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>A connection whose client sent data before it was accepted: refused naming the listener's fd; the connection is accepted afterwards.</summary>
    [Fact]
    public void UnixPendingConnectionWithDataIsRefused()
    {
        env.Program("unixsock");
        var r = new E2eScript(env, "unixsock-pendingdata").Run("""
            start "$W/out" "$BIN/unixsock" pendingdata
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            ck checkpoint $P -o "$W/img" 2>"$W/err.txt"; echo "RC: $?"
            kill -USR1 $P
            wait_exit $P 20; echo "TARGET: $?"
            """);
        r.AssertPassed();
        Assert.Contains("RC: 69", r.Stdout);
        Assert.Contains("TARGET: 0", r.Stdout);
        var fd = Regex.Match(r.File("out"), @"^SOCKFD (\d+)$", RegexOptions.Multiline).Groups[1].Value;
        var err = r.File("err.txt");
        Assert.True(err.Contains($"fd {fd} ") && err.Contains("waiting to be accepted"), $"the message should name fd {fd} and the waiting connection{r.Diagnostics}");
        r.Cleanup();
    }

    /// <summary>
    /// Messages queued for a receiver that reads their credentials (SO_PASSCRED): datagrams of a live child
    /// with its own uid and gid and of a child that ended, a stream of two writers: each keeps its sender's
    /// pid, uid and gid (a stand-in holds the ended one's pid while its message is queued again).
    /// </summary>
    [Fact]
    public void QueuedMessagesKeepTheirCredentials()
    {
        env.Program("credq");
        var r = new E2eScript(env, "credq").Run("""
            start "$W/out" "$BIN/credq"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            checkpoint_kill_tree CHILD
            restart_detached
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>
    /// A unix listener with a connection waiting to be accepted whose client, outside the tree, already sent
    /// its request: refused (naming --skip-in-flight) after the tree had its moments to accept, the tree
    /// going on; with --skip-in-flight --kill, saved without it: the restarted listener has nothing
    /// waiting and serves a new client, and the outside client finds its connection closed.
    /// </summary>
    [Fact]
    public void ListenerWithAWaitingRequestFromOutsideIsSkippedInFlight()
    {
        env.Program("ulisten");
        var r = new E2eScript(env, "ulisten").Run("""
            start "$W/out" "$BIN/ulisten" "$W"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            python3 -c '
            import socket, sys, time
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sys.argv[1]); s.sendall(b"GET")
            open(sys.argv[2], "w").write("CONNECTED\n")
            try:
                s.settimeout(30); got = s.recv(10)
                open(sys.argv[2], "a").write("CLOSED %r\n" % got)
            except Exception as e:
                open(sys.argv[2], "a").write("ERROR %s\n" % e)
            ' "$W/sock" "$W/client.out" </dev/null >/dev/null 2>&1 &
            C=$!
            wait_for "$W/client.out" '^CONNECTED' 15 || fail "the outside client did not connect"
            ck checkpoint $P -o "$W/refused" --log "$W/ck0.log" 2>"$W/err.txt"; echo "REFUSED: $?"
            grep -q -- '--skip-in-flight' "$W/err.txt" || fail "the refusal does not name --skip-in-flight: $(cat "$W/err.txt")"
            alive $P || fail "the program did not survive the refused checkpoint"
            ck checkpoint $P -o "$W/img" --kill --skip-in-flight --log "$W/ck.log" -v -v 2>"$W/skip.txt" || fail "checkpoint --skip-in-flight failed"
            wait $P 2>/dev/null
            n=100; while alive $P && [ $n -gt 0 ]; do n=$((n - 1)); sleep 0.05; done
            wait_for "$W/client.out" '^(CLOSED|ERROR)' 15 || fail "the outside client did not see its connection closed: $(cat "$W/client.out")"
            restart_detached
            finish_detached
            """);
        Assert.Contains("REFUSED: 69", r.Stdout);
        Assert.Contains("1 connection(s) waiting to be accepted were left out", r.File("skip.txt"));
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }
}
