using System.Text.RegularExpressions;
using Xunit;

namespace Ckpt.Tests.EndToEnd;

/// <summary>TCP and UDP sockets without connection state (Kinds/InetSocket.cs).</summary>
[Collection(EndToEndCollection.Name)]
public sealed class InetSocketTests(E2eEnvironment env)
{
    /// <summary>
    /// Listeners (IPv4 and IPv6), an unbound and a bound TCP socket, a bound and a connected UDP socket
    /// come back on the same ports with the same options; the program checks that the listeners accept,
    /// the bound socket can listen and a datagram gets through. `ckpt info` shows the addresses.
    /// </summary>
    /// <summary>
    /// An ICMP echo socket (pingsock.c; what ping uses without privileges) keeps its echo identifier and
    /// peer, and gets replies after the restart (refused before). The machine's ping_group_range is opened
    /// to every group for the test and put back.
    /// </summary>
    [Fact]
    public void IcmpEchoSocket()
    {
        env.Program("pingsock");
        var r = new E2eScript(env, "pingsock").Run("""
            old=$(cat /proc/sys/net/ipv4/ping_group_range)
            trap 'echo "$old" > /proc/sys/net/ipv4/ping_group_range' EXIT
            echo "0 2147483647" > /proc/sys/net/ipv4/ping_group_range
            start "$W/out" "$BIN/pingsock"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            checkpoint_kill
            restart_detached
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    [Fact]
    public void ListenersAndDatagramSockets()
    {
        env.Program("inetsock");
        var r = new E2eScript(env, "inetsock").Run(E2eScript.RoundTrip("\"$BIN/inetsock\"", before: "", afterRestart: E2eScript.SaveInfo));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        var ports = Regex.Match(r.File("out"), @"^PORTS (\d+) (\d+) (\d+) (\d+) (\d+)$", RegexOptions.Multiline);
        Assert.True(ports.Success, $"no PORTS line{r.Diagnostics}");
        string info = r.File("info.txt");
        Assert.Contains($"127.0.0.1:{ports.Groups[1].Value}", info);
        Assert.Contains($"[::1]:{ports.Groups[2].Value}", info);
        Assert.Contains($"127.0.0.1:{ports.Groups[5].Value} -> 127.0.0.1:{ports.Groups[4].Value}", info);
        r.Cleanup();
    }

    /// <summary>
    /// An established connection over loopback whose two ends the process holds, with data in flight
    /// both ways (unread by the server end; filling the client's receive queue and the server's send
    /// queue): rebuilt in repair mode, every byte arrives once and in order, and the connection goes on.
    /// </summary>
    [Fact]
    public void EstablishedConnectionWithDataInFlight()
    {
        env.Program("tcpconn");
        var r = new E2eScript(env, "tcpconn").Run(E2eScript.RoundTrip("\"$BIN/tcpconn\"", afterRestart: E2eScript.SaveInfo));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        Assert.Matches(@"state: established", r.File("info.txt"));
        Assert.Matches(@"send_queue_bytes: [1-9]", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>
    /// The same connection in a network namespace of its own with lo alone (<c>unshare --net</c>, lo brought
    /// up): the restarted process is in a new network namespace (not the script's), lo up, and the
    /// connection goes on there. A namespace with a device ckpt does not make again (a vxlan) is refused
    /// naming it.
    /// </summary>
    [Fact]
    public void ConnectionInANetworkNamespaceOfItsOwn()
    {
        env.Program("tcpconn");
        env.Program("signals");
        var r = new E2eScript(env, "tcpconn-netns").Run(E2eScript.RoundTrip(
            "unshare --net sh -c 'ip link set lo up && exec \"$1\"' _ \"$BIN/tcpconn\"",
            before: """
                start "$W/out-br" unshare --net sh -c 'ip link add vx0 type vxlan id 42 dstport 4789 && exec "$1"' _ "$BIN/signals"
                wait_for "$W/out-br" '^READY' 15 || fail "the program with a vxlan device did not print READY"
                ck checkpoint $P -o "$W/img-br" --log "$W/ck-br.log" 2>"$W/err-br.txt"; echo "RC-BR: $?"
                alive $P || fail "the refused program died"
                kill -KILL $P
                """,
            afterRestart: E2eScript.SaveInfo + """
                [ "$(readlink /proc/$P/ns/net)" != "$(readlink /proc/self/ns/net)" ] || fail "the restarted process is in the script's network namespace"
                nsenter -t $P -n cat /proc/self/net/dev | tail -n +3 | cut -d: -f1 | xargs > "$W/devices.txt"
                nsenter -t $P -n ip -o link show lo > "$W/lo.txt"
                """));
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("RC-BR: 69", r.Stdout);
        Assert.Contains("device vx0 of kind vxlan", r.File("err-br.txt"));
        Assert.Equal("lo", r.File("devices.txt").Trim());
        Assert.Contains("UP", r.File("lo.txt"));
        Assert.Matches(@"state: established", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>
    /// A container's network: a network namespace with a veth to the host (eth0, MTU 1400, IPv4 and IPv6
    /// addresses, a default route through the host end, which has an address of its own on the host), an
    /// extra address on lo, a veth pair of its own, a route in another table with a rule that picks it and
    /// a permanent neighbour entry, a bridge with STP on whose port is one end of that pair, a macvlan on the host end (mv0, as a container engine's macvlan network
    /// has on the host's device), sysctls of its own (a container engine's ip_unprivileged_port_start,
    /// a device's rp_filter and disable_ipv6). The program holds a connection to an echo server on the host through
    /// eth0 and checks after the restart that its devices kept index, MAC and MTU, that the connection and
    /// a new one carry lines, and that its addresses can be bound. The namespace's addresses, routes,
    /// rules, neighbours and sysctls (all of net.*) are the same after the restart (ip's view, device indexes of the host aside),
    /// and so is the host end (name, address, up).
    /// </summary>
    [Fact]
    public void ContainerWithAVethToTheHost()
    {
        env.Program("netdev");
        var r = new E2eScript(env, "netdev").Run(E2eScript.RoundTrip(
            "unshare --net sh -c 'while [ ! -e \"$1/go\" ]; do sleep 0.02; done; exec \"$2\" 10.231.0.1 7001' _ \"$W\" \"$BIN/netdev\"",
            before: """
                HE=ckvh$$ ECHO=
                ip link del $HE 2>/dev/null
                trap 'kill $ECHO 2>/dev/null; ip link del $HE 2>/dev/null' EXIT
                """,
            afterStart: """
                n=100; until [ "$(readlink /proc/$P/ns/net)" != "$(readlink /proc/self/ns/net)" ]; do n=$((n - 1)); [ $n -gt 0 ] || fail "no network namespace"; sleep 0.02; done
                ip link add $HE type veth peer name eth0 netns $P || fail "cannot make a veth"
                ip addr add 10.231.0.1/24 dev $HE && ip link set $HE up || fail "cannot set the host end up"
                ip link add ckmv$$ link $HE type macvlan mode bridge && ip link set ckmv$$ netns $P || fail "cannot make a macvlan"
                nsenter -t $P -n sh -ec '
                  ip link set lo up; ip addr add 10.231.9.1/32 dev lo
                  ip link set ckmv'$$' name mv0; ip addr add 10.233.0.2/24 dev mv0; ip link set mv0 up
                  ip link set eth0 mtu 1400; ip addr add 10.231.0.2/24 dev eth0; ip addr add fd31::2/64 dev eth0 nodad; ip link set eth0 up
                  ip route add default via 10.231.0.1
                  ip route add 10.232.0.0/16 via 10.231.0.1 table 100; ip rule add from 10.231.9.1 lookup 100
                  ip neigh add 10.231.0.77 lladdr 02:00:00:00:00:77 dev eth0 nud permanent
                  ip link add in0 type veth peer name in1; ip link set in0 up; ip link set in1 up
                  ip link add br0 type bridge stp_state 1 ageing_time 12000; ip link set in1 master br0; ip addr add 10.234.0.1/24 dev br0; ip link set br0 up
                  sysctl -qw net.ipv4.ip_unprivileged_port_start=0 net.core.somaxconn=1024 net.ipv4.conf.eth0.rp_filter=2 net.ipv6.conf.in0.disable_ipv6=1
                ' || fail "cannot configure the namespace"
                python3 -c '
                import socket, threading
                s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("10.231.0.1", 7001)); s.listen(8)
                def serve(c):
                    f = c.makefile("rwb")
                    for line in f: f.write(line); f.flush()
                while True: threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
                ' & ECHO=$!
                sleep 0.3
                touch "$W/go"
                """,
            afterLayout: """
                netstate() {
                  # (the kernel's own routes are listed in the order the devices came up: sorted)
                  nsenter -t $P -n sh -c 'ip -d link; ip addr; { ip route show table all; ip -6 route show table all; } | sort; ip rule; ip -6 rule; ip neigh show nud permanent' |
                    sed -E 's/@if[0-9]+//; s/ (nodad|tentative|link-netnsid [0-9]+)//g; s/(promiscuity|allmulti) [0-9]+//g; s/ [a-z_]+_timer +[0-9.]+//g' |
                    # (a bridge with STP has no carrier until a port forwards, after its forward delay: which it shows depends on the moment)
                    sed -E '/ br0: /{s/NO-CARRIER,//; s/ state [A-Z]+//}; s/ linkdown//' > "$W/net-$1.txt"
                  ip -o addr show $HE | sed -E 's/^[0-9]+: //; s/@if[0-9]+//' >> "$W/net-$1.txt"
                  nsenter -t $P -n sysctl -a 2>/dev/null | grep '^net\.' | grep -v 'nf_conntrack_count\|stable_secret' >> "$W/net-$1.txt"
                  ip -o link show $HE | grep -o 'state [A-Z]*' >> "$W/net-$1.txt"
                }
                netstate before
                """,
            afterRestart: E2eScript.SaveInfo + """
                # (a stacked device's carrier follows its lower device's through the kernel's link watch, up to a second later)
                n=60; until nsenter -t $P -n ip -o link show mv0 | grep -q 'state UP'; do n=$((n - 1)); [ $n -gt 0 ] || break; sleep 0.05; done
                netstate after
                """));
        r.AssertPassed().AssertRestoredExit0();
        Assert.True(r.File("net-before.txt") == r.File("net-after.txt"), $"the namespace's network differs after the restart{r.Diagnostics}");
        Assert.Contains("10.231.0.1/24", r.File("net-after.txt"));
        Assert.Contains("peer=ckvh", r.File("info.txt"));
        Assert.Contains("lower=ckvh", r.File("info.txt"));
        Assert.Contains("master=br0", r.File("info.txt"));
        Assert.Contains("stp_state 1", r.File("net-after.txt"));
        r.Cleanup();
    }

    /// <summary>
    /// tun/tap files in a network namespace of the program's own (tests/programs/tun.c): a tun device with
    /// an address, up, and a persistent tap device with a vnet header size. After the restart both files are
    /// attached to their devices with the same flags (the tun device not persistent again), and packets go
    /// both ways through the tun file. The same program in the script's network namespace is refused: its
    /// tun device is not persistent, so it would go away with its host configuration.
    /// </summary>
    [Fact]
    public void TunAndTapDevicesOfTheNamespace()
    {
        env.Program("tun");
        var r = new E2eScript(env, "tun").Run(E2eScript.RoundTrip(
            "unshare --net sh -c 'ip link set lo up && exec \"$1\"' _ \"$BIN/tun\"",
            before: """
                trap 'ip link del tap7 2>/dev/null' EXIT
                start "$W/out-host" "$BIN/tun"
                wait_for "$W/out-host" '^READY' 15 || fail "the program in the script's namespace did not print READY"
                ck checkpoint $P -o "$W/img-host" --log "$W/ck-host.log" 2>"$W/err-host.txt"; echo "RC-HOST: $?"
                alive $P || fail "the refused program died"
                kill -KILL $P; wait $P 2>/dev/null
                ip link del tap7 2>/dev/null
                """,
            afterRestart: E2eScript.SaveInfo));
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("RC-HOST: 69", r.Stdout);
        Assert.Contains("tun device tun7 of ckpt's network namespace", r.File("err-host.txt"));
        Assert.Contains("kind=tap", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>
    /// A network namespace with a firewall of its own: an nf_tables table with a base chain per hook, a
    /// regular chain jumped to, a named interval set, a verdict map, a named counter with packets counted,
    /// anonymous sets and a limit, and iptables-nft's tables (a DNAT rule as Docker's embedded DNS has, a
    /// conntrack match and a comment: xtables extensions). After the restart the namespace's ruleset is
    /// the same (nft's and iptables' listings), ckpt's own tables of the checkpoint left out, and the
    /// connection of the program over lo goes on.
    /// </summary>
    [Fact]
    public void FirewallOfTheNetworkNamespace()
    {
        Assert.SkipWhen(!E2eEnvironment.HasCommand("nft") || !E2eEnvironment.HasCommand("iptables"), "nft or iptables is not installed");
        env.Program("tcpconn");
        var r = new E2eScript(env, "netfw").Run(E2eScript.RoundTrip(
            "unshare --net sh -ec 'ip link set lo up; nft -f \"$1/fw.nft\"; iptables -t nat -A OUTPUT -d 127.0.0.11 -p udp --dport 53 -j DNAT --to-destination 127.0.0.11:45000; " +
            "iptables -A INPUT -m conntrack --ctstate INVALID -j DROP; iptables -A INPUT -p tcp --dport 5555 -m comment --comment hello -j REJECT; exec \"$2\"' _ \"$W\" \"$BIN/tcpconn\"",
            before: """
                cat > "$W/fw.nft" <<'EOF'
                table inet filter {
                  set blocked { type ipv4_addr; flags interval; elements = { 10.66.0.0/16, 10.67.1.1 }; }
                  map portmap { type inet_service : verdict; elements = { 9999 : drop }; }
                  counter hits { packets 5 bytes 500; }
                  chain input {
                    type filter hook input priority 0; policy accept;
                    ip saddr @blocked drop
                    tcp dport 8081 counter name "hits" drop
                    tcp dport vmap @portmap
                    tcp dport { 7777, 7778 } counter reject
                    ct state established,related accept
                  }
                  chain output {
                    type filter hook output priority 0; policy accept;
                    meta skuid 12345 jump limited
                  }
                  chain limited {
                    limit rate 10/second accept
                    drop
                  }
                }
                EOF
                """,
            afterLayout: """
                nsenter -t $P -n nft list ruleset > "$W/nft-before.txt" 2>&1
                nsenter -t $P -n iptables-save -t nat | grep -v '^#' > "$W/ipt-before.txt" 2>&1
                """,
            afterRestart: """
                nsenter -t $P -n nft list ruleset > "$W/nft-after.txt" 2>&1
                nsenter -t $P -n iptables-save -t nat | grep -v '^#' > "$W/ipt-after.txt" 2>&1
                """));
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("counter hits", r.File("nft-before.txt"));
        Assert.True(r.File("nft-before.txt") == r.File("nft-after.txt"), $"the nf_tables ruleset differs after the restart{r.Diagnostics}");
        Assert.Contains("DNAT", r.File("ipt-after.txt"));
        Assert.True(r.File("ipt-before.txt") == r.File("ipt-after.txt"), $"iptables' nat table differs after the restart{r.Diagnostics}");
        Assert.DoesNotContain("ckpt_", r.File("nft-after.txt"));
        r.Cleanup();
    }

    /// <summary>
    /// A loopback connection whose two ends the process holds, with 1 MiB buffers full both ways: both are
    /// rebuilt in repair mode, where nothing is acknowledged, so filling the send queues must not wait for
    /// room (the restart once hung there for good); afterwards each end gets all the other sent.
    /// </summary>
    [Fact]
    public void ConnectionWithBothQueuesFull()
    {
        env.Program("tcpfull");
        var r = new E2eScript(env, "tcpfull").Run(E2eScript.RoundTrip("\"$BIN/tcpfull\""));
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>
    /// A loopback connection whose two ends the process holds, with traffic both ways in small writes and
    /// 32 MiB buffers (zdtm socket-tcpbuf-local): the kernel goes on moving data between the ends after the
    /// tree is frozen. Checkpointed and restarted twice, every byte arrives once and in order afterwards (an
    /// end read after its peer had sent it more than the peer's saved state said: the connection stalled for
    /// good; a segment that came while a queue was read: bytes lost).
    /// </summary>
    [Fact]
    public void ConnectionWithTrafficBothWaysIsSavedAtOneMoment()
    {
        env.Program("tcpflow");
        var r = new E2eScript(env, "tcpflow").Run("""
            start "$W/out" "$BIN/tcpflow"
            wait_for "$W/out" '^READY' 30 || fail "the program did not print READY"
            sleep 0.2
            checkpoint_kill
            restart_detached
            sleep 0.3
            checkpoint_kill
            restart_detached
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0().Cleanup();
    }

    /// <summary>
    /// A server migrated with --kill whose client, outside the tree, keeps sending while the server is down:
    /// the connection is held by an nf_tables table from the end of the checkpoint until the restart, so
    /// the client's packets wait (retransmitted) instead of getting a reset, and every exchange completes.
    /// </summary>
    [Fact]
    public void ClientSendingWhileServerIsDownKeepsItsConnection()
    {
        env.Program("tcppeer");
        var r = new E2eScript(env, "tcppeer").Run("""
            start "$W/out" "$BIN/tcppeer" server
            wait_for "$W/out" '^READY' 15 || fail "the server did not print READY"
            port=$(sed -n 's/^PORT //p' "$W/out")
            "$BIN/tcppeer" client "$port" 4 > "$W/client.out" 2>&1 &
            C=$!
            sleep 0.5
            # a message of the client that lands between the read of the queue and its check makes the
            # checkpoint refuse (the tree goes on): try again
            for i in 1 2 3 4 5; do
              ck checkpoint $P -o "$W/img" --kill --log "$W/ck.log" -v -v 2>"$W/ck.err" && break
              grep -q 'more bytes while it was being checkpointed' "$W/ck.err" || fail "checkpoint failed: $(cat "$W/ck.err")"
              sleep 0.05
            done
            wait $P 2>/dev/null
            for i in $(seq 100); do alive $P || break; sleep 0.05; done
            alive $P && fail "pid $P is still running 5 s after checkpoint --kill"
            sleep 0.7   # the client sends into a host where no socket answers for the connection
            restart_detached
            wait $C; echo "CLIENT: $?"
            ck info "$W/img" > "$W/info.txt" || fail "ckpt info failed"
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        Assert.True(r.Stdout.Contains("CLIENT: 0"), $"the client outside the tree lost its connection: {r.File("client.out")}{r.Diagnostics}");
        Assert.Contains("nftables_table: inet ckpt_", r.File("info.txt"));
        Assert.DoesNotContain("could not be held", r.File("ck.log"));
        r.Cleanup();
    }

    /// <summary>
    /// A server migrated with --kill while its client outside the tree is not reading: most of its send
    /// queue was never sent, and its FIN waits behind it. After the restart the client reads every byte,
    /// in order, then the end (the unsent part goes out as data written anew, after a window probe; in
    /// repair mode it counted as sent and went out one segment per retransmission timeout, which kept
    /// growing: the client waited for good).
    /// </summary>
    [Fact]
    public void UnsentDataReachesAClientThatStoppedReading()
    {
        env.Program("tcppeer");
        var r = new E2eScript(env, "tcppeer-unsent").Run("""
            start "$W/out" "$BIN/tcppeer" pusher
            wait_for "$W/out" '^PORT' 15 || fail "the server did not print PORT"
            port=$(sed -n 's/^PORT //p' "$W/out")
            "$BIN/tcppeer" sink "$port" 4 > "$W/client.out" 2>&1 &
            C=$!
            wait_for "$W/out" '^READY' 15 || fail "the server did not print READY"
            ck checkpoint $P -o "$W/img" --kill --log "$W/ck.log" -v -v 2>"$W/ck.err" || fail "checkpoint failed: $(cat "$W/ck.err")"
            wait $P 2>/dev/null
            restart_detached
            wait $C; echo "CLIENT: $?"
            echo "PUSHED: $(sed -n 's/^PUSHED //p' "$W/out")"
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        var pushed = Regex.Match(r.Stdout, @"PUSHED: (\d+)").Groups[1].Value;
        Assert.True(r.Stdout.Contains("CLIENT: 0"), $"the client did not get the data: {r.File("client.out")}{r.Diagnostics}");
        Assert.Contains($"SINK OK {pushed}", r.File("client.out"));
        Assert.Matches(@"\(\d*[1-9]\d* not sent yet\)", r.File("ck.log"));
        r.Cleanup();
    }

    /// <summary>
    /// A server whose client is outside the tree has bytes it corked (TCP_CORK: not sent) when it is
    /// checkpointed with --kill, twice: the kernel sends corked bytes by itself 200 ms after they were
    /// written, and the checkpoint lasts longer than that (a child of the server writes to 1 GiB). The
    /// client must not get, before the restart, bytes the image holds as not sent yet: they went out
    /// after the connection was read, the restarted server sent them again as new data while the client
    /// acknowledged past them, and dropped each of the client's segments as acknowledging what it had not
    /// sent (a connection with more of them in flight hung for good: zdtm socket-tcpbuf). Every byte
    /// arrives once and in order after the restarts.
    /// </summary>
    [Fact]
    public void NothingIsSentFromAConnectionAfterItWasRead()
    {
        env.Program("tcppeer");
        var r = new E2eScript(env, "tcppeer-corked").Run("""
            start "$W/out" "$BIN/tcppeer" corked 2
            wait_for "$W/out" '^PORT' 15 || fail "the server did not print PORT"
            port=$(sed -n 's/^PORT //p' "$W/out")
            "$BIN/tcppeer" collector "$port" 2 > "$W/client.out" 2>&1 &
            C=$!
            for round in 1 2; do
              wait_for "$W/out" "^CORKED $round" 15 || fail "the server did not print CORKED $round"
              checkpoint_kill
              cp "$W/ck.log" "$W/ck$round.log"
              kill -USR1 $C   # the client tells what it got while the server was down
              wait_for "$W/client.out" "^RECEIVED $round " 15 || fail "the client did not print RECEIVED $round"
              restart_detached
              [ $round = 1 ] && kill -USR1 $P   # uncorked; the next round corks more
            done
            finish_detached
            wait $C; echo "CLIENT: $?"
            """);
        r.AssertPassed().AssertRestoredExit0();
        const int chunk = 1000;   // CORK_CHUNK of tcppeer.c
        for (int round = 1; round <= 2; round++)
        {
            var unsent = Regex.Match(r.File($"ck{round}.log"), @"\((\d+) not sent yet\)");
            Assert.True(unsent.Success, $"no connection in checkpoint {round}{r.Diagnostics}");
            int notSent = int.Parse(unsent.Groups[1].Value);
            // (the 200 ms had passed before the connection was read: nothing for this round to check)
            Assert.True(notSent > 0, $"checkpoint {round} read the connection after its corked bytes went out{r.Diagnostics}");
            int received = int.Parse(Regex.Match(r.File("client.out"), $@"^RECEIVED {round} (\d+)$", RegexOptions.Multiline).Groups[1].Value);
            Assert.True(received <= round * chunk - notSent,
                $"checkpoint {round}: the client outside the tree got {received} of the {round * chunk} bytes written while the image holds {notSent} as not sent yet{r.Diagnostics}");
        }
        Assert.True(r.Stdout.Contains("CLIENT: 0"), $"the client did not get every byte: {r.File("client.out")}{r.Diagnostics}");
        Assert.Contains($"COLLECTED OK {2 * chunk}", r.File("client.out"));
        r.Cleanup();
    }

    /// <summary>
    /// A checkpoint that leaves the tree running (saved, or refused because the peer sent meanwhile),
    /// taken while the server is blocked reading a connection its client keeps using: the server goes on
    /// reading (the connection left repair mode before the tree ran again; it used to get EPERM).
    /// </summary>
    [Fact]
    public void ServerReadingGoesOnAfterACheckpointThatLeavesItRunning()
    {
        env.Program("tcppeer");
        var r = new E2eScript(env, "tcppeer-running").Run("""
            start "$W/out" "$BIN/tcppeer" server
            wait_for "$W/out" '^READY' 15 || fail "the server did not print READY"
            port=$(sed -n 's/^PORT //p' "$W/out")
            "$BIN/tcppeer" client "$port" 2 > "$W/client.out" 2>&1 &
            C=$!
            sleep 0.5
            for i in 1 2 3; do ck checkpoint $P -o "$W/img" --log "$W/ck$i.log" 2>>"$W/err.txt"; echo "RC: $?"; sleep 0.1; done
            wait $C; echo "CLIENT: $?"
            kill -USR1 $P
            wait_exit $P 20; echo "TARGET: $?"
            """);
        r.AssertPassed();
        Assert.True(r.Stdout.Contains("CLIENT: 0"), $"the client lost its server: {r.File("client.out")}{r.Diagnostics}");
        Assert.True(r.Stdout.Contains("TARGET: 0"), $"the server failed after the checkpoint{r.Diagnostics}");
        r.Cleanup();
    }

    /// <summary>
    /// A client that connects while its server is down (checkpointed with --kill) is held, not refused:
    /// its connection request is dropped until the restart and sent again, and it then gets its answers.
    /// </summary>
    [Fact]
    public void ClientConnectingWhileServerIsDownIsHeldUntilTheRestart()
    {
        env.Program("tcppeer");
        var r = new E2eScript(env, "tcppeer-late").Run("""
            start "$W/out" "$BIN/tcppeer" server
            wait_for "$W/out" '^READY' 15 || fail "the server did not print READY"
            port=$(sed -n 's/^PORT //p' "$W/out")
            checkpoint_kill
            "$BIN/tcppeer" client "$port" 1 > "$W/client.out" 2>&1 &
            C=$!
            sleep 0.4   # the client's connection request meets no listener
            restart_detached
            wait $C; echo "CLIENT: $?"
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        Assert.True(r.Stdout.Contains("CLIENT: 0"), $"the client was refused while the server was down: {r.File("client.out")}{r.Diagnostics}");
        Assert.Contains("new connection requests to 1 listener(s)", r.File("ck.log"));
        r.Cleanup();
    }

    /// <summary>
    /// A server slower to accept than its clients connect always has connections waiting in its accept
    /// queue, which cannot be saved: the checkpoint holds new connection requests back (nf_tables), lets
    /// the server accept what waits, freezes it again, and succeeds; the clients only see a delay.
    /// </summary>
    [Fact]
    public void ListenerUnderConnectionLoadIsQuiesced()
    {
        env.Program("tcppeer");
        var r = new E2eScript(env, "tcppeer-burst").Run("""
            start "$W/out" "$BIN/tcppeer" slowserver
            wait_for "$W/out" '^READY' 15 || fail "the server did not print READY"
            port=$(sed -n 's/^PORT //p' "$W/out")
            "$BIN/tcppeer" burst "$port" 3 > "$W/client.out" 2>&1 &
            C=$!
            sleep 0.5
            ck checkpoint $P -o "$W/img" --log "$W/ck.log" -v 2>"$W/err.txt"; echo "RC: $?"
            alive $P || fail "the server died"
            wait $C; echo "CLIENT: $?"
            kill -USR1 $P
            wait_exit $P 20; echo "TARGET: $?"
            """);
        r.AssertPassed();
        Assert.True(r.Stdout.Contains("RC: 0"), $"the checkpoint of the busy server failed: {r.File("err.txt")}{r.Diagnostics}");
        Assert.Contains("new connection requests held by nf_tables", r.File("ck.log"));
        Assert.True(r.Stdout.Contains("CLIENT: 0"), $"a client failed: {r.File("client.out")}{r.Diagnostics}");
        Assert.Contains("TARGET: 0", r.Stdout);
        r.Cleanup();
    }

    /// <summary>
    /// A checkpoint that leaves the process running takes its connections out of repair mode again: the
    /// same process goes on with the data in flight (nothing lost, nothing duplicated).
    /// </summary>
    [Fact]
    public void ConnectionGoesOnAfterCheckpointWithoutKill()
    {
        env.Program("tcpconn");
        var r = new E2eScript(env, "tcpconn-live").Run("""
            start "$W/out" "$BIN/tcpconn"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            ck checkpoint $P -o "$W/img" --log "$W/ck.log" -v -v || fail "checkpoint failed"
            kill -USR1 $P
            wait_exit $P 20; echo "TARGET: $?"
            """);
        r.AssertPassed();
        Assert.Matches(@"(?m)^TARGET: 0$", r.Stdout);
    }

    /// <summary>A listener with a connection it has not accepted yet (which cannot be put back in its queue) is refused naming the fd; the program goes on unharmed.</summary>
    [Fact]
    public void ListenerWithConnectionWaitingIsRefused()
    {
        env.Program("inetsock");
        var r = new E2eScript(env, "inetsock-pending").Run(E2eScript.Refused("\"$BIN/inetsock\" pending"));
        var fd = Regex.Match(r.File("out"), @"^PENDING (\d+)$", RegexOptions.Multiline).Groups[1].Value;
        r.AssertRefused($"fd {fd} ", "waiting to be accepted");
        r.Cleanup();
    }

    /// <summary>
    /// The same listener checkpointed with --skip-in-flight: the connection it did not accept is left out
    /// (said on stderr, not refused), the restarted listener has nothing waiting and accepts new ones, and
    /// the client of the connection left out is reset when it sends.
    /// </summary>
    [Fact]
    public void ListenerWithConnectionWaitingIsSavedWithoutItWhenAsked()
    {
        env.Program("inetsock");
        var r = new E2eScript(env, "inetsock-skipped").Run("""
            start "$W/out" "$BIN/inetsock" skipped
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            ck checkpoint $P --kill --skip-in-flight -o "$W/img" --log "$W/ck.log" -v 2>"$W/err.txt" || fail "checkpoint failed: $(cat "$W/err.txt")"
            wait $P 2>/dev/null
            restart_detached
            finish_detached
            """);
        r.AssertPassed();
        Assert.Contains("1 connection(s) waiting to be accepted were left out", r.File("err.txt"));
        r.AssertRestoredExit0();
        r.Cleanup();
    }

    /// <summary>
    /// Half-closed connections, both ends held: CLOSE_WAIT with unread data (its peer gone) reads the data
    /// then end of file; FIN_WAIT2 against CLOSE_WAIT still carries data the other way and ends when the
    /// other end closes.
    /// </summary>
    [Fact]
    public void HalfClosedConnections()
    {
        env.Program("tcphalf");
        var r = new E2eScript(env, "tcphalf").Run(E2eScript.RoundTrip("\"$BIN/tcphalf\"", afterRestart: E2eScript.SaveInfo));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        Assert.Contains("half_closed: fin received", r.File("info.txt"));
        Assert.Contains("half_closed: fin sent", r.File("info.txt"));
        Assert.Contains("state: closed", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>
    /// The same connections checkpointed and restarted twice: a connection rebuilt from a FIN received has
    /// its reads shut without a FIN (ESTABLISHED), which the second checkpoint saves as such ("reads
    /// shut"); before, the second restart lost it, and reading the CLOSE_WAIT end waited for ever.
    /// </summary>
    [Fact]
    public void HalfClosedConnectionsTwice()
    {
        env.Program("tcphalf");
        var r = new E2eScript(env, "tcphalf-twice").Run("""
            start "$W/out" "$BIN/tcphalf"
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            checkpoint_kill
            restart_detached
            checkpoint_kill
            ck info "$W/img" > "$W/info.txt" || fail "ckpt info failed"
            restart_detached
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("reads shut", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>Raw sockets (ICMP over IPv4 and IPv6, with their filters; one connected, with a TTL): same options after the restart, and an echo request sent then gets its reply through the filter.</summary>
    [Fact]
    public void RawSockets()
    {
        env.Program("rawsock");
        var r = new E2eScript(env, "rawsock").Run(E2eScript.RoundTrip("\"$BIN/rawsock\"", afterRestart: E2eScript.SaveInfo));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        Assert.Contains("raw6 socket", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>A ping's reply queued in its raw socket when the tree is frozen (it cannot be saved), read a moment later: the checkpoint lets the tree run until it is read, then goes on.</summary>
    [Fact]
    public void RawPacketsReadSoonAreWaitedFor()
    {
        env.Program("rawsock");
        new E2eScript(env, "rawslow").Run(E2eScript.TakenSoon("\"$BIN/rawsock\" slow", trigger: "kill -USR2 $P; sleep 0.05"))
            .AssertCheckpointWaited("raw packets to be read").Cleanup();
    }

    /// <summary>Packet sockets (AF_PACKET): bound to lo for IPv4 with a classic filter and PACKET_AUXDATA, and an unbound raw one with PACKET_VERSION; same after the restart, and the first still captures what its filter keeps.</summary>
    [Fact]
    public void PacketSockets()
    {
        env.Program("packetsock");
        var r = new E2eScript(env, "packetsock").Run(E2eScript.RoundTrip("\"$BIN/packetsock\"", afterRestart: E2eScript.SaveInfo));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        Assert.Contains("kind: packet socket", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>UDP sockets in multicast groups (IPv4 any-source and source-specific, IPv6) are still in them after the restart, and a datagram sent to the group arrives.</summary>
    [Fact]
    public void MulticastMemberships()
    {
        env.Program("mcast");
        var r = new E2eScript(env, "mcast").Run(E2eScript.RoundTrip("\"$BIN/mcast\"", afterRestart: E2eScript.SaveInfo));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout();
        Assert.Contains("239.1.2.3 on lo", r.File("info.txt"));
        r.Cleanup();
    }

    /// <summary>Netlink sockets: a route monitor bound with groups and an option, an unbound requester; same port ids, groups and options after the restart, and a dump request is answered.</summary>
    [Fact]
    public void NetlinkSockets()
    {
        env.Program("netlinks");
        var r = new E2eScript(env, "netlinks").Run(E2eScript.RoundTrip("\"$BIN/netlinks\""));
        r.AssertPassed().AssertRestoredExit0().AssertSameLayout().Cleanup();
    }

    /// <summary>
    /// A netlink answer read 300 ms after it came: the checkpoint finds it queued, lets the tree read it
    /// and freezes it again, instead of refusing.
    /// </summary>
    [Fact]
    public void NetlinkMessagesReadSoonAreWaitedFor()
    {
        env.Program("netlinks");
        new E2eScript(env, "netlinks-slow").Run(E2eScript.TakenSoon("\"$BIN/netlinks\" slowread", trigger: "sleep 0.02"))
            .AssertCheckpointWaited("netlink messages").Cleanup();
    }

    /// <summary>
    /// A connection being opened at the checkpoint (SYN_SENT: its requests dropped by an nf_tables rule for
    /// 1.5 s, a client's non-blocking connect waiting for the answer), checkpointed with --kill and
    /// restarted: it is opened again from the same port once the rule is gone, and the program's poll sees
    /// it established and exchanges a line through it with the server outside the tree. The checkpoint
    /// refused it before (after letting the tree go ~3 s for it).
    /// </summary>
    [Fact]
    public void ConnectionBeingOpenedIsOpenedAgain()
    {
        env.Program("tcppeer");
        int port;
        using (var probe = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp))
        {
            probe.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
            port = ((System.Net.IPEndPoint)probe.LocalEndPoint!).Port;
        }
        var sa = new byte[16];
        sa[0] = 2; sa[2] = (byte)(port >> 8); sa[3] = (byte)port; sa[4] = 127; sa[7] = 1;
        string table = $"ckpt_test_syn_{Environment.ProcessId}";
        var script = E2eScript.RoundTrip($"\"$BIN/tcppeer\" connecting {port}",
            before: $"\"$BIN/tcppeer\" server {port} > \"$W/server.out\" 2>&1 & S=$!; trap 'kill -USR1 $S 2>/dev/null' EXIT; wait_for \"$W/server.out\" '^READY' 15 || fail \"no server\"",
            afterRestart: E2eScript.SaveInfo + "\nwait_for \"$W/out\" '^SEEN' 15 || fail \"the connection was not established after the restart\"");
        Ckpt.Native.NetfilterCalls.AddDropTable(table, [], [sa], DateTime.UtcNow + TimeSpan.FromMilliseconds(1500));
        E2eResult r;
        try { r = new E2eScript(env, "tcp-opening").Run(script); }
        finally { Ckpt.Native.NetfilterCalls.DeleteTable(table); }
        r.AssertPassed().AssertRestoredExit0();
        Assert.Contains("state: opening", r.File("info.txt"));
        Assert.Contains("SEEN", r.File("out"));
        r.Cleanup();
    }

    /// <summary>
    /// A server checkpointed (leaving it running, then with --kill and a restart) while a client outside
    /// the tree keeps opening connections to it: the kernel completes handshakes for a frozen listener, and
    /// a connection that came into the accept queue while the tree was read could not be saved (refused);
    /// new connection requests are held back from the freeze on, so every checkpoint works and every
    /// connection is answered (some a second late, by the client's SYN retransmission).
    /// </summary>
    [Fact]
    public void ServerUnderAStreamOfNewConnections()
    {
        env.Program("tcpserve");
        var r = new E2eScript(env, "tcpserve").Run("""
            start "$W/out" "$BIN/tcpserve" 256
            wait_for "$W/out" '^READY' 30 || fail "the program did not print READY"
            port=$(sed -n 's/^PORT //p' "$W/out")
            python3 -c '
            import socket, sys, time
            ok = bad = 0; end = time.time() + float(sys.argv[2])
            while time.time() < end:
                try:
                    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=15)
                    s.sendall(b"q"); s.settimeout(15)
                    if s.recv(2) == b"ok": ok += 1
                    else: bad += 1
                    s.close()
                except Exception as e:
                    bad += 1; print("ERROR", e, flush=True)
                time.sleep(0.002)
            print("CLIENT ok %d bad %d" % (ok, bad), flush=True)
            ' "$port" 4 > "$W/client.out" 2>&1 </dev/null &
            C=$!
            sleep 0.3
            for i in 1 2 3 4; do ck checkpoint $P -o /dev/null --log "$W/ck$i.log" || fail "checkpoint $i under new connections failed: $(grep -m1 "error:" "$W/ck$i.log")"; sleep 0.2; done
            checkpoint_kill
            restart_detached
            wait $C
            cat "$W/client.out"
            finish_detached
            """);
        r.AssertPassed().AssertRestoredExit0();
        Assert.Matches(@"CLIENT ok [1-9]\d* bad 0", r.Stdout);
        r.Cleanup();
    }
}
