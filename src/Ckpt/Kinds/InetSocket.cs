using System.Buffers.Binary;
using System.Net;
using System.Runtime.InteropServices;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// TCP, UDP and raw sockets (IPv4 and IPv6): a TCP socket not connected (bound or not), listening with no
/// connection waiting to be accepted, connected (established or half-closed) or ended (CLOSE after a
/// connection: shut both ways); a UDP socket bound or not, connected to a peer or not, with the
/// datagrams queued in it; a raw socket (ping, traceroute: SOCK_RAW of any protocol) with its ICMP
/// filter, IP_HDRINCL and IPv6 checksum offset, bound or connected, with no packet queued. Saved on a
/// pidfd_getfd copy: domain, type, protocol,
/// local address (getsockname), the peer (getpeername), the listen backlog (TCP_INFO: tcpi_sacked of a
/// listener is its backlog, tcpi_unacked its accept queue), and every socket option of a fixed list
/// whose value differs from a fresh socket's. A TCP connection is read in repair mode (TCP_REPAIR):
/// sequence numbers, both queues (peeked), MSS, window scales, SACK and timestamp options, the
/// timestamp and the window; it stays in repair mode until the checkpoint ends, so that a
/// <c>--kill</c> closes it without a FIN or RST reaching the peer, and leaves it (without a window
/// probe) otherwise. Restart: injected socket(), the options, bind() when it had an address, then
/// listen() or connect(); a connection is rebuilt by ckpt on a pidfd_getfd copy in repair mode
/// (sequence numbers, bind, connect without a handshake, options, queues, window) and leaves repair
/// mode in Finish, once every socket of the tree exists. Other TCP states, a listener with
/// connections waiting and a raw socket with packets queued are refused naming the fd. Reached
/// from <see cref="UnixSocket"/>, which owns every <c>socket:[INO]</c> fd.
/// </summary>
public sealed unsafe class InetSocket : IStateKind
{
    public static readonly InetSocket Instance = new();
    public string Name => "inet socket";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.InetSocket, RecordKind.NetworkLock];
    public int FinishOrder => 76;

    /// <summary>Closed: a TCP connection that ended (both FINs, a reset, a refused connect): nothing to read or write any more.</summary>
    private enum State : byte { Unconnected = 0, Listening = 1, Connected = 2, Established = 3, Closed = 4, Opening = 5 }

    /// <summary>The TCP sockets holding a port while neither listening nor connected (one sock_diag dump per checkpoint, when needed).</summary>
    private sealed class BoundInactive { public HashSet<uint>? Inodes; }

    private const int IPPROTO_IP = 0, IPPROTO_TCP = 6, IPPROTO_UDP = 17, IPPROTO_IPV6 = 41, IPPROTO_UDPLITE = 136;
    private const int TCP_INFO = 11, TCP_STATE_ESTABLISHED = 1, TCP_STATE_LISTEN = 10, TCP_STATE_CLOSE = 7;
    /// <summary>Connection states rebuilt: established, or half-closed by either side or both.</summary>
    private const int TCP_FIN_WAIT1 = 4, TCP_FIN_WAIT2 = 5, TCP_CLOSE_WAIT = 8, TCP_LAST_ACK = 9, TCP_CLOSING = 11, TCP_SYN_SENT = 2, TCP_SYN_RECV = 3;
    /// <summary>
    /// The half-closes of a connection: our FIN sent, the peer's received, and reads shut without a FIN
    /// (shutdown(SHUT_RD) of the program, or a connection restarted from a FIN received: ESTABLISHED or a
    /// FIN_WAIT state with reads ended, whose receive sequence counts no FIN).
    /// </summary>
    private const byte FinSent = 1, FinReceived = 2, ReadsShut = 4;
    /// <summary>TCP_MAXSEG's range (TCP_MIN_MSS, MAX_TCP_WINDOW), and what the timestamp option takes of each segment.</summary>
    private const int MinUserMss = 88, MaxUserMss = 32767, TcpTimestampOptionBytes = 12;
    private const int TCP_MAXSEG = 2, TCP_REPAIR = 19, TCP_REPAIR_QUEUE = 20, TCP_QUEUE_SEQ = 21, TCP_REPAIR_OPTIONS = 22,
        TCP_TIMESTAMP = 24, TCP_REPAIR_WINDOW = 29, TCP_RECV_QUEUE = 1, TCP_SEND_QUEUE = 2, TCP_REPAIR_OFF = 0, TCP_REPAIR_OFF_NO_WP = -1;
    private const int TCPOPT_MSS = 2, TCPOPT_WINDOW = 3, TCPOPT_SACK_PERM = 4, TCPOPT_TIMESTAMP = 8;
    private const int TCPI_OPT_TIMESTAMPS = 1, TCPI_OPT_SACK = 2, TCPI_OPT_WSCALE = 4;
    private const uint SIOCOUTQ = 0x5411, SIOCOUTQNSD = 0x894B;
    private const int EINPROGRESS = 115;
    private const int MaxQueue = 32 << 20;
    private const int SO_SNDBUF = 7, SO_RCVBUF = 8;

    /// <summary>The options saved when they differ from a fresh socket's: (level, name, size, which sockets).</summary>
    private static readonly (int Level, int Name, int Size, string Label, Func<int, int, bool> Applies)[] Options =
    [
        (SocketCalls.SOL_SOCKET, 2, 4, "SO_REUSEADDR", Any), (SocketCalls.SOL_SOCKET, 15, 4, "SO_REUSEPORT", Any),
        (SocketCalls.SOL_SOCKET, 9, 4, "SO_KEEPALIVE", Any), (SocketCalls.SOL_SOCKET, 6, 4, "SO_BROADCAST", Any),
        (SocketCalls.SOL_SOCKET, 10, 4, "SO_OOBINLINE", Any), (SocketCalls.SOL_SOCKET, 12, 4, "SO_PRIORITY", Any),
        (SocketCalls.SOL_SOCKET, 18, 4, "SO_RCVLOWAT", Any), (SocketCalls.SOL_SOCKET, 13, 8, "SO_LINGER", Any),
        (SocketCalls.SOL_SOCKET, 20, 16, "SO_RCVTIMEO", Any), (SocketCalls.SOL_SOCKET, 21, 16, "SO_SNDTIMEO", Any),
        (SocketCalls.SOL_SOCKET, 36, 4, "SO_MARK", Any), (SocketCalls.SOL_SOCKET, 29, 4, "SO_TIMESTAMP", Any),
        (SocketCalls.SOL_SOCKET, 5, 4, "SO_DONTROUTE", Any), (SocketCalls.SOL_SOCKET, 11, 4, "SO_NO_CHECK", Any),
        (SocketCalls.SOL_SOCKET, SO_SNDBUF, 4, "SO_SNDBUF", Any), (SocketCalls.SOL_SOCKET, SO_RCVBUF, 4, "SO_RCVBUF", Any),
        // after the sizes, which lock them too: the locks as they are
        (SocketCalls.SOL_SOCKET, 72, 4, "SO_BUF_LOCK", Any),
        // the interface it is bound to, by name (a name missing at restart fails it: ENODEV)
        (SocketCalls.SOL_SOCKET, 25, 16, "SO_BINDTODEVICE", Any),
        (IPPROTO_TCP, 1, 4, "TCP_NODELAY", Tcp), (IPPROTO_TCP, 3, 4, "TCP_CORK", Tcp), (IPPROTO_TCP, 4, 4, "TCP_KEEPIDLE", Tcp),
        (IPPROTO_TCP, 5, 4, "TCP_KEEPINTVL", Tcp), (IPPROTO_TCP, 6, 4, "TCP_KEEPCNT", Tcp), (IPPROTO_TCP, 9, 4, "TCP_DEFER_ACCEPT", Tcp),
        (IPPROTO_TCP, 12, 4, "TCP_QUICKACK", Tcp), (IPPROTO_TCP, 18, 4, "TCP_USER_TIMEOUT", Tcp), (IPPROTO_TCP, 23, 4, "TCP_FASTOPEN", Tcp), (IPPROTO_TCP, 25, 4, "TCP_NOTSENT_LOWAT", Tcp),
        (IPPROTO_IP, 1, 4, "IP_TOS", V4), (IPPROTO_IP, 2, 4, "IP_TTL", V4), (IPPROTO_IP, 8, 4, "IP_PKTINFO", V4),
        (IPPROTO_IP, 10, 4, "IP_MTU_DISCOVER", V4), (IPPROTO_IP, 11, 4, "IP_RECVERR", V4), (IPPROTO_IP, 15, 4, "IP_FREEBIND", V4),
        (IPPROTO_IP, 19, 4, "IP_TRANSPARENT", V4), (IPPROTO_IPV6, 78, 4, "IPV6_FREEBIND", V6), (IPPROTO_IPV6, 75, 4, "IPV6_TRANSPARENT", V6),
        (IPPROTO_UDPLITE, 10, 4, "UDPLITE_SEND_CSCOV", UdpLite), (IPPROTO_UDPLITE, 11, 4, "UDPLITE_RECV_CSCOV", UdpLite),
        (IPPROTO_IP, 33, 4, "IP_MULTICAST_TTL", Udp4), (IPPROTO_IP, 34, 4, "IP_MULTICAST_LOOP", Udp4),
        (IPPROTO_IPV6, 26, 4, "IPV6_V6ONLY", V6), (IPPROTO_IPV6, 16, 4, "IPV6_UNICAST_HOPS", V6), (IPPROTO_IPV6, 49, 4, "IPV6_RECVPKTINFO", V6),
        (IPPROTO_IPV6, 67, 4, "IPV6_TCLASS", V6), (IPPROTO_IPV6, 23, 4, "IPV6_MTU_DISCOVER", V6), (IPPROTO_IPV6, 25, 4, "IPV6_RECVERR", V6),
        // raw sockets: the ICMP types let through (ICMP_FILTER, ICMP6_FILTER), headers written by the program, the checksum offset
        (SOL_RAW, 1, 4, "ICMP_FILTER", RawIcmp4), (IPPROTO_ICMPV6, 1, 32, "ICMP6_FILTER", RawIcmp6),
        (IPPROTO_IP, 3, 4, "IP_HDRINCL", RawV4), (IPPROTO_IPV6, 7, 4, "IPV6_CHECKSUM", RawV6),
    ];
    private const int SOL_RAW = 255, IPPROTO_ICMP = 1, IPPROTO_ICMPV6 = 58, SOCK_RAW = 3;
    /// <summary>The protocol of a raw socket is given as protocol + this in the predicates below (TCP and UDP have their own).</summary>
    private const int RawProtocol = 1 << 16;
    private static bool RawIcmp4(int domain, int protocol) => domain == SocketCalls.AF_INET && protocol == RawProtocol + IPPROTO_ICMP;
    private static bool RawIcmp6(int domain, int protocol) => domain == SocketCalls.AF_INET6 && protocol == RawProtocol + IPPROTO_ICMPV6;
    private static bool RawV4(int domain, int protocol) => domain == SocketCalls.AF_INET && protocol >= RawProtocol;
    private static bool RawV6(int domain, int protocol) => domain == SocketCalls.AF_INET6 && protocol >= RawProtocol;
    private static bool Any(int domain, int protocol) => true;
    private static bool Tcp(int domain, int protocol) => protocol == IPPROTO_TCP;   // (a raw socket's protocol is RawProtocol + its own)
    private static bool V4(int domain, int protocol) => domain == SocketCalls.AF_INET;
    private static bool Udp4(int domain, int protocol) => domain == SocketCalls.AF_INET && protocol is IPPROTO_UDP or IPPROTO_UDPLITE;
    private static bool UdpLite(int domain, int protocol) => protocol == IPPROTO_UDPLITE;
    private static bool V6(int domain, int protocol) => domain == SocketCalls.AF_INET6;

    public void Checkpoint(CheckpointContext ctx) { }

    /// <summary>Saves the socket if it is a TCP, UDP or raw IP socket (else returns false and writes nothing); refuses one that cannot be saved.</summary>
    public static bool TryCheckpoint(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        int mine = ctx.GrabFd(f.Fd);
        try
        {
            int domain = SocketCalls.GetInt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_DOMAIN, "SO_DOMAIN", ctx.Pid);
            int type = SocketCalls.GetInt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_TYPE, "SO_TYPE", ctx.Pid);
            int protocol = SocketCalls.GetInt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_PROTOCOL, "SO_PROTOCOL", ctx.Pid);
            if (domain is not (SocketCalls.AF_INET or SocketCalls.AF_INET6)) return false;
            // (UDP-Lite: UDP with a partial checksum, the same socket otherwise)
            bool tcp = type == SocketCalls.SOCK_STREAM && protocol == IPPROTO_TCP, udp = type == SocketCalls.SOCK_DGRAM && protocol is IPPROTO_UDP or IPPROTO_UDPLITE;
            bool raw = type == SOCK_RAW;
            // an ICMP echo socket (ping without privileges, net.ipv4.ping_group_range): a datagram socket
            // bound to its echo identifier as a port, rebuilt as UDP is (it joins no group, has no shutdown)
            bool icmp = type == SocketCalls.SOCK_DGRAM && (domain == SocketCalls.AF_INET && protocol == IPPROTO_ICMP || domain == SocketCalls.AF_INET6 && protocol == IPPROTO_ICMPV6);
            if (!tcp && !udp && !raw && !icmp) return false;
            byte[] local = Address(mine, peer: false) ?? [];
            byte[]? peer = Address(mine, peer: true);
            string what = $"fd {f.Fd} ({f.Link}, a {(tcp ? "TCP" : udp ? (protocol == IPPROTO_UDPLITE ? "UDP-Lite" : "UDP") : icmp ? "ICMP echo" : $"raw (protocol {protocol})")} socket{(domain == SocketCalls.AF_INET6 ? " (IPv6)" : "")} {Show(local)})";
            var state = State.Unconnected;
            int backlog = 0;
            byte[]? connection = null;
            List<(byte[] Source, byte[] Data)>? datagrams = null;
            if (tcp)
            {
                byte* info = stackalloc byte[256];
                int len = 256;
                if (SocketCalls.GetSockOpt(mine, IPPROTO_TCP, TCP_INFO, info, &len) != 0 || len < 32) throw SyscallException.Last("getsockopt(TCP_INFO)", ctx.Pid, what);
                int tcpState = info[0];
                if (tcpState == TCP_STATE_LISTEN)
                {
                    uint waiting = *(uint*)(info + 24), max = *(uint*)(info + 28);
                    // (the tree was let go a moment to accept them, new ones held back: see HoldListeners)
                    if (waiting > 0)
                    {
                        if (!ctx.Session.SkipInFlight)
                            throw new NotCheckpointableException(ctx.Pid, $"{what} is listening with {waiting} connection(s) waiting to be accepted, which it did not accept when let go a moment; checkpoint once they were accepted, or leave them out with --skip-in-flight");
                        ctx.Session.Log.Info($"pid {ctx.Pid}: {what}: {waiting} connection(s) waiting to be accepted left out (--skip-in-flight)");
                        ctx.Session.SkippedInFlight += (int)waiting;
                    }
                    state = State.Listening;
                    backlog = (int)max;
                }
                else if (tcpState is TCP_STATE_ESTABLISHED or TCP_FIN_WAIT1 or TCP_FIN_WAIT2 or TCP_CLOSE_WAIT or TCP_LAST_ACK or TCP_CLOSING && peer != null)
                {
                    state = State.Established;
                    connection = ReadConnection(ctx, f.Fd, mine, info, what, tcpState, local, peer);
                }
                else if (tcpState == TCP_STATE_CLOSE && len >= 144 && (*(uint*)(info + 136) != 0 || *(uint*)(info + 140) != 0))
                {
                    // segments went out or came in (tcpi_segs_out, tcpi_segs_in): a connection that ended;
                    // the kernel shut both directions (reads give 0, writes EPIPE) and gave the port back
                    // unless the program had bound it itself
                    int unread = 0;
                    if (EventCalls.Ioctl(mine, EventCalls.FIONREAD, &unread) == 0 && unread > 0)
                        throw new NotCheckpointableException(ctx.Pid, $"{what} is a closed TCP connection with {unread} byte(s) it has not read yet, which is not supported yet; checkpoint once the program has read them");
                    state = State.Closed;
                    // the address it was connected to (SO_PEERNAME gives it still; getpeername says ENOTCONN):
                    // rebuilt with it and its own address (ClosedWithPeer)
                    peer = PeerName(mine, domain);
                    if (peer == null)
                    {
                        var bound = ctx.Session.State<BoundInactive>();
                        bound.Inodes ??= SocketCalls.TcpBoundInactive();
                        if (!bound.Inodes.Contains((uint)f.Stat.Ino)) local = [];
                    }
                }
                else if (tcpState == TCP_SYN_SENT && PeerName(mine, domain) is { } opening)
                {
                    // a connect waiting for its answer (a peer slow, down, or dropping it): opened again at
                    // restart from the same address and port, with a handshake of its own; the program's
                    // connect, restarted, waits for it as it did (getpeername says ENOTCONN meanwhile:
                    // SO_PEERNAME tells where to). Data sent with the SYN (TCP Fast Open) is not saved
                    int outq = 0;
                    if (EventCalls.Ioctl(mine, SIOCOUTQ, &outq) == 0 && outq > 0)
                        throw new NotCheckpointableException(ctx.Pid, $"{what} is a TCP connection to {Show(opening)} still being opened with {outq} byte(s) sent with its SYN (TCP Fast Open), which is not supported; checkpoint once it is established");
                    state = State.Opening;
                    peer = opening;
                }
                else if (tcpState is TCP_SYN_SENT or TCP_SYN_RECV)
                    throw new NotCheckpointableException(ctx.Pid, $"{what} is a TCP connection{(peer != null ? " to " + Show(peer) : "")} still being opened ({TcpStateName(tcpState)}) after the tree was let go for about 3 s to finish it; checkpoint once it is established");
                else if (tcpState != TCP_STATE_CLOSE)
                    throw new NotCheckpointableException(ctx.Pid, $"{what} is a TCP connection{(peer != null ? " to " + Show(peer) : "")} in state {TcpStateName(tcpState)}, which is not supported yet (only listening, unconnected, established and half-closed TCP sockets are)");
            }
            else if (raw)
            {
                // packets it has not read cannot be queued again: the tree got moments to read them
                // (HasQueuedRawPackets); what came after the last look comes after the checkpoint's moment
                int queued = 0;
                bool empty = QueuesAtFreeze.TryGet(ctx.Session, ctx.Pid, f.Fd, out long atFreeze) && atFreeze == 0;
                if (!empty && EventCalls.Ioctl(mine, EventCalls.FIONREAD, &queued) == 0 && queued > 0)
                    throw new NotCheckpointableException(ctx.Pid, $"{what} has packets queued that it has not read, which are not saved; checkpoint once it has read them");
                peer ??= SocketCalls.RawSockets().TryGetValue(f.Stat.Ino, out var table) ? table.Peer : null;
                if (peer != null) state = State.Connected;
            }
            else
            {
                int queued = 0;
                if (EventCalls.Ioctl(mine, EventCalls.FIONREAD, &queued) == 0 && queued > 0 || Pending(mine))
                {
                    // queued datagrams are sent again as UDP packets through a raw socket
                    if (icmp)
                        throw new NotCheckpointableException(ctx.Pid, $"{what} has echo replies queued that it has not read, which cannot be queued again; checkpoint once it has read them");
                    if (protocol == IPPROTO_UDPLITE)
                        throw new NotCheckpointableException(ctx.Pid, $"{what} has datagrams queued that it has not read, which cannot be queued again for UDP-Lite; checkpoint once it has read them");
                    datagrams = PeekDatagrams(mine, ctx.Pid, what);
                }
                if (icmp) peer ??= SocketCalls.IcmpSockets().TryGetValue(f.Stat.Ino, out var t) ? t.Peer : null;
                if (peer != null) state = State.Connected;
            }
            var p = new PayloadWriter().U32(objref).I32(f.Flags & ~FileCalls.O_CLOEXEC).I32(domain).I32(type).I32(protocol)
                .U8((byte)state).I32(backlog).Bytes(local).Bytes(state is State.Connected or State.Established or State.Closed or State.Opening ? peer ?? [] : []);
            var options = ChangedOptions(mine, domain, type, raw ? RawProtocol + protocol : protocol, ctx.Pid);
            // a connection is in repair mode by now, which reads as SO_REUSEADDR 2 (forced): what the
            // program set was read before
            if (connection != null)
            {
                options.RemoveAll(o => o.Level == SocketCalls.SOL_SOCKET && o.Name == SO_REUSEADDR);
                if (ctx.Session.State<Repaired>().Fds[^1].Reuse) options.Add((SocketCalls.SOL_SOCKET, SO_REUSEADDR, BitConverter.GetBytes(1)));
            }
            p.U32((uint)options.Count);
            foreach (var (level, name, value) in options) p.I32(level).I32(name).Bytes(value);
            if (connection != null) p.Raw(connection);
            // appended field (a TCP socket that is bound and not connected): another TCP socket of the tree
            // has the same address and port, so both were bound with SO_REUSEPORT (which one may have
            // cleared since): set again for the bind, and put back once every socket is bound
            if (tcp && state is State.Listening or State.Unconnected && HasAddress(local))
            {
                var ports = ctx.Session.State<TreeTcpPorts>();
                ports.List ??= TcpSockets(ctx.Session);
                p.Bool(ports.List.Count(t => t.State is TCP_STATE_LISTEN or TCP_STATE_CLOSE && t.Local.AsSpan().SequenceEqual(local)) > 1);
            }
            if (icmp) p.U32(0).U32(0).U8(0);   // no datagrams, no group, no shutdown
            if (udp)
            {
                p.U32((uint)(datagrams?.Count ?? 0));
                foreach (var (src, data) in datagrams ?? []) p.Bytes(src).Bytes(data);
                // appended field: the multicast groups it joined, each with its interface and source filter
                var groups = Memberships(ctx, mine, domain, what);
                p.U32((uint)groups.Count);
                foreach (var (iface, filter) in groups) p.Str(iface).Bytes(filter);
                // appended field: the directions shut down (sk_shutdown: 1 receive, 2 send), which only inet_diag shows
                var shut = ctx.Session.State<UdpShutdowns>();
                shut.ByInode ??= SocketCalls.InetShutdowns(SocketCalls.IPPROTO_UDP).Concat(SocketCalls.InetShutdowns(IPPROTO_UDPLITE)).ToDictionary();
                p.U8((byte)shut.ByInode.GetValueOrDefault((uint)f.Stat.Ino));
            }
            ctx.Image.Write(RecordKind.InetSocket, p);
            ctx.Log.Debug($"pid {ctx.Pid} {what}: {state}{(state == State.Listening ? $" (backlog {backlog})" : "")}, {options.Count} option(s) set");
            return true;
        }
        finally { FileCalls.Close(mine); }
    }

    /// <summary>The TCP sockets of the tree with their local addresses (one look per checkpoint).</summary>
    private sealed class TreeTcpPorts { public List<(int Pid, int Fd, byte[] Local, int State, uint Waiting)>? List; }

    /// <summary>The UDP sockets shut down in some direction, by inode (one inet_diag dump per checkpoint).</summary>
    private sealed class UdpShutdowns { public Dictionary<uint, int>? ByInode; }

    /// <summary>The TCP sockets shut down in some direction, by inode (one inet_diag dump per checkpoint).</summary>
    private sealed class TcpShutdowns { public Dictionary<uint, int>? ByInode; }

    // multicast memberships: struct group_filter { u32 interface; (pad); sockaddr_storage group; u32 fmode; u32 numsrc; sockaddr_storage sources[] }
    private const int MCAST_JOIN_GROUP = 42, MCAST_MSFILTER = 48, GroupFilterHead = 144, SockaddrStorage = 128, MaxSources = 64;

    /// <summary>
    /// The multicast groups a UDP socket joined, each as (interface name, group_filter as getsockopt gave
    /// it: group, filter mode, sources). Nothing shows them per socket: every group joined on the machine
    /// (/proc/net/igmp, igmp6) is asked of the socket with getsockopt(MCAST_MSFILTER), which answers only
    /// for a group the socket joined on that interface.
    /// </summary>
    private static List<(string Iface, byte[] Filter)> Memberships(CheckpointContext ctx, int fd, int domain, string what)
    {
        var found = new List<(string, byte[])>();
        int pid = ctx.Pid;
        int level = domain == SocketCalls.AF_INET ? IPPROTO_IP : IPPROTO_IPV6;
        var known = ctx.Session.State<MachineGroupsRead>();
        var candidates = domain == SocketCalls.AF_INET ? known.V4 ??= MachineGroups(domain) : known.V6 ??= MachineGroups(domain);
        if (candidates.Count == 0) return found;
        var buf = new byte[GroupFilterHead + MaxSources * SockaddrStorage];
        foreach (var (ifindex, iface, group) in candidates)
        {
            Array.Clear(buf);
            BinaryPrimitives.WriteUInt32LittleEndian(buf, (uint)ifindex);
            group.CopyTo(buf, 8);
            BinaryPrimitives.WriteUInt32LittleEndian(buf.AsSpan(140), MaxSources);   // room for the sources (the kernel copies that many at most)
            int len = buf.Length;
            int rc;
            fixed (byte* b = buf) rc = SocketCalls.GetSockOpt(fd, level, MCAST_MSFILTER, b, &len);
            if (rc != 0) continue;   // EADDRNOTAVAIL: not joined by this socket
            uint numsrc = BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(140));
            if (numsrc > MaxSources) throw new NotCheckpointableException(pid, $"{what} filters {numsrc} sources of a multicast group, more than the {MaxSources} ckpt saves");
            found.Add((iface, buf.AsSpan(0, GroupFilterHead + (int)numsrc * SockaddrStorage).ToArray()));
        }
        return found;
    }

    /// <summary>The machine's multicast groups, read once per checkpoint (the tree is frozen: its sockets join nothing meanwhile).</summary>
    private sealed class MachineGroupsRead { public List<(int Ifindex, string Iface, byte[] Group)>? V4, V6; }

    /// <summary>Every (interface index, interface name, group sockaddr) of the multicast groups joined on the machine, for one address family.</summary>
    private static List<(int Ifindex, string Iface, byte[] Group)> MachineGroups(int domain)
    {
        var list = new List<(int, string, byte[])>();
        try
        {
            if (domain == SocketCalls.AF_INET)
            {
                // Idx Device : Count Querier, then one indented line per group: the address as a u32 in host order, Users, ...
                int idx = 0; string dev = "";
                foreach (var line in File.ReadLines("/proc/thread-self/net/igmp").Skip(1))
                {
                    var w = line.Split(['\t', ' '], StringSplitOptions.RemoveEmptyEntries);
                    if (w.Length == 0) continue;
                    if (!char.IsWhiteSpace(line[0]) && int.TryParse(w[0], out int i)) { idx = i; dev = w[1].TrimEnd(':'); continue; }
                    if (idx == 0 || w[0].Length != 8) continue;
                    var sa = new byte[16];
                    BinaryPrimitives.WriteUInt16LittleEndian(sa, SocketCalls.AF_INET);
                    BinaryPrimitives.WriteUInt32LittleEndian(sa.AsSpan(4), Convert.ToUInt32(w[0], 16));
                    list.Add((idx, dev, sa));
                }
            }
            else
            {
                // index device group(32 hex digits, network order) users flags timer
                foreach (var line in File.ReadLines("/proc/thread-self/net/igmp6"))
                {
                    var w = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                    if (w.Length < 3 || w[2].Length != 32 || !int.TryParse(w[0], out int idx)) continue;
                    var sa = new byte[28];
                    BinaryPrimitives.WriteUInt16LittleEndian(sa, SocketCalls.AF_INET6);
                    Convert.FromHexString(w[2]).CopyTo(sa, 8);
                    list.Add((idx, w[1], sa));
                }
            }
        }
        catch (IOException) { }
        return list;
    }

    /// <summary>Joins the saved multicast groups again (MCAST_JOIN_GROUP on the interface of that name), then sets each source filter that is not "every source".</summary>
    private static void JoinGroups(RestoreContext ctx, int fd, int domain, List<(string Iface, byte[] Filter)> groups, string what)
    {
        int level = domain == SocketCalls.AF_INET ? IPPROTO_IP : IPPROTO_IPV6;
        var batch = ctx.Batch;
        batch.Reserve(groups.Count * 2, groups.Sum(g => g.Filter.Length + 136 + 16));
        foreach (var (iface, filter) in groups)
        {
            int ifindex = SocketCalls.InterfaceIndex(iface)
                ?? throw new CkptException($"restart: the {what} joined a multicast group on interface {iface}, which is not here", ExitCodes.RestoreConflict);
            var f = (byte[])filter.Clone();
            BinaryPrimitives.WriteUInt32LittleEndian(f, (uint)ifindex);
            // struct group_req { u32 interface; (pad); sockaddr_storage group }: the head of the group_filter
            batch.AddChecked($"MCAST_JOIN_GROUP of the {what} on {iface}", Nr.setsockopt, fd, level, MCAST_JOIN_GROUP, (long)batch.AddData(f.AsSpan(0, 136)), 136);
            uint fmode = BinaryPrimitives.ReadUInt32LittleEndian(f.AsSpan(136)), numsrc = BinaryPrimitives.ReadUInt32LittleEndian(f.AsSpan(140));
            if (fmode != 0 /* MCAST_EXCLUDE */ || numsrc != 0)
                batch.AddChecked($"MCAST_MSFILTER of the {what} on {iface}", Nr.setsockopt, fd, level, MCAST_MSFILTER, (long)batch.AddData(f), f.Length);
        }
        batch.Flush();
    }

    /// <summary>Connections put in repair mode by this checkpoint (ckpt's copies, left in it until it ends); Reuse: SO_REUSEADDR, which leaving repair mode clears.</summary>
    private sealed class Repaired { public readonly List<Connection> Fds = new(); }

    /// <summary>
    /// A connection read in repair mode: ckpt's copy (in repair mode until the end of the checkpoint), its
    /// receive queue's length then, and the sequence numbers saved: the first byte the peer has not had
    /// acknowledged (<c>SendStart</c>) and the first byte not received (<c>RecvEnd</c>).
    /// </summary>
    private sealed record Connection(int Fd, int Pid, string What, bool Reuse, byte[] Local, byte[] Peer)
    {
        public int Inq { get; set; }
        public uint SendStart { get; set; }
        public uint RecvEnd { get; set; }
        /// <summary>The first byte not sent yet (the rest of the send queue goes out as new data after the restart).</summary>
        public uint SendNext { get; set; }
    }

    /// <summary>
    /// The state of an established connection, read in repair mode (which it stays in until
    /// <see cref="EndCheckpoint"/>): the payload tail of its InetSocket record.
    /// </summary>
    private static byte[] ReadConnection(CheckpointContext ctx, int fd, int mine, byte* info, string what, int tcpState, byte[] local, byte[] peer)
    {
        // half-closed: our FIN sent (unacknowledged in FIN_WAIT1, CLOSING, LAST_ACK; acknowledged in
        // FIN_WAIT2), the peer's FIN received (CLOSE_WAIT, LAST_ACK, CLOSING). A FIN takes one sequence
        // number and no byte of a queue: the sequence numbers saved are those before the FINs, which the
        // restart gives again with shutdown() once the connection is rebuilt
        byte fins = (byte)((tcpState is TCP_FIN_WAIT1 or TCP_FIN_WAIT2 or TCP_LAST_ACK or TCP_CLOSING ? FinSent : 0)
            | (tcpState is TCP_CLOSE_WAIT or TCP_LAST_ACK or TCP_CLOSING ? FinReceived : 0));
        // reads shut with no FIN received (only inet_diag shows it)
        if ((fins & FinReceived) == 0)
        {
            var shut = ctx.Session.State<TcpShutdowns>();
            shut.ByInode ??= SocketCalls.InetShutdowns(IPPROTO_TCP);
            if ((shut.ByInode.GetValueOrDefault((uint)FileCalls.FstatOrThrow(mine, ctx.Pid).Ino) & 1) != 0) fins |= ReadsShut;
        }
        bool finUnacked = tcpState is TCP_FIN_WAIT1 or TCP_LAST_ACK or TCP_CLOSING;
        int copy = FileCalls.Fcntl(mine, 1030 /* F_DUPFD_CLOEXEC */, 0);
        if (copy < 0) throw SyscallException.Last("fcntl(F_DUPFD_CLOEXEC)", ctx.Pid);
        var repaired = ctx.Session.State<Repaired>().Fds;
        // (repair mode forces address reuse, and leaving it clears SO_REUSEADDR: set again then)
        bool reuse = SocketCalls.GetInt(copy, SocketCalls.SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR", ctx.Pid) != 0;
        var conn = new Connection(copy, ctx.Pid, what, reuse, local, peer);
        repaired.Add(conn);
        SocketCalls.SetInt(copy, IPPROTO_TCP, TCP_REPAIR, 1, "TCP_REPAIR", ctx.Pid, what);
        // each queue is read while nothing changes it: the kernel goes on taking segments for a frozen
        // process (the receive queue grows) and acknowledgements (the send queue shrinks); a queue whose
        // sequence number or length moved between the start and the end of its reading is read again
        int outq = 0, inq = 0, unsent = 0;
        uint sendSeq = 0, recvSeq = 0;
        byte[] sendQueue = [], recvQueue = [];
        for (int attempt = 0; ; attempt++)
        {
            if (attempt == 100) throw new NotCheckpointableException(ctx.Pid, $"{what} kept receiving, or being acknowledged, while its queues were read; checkpoint again");
            SocketCalls.SetInt(copy, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE", ctx.Pid, what);
            if (EventCalls.Ioctl(copy, SIOCOUTQ, &outq) != 0) throw SyscallException.Last("ioctl(SIOCOUTQ)", ctx.Pid, what);
            if (outq > MaxQueue) throw new NotCheckpointableException(ctx.Pid, $"{what} holds more than {MaxQueue >> 20} MiB in a queue");
            // write_seq - outq = the first byte not acknowledged (the FIN counts in outq while unacknowledged)
            sendSeq = (uint)SocketCalls.GetInt(copy, IPPROTO_TCP, TCP_QUEUE_SEQ, "TCP_QUEUE_SEQ", ctx.Pid, what) - (uint)outq - (tcpState == TCP_FIN_WAIT2 ? 1u : 0u);
            int sendLength = outq - (finUnacked && outq > 0 ? 1 : 0);
            sendQueue = Peek(copy, sendLength, ctx.Pid, what + " send queue");
            // the tail of it not sent yet (write_seq - snd_nxt: a FIN queued behind it counts one)
            if (EventCalls.Ioctl(copy, SIOCOUTQNSD, &unsent) != 0) throw SyscallException.Last("ioctl(SIOCOUTQNSD)", ctx.Pid, what);
            int outqAfter = 0;
            if (EventCalls.Ioctl(copy, SIOCOUTQ, &outqAfter) != 0) throw SyscallException.Last("ioctl(SIOCOUTQ)", ctx.Pid, what);
            SocketCalls.SetInt(copy, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE", ctx.Pid, what);
            uint rcvNxt = (uint)SocketCalls.GetInt(copy, IPPROTO_TCP, TCP_QUEUE_SEQ, "TCP_QUEUE_SEQ", ctx.Pid, what);
            if (EventCalls.Ioctl(copy, EventCalls.FIONREAD, &inq) != 0) throw SyscallException.Last("ioctl(SIOCINQ)", ctx.Pid, what);
            if (inq > MaxQueue) throw new NotCheckpointableException(ctx.Pid, $"{what} holds more than {MaxQueue >> 20} MiB in a queue");
            recvQueue = Peek(copy, inq, ctx.Pid, what + " receive queue");
            uint rcvNxtAfter = (uint)SocketCalls.GetInt(copy, IPPROTO_TCP, TCP_QUEUE_SEQ, "TCP_QUEUE_SEQ", ctx.Pid, what);
            // rcv_nxt counts the peer's FIN; SIOCINQ does not
            recvSeq = rcvNxt - (uint)inq - ((fins & FinReceived) != 0 ? 1u : 0u);
            if (outqAfter == outq && sendQueue.Length == sendLength && rcvNxtAfter == rcvNxt && recvQueue.Length == inq) break;
            ctx.Log.Debug($"pid {ctx.Pid} {what}: a queue moved while it was read (send {outq} -> {outqAfter}, receive seq {rcvNxt} -> {rcvNxtAfter}); read again");
        }
        conn.Inq = inq;
        unsent = Math.Clamp(unsent - (finUnacked && unsent > 0 ? 1 : 0), 0, sendQueue.Length);
        conn.SendStart = sendSeq;
        conn.SendNext = sendSeq + (uint)(sendQueue.Length - unsent);
        conn.RecvEnd = recvSeq + (uint)inq;
        int mss = SocketCalls.GetInt(copy, IPPROTO_TCP, TCP_MAXSEG, "TCP_MAXSEG", ctx.Pid, what);
        int timestamp = SocketCalls.GetInt(copy, IPPROTO_TCP, TCP_TIMESTAMP, "TCP_TIMESTAMP", ctx.Pid, what);
        byte* win = stackalloc byte[20];
        int wl = 20;
        if (SocketCalls.GetSockOpt(copy, IPPROTO_TCP, TCP_REPAIR_WINDOW, win, &wl) != 0 || wl != 20) throw SyscallException.Last("getsockopt(TCP_REPAIR_WINDOW)", ctx.Pid, what);
        byte options = info[5], scales = info[6];
        ctx.Log.Debug($"pid {ctx.Pid} {what}: send seq {sendSeq} + {outq} queued ({unsent} not sent yet), receive seq {recvSeq} + {inq} queued, mss {mss}, options 0x{options:x}");
        return new PayloadWriter().U32(sendSeq).U32(recvSeq).I32(mss).U8(options).U8((byte)(scales & 0xf)).U8((byte)(scales >> 4))
            .I32(timestamp).Raw(new ReadOnlySpan<byte>(win, 20)).Bytes(sendQueue).Bytes(recvQueue).U8(fins).U32((uint)unsent).ToArray();
    }

    /// <summary>The queue selected by TCP_REPAIR_QUEUE, read without being consumed: what there is of its first <paramref name="length"/> bytes.</summary>
    private static byte[] Peek(int fd, int length, int pid, string what)
    {
        var data = new byte[length];
        if (length == 0) return data;
        nint n;
        fixed (byte* d = data)
        {
            n = SocketCalls.Recv(fd, d, (nuint)length, SocketCalls.MSG_PEEK | SocketCalls.MSG_DONTWAIT);
            if (n < 0 && Marshal.GetLastPInvokeError() != Errors.EAGAIN) throw SyscallException.Last("recv(MSG_PEEK)", pid, what);
        }
        return n == length ? data : data.AsSpan(0, (int)Math.Max(n, 0)).ToArray();
    }

    /// <summary>
    /// Before the image is complete (its trailer written) for a checkpoint that kills the tree: a peer
    /// outside the tree may have sent data to a connection after its queue was read, data its kernel
    /// acknowledged and that the image does not hold; then the checkpoint fails (the tree goes on).
    /// </summary>
    public static bool HasConnections(CheckpointSession s) => s.Existing<Repaired>() is { Fds.Count: > 0 };

    /// <summary>
    /// Before the image ends, when the tree is about to be killed with established connections: names the
    /// nf_tables table that will hold them (<see cref="LockConnections"/>) in an optional NetworkLock
    /// record, for the restart to remove. Returns the name.
    /// </summary>
    /// <summary>
    /// How long new connection requests to the listeners of a tree killed by the checkpoint are held (their
    /// clients send them again after 1, 3, 7, 15, 31 s...): a restart that never comes leaves the port
    /// answering with resets again afterwards, as any closed port.
    /// </summary>
    public static readonly TimeSpan ListenerHold = TimeSpan.FromSeconds(60);

    public static string WriteNetworkLock(CheckpointSession s)
    {
        string table = $"ckpt_{s.Tree[0].Pid}_{DateTime.UtcNow:yyyyMMddHHmmssfff}";
        s.Image.Write(RecordKind.NetworkLock, new PayloadWriter().Str(table), RecordFlags.Optional);
        return table;
    }

    /// <summary>
    /// Once the image is complete and before the tree is killed: an nf_tables table drops what each
    /// peer sends to the connections (no socket answers for them until the restart; the kernel would
    /// answer with a reset, and the peer would drop the connection), and what the connections still send
    /// until they are closed (nothing the image holds as not sent may reach the peer). The peer's packets
    /// are retransmitted until the restart removes the table. Where nf_tables cannot be used, the log says
    /// so and the connections are left as before (a peer that sends meanwhile gets a reset).
    /// </summary>
    public static void LockConnections(CheckpointSession s, string table, List<byte[]> listeners)
    {
        var conns = new List<(byte[] Local, byte[] Peer)>();
        foreach (var c in s.Existing<Repaired>()?.Fds ?? [])
            if (Address(c.Fd, peer: false) is { } local && Address(c.Fd, peer: true) is { } peer) conns.Add((local, peer));
        try
        {
            NetfilterCalls.AddDropTable(table, conns, listeners, DateTime.UtcNow + ListenerHold);
            s.Log.Info($"{conns.Count} TCP connection(s) held by nf_tables table inet {table} until the restart"
                + (listeners.Count > 0 ? $", and new connection requests to {listeners.Count} listener(s) for at most {ListenerHold.TotalSeconds:F0} s" : ""));
        }
        catch (SyscallException e)
        {
            s.Log.Error($"the TCP connections could not be held while the tree is down ({e.Message}): a peer that sends before the restart gets a reset");
        }
    }

    /// <summary>
    /// Does a raw socket of the frozen tree have packets it has not read (a ping's reply that came as it
    /// was frozen)? Then the tree is let go a moment to read them and frozen again, as for inotify and
    /// netlink (<see cref="Engine.Checkpointer"/>). The receive queues are read from /proc/net/raw{,6}
    /// (<see cref="SocketCalls.RawSockets"/>).
    /// </summary>
    public static bool HasQueuedRawPackets(CheckpointSession s)
        => QueuesAtFreeze.NoteSockets(s, () => SocketCalls.RawSockets().ToDictionary(e => e.Key, e => e.Value.Queued));

    /// <summary>Every TCP listening socket of the tree (each once).</summary>
    public static List<(int Pid, int Fd, byte[] Local, int State, uint Waiting)> TcpListeners(CheckpointSession s)
        => TcpSockets(s).Where(t => t.State == TCP_STATE_LISTEN).ToList();

    /// <summary>
    /// Every TCP socket of the tree (each once): its holder, its local address, its state and, for a
    /// listener, how many connections wait in its accept queue (TCP_INFO on a pidfd_getfd copy).
    /// </summary>
    public static List<(int Pid, int Fd, byte[] Local, int State, uint Waiting)> TcpSockets(CheckpointSession s)
    {
        var list = new List<(int, int, byte[], int, uint)>();
        var seen = new HashSet<ulong>();
        byte* info = stackalloc byte[256];
        foreach (var ctx in s.Processes)
            foreach (var f in ctx.OpenFiles)
            {
                if (f.Stat.Type != StatBuf.S_IFSOCK || !seen.Add(f.Stat.Ino)) continue;
                int mine;
                try { mine = ctx.GrabFd(f.Fd); } catch (SyscallException) { continue; }
                try
                {
                    int len = 4, v = 0;
                    if (SocketCalls.GetSockOpt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_DOMAIN, &v, &len) != 0 || v is not (SocketCalls.AF_INET or SocketCalls.AF_INET6)) continue;
                    len = 4;
                    if (SocketCalls.GetSockOpt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_PROTOCOL, &v, &len) != 0 || v != IPPROTO_TCP) continue;
                    len = 256;
                    if (SocketCalls.GetSockOpt(mine, IPPROTO_TCP, TCP_INFO, info, &len) != 0 || len < 32) continue;
                    if (Address(mine, peer: false) is { } local) list.Add((ctx.Pid, f.Fd, local, info[0], info[0] == TCP_STATE_LISTEN ? *(uint*)(info + 24) : 0));
                }
                finally { FileCalls.Close(mine); }
            }
        return list;
    }

    /// <summary>
    /// Every TCP listener of the frozen tree gets its new connection requests (SYN without ACK) held back by
    /// an nf_tables table from the first look at it until the end of the checkpoint (<see cref="EndQuiesce"/>):
    /// the kernel completes handshakes for a frozen listener, and a connection that came into its accept
    /// queue while the tree was read could not be saved (an ASP.NET Core server under a steady stream of
    /// clients refused one checkpoint in two); its client retransmits its SYN a second later. Connections
    /// already waiting get the tree's moments to be accepted (<see cref="ListenersWaiting"/>). Returns
    /// true when the table was made or grew (the listeners are then looked at again: a connection could
    /// complete before it took effect); false when nothing changed or nf_tables cannot be used (a
    /// connection waiting then refuses the checkpoint, as before).
    /// </summary>
    public static bool HoldListeners(CheckpointSession s, List<(int Pid, int Fd, byte[] Local, int State, uint Waiting)> tcp, ref string? table, HashSet<string> held)
    {
        bool grew = false;
        foreach (var l in tcp) if (l.State == TCP_STATE_LISTEN) grew |= held.Add(Convert.ToHexString(l.Local));
        if (!grew) return false;
        // the new table first, then the old one goes: no moment without one
        string next = $"ckpt_q_{s.Tree[0].Pid}_{DateTime.UtcNow:yyyyMMddHHmmssfff}_{held.Count}";
        try
        {
            NetfilterCalls.AddDropTable(next, [], held.Select(Convert.FromHexString).ToList());
            s.Log.Info($"{held.Count} listener(s): new connection requests held by nf_tables table inet {next} while the tree is checkpointed");
        }
        catch (SyscallException e)
        {
            s.Log.Info($"the listeners' new connection requests cannot be held back ({e.Message})");
            return false;
        }
        if (table != null) EndQuiesce(s, table);
        table = next;
        return true;
    }

    /// <summary>Whether a listener of the tree has connections waiting to be accepted (the tree is then let go a moment to accept them).</summary>
    public static bool ListenersWaiting(List<(int Pid, int Fd, byte[] Local, int State, uint Waiting)> tcp)
        => tcp.Any(l => l.State == TCP_STATE_LISTEN && l.Waiting > 0);

    /// <summary>
    /// Waits (up to 200 ms) until the queues of the tree's TCP connections stop changing: a frozen tree
    /// still has data in flight that the kernel goes on delivering as windows allow (between two processes
    /// of the tree on loopback, until the receiver's window is full), and a connection read while its queue
    /// still grows is refused (<see cref="VerifyConnections"/>). Sampled every millisecond: receive and
    /// send queue lengths (SIOCINQ, SIOCOUTQ), until two samples agree.
    /// </summary>
    public static void SettleConnections(CheckpointSession s, List<(int Pid, int Fd, byte[] Local, int State, uint Waiting)> tcp)
    {
        var copies = new List<int>();
        try
        {
            foreach (var (pid, fd, _, state, _) in tcp)
            {
                if (state is TCP_STATE_LISTEN or TCP_STATE_CLOSE or TCP_SYN_SENT or TCP_SYN_RECV) continue;
                if (s.Processes.FirstOrDefault(p => p.Pid == pid) is not { } ctx) continue;
                try { copies.Add(ctx.GrabFd(fd)); } catch (SyscallException) { }
            }
            if (copies.Count == 0) return;
            // each connection's receive and send queue lengths, side by side
            int[] Sample()
            {
                var q = new int[2 * copies.Count];
                for (int i = 0; i < copies.Count; i++)
                {
                    int inq = 0, outq = 0;
                    EventCalls.Ioctl(copies[i], EventCalls.FIONREAD, &inq);
                    EventCalls.Ioctl(copies[i], SIOCOUTQ, &outq);
                    q[2 * i] = inq;
                    q[2 * i + 1] = outq;
                }
                return q;
            }
            int[] last = Sample();
            var until = DateTime.UtcNow.AddMilliseconds(200);
            int rounds = 0;
            while (DateTime.UtcNow < until)
            {
                Thread.Sleep(1);
                int[] now = Sample();
                rounds++;
                if (now.AsSpan().SequenceEqual(last)) break;
                last = now;
            }
            if (rounds > 1) s.Log.Debug($"TCP connections settled after {rounds} ms (data in flight delivered)");
        }
        finally { foreach (int c in copies) FileCalls.Close(c); }
    }

    /// <summary>
    /// Before any connection is read: an nf_tables table drops every packet sent to the tree's
    /// connections (established or half-closed), and every packet they send, until the end of the
    /// checkpoint (<see cref="EndHold"/>). Nothing then arrives nor is acknowledged while their queues are
    /// read, one after the other: two ends of a connection within the tree are saved as they were at one
    /// moment (the kernel goes on moving data between them for a frozen tree: an end read after its peer
    /// had received bytes the peer's saved state had not sent yet, whose acknowledgements the restarted
    /// sender then ignored, and the connection stalled for good), a peer outside the tree gets no
    /// acknowledgement for bytes the image would not hold, and no byte the image holds as not sent yet
    /// (the kernel sends for a frozen process: corked or window-probe data when its 200 ms timer fires,
    /// loss probes; such bytes, sent again as new data after the restart, were acknowledged past what the
    /// restarted end had sent, which dropped every segment of the peer: zdtm socket-tcpbuf hung for good).
    /// What is dropped meanwhile is sent again by TCP. Where nf_tables
    /// cannot be used, the log says so and the queues are read as they are (a tree about to be killed is
    /// then refused if one received more meanwhile, <see cref="VerifyConnections"/>).
    /// </summary>
    public static void HoldConnections(CheckpointSession s, List<(int Pid, int Fd, byte[] Local, int State, uint Waiting)> tcp)
    {
        var conns = new List<(byte[] Local, byte[] Peer)>();
        foreach (var (pid, fd, local, state, _) in tcp)
        {
            if (state is not (TCP_STATE_ESTABLISHED or TCP_FIN_WAIT1 or TCP_FIN_WAIT2 or TCP_CLOSE_WAIT or TCP_LAST_ACK or TCP_CLOSING)) continue;
            if (s.Processes.FirstOrDefault(p => p.Pid == pid) is not { } ctx) continue;
            int mine;
            try { mine = ctx.GrabFd(fd); } catch (SyscallException) { continue; }
            try { if (Address(mine, peer: true) is { } peer) conns.Add((local, peer)); }
            finally { FileCalls.Close(mine); }
        }
        if (conns.Count == 0) return;
        string table = $"ckpt_hold_{s.Tree[0].Pid}_{DateTime.UtcNow:yyyyMMddHHmmssfff}";
        try
        {
            NetfilterCalls.AddDropTable(table, conns);
            s.Set(new HoldState { Table = table });
            s.Log.Debug($"{conns.Count} TCP connection(s) held by nf_tables table inet {table} while they are read");
        }
        catch (SyscallException e)
        {
            s.Log.Info($"the TCP connections could not be held while they are read ({e.Message}): they are read as they are");
        }
    }

    private sealed class HoldState { public string? Table; }

    /// <summary>Removes the table of <see cref="HoldConnections"/> (after the connections left repair mode, or after the lock that outlasts a killed tree is in place).</summary>
    public static void EndHold(CheckpointSession s)
    {
        if (s.Existing<HoldState>() is not { Table: { } table } st) return;
        st.Table = null;
        try { NetfilterCalls.DeleteTable(table); }
        catch (SyscallException e) { s.Log.Error($"cannot remove the nf_tables table inet {table}: {e.Message}; remove it with 'nft delete table inet {table}'"); }
    }

    /// <summary>
    /// TCP sockets of the frozen tree in SYN_RECV (a connection being accepted that a socket holds, with
    /// TCP Fast Open): they cannot be saved, and are usually established within a round trip, so the tree
    /// is let go a moment for them as for listeners. (A connect waiting for its answer, SYN_SENT, is saved
    /// as it is: State.Opening.)
    /// </summary>
    public static bool ConnectionsOpening(CheckpointSession s, List<(int Pid, int Fd, byte[] Local, int State, uint Waiting)> tcp)
    {
        var opening = tcp.Where(t => t.State == TCP_SYN_RECV).ToList();
        foreach (var (pid, fd, _, state, _) in opening) s.Log.Debug($"pid {pid} fd {fd}: a TCP connection in state {TcpStateName(state)}");
        return opening.Count > 0;
    }

    /// <summary>Removes the table <see cref="QuiesceListeners"/> made (the connection requests held meanwhile are sent again by their clients).</summary>
    public static void EndQuiesce(CheckpointSession s, string? table)
    {
        if (table == null) return;
        try { NetfilterCalls.DeleteTable(table); }
        catch (SyscallException e) { s.Log.Error($"cannot remove the nf_tables table inet {table}: {e.Message}; remove it with 'nft delete table inet {table}'"); }
    }

    private sealed class NetworkLockState { public string? Table; }

    /// <summary>At restart, once every connection left repair mode: the table that held them is removed (absent on another machine).</summary>
    private static void Unlock(RestoreSession s)
    {
        if (s.Existing<NetworkLockState>() is not { Table: { } table } st) return;
        st.Table = null;
        try
        {
            if (NetfilterCalls.DeleteTable(table)) s.Log.Info($"nf_tables table inet {table} removed: the connections take packets again");
            else s.Log.Info($"no nf_tables table inet {table} here (the checkpoint was taken on another machine, or it could not hold the connections)");
        }
        catch (SyscallException e)
        {
            s.Log.Error($"cannot remove the nf_tables table inet {table} that held the connections: {e.Message}; remove it with 'nft delete table inet {table}'");
        }
    }

    public static void VerifyConnections(CheckpointSession s)
    {
        if (s.Existing<Repaired>() is not { } r) return;
        foreach (var c in r.Fds)
        {
            // the other end of the connection, when the tree holds it
            var peer = r.Fds.FirstOrDefault(o => o.Local.AsSpan().SequenceEqual(c.Peer) && o.Peer.AsSpan().SequenceEqual(c.Local));
            // an end saved with more received than its peer in the tree was saved as having sent (read
            // after the peer sent more, without the hold): its acknowledgements would be beyond anything
            // the restarted peer sent, which ignores them, and the connection would stall
            if (peer != null && (int)(c.RecvEnd - peer.SendNext) > 0)
                throw new NotCheckpointableException(c.Pid, $"{c.What} was read after its peer in the tree ({peer.What}) sent it {c.RecvEnd - peer.SendNext} more bytes; checkpoint again (the tree goes on)");
            int now = 0;
            if (EventCalls.Ioctl(c.Fd, EventCalls.FIONREAD, &now) != 0 || now == c.Inq) continue;
            // the peer is a connection of the tree whose saved send queue still holds what came since
            // (what it had acknowledged is no later than what this end saved): it sends it again after the
            // restart, as it would after a lost segment
            if (peer != null && (int)(c.RecvEnd - peer.SendStart) >= 0)
            {
                s.Log.Debug($"{c.What} received {now - c.Inq} more bytes while it was being checkpointed, which its peer in the tree ({peer.What}) sends again");
                continue;
            }
            throw new NotCheckpointableException(c.Pid, $"{c.What} received {now - c.Inq} more bytes while it was being checkpointed; checkpoint again (the tree goes on)");
        }
    }

    /// <summary>
    /// At the end of a checkpoint: connections read in repair mode leave it (no window probe), unless
    /// the processes were killed: then they are closed in repair mode, which sends nothing to the peer.
    /// </summary>
    public static void EndCheckpoint(CheckpointSession s, bool killed)
    {
        if (s.Existing<Repaired>() is not { } r) return;
        foreach (var (fd, _, what, reuse, _, _) in r.Fds)
        {
            if (!killed)
            {
                int off = TCP_REPAIR_OFF_NO_WP, on = 1;
                if (SocketCalls.SetSockOpt(fd, IPPROTO_TCP, TCP_REPAIR, &off, 4) != 0)
                    s.Log.Info($"{what} could not leave repair mode: {Errors.Describe(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}");
                else if (reuse && SocketCalls.SetSockOpt(fd, SocketCalls.SOL_SOCKET, SO_REUSEADDR, &on, 4) != 0)
                    s.Log.Info($"{what}: SO_REUSEADDR could not be set again after repair mode: {Errors.Describe(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}");
            }
            FileCalls.Close(fd);
        }
        r.Fds.Clear();
    }

    /// <summary>
    /// The datagrams queued in a UDP socket, with their sources, read without being consumed: MSG_PEEK
    /// from offset 0 with SO_PEEK_OFF (each peek moves the offset past the datagram it returned), on ckpt's
    /// copy; the socket's own SO_PEEK_OFF is put back.
    /// </summary>
    private static List<(byte[] Source, byte[] Data)> PeekDatagrams(int fd, int pid, string what)
    {
        var list = new List<(byte[], byte[])>();
        int old = SocketCalls.GetInt(fd, SocketCalls.SOL_SOCKET, SocketCalls.SO_PEEK_OFF, "SO_PEEK_OFF", pid);
        int zero = 0;
        if (SocketCalls.SetSockOpt(fd, SocketCalls.SOL_SOCKET, SocketCalls.SO_PEEK_OFF, &zero, 4) != 0)
            throw new NotCheckpointableException(pid, $"{what} has datagrams queued, which this kernel does not let ckpt read without consuming them (SO_PEEK_OFF)");
        try
        {
            var buf = new byte[65536];
            byte* name = stackalloc byte[128];
            long total = 0;
            fixed (byte* b = buf)
                while (true)
                {
                    var iov = new SocketCalls.IoVec { Base = b, Len = (nuint)buf.Length };
                    var mh = new SocketCalls.MsgHdr { Name = name, NameLen = 128, Iov = &iov, IovLen = 1 };
                    nint n = SocketCalls.RecvMsg(fd, &mh, SocketCalls.MSG_PEEK | SocketCalls.MSG_DONTWAIT);
                    if (n < 0)
                    {
                        int e = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
                        if (e == 11 /* EAGAIN */) break;
                        throw new SyscallException("recvmsg(MSG_PEEK)", e, pid, what);
                    }
                    list.Add((new ReadOnlySpan<byte>(name, Math.Min(mh.NameLen, 128)).ToArray(), buf.AsSpan(0, (int)n).ToArray()));
                    total += n;
                    if (total > MaxQueue || list.Count > 1 << 20) throw new NotCheckpointableException(pid, $"{what} holds more than {MaxQueue >> 20} MiB of datagrams");
                }
        }
        finally { SocketCalls.SetSockOpt(fd, SocketCalls.SOL_SOCKET, SocketCalls.SO_PEEK_OFF, &old, 4); }
        return list;
    }

    /// <summary>
    /// Puts datagrams back in a restored UDP socket's queue as they arrived: each sent to the socket's
    /// address from its original source address and port, through a raw socket of ckpt (the source may
    /// be another host, or a port a socket of the tree holds).
    /// </summary>
    private static void InjectDatagrams(byte[] local, List<(byte[] Source, byte[] Data)> datagrams, string what)
    {
        int family = BinaryPrimitives.ReadUInt16LittleEndian(local);
        ushort dport = BinaryPrimitives.ReadUInt16BigEndian(local.AsSpan(2));
        int raw4 = -1, raw6 = -1;
        try
        {
            foreach (var (src, data) in datagrams)
            {
                int sfamily = src.Length >= 2 ? BinaryPrimitives.ReadUInt16LittleEndian(src) : 0;
                ushort sport = src.Length >= 4 ? BinaryPrimitives.ReadUInt16BigEndian(src.AsSpan(2)) : (ushort)0;
                byte[]? s4 = null, d4 = null, s6 = null, d6 = null;
                if (sfamily == SocketCalls.AF_INET && src.Length >= 8) s4 = src.AsSpan(4, 4).ToArray();
                else if (sfamily == SocketCalls.AF_INET6 && src.Length >= 24)
                {
                    var a = src.AsSpan(8, 16);
                    if (a[..10].IndexOfAnyExcept((byte)0) < 0 && a[10] == 0xff && a[11] == 0xff) s4 = a[12..].ToArray();   // v4-mapped
                    else s6 = a.ToArray();
                }
                else throw new CkptException($"restart: a datagram queued in the {what} has a source of family {sfamily}", ExitCodes.RestoreConflict);
                if (s4 != null)
                {
                    d4 = family == SocketCalls.AF_INET ? local.AsSpan(4, 4).ToArray() : (local.AsSpan(8, 16).ToArray() is var l6 && l6.AsSpan(0, 10).IndexOfAnyExcept((byte)0) < 0 && l6[10] == 0xff ? l6[12..] : [0, 0, 0, 0]);
                    if (d4.AsSpan().IndexOfAnyExcept((byte)0) < 0) d4 = [127, 0, 0, 1];
                    if (raw4 < 0 && (raw4 = SocketCalls.Socket(SocketCalls.AF_INET, SocketCalls.SOCK_RAW | SocketCalls.SOCK_CLOEXEC, 255 /* IPPROTO_RAW */)) < 0)
                        throw SyscallException.Last("socket(AF_INET, SOCK_RAW)", 0, what);
                    SendRaw4(raw4, s4, sport, d4, dport, data, what);
                }
                else
                {
                    d6 = local.AsSpan(8, 16).ToArray();
                    if (d6.AsSpan().IndexOfAnyExcept((byte)0) < 0) { d6 = new byte[16]; d6[15] = 1; }
                    if (raw6 < 0 && (raw6 = SocketCalls.Socket(SocketCalls.AF_INET6, SocketCalls.SOCK_RAW | SocketCalls.SOCK_CLOEXEC, 255 /* IPPROTO_RAW */)) < 0)
                        throw SyscallException.Last("socket(AF_INET6, SOCK_RAW)", 0, what);
                    SendRaw6(raw6, s6!, sport, d6, dport, data, what);
                }
            }
        }
        finally
        {
            if (raw4 >= 0) FileCalls.Close(raw4);
            if (raw6 >= 0) FileCalls.Close(raw6);
        }
    }

    private static void SendRaw4(int raw, byte[] src, ushort sport, byte[] dst, ushort dport, byte[] data, string what)
    {
        var pkt = new byte[28 + data.Length];
        pkt[0] = 0x45; pkt[8] = 64; pkt[9] = 17;
        BinaryPrimitives.WriteUInt16BigEndian(pkt.AsSpan(2), (ushort)pkt.Length);
        src.CopyTo(pkt, 12); dst.CopyTo(pkt, 16);
        BinaryPrimitives.WriteUInt16BigEndian(pkt.AsSpan(20), sport);
        BinaryPrimitives.WriteUInt16BigEndian(pkt.AsSpan(22), dport);
        BinaryPrimitives.WriteUInt16BigEndian(pkt.AsSpan(24), (ushort)(8 + data.Length));
        data.CopyTo(pkt, 28);   // UDP checksum 0: none (allowed over IPv4)
        var to = new byte[16];
        BinaryPrimitives.WriteUInt16LittleEndian(to, SocketCalls.AF_INET);
        dst.CopyTo(to, 4);
        Send(raw, pkt, to, what);
    }

    private static void SendRaw6(int raw, byte[] src, ushort sport, byte[] dst, ushort dport, byte[] data, string what)
    {
        var pkt = new byte[48 + data.Length];
        pkt[0] = 0x60; pkt[6] = 17; pkt[7] = 64;
        BinaryPrimitives.WriteUInt16BigEndian(pkt.AsSpan(4), (ushort)(8 + data.Length));
        src.CopyTo(pkt, 8); dst.CopyTo(pkt, 24);
        BinaryPrimitives.WriteUInt16BigEndian(pkt.AsSpan(40), sport);
        BinaryPrimitives.WriteUInt16BigEndian(pkt.AsSpan(42), dport);
        BinaryPrimitives.WriteUInt16BigEndian(pkt.AsSpan(44), (ushort)(8 + data.Length));
        data.CopyTo(pkt, 48);
        // the UDP checksum is mandatory over IPv6: pseudo-header (addresses, length, next header) + UDP
        ulong sum = 0;
        for (int i = 8; i < 40; i += 2) sum += BinaryPrimitives.ReadUInt16BigEndian(pkt.AsSpan(i));
        sum += (ulong)(8 + data.Length) + 17;
        for (int i = 40; i < pkt.Length; i += 2) sum += i + 1 < pkt.Length ? BinaryPrimitives.ReadUInt16BigEndian(pkt.AsSpan(i)) : (ulong)(pkt[i] << 8);
        while (sum >> 16 != 0) sum = (sum & 0xffff) + (sum >> 16);
        ushort check = (ushort)~sum;
        BinaryPrimitives.WriteUInt16BigEndian(pkt.AsSpan(46), check == 0 ? (ushort)0xffff : check);
        var to = new byte[28];
        BinaryPrimitives.WriteUInt16LittleEndian(to, SocketCalls.AF_INET6);
        dst.CopyTo(to, 8);
        Send(raw, pkt, to, what);
    }

    private static void Send(int raw, byte[] pkt, byte[] to, string what)
    {
        fixed (byte* p = pkt)
        fixed (byte* t = to)
            if (SocketCalls.SendTo(raw, p, (nuint)pkt.Length, 0, t, to.Length) != pkt.Length)
                throw SyscallException.Last("sendto (raw: a queued datagram put back)", 0, what);
    }

    /// <summary>Whether an empty datagram is queued (FIONREAD says 0 for it).</summary>
    private static bool Pending(int fd)
    {
        byte b;
        return SocketCalls.Recv(fd, &b, 0, SocketCalls.MSG_PEEK | SocketCalls.MSG_DONTWAIT) >= 0;
    }

    /// <summary>The socket's own address or its peer's (null: not connected).</summary>
    /// <summary>
    /// A TCP connection that had ended (state CLOSE, its addresses kept: SO_PEERNAME and getsockname give
    /// them, reads give 0, writes fail): on ckpt's copy in repair mode, bound to its address (repair mode
    /// forces the reuse; <paramref name="freebind"/>, set by Restore for an address this machine does not
    /// have, is cleared after the bind) and connected to its peer without a handshake, then ended by SOCK_DESTROY, whose
    /// ECONNABORTED is taken off (SO_ERROR). Its send sequence is set far from anything the peer expects
    /// (the end sends a reset, which the peer drops; the network lock drops it too).
    /// </summary>
    private static void ClosedWithPeer(RestoreContext ctx, int fd, byte[] local, byte[] peer, string what, (int Level, int Name)? freebind)
    {
        int mine = ctx.GrabFd(fd);
        try
        {
            SocketCalls.SetInt(mine, IPPROTO_TCP, TCP_REPAIR, 1, "TCP_REPAIR", ctx.Pid, what);
            SocketCalls.SetInt(mine, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE", ctx.Pid, what);
            SocketCalls.SetInt(mine, IPPROTO_TCP, TCP_QUEUE_SEQ, Random.Shared.Next(), "TCP_QUEUE_SEQ", ctx.Pid, what);
            fixed (byte* l = local)
                if (SocketCalls.Bind(mine, l, local.Length) != 0) throw SyscallException.Last("bind (a TCP connection that had ended)", ctx.Pid, what);
            // (an address this machine does not have: IP_FREEBIND, set for the bind by Restore, is cleared now)
            if (freebind is { } fb) SocketCalls.SetInt(mine, fb.Level, fb.Name, 0, "IP_FREEBIND", ctx.Pid, what);
            fixed (byte* p = peer)
                if (SocketCalls.Connect(mine, p, peer.Length) != 0) throw SyscallException.Last($"connect (repair mode) to {Show(peer)}", ctx.Pid, what);
            try { SocketCalls.DestroyTcp(local, peer); }
            catch (SyscallException e)
            {
                throw new CkptException($"restart: the {what} (a connection to {Show(peer)} that had ended) cannot be ended again: {e.Message} (the kernel needs CONFIG_INET_DIAG_DESTROY)", ExitCodes.RestoreConflict);
            }
            SocketCalls.SetInt(mine, IPPROTO_TCP, TCP_REPAIR, 0, "TCP_REPAIR", ctx.Pid, what);
            SocketCalls.GetInt(mine, SocketCalls.SOL_SOCKET, 4 /* SO_ERROR */, "SO_ERROR", ctx.Pid, what);
        }
        finally { FileCalls.Close(mine); }
    }

    /// <summary>The peer address SO_PEERNAME gives (a TCP socket whose connection ended keeps it), or null.</summary>
    private static byte[]? PeerName(int fd, int domain)
    {
        byte* a = stackalloc byte[128];
        int len = domain == SocketCalls.AF_INET6 ? 28 : 16;   // (a buffer longer than the address is refused: EINVAL)
        if (SocketCalls.GetSockOpt(fd, SocketCalls.SOL_SOCKET, 28 /* SO_PEERNAME */, a, &len) != 0 || len < 8) return null;
        var addr = new ReadOnlySpan<byte>(a, Math.Min(len, 128)).ToArray();
        return HasAddress(addr) || addr.AsSpan(2, 2).ContainsAnyExcept((byte)0) ? addr : null;
    }

    private static byte[]? Address(int fd, bool peer)
    {
        byte* a = stackalloc byte[128];
        int len = 128;
        if ((peer ? SocketCalls.GetPeerName(fd, a, &len) : SocketCalls.GetSockName(fd, a, &len)) != 0) return null;
        return new ReadOnlySpan<byte>(a, Math.Min(len, 128)).ToArray();
    }

    /// <summary>The options of <see cref="Options"/> whose value differs from a fresh socket's of the same kind.</summary>
    private static List<(int Level, int Name, byte[] Value)> ChangedOptions(int fd, int domain, int type, int protocol, int pid)
        => ChangedOptions(fd, domain, type, protocol & (RawProtocol - 1), pid, Options.Where(o => o.Applies(domain, protocol)).Select(o => (o.Level, o.Name, o.Size)));

    /// <summary>The options of <paramref name="list"/> (at most 32 bytes each) whose value differs from a fresh socket's of the same kind.</summary>
    internal static List<(int Level, int Name, byte[] Value)> ChangedOptions(int fd, int domain, int type, int protocol, int pid, IEnumerable<(int Level, int Name, int Size)> list)
    {
        var changed = new List<(int, int, byte[])>();
        var defaults = Defaults(domain, type, protocol, pid, list);
        byte* a = stackalloc byte[32];
        foreach (var (level, name, size) in list)
        {
            int la = size;
            new Span<byte>(a, 32).Clear();
            if (SocketCalls.GetSockOpt(fd, level, name, a, &la) != 0) continue;   // not readable on this kernel
            var value = new ReadOnlySpan<byte>(a, la);
            if (defaults.TryGetValue((level, name), out var d) && d != null && value.SequenceEqual(d)) continue;
            changed.Add((level, name, value.ToArray()));
        }
        return changed;
    }

    /// <summary>The option values of a fresh socket of this kind (null: not readable), read once per kind and kept for the other sockets.</summary>
    private static Dictionary<(int Level, int Name), byte[]?> Defaults(int domain, int type, int protocol, int pid, IEnumerable<(int Level, int Name, int Size)> list)
    {
        lock (s_defaults)
        {
            if (s_defaults.TryGetValue((domain, type, protocol), out var known)) return known;
            var values = new Dictionary<(int, int), byte[]?>();
            int fresh = SocketCalls.Socket(domain, type | SocketCalls.SOCK_CLOEXEC, protocol);
            // (an ICMP echo socket ckpt's group may not make, net.ipv4.ping_group_range: every option is saved)
            if (fresh < 0 && Marshal.GetLastPInvokeError() == Errors.EACCES) return s_defaults[(domain, type, protocol)] = new();
            if (fresh < 0) throw SyscallException.Last("socket (a fresh one, to compare options with)", pid);
            try
            {
                byte* b = stackalloc byte[32];
                foreach (var (level, name, size) in list)
                {
                    int lb = size;
                    new Span<byte>(b, 32).Clear();
                    values[(level, name)] = SocketCalls.GetSockOpt(fresh, level, name, b, &lb) == 0 ? new ReadOnlySpan<byte>(b, lb).ToArray() : null;
                }
            }
            finally { FileCalls.Close(fresh); }
            return s_defaults[(domain, type, protocol)] = values;
        }
    }
    private static readonly Dictionary<(int Domain, int Type, int Protocol), Dictionary<(int Level, int Name), byte[]?>> s_defaults = new();

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        if (rec.Kind == RecordKind.NetworkLock)
        {
            ctx.Session.State<NetworkLockState>().Table = r.Str();
            r.End();
            return;
        }
        uint objref = r.U32(); int flags = r.I32(), domain = r.I32(), type = r.I32(), protocol = r.I32();
        var state = (State)r.U8(); int backlog = r.I32();
        byte[] local = r.Bytes().ToArray(), peer = r.Bytes().ToArray();
        uint n = r.U32();
        var options = new List<(int Level, int Name, byte[] Value)>();
        for (uint i = 0; i < n; i++) options.Add((r.I32(), r.I32(), r.Bytes().ToArray()));
        if (domain is not (SocketCalls.AF_INET or SocketCalls.AF_INET6) || state > State.Opening || local.Length > 128 || peer.Length > 128
            || state is State.Established or State.Closed or State.Opening && type != SocketCalls.SOCK_STREAM
            || state == State.Opening && (peer.Length == 0 || !HasAddress(local)))
            throw new ImageFormatException($"InetSocket record at offset {rec.Offset} is not a TCP, UDP or raw socket this tool can rebuild");
        if (state == State.Established)
        {
            RestoreConnection(ctx, rec, ref r, objref, flags, domain, protocol, local, peer, options);
            return;
        }
        var datagrams = new List<(byte[] Source, byte[] Data)>();
        if (type == SocketCalls.SOCK_DGRAM)
            for (uint i = 0, nd = r.U32(); i < nd; i++) datagrams.Add((r.Bytes().ToArray(), r.Bytes().ToArray()));
        var groups = new List<(string Iface, byte[] Filter)>();
        if (type == SocketCalls.SOCK_DGRAM && !r.AtEnd)
            for (uint i = 0, ng = r.U32(); i < ng; i++)
            {
                string iface = r.Str(); byte[] filter = r.Bytes().ToArray();
                if (filter.Length < GroupFilterHead) throw new ImageFormatException($"InetSocket record at offset {rec.Offset}: a multicast group of {filter.Length} bytes");
                groups.Add((iface, filter));
            }
        int shutdown = type == SocketCalls.SOCK_DGRAM && !r.AtEnd ? r.U8() : 0;
        bool sharedPort = type == SocketCalls.SOCK_STREAM && !r.AtEnd && r.Bool();
        r.End();
        if (shutdown > 3) throw new ImageFormatException($"InetSocket record at offset {rec.Offset}: shutdown state {shutdown}");
        if (datagrams.Count > 0 && !HasAddress(local))
            throw new ImageFormatException($"InetSocket record at offset {rec.Offset}: datagrams queued in an unbound socket");
        bool icmp = type == SocketCalls.SOCK_DGRAM && protocol is IPPROTO_ICMP or IPPROTO_ICMPV6;
        string what = $"{(type == SocketCalls.SOCK_STREAM ? "TCP" : type == SOCK_RAW ? $"raw (protocol {protocol})" : icmp ? "ICMP echo" : "UDP")} socket {Show(local)}";
        // (a connection being opened: its connect must not wait, O_NONBLOCK until it was made)
        bool opening = state == State.Opening;
        long made = ctx.Vessel.Inject(Nr.socket, domain, SocketCalls.TypeFor(type, opening ? flags | FileCalls.O_NONBLOCK : flags), protocol);
        if (made == -Errors.EACCES && icmp)
            throw new CkptException($"restart: cannot make the {what} again: this machine's net.ipv4.ping_group_range does not include the group ckpt runs as (sysctl net.ipv4.ping_group_range='0 2147483647' allows every group)", ExitCodes.RestoreConflict);
        if (made < 0) throw new SyscallException("socket (injected)", (int)-made, ctx.Pid, what);
        int fd = (int)made;
        ctx.Files.SetRestored(objref, fd);
        var batch = ctx.Batch;
        batch.Reserve(options.Count + 2, options.Sum(o => o.Value.Length + 8) + local.Length + peer.Length + 16);
        foreach (var (level, name, value) in options)
        {
            var v = Settable(level, name, value);
            batch.Add(Nr.setsockopt, fd, level, name, (long)batch.AddData(v), v.Length, check: got => { if (got < 0) OptionFailed(ctx, level, name, got, what); });
        }
        // an address this machine does not have: the original was bound with IP_FREEBIND (cleared since, or
        // it would be among the options): set for the bind, and put back after
        (int Level, int Name)? freebind = null;
        if (HasAddress(local) && !NonLocalBindAllowed(options, domain) && !AddressIsLocal(domain, local))
        {
            freebind = domain == SocketCalls.AF_INET6 ? (IPPROTO_IPV6, 78) : (IPPROTO_IP, 15);
            batch.AddChecked("setsockopt(IP_FREEBIND)", Nr.setsockopt, fd, freebind.Value.Level, freebind.Value.Name, (long)batch.AddData(BitConverter.GetBytes(1)), 4);
        }
        // a port shared with another socket of the tree: SO_REUSEPORT for the bind (and the listen, which
        // checks again); the saved value is put back in Finish, once every socket is bound
        bool reuseportForBind = sharedPort && !options.Any(o => (o.Level, o.Name) == (SocketCalls.SOL_SOCKET, 15) && o.Value.AsSpan().ContainsAnyExcept((byte)0));
        if (reuseportForBind)
            batch.AddChecked("setsockopt(SO_REUSEPORT)", Nr.setsockopt, fd, SocketCalls.SOL_SOCKET, 15, (long)batch.AddData(BitConverter.GetBytes(1)), 4);
        // a connection that ended with its addresses: made by ckpt (ClosedWithPeer), not bound here
        bool closedWithPeer = state == State.Closed && peer.Length > 0;
        if (HasAddress(local) && !closedWithPeer)
            batch.Add(Nr.bind, fd, (long)batch.AddData(local), local.Length, stopOnError: true, check: got =>
            {
                if (got < 0) throw new CkptException($"restart: cannot bind the {what} again: {Errors.Describe((int)-got)}{(got == -SocketCalls.EADDRINUSE ? " (the address is in use: is the checkpointed process, or another one, still holding it?)" : "")}", ExitCodes.RestoreConflict);
            });
        if (freebind is { } fb && !closedWithPeer)
            batch.AddChecked("setsockopt(IP_FREEBIND)", Nr.setsockopt, fd, fb.Level, fb.Name, (long)batch.AddData(BitConverter.GetBytes(0)), 4);
        if (state == State.Listening) batch.AddChecked($"listen of the {what}", Nr.listen, fd, backlog);
        // on a socket never connected, shutdown fails with ENOTCONN but still marks both directions shut
        else if (state == State.Closed && !closedWithPeer) batch.Add(Nr.shutdown, fd, 2 /* SHUT_RDWR */);
        else if (state == State.Connected) batch.AddChecked($"connect of the {what} to {Show(peer)}", Nr.connect, fd, (long)batch.AddData(peer), peer.Length);
        else if (opening)
        {
            // the SYN goes out now; an error at once (no route from this machine) leaves it unconnected, and
            // the program's connect, restarted, tries again
            batch.Add(Nr.connect, fd, (long)batch.AddData(peer), peer.Length, check: got =>
            {
                if (got < 0 && got != -EINPROGRESS) ctx.Log.Info($"pid {ctx.Pid} fd {fd}: the {what} being opened to {Show(peer)} could not be opened again: {Errors.Describe((int)-got)}");
            });
            if ((flags & FileCalls.O_NONBLOCK) == 0) batch.AddChecked("fcntl(F_SETFL)", Nr.fcntl, fd, 4 /* F_SETFL */, 0);
        }
        batch.Flush();
        if (closedWithPeer) ClosedWithPeer(ctx, fd, local, peer, what, freebind);
        if (reuseportForBind) ctx.Session.State<ReuseportAfterBind>().Fds.Add(ctx.Session.Own(ctx.GrabFd(fd)));
        if (groups.Count > 0) JoinGroups(ctx, fd, domain, groups, what);
        if (datagrams.Count > 0)
        {
            InjectDatagrams(local, datagrams, what);
            ctx.Log.Debug($"pid {ctx.Pid} fd {fd}: {datagrams.Count} datagram(s) put back in the {what}");
        }
        // after the datagrams: SHUT_RD, SHUT_WR or SHUT_RDWR (an unconnected socket says ENOTCONN but is shut all the same)
        if (shutdown != 0)
        {
            long rc = ctx.Vessel.Inject(Nr.shutdown, fd, shutdown - 1);
            if (rc < 0 && rc != -107 /* ENOTCONN */) throw new SyscallException($"shutdown({shutdown - 1}) (injected)", (int)-rc, ctx.Pid, what);
        }
    }

    private const int SO_REUSEADDR = 2, SO_SNDTIMEO = 21;

    /// <summary>Sockets given SO_REUSEPORT for their bind only (ckpt's copies): cleared in Finish, once every socket is bound.</summary>
    private sealed class ReuseportAfterBind { public readonly List<int> Fds = new(); }

    /// <summary>Connections rebuilt in repair mode: ckpt's copies, which leave repair mode in Finish; Unsent: the tail of the send queue to send once out of it.</summary>
    private sealed class Repairing { public readonly List<(int Fd, string What, byte Fins, bool Reuse, byte[] Unsent)> Fds = new(); }

    /// <summary>
    /// An established connection: created in the process, then rebuilt by ckpt on its own copy in
    /// repair mode (no packet is sent): sequence numbers, bind and connect (no handshake), the TCP
    /// options, both queues (the send queue counts as sent and unacknowledged: it is retransmitted if the
    /// peer did not have it), the window. It leaves repair mode in <see cref="Finish"/>.
    /// </summary>
    private static void RestoreConnection(RestoreContext ctx, Record rec, ref PayloadReader r, uint objref, int flags, int domain, int protocol,
        byte[] local, byte[] peer, List<(int Level, int Name, byte[] Value)> options)
    {
        uint sendSeq = r.U32(), recvSeq = r.U32();
        int mss = r.I32();
        byte tcpOptions = r.U8(), sndScale = r.U8(), rcvScale = r.U8();
        int timestamp = r.I32();
        byte[] window = r.Raw(20).ToArray();
        byte[] sendQueue = r.Bytes().ToArray(), recvQueue = r.Bytes().ToArray();
        byte fins = r.U8();
        uint unsent = r.AtEnd ? 0 : r.U32();
        r.End();
        if ((fins & ~(FinSent | FinReceived | ReadsShut)) != 0 || (fins & (FinReceived | ReadsShut)) == (FinReceived | ReadsShut))
            throw new ImageFormatException($"InetSocket record at offset {rec.Offset}: FIN flags 0x{fins:x}");
        if (unsent > sendQueue.Length) throw new ImageFormatException($"InetSocket record at offset {rec.Offset}: {unsent} bytes not sent of a send queue of {sendQueue.Length}");
        string what = $"TCP connection {Show(local)} -> {Show(peer)}";
        int fd = (int)ctx.Inject("socket", Nr.socket, domain, SocketCalls.TypeFor(SocketCalls.SOCK_STREAM, flags), protocol);
        ctx.Files.SetRestored(objref, fd);
        int mine = ctx.GrabFd(fd);
        bool reuse = options.Any(o => o.Level == SocketCalls.SOL_SOCKET && o.Name == SO_REUSEADDR && o.Value.AsSpan().ContainsAnyExcept((byte)0));
        // what was not sent yet is sent once out of repair mode, as any data the program writes: in repair
        // mode it would count as sent, and only ever go out retransmitted, one segment per timeout (the
        // timeouts growing from round-trip times measured against the restart's moment: a connection to a
        // peer that had stopped reading stalled for good)
        byte[] tail = sendQueue[(sendQueue.Length - (int)unsent)..];
        sendQueue = sendQueue[..(sendQueue.Length - (int)unsent)];
        ctx.Session.State<Repairing>().Fds.Add((mine, what, fins, reuse, tail));
        int pid = ctx.Pid;
        SocketCalls.SetInt(mine, IPPROTO_TCP, TCP_REPAIR, 1, "TCP_REPAIR", pid, what);
        SocketCalls.SetInt(mine, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE", pid, what);
        SocketCalls.SetInt(mine, IPPROTO_TCP, TCP_QUEUE_SEQ, (int)sendSeq, "TCP_QUEUE_SEQ", pid, what);
        SocketCalls.SetInt(mine, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE", pid, what);
        SocketCalls.SetInt(mine, IPPROTO_TCP, TCP_QUEUE_SEQ, (int)recvSeq, "TCP_QUEUE_SEQ", pid, what);
        fixed (byte* a = local)
            if (SocketCalls.Bind(mine, a, local.Length) != 0) throw SyscallException.Last("bind", pid, what);
        // the segment size as the program's own clamp before connect, which sizes the segments from it: the
        // clamp TCP_REPAIR_OPTIONS sets after connect does not size them again, and a connection went on
        // with the 524-byte segments of the default clamp (a clamp counts the timestamp option, the size
        // saved does not; TCP_MAXSEG takes at most 32767, so loopback's 64 KiB segments come back halved)
        int clamp = Math.Min(mss + ((tcpOptions & TCPI_OPT_TIMESTAMPS) != 0 ? TcpTimestampOptionBytes : 0), MaxUserMss);
        if (clamp >= MinUserMss) SocketCalls.SetInt(mine, IPPROTO_TCP, TCP_MAXSEG, clamp, "TCP_MAXSEG", pid, what);
        fixed (byte* a = peer)
            if (SocketCalls.Connect(mine, a, peer.Length) != 0) throw SyscallException.Last("connect (repair mode)", pid, what);
        // (and no clamp of the program's any more, as before)
        if (clamp >= MinUserMss) SocketCalls.SetInt(mine, IPPROTO_TCP, TCP_MAXSEG, 0, "TCP_MAXSEG", pid, what);
        // the socket options after bind: SO_REUSEADDR would take back the forced reuse of repair mode
        foreach (var (level, name, value) in options)
        {
            byte[] set = Settable(level, name, value);
            fixed (byte* sv = set)
                if (SocketCalls.SetSockOpt(mine, level, name, sv, set.Length) != 0)
                    OptionFailed(ctx, level, name, -Marshal.GetLastPInvokeError(), what);
        }
        // options the peers agreed on at the handshake
        var opts = new List<(uint Code, uint Value)> { (TCPOPT_MSS, (uint)mss) };
        if ((tcpOptions & TCPI_OPT_WSCALE) != 0) opts.Add((TCPOPT_WINDOW, sndScale | ((uint)rcvScale << 16)));
        if ((tcpOptions & TCPI_OPT_SACK) != 0) opts.Add((TCPOPT_SACK_PERM, 0));
        if ((tcpOptions & TCPI_OPT_TIMESTAMPS) != 0) opts.Add((TCPOPT_TIMESTAMP, 0));
        var raw = new uint[opts.Count * 2];
        for (int i = 0; i < opts.Count; i++) { raw[2 * i] = opts[i].Code; raw[2 * i + 1] = opts[i].Value; }
        fixed (uint* o = raw)
            if (SocketCalls.SetSockOpt(mine, IPPROTO_TCP, TCP_REPAIR_OPTIONS, o, raw.Length * 4) != 0) throw SyscallException.Last("setsockopt(TCP_REPAIR_OPTIONS)", pid, what);
        if ((tcpOptions & TCPI_OPT_TIMESTAMPS) != 0) SocketCalls.SetInt(mine, IPPROTO_TCP, TCP_TIMESTAMP, timestamp, "TCP_TIMESTAMP", pid, what);
        SendQueue(mine, TCP_RECV_QUEUE, recvQueue, pid, what);
        SendQueue(mine, TCP_SEND_QUEUE, sendQueue, pid, what);
        // the window was saved with rcv_nxt past the peer's FIN (when one was received): the kernel wants
        // rcv_wup and snd_wl1 no later than the rcv_nxt rebuilt here (the FIN comes back with shutdown)
        uint rcvNxt = recvSeq + (uint)recvQueue.Length;
        uint wl1 = BinaryPrimitives.ReadUInt32LittleEndian(window), rcvWnd = BinaryPrimitives.ReadUInt32LittleEndian(window.AsSpan(12)), wup = BinaryPrimitives.ReadUInt32LittleEndian(window.AsSpan(16));
        if ((int)(wup - rcvNxt) > 0) BinaryPrimitives.WriteUInt32LittleEndian(window.AsSpan(16), rcvNxt);
        if ((int)(wl1 - (rcvNxt + rcvWnd)) > 0) BinaryPrimitives.WriteUInt32LittleEndian(window, rcvNxt);
        fixed (byte* w = window)
            if (SocketCalls.SetSockOpt(mine, IPPROTO_TCP, TCP_REPAIR_WINDOW, w, 20) != 0) throw SyscallException.Last("setsockopt(TCP_REPAIR_WINDOW)", pid, what);
        ctx.Log.Debug($"pid {pid} fd {fd}: {what} rebuilt in repair mode ({recvQueue.Length} bytes received, {sendQueue.Length} to send)");
    }

    /// <summary>Fills a queue in repair mode: what is sent goes into the selected queue, not to the network.</summary>
    private static void SendQueue(int fd, int queue, byte[] data, int pid, string what)
    {
        if (data.Length == 0) return;
        SocketCalls.SetInt(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, queue, "TCP_REPAIR_QUEUE", pid, what);
        // a full buffer makes send wait for the peer to acknowledge (a peer that is alive sends again what
        // it did not get, and acknowledges); a peer rebuilt by this restart is in repair mode too and never
        // does: after a second without progress the buffer is raised for the rest of the queue (the original's
        // may have grown by autotuning, and each piece costs more than its bytes), and put back once it is in
        bool send = queue == TCP_SEND_QUEUE;
        long* timeo = stackalloc long[2];
        int tl = 16;
        if (SocketCalls.GetSockOpt(fd, SocketCalls.SOL_SOCKET, SO_SNDTIMEO, timeo, &tl) != 0) throw SyscallException.Last("getsockopt(SO_SNDTIMEO)", pid, what);
        long* second = stackalloc long[2] { 1, 0 };
        if (SocketCalls.SetSockOpt(fd, SocketCalls.SOL_SOCKET, SO_SNDTIMEO, second, 16) != 0) throw SyscallException.Last("setsockopt(SO_SNDTIMEO)", pid, what);
        try { SendAll(fd, data, SocketCalls.MSG_NOSIGNAL, send, $"repair {(send ? "send" : "receive")} queue", pid, what); }
        finally { SocketCalls.SetSockOpt(fd, SocketCalls.SOL_SOCKET, SO_SNDTIMEO, timeo, 16); }
    }

    /// <summary>
    /// Sends all of <paramref name="data"/> with <paramref name="flags"/>, in pieces of 64 KiB (each becomes a
    /// buffer of its own in the queue). When the buffer (the send buffer, or with <paramref name="send"/>
    /// false the receive buffer a repair-mode send fills) has no room (EAGAIN, ENOMEM, ENOBUFS), it is raised once for
    /// the rest, and put back once everything is in.
    /// </summary>
    private static void SendAll(int fd, byte[] data, int flags, bool send, string queue, int pid, string what)
    {
        int size = send ? SO_SNDBUF : SO_RCVBUF, force = send ? SocketCalls.SO_SNDBUFFORCE : SocketCalls.SO_RCVBUFFORCE;
        string forceName = send ? "SO_SNDBUFFORCE" : "SO_RCVBUFFORCE";
        int before = -1;
        fixed (byte* d = data)
        {
            int done = 0;
            while (done < data.Length)
            {
                int len = Math.Min(data.Length - done, 64 << 10);
                nint n = SocketCalls.Send(fd, d + done, (nuint)len, flags);
                if (n < 0)
                {
                    int e = Marshal.GetLastPInvokeError();
                    if (e == Errors.EINTR) continue;
                    // (a repair-mode send into the receive queue reports a full buffer as ENOMEM, or as
                    // ENOBUFS when its buffer was allocated before the charge failed)
                    if (e is Errors.EAGAIN or 12 /* ENOMEM */ or 105 /* ENOBUFS */ && before < 0)
                    {
                        before = SocketCalls.GetInt(fd, SocketCalls.SOL_SOCKET, size, send ? "SO_SNDBUF" : "SO_RCVBUF", pid);
                        SocketCalls.SetInt(fd, SocketCalls.SOL_SOCKET, force, BufferFor(before, data.Length - done), forceName, pid, what);
                        continue;
                    }
                }
                if (n <= 0) throw SyscallException.Last($"send ({queue}, {done} of {data.Length} bytes in)", pid, what);
                done += (int)n;
            }
        }
        if (before >= 0) SocketCalls.SetInt(fd, SocketCalls.SOL_SOCKET, force, before / 2, forceName, pid, what);
    }

    /// <summary>Takes a rebuilt connection out of repair mode (<paramref name="mode"/>: with a window probe or without), and sets SO_REUSEADDR again, which leaving it clears.</summary>
    private static void LeaveRepair(int fd, int mode, bool reuse, int pid, string what)
    {
        SocketCalls.SetInt(fd, IPPROTO_TCP, TCP_REPAIR, mode, "TCP_REPAIR", pid, what);
        if (reuse) SocketCalls.SetInt(fd, SocketCalls.SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR", pid, what);
    }

    /// <summary>
    /// What to give SO_SNDBUFFORCE/SO_RCVBUFFORCE (which doubles it) for a buffer of <paramref name="before"/>
    /// bytes (as getsockopt reports it) to take <paramref name="remaining"/> more: each byte queued costs
    /// about twice its size in buffer accounting, plus 1 MiB to spare.
    /// </summary>
    private static int BufferFor(int before, int remaining)
        => (int)Math.Min(((long)before + 2L * remaining + (1 << 20)) / 2, int.MaxValue / 2);

    /// <summary>The value to give setsockopt: the buffer sizes halved (the kernel doubles what it is given, and reports the doubled value).</summary>
    internal static byte[] Settable(int level, int name, byte[] value)
    {
        if (level != SocketCalls.SOL_SOCKET || name is not (SO_SNDBUF or SO_RCVBUF) || value.Length != 4) return value;
        var v = (byte[])value.Clone();
        BinaryPrimitives.WriteInt32LittleEndian(v, BinaryPrimitives.ReadInt32LittleEndian(v) / 2);
        return v;
    }

    /// <summary>
    /// An option the kernel does not take back on this socket (EINVAL, ENOPROTOOPT: it does not apply to
    /// it in its rebuilt state) is logged; any other failure fails the restart.
    /// </summary>
    private static void OptionFailed(RestoreContext ctx, int level, int name, long err, string what)
    {
        string label = Options.FirstOrDefault(o => o.Level == level && o.Name == name).Label ?? $"option {level}/{name}";
        if (err is -22 or -92) { ctx.Log.Info($"pid {ctx.Pid} {what}: {label} not set again: {Errors.Describe((int)-err)}"); return; }
        throw new CkptException($"restart: cannot set {label} of the {what} (pid {ctx.Pid}): {Errors.Describe((int)-err)}", ExitCodes.RestoreConflict);
    }

    /// <summary>Whether a sockaddr_in/in6 names a port or an address (an unbound socket's is all zero).</summary>
    /// <summary>Whether the saved options already let the socket bind an address the machine does not have (IP_FREEBIND, IPV6_FREEBIND, IP_TRANSPARENT, IPV6_TRANSPARENT set).</summary>
    private static bool NonLocalBindAllowed(List<(int Level, int Name, byte[] Value)> options, int domain)
        => options.Any(o => (o.Level, o.Name) is (IPPROTO_IP, 15) or (IPPROTO_IPV6, 78) or (IPPROTO_IP, 19) or (IPPROTO_IPV6, 75) && o.Value.AsSpan().ContainsAnyExcept((byte)0));

    /// <summary>Whether this machine has the address of <paramref name="sockaddr"/> (a bind of a scratch UDP socket to it, port 0, succeeds).</summary>
    private static unsafe bool AddressIsLocal(int domain, byte[] sockaddr)
    {
        int probe = SocketCalls.Socket(domain, SocketCalls.SOCK_DGRAM | SocketCalls.SOCK_CLOEXEC, 0);
        if (probe < 0) return true;
        try
        {
            var a = (byte[])sockaddr.Clone();
            a[2] = a[3] = 0;   // port 0
            fixed (byte* p = a)
                return SocketCalls.Bind(probe, p, a.Length) == 0 || System.Runtime.InteropServices.Marshal.GetLastPInvokeError() != 99 /* EADDRNOTAVAIL */;
        }
        finally { FileCalls.Close(probe); }
    }

    private static bool HasAddress(byte[] a)
    {
        if (a.Length < 4) return false;
        return a.AsSpan(2).IndexOfAnyExcept((byte)0) >= 0;
    }

    /// <summary>An address as text: 127.0.0.1:8080, [::1]:8080, or "unbound".</summary>
    public static string Show(byte[]? a)
    {
        if (a == null || a.Length < 8) return "unbound";
        int port = BinaryPrimitives.ReadUInt16BigEndian(a.AsSpan(2));
        int family = BinaryPrimitives.ReadUInt16LittleEndian(a);
        if (family == SocketCalls.AF_INET && a.Length >= 8) return $"{new IPAddress(a.AsSpan(4, 4))}:{port}";
        if (family == SocketCalls.AF_INET6 && a.Length >= 24) return $"[{new IPAddress(a.AsSpan(8, 16))}]:{port}";
        return "unbound";
    }

    private static string TcpStateName(int s) => s switch
    {
        1 => "ESTABLISHED", 2 => "SYN_SENT", 3 => "SYN_RECV", 4 => "FIN_WAIT1", 5 => "FIN_WAIT2", 6 => "TIME_WAIT",
        7 => "CLOSE", 8 => "CLOSE_WAIT", 9 => "LAST_ACK", 10 => "LISTEN", 11 => "CLOSING", _ => $"#{s}",
    };

    /// <summary>
    /// Connections leave repair mode once every socket of the tree exists (without a window probe), the
    /// network lock goes, then each gets what it had not sent (and a window probe) and its FIN; ckpt drops its copies.
    /// </summary>
    public void Finish(RestoreContext ctx)
    {
        if (ctx.Session.Existing<ReuseportAfterBind>() is { Fds.Count: > 0 } rp)
        {
            foreach (int c in rp.Fds) SocketCalls.SetInt(c, SocketCalls.SOL_SOCKET, 15 /* SO_REUSEPORT */, 0, "SO_REUSEPORT", ctx.Pid);
            rp.Fds.Clear();
        }
        if (ctx.Session.Existing<Repairing>() is not { } r) { Unlock(ctx.Session); return; }
        try
        {
            foreach (var (fd, what, fins, reuse, _) in r.Fds)
            {
                LeaveRepair(fd, TCP_REPAIR_OFF_NO_WP, reuse, ctx.Pid, what);
                // a half-closed connection: the peer's FIN (reads end once the queue is read)
                if ((fins & (FinReceived | ReadsShut)) != 0 && SocketCalls.Shutdown(fd, SocketCalls.SHUT_RD) != 0) throw SyscallException.Last("shutdown(SHUT_RD)", ctx.Pid, what);
            }
            // the peers' packets go through again: what is sent now reaches them
            Unlock(ctx.Session);
            foreach (var (fd, what, fins, reuse, unsent) in r.Fds)
            {
                try { Resume(ctx, fd, what, fins, reuse, unsent); }
                catch (SyscallException e) when (e.Errno is Errors.ECONNRESET or Errors.EPIPE or Errors.ENOTCONN)
                {
                    // its peer reset it once its packets went through again (a peer that had gone meanwhile,
                    // or had been told the connection was gone): the program finds it reset, as it would have
                    ctx.Log.Info($"pid {ctx.Pid}: {what} was reset by its peer as it was restored ({e.Message}); the program finds it reset");
                }
            }
        }
        finally
        {
            foreach (var c in r.Fds) FileCalls.Close(c.Fd);
            r.Fds.Clear();
            Unlock(ctx.Session);
        }
    }

    /// <summary>A restored connection, out of repair mode with the peers' packets let through, sends what it had not sent yet, then its FIN if it had sent one.</summary>
    private static void Resume(RestoreContext ctx, int fd, string what, int fins, bool reuse, byte[] unsent)
    {
        // the part of the send queue that had not been sent, as data written anew (without waiting for the peer)
        SendAll(fd, unsent, SocketCalls.MSG_NOSIGNAL | SocketCalls.MSG_DONTWAIT, send: true, "the send queue not sent yet", ctx.Pid, what);
        // a window probe now that it reaches the peer (leaving repair mode sends one): the window
        // saved may be one the peer has opened since, its update lost while the connection was held,
        // and the timer of the probes that would ask again starts at a second and doubles
        if (unsent.Length > 0)
        {
            SocketCalls.SetInt(fd, IPPROTO_TCP, TCP_REPAIR, 1, "TCP_REPAIR", ctx.Pid, what);
            LeaveRepair(fd, TCP_REPAIR_OFF, reuse, ctx.Pid, what);
        }
        // our FIN, after the data (sent again at its sequence number when it had gone out: the peer
        // acknowledges it again or takes it now)
        if ((fins & FinSent) != 0 && SocketCalls.Shutdown(fd, SocketCalls.SHUT_WR) != 0) throw SyscallException.Last("shutdown(SHUT_WR)", ctx.Pid, what);
    }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        if (rec.Kind == RecordKind.NetworkLock)
        {
            info.Child("network lock").Set("nftables_table", $"inet {r.Str()}");
            return;
        }
        uint objref = r.U32(); int flags = r.I32(), domain = r.I32(), type = r.I32(); r.I32();
        var state = (State)r.U8(); int backlog = r.I32();
        byte[] local = r.Bytes().ToArray(), peer = r.Bytes().ToArray();
        uint n = r.U32();
        var node = new InfoNode().Set("kind", $"{(type == SocketCalls.SOCK_STREAM ? "tcp" : type == SOCK_RAW ? "raw" : "udp")}{(domain == SocketCalls.AF_INET6 ? "6" : "")} socket")
            .Set("path", Show(local) + (state is State.Connected or State.Established or State.Opening ? " -> " + Show(peer) : "")).Set("flags", RegularFile.OpenFlags(flags)).Set("address", Show(local)).Set("state", state.ToString().ToLowerInvariant());
        if (state == State.Listening) node.Set("backlog", backlog);
        if (state is State.Connected or State.Established or State.Opening) node.Set("peer", Show(peer));
        if (n > 0) node.Set("options_set", n);
        for (uint i = 0; i < n; i++) { r.I32(); r.I32(); r.Bytes(); }
        if (state == State.Established)
        {
            r.U32(); r.U32(); node.Set("mss", r.I32()); r.U8(); r.U8(); r.U8(); r.I32(); r.Raw(20);
            node.Set("send_queue_bytes", r.Bytes().Length).Set("receive_queue_bytes", r.Bytes().Length);
            byte fins = r.U8();
            if (fins != 0)
                node.Set("half_closed", string.Join(", ", new[] { (FinSent, "fin sent"), (FinReceived, "fin received"), (ReadsShut, "reads shut") }
                    .Where(x => (fins & x.Item1) != 0).Select(x => x.Item2)));
        }
        else if (type == SocketCalls.SOCK_DGRAM && !r.AtEnd)
        {
            uint nd = r.U32();
            long bytes = 0;
            for (uint i = 0; i < nd; i++) { r.Bytes(); bytes += r.Bytes().Length; }
            if (nd > 0) node.Set("queued_datagrams", nd).Set("queued_bytes", bytes);
            var groups = new List<string>();
            for (uint i = 0, ng = r.AtEnd ? 0 : r.U32(); i < ng; i++)
            {
                string iface = r.Str();
                var f = r.Bytes();
                groups.Add($"{Show(f.Slice(8, SockaddrStorage).ToArray())} on {iface}".Replace(":0 on", " on"));
            }
            if (groups.Count > 0) node.Set("multicast_groups", string.Join(", ", groups));
        }
        info.Child("files").Set(objref.ToString(), node);
    }
}
