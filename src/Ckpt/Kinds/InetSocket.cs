using System.Buffers.Binary;
using System.Net;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// TCP and UDP sockets (IPv4 and IPv6) that carry no connection state: a TCP socket not connected
/// (bound or not) or listening with no connection waiting to be accepted, a UDP socket bound or not,
/// connected to a peer or not, with no datagram queued. Saved on a pidfd_getfd copy: domain, type,
/// protocol, local address (getsockname), the UDP peer (getpeername), the listen backlog (TCP_INFO:
/// tcpi_sacked of a listener is its backlog, tcpi_unacked its accept queue), and every socket option
/// of a fixed list whose value differs from a fresh socket's. Restart: injected socket(), the options,
/// bind() when it had an address, then listen() or connect(). An established TCP connection (that
/// needs TCP_REPAIR), a listener with connections waiting and a UDP socket with datagrams queued are
/// refused naming the fd. Reached from <see cref="UnixSocket"/>, which owns every <c>socket:[INO]</c> fd.
/// </summary>
public sealed unsafe class InetSocket : IStateKind
{
    public static readonly InetSocket Instance = new();
    public string Name => "inet socket";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.InetSocket];
    public int FinishOrder => 76;

    private enum State : byte { Unconnected = 0, Listening = 1, Connected = 2 }

    private const int IPPROTO_IP = 0, IPPROTO_TCP = 6, IPPROTO_UDP = 17, IPPROTO_IPV6 = 41;
    private const int TCP_INFO = 11, TCP_STATE_LISTEN = 10, TCP_STATE_CLOSE = 7;
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
        (SocketCalls.SOL_SOCKET, SO_SNDBUF, 4, "SO_SNDBUF", Any), (SocketCalls.SOL_SOCKET, SO_RCVBUF, 4, "SO_RCVBUF", Any),
        (IPPROTO_TCP, 1, 4, "TCP_NODELAY", Tcp), (IPPROTO_TCP, 3, 4, "TCP_CORK", Tcp), (IPPROTO_TCP, 4, 4, "TCP_KEEPIDLE", Tcp),
        (IPPROTO_TCP, 5, 4, "TCP_KEEPINTVL", Tcp), (IPPROTO_TCP, 6, 4, "TCP_KEEPCNT", Tcp), (IPPROTO_TCP, 9, 4, "TCP_DEFER_ACCEPT", Tcp),
        (IPPROTO_TCP, 18, 4, "TCP_USER_TIMEOUT", Tcp), (IPPROTO_TCP, 23, 4, "TCP_FASTOPEN", Tcp), (IPPROTO_TCP, 25, 4, "TCP_NOTSENT_LOWAT", Tcp),
        (IPPROTO_IP, 1, 4, "IP_TOS", V4), (IPPROTO_IP, 2, 4, "IP_TTL", V4), (IPPROTO_IP, 8, 4, "IP_PKTINFO", V4),
        (IPPROTO_IP, 10, 4, "IP_MTU_DISCOVER", V4), (IPPROTO_IP, 11, 4, "IP_RECVERR", V4), (IPPROTO_IP, 15, 4, "IP_FREEBIND", V4),
        (IPPROTO_IP, 33, 4, "IP_MULTICAST_TTL", V4), (IPPROTO_IP, 34, 4, "IP_MULTICAST_LOOP", V4),
        (IPPROTO_IPV6, 26, 4, "IPV6_V6ONLY", V6), (IPPROTO_IPV6, 16, 4, "IPV6_UNICAST_HOPS", V6), (IPPROTO_IPV6, 49, 4, "IPV6_RECVPKTINFO", V6),
        (IPPROTO_IPV6, 67, 4, "IPV6_TCLASS", V6), (IPPROTO_IPV6, 23, 4, "IPV6_MTU_DISCOVER", V6), (IPPROTO_IPV6, 25, 4, "IPV6_RECVERR", V6),
    ];
    private static bool Any(int domain, int protocol) => true;
    private static bool Tcp(int domain, int protocol) => protocol == IPPROTO_TCP;
    private static bool V4(int domain, int protocol) => domain == SocketCalls.AF_INET;
    private static bool V6(int domain, int protocol) => domain == SocketCalls.AF_INET6;

    public void Checkpoint(CheckpointContext ctx) { }

    /// <summary>Saves the socket if it is a TCP or UDP socket (else returns false and writes nothing); refuses one that cannot be saved.</summary>
    public static bool TryCheckpoint(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        int mine = ctx.GrabFd(f.Fd);
        try
        {
            int domain = SocketCalls.GetInt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_DOMAIN, "SO_DOMAIN", ctx.Pid);
            int type = SocketCalls.GetInt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_TYPE, "SO_TYPE", ctx.Pid);
            int protocol = SocketCalls.GetInt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_PROTOCOL, "SO_PROTOCOL", ctx.Pid);
            if (domain is not (SocketCalls.AF_INET or SocketCalls.AF_INET6)) return false;
            bool tcp = type == SocketCalls.SOCK_STREAM && protocol == IPPROTO_TCP, udp = type == SocketCalls.SOCK_DGRAM && protocol == IPPROTO_UDP;
            if (!tcp && !udp) return false;
            byte[] local = Address(mine, peer: false) ?? [];
            byte[]? peer = Address(mine, peer: true);
            string what = $"fd {f.Fd} ({f.Link}, a {(tcp ? "TCP" : "UDP")} socket{(domain == SocketCalls.AF_INET6 ? " (IPv6)" : "")} {Show(local)})";
            var state = State.Unconnected;
            int backlog = 0;
            if (tcp)
            {
                byte* info = stackalloc byte[256];
                int len = 256;
                if (SocketCalls.GetSockOpt(mine, IPPROTO_TCP, TCP_INFO, info, &len) != 0 || len < 32) throw SyscallException.Last("getsockopt(TCP_INFO)", ctx.Pid, what);
                int tcpState = info[0];
                if (tcpState == TCP_STATE_LISTEN)
                {
                    uint waiting = *(uint*)(info + 24), max = *(uint*)(info + 28);
                    if (waiting > 0)
                        throw new NotCheckpointableException(ctx.Pid, $"{what} is listening with {waiting} connection(s) waiting to be accepted, which is not supported yet; checkpoint once they were accepted");
                    state = State.Listening;
                    backlog = (int)max;
                }
                else if (tcpState != TCP_STATE_CLOSE)
                    throw new NotCheckpointableException(ctx.Pid, $"{what} is a TCP connection{(peer != null ? " to " + Show(peer) : "")} (state {TcpStateName(tcpState)}), which is not supported yet (only listening and unconnected TCP sockets are)");
            }
            else
            {
                int queued = 0;
                if (EventCalls.Ioctl(mine, EventCalls.FIONREAD, &queued) == 0 && queued > 0 || Pending(mine))
                    throw new NotCheckpointableException(ctx.Pid, $"{what} has datagrams queued (the next of {queued} bytes), which is not supported yet");
                if (peer != null) state = State.Connected;
            }
            var p = new PayloadWriter().U32(objref).I32(f.Flags & ~FileCalls.O_CLOEXEC).I32(domain).I32(type).I32(protocol)
                .U8((byte)state).I32(backlog).Bytes(local).Bytes(state == State.Connected ? peer! : []);
            var options = ChangedOptions(mine, domain, type, protocol, ctx.Pid);
            p.U32((uint)options.Count);
            foreach (var (level, name, value) in options) p.I32(level).I32(name).Bytes(value);
            ctx.Image.Write(RecordKind.InetSocket, p);
            ctx.Log.Debug($"pid {ctx.Pid} {what}: {state}{(state == State.Listening ? $" (backlog {backlog})" : "")}, {options.Count} option(s) set");
            return true;
        }
        finally { FileCalls.Close(mine); }
    }

    /// <summary>Whether an empty datagram is queued (FIONREAD says 0 for it).</summary>
    private static bool Pending(int fd)
    {
        byte b;
        return SocketCalls.Recv(fd, &b, 0, SocketCalls.MSG_PEEK | SocketCalls.MSG_DONTWAIT) >= 0;
    }

    /// <summary>The socket's own address or its peer's (null: not connected).</summary>
    private static byte[]? Address(int fd, bool peer)
    {
        byte* a = stackalloc byte[128];
        int len = 128;
        if ((peer ? SocketCalls.GetPeerName(fd, a, &len) : SocketCalls.GetSockName(fd, a, &len)) != 0) return null;
        return new ReadOnlySpan<byte>(a, Math.Min(len, 128)).ToArray();
    }

    /// <summary>The options of <see cref="Options"/> whose value differs from a fresh socket's of the same kind.</summary>
    private static List<(int Level, int Name, byte[] Value)> ChangedOptions(int fd, int domain, int type, int protocol, int pid)
    {
        var changed = new List<(int, int, byte[])>();
        int fresh = SocketCalls.Socket(domain, type | SocketCalls.SOCK_CLOEXEC, protocol);
        if (fresh < 0) throw SyscallException.Last("socket (a fresh one, to compare options with)", pid);
        try
        {
            byte* a = stackalloc byte[16];
            byte* b = stackalloc byte[16];
            foreach (var (level, name, size, _, applies) in Options)
            {
                if (!applies(domain, protocol)) continue;
                int la = size, lb = size;
                new Span<byte>(a, 16).Clear(); new Span<byte>(b, 16).Clear();
                if (SocketCalls.GetSockOpt(fd, level, name, a, &la) != 0) continue;   // not readable on this kernel
                if (SocketCalls.GetSockOpt(fresh, level, name, b, &lb) == 0 && la == lb && new ReadOnlySpan<byte>(a, la).SequenceEqual(new ReadOnlySpan<byte>(b, lb))) continue;
                changed.Add((level, name, new ReadOnlySpan<byte>(a, la).ToArray()));
            }
        }
        finally { FileCalls.Close(fresh); }
        return changed;
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint objref = r.U32(); int flags = r.I32(), domain = r.I32(), type = r.I32(), protocol = r.I32();
        var state = (State)r.U8(); int backlog = r.I32();
        byte[] local = r.Bytes().ToArray(), peer = r.Bytes().ToArray();
        uint n = r.U32();
        var options = new List<(int Level, int Name, byte[] Value)>();
        for (uint i = 0; i < n; i++) options.Add((r.I32(), r.I32(), r.Bytes().ToArray()));
        r.End();
        if (domain is not (SocketCalls.AF_INET or SocketCalls.AF_INET6) || state > State.Connected || local.Length > 128 || peer.Length > 128)
            throw new ImageFormatException($"InetSocket record at offset {rec.Offset} is not a TCP or UDP socket this tool can rebuild");
        string what = $"{(type == SocketCalls.SOCK_STREAM ? "TCP" : "UDP")} socket {Show(local)}";
        int fd = (int)ctx.Inject("socket", Nr.socket, domain, type | SocketCalls.SOCK_CLOEXEC | ((flags & FileCalls.O_NONBLOCK) != 0 ? SocketCalls.SOCK_NONBLOCK : 0), protocol);
        ctx.Files.SetRestored(objref, fd);
        var batch = ctx.Batch;
        batch.Reserve(options.Count + 2, options.Sum(o => o.Value.Length + 8) + local.Length + peer.Length + 16);
        foreach (var (level, name, value) in options)
        {
            var v = value;
            // the kernel doubles the buffer sizes it is given (and reports the doubled value)
            if (level == SocketCalls.SOL_SOCKET && name is SO_SNDBUF or SO_RCVBUF && v.Length == 4)
            {
                v = (byte[])v.Clone();
                BinaryPrimitives.WriteInt32LittleEndian(v, BinaryPrimitives.ReadInt32LittleEndian(v) / 2);
            }
            string label = Options.FirstOrDefault(o => o.Level == level && o.Name == name).Label ?? $"option {level}/{name}";
            batch.AddChecked($"setsockopt({label}) of the {what}", Nr.setsockopt, fd, level, name, (long)batch.AddData(v), v.Length);
        }
        if (HasAddress(local))
            batch.Add(Nr.bind, fd, (long)batch.AddData(local), local.Length, stopOnError: true, check: got =>
            {
                if (got < 0) throw new CkptException($"restart: cannot bind the {what} again: {Errors.Describe((int)-got)}{(got == -SocketCalls.EADDRINUSE ? " (the address is in use: is the checkpointed process, or another one, still holding it?)" : "")}", ExitCodes.RestoreConflict);
            });
        if (state == State.Listening) batch.AddChecked($"listen of the {what}", Nr.listen, fd, backlog);
        else if (state == State.Connected) batch.AddChecked($"connect of the {what} to {Show(peer)}", Nr.connect, fd, (long)batch.AddData(peer), peer.Length);
        batch.Flush();
    }

    /// <summary>Whether a sockaddr_in/in6 names a port or an address (an unbound socket's is all zero).</summary>
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

    public void Finish(RestoreContext ctx) { }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint objref = r.U32(); int flags = r.I32(), domain = r.I32(), type = r.I32(); r.I32();
        var state = (State)r.U8(); int backlog = r.I32();
        byte[] local = r.Bytes().ToArray(), peer = r.Bytes().ToArray();
        uint n = r.U32();
        var node = new InfoNode().Set("kind", $"{(type == SocketCalls.SOCK_STREAM ? "tcp" : "udp")}{(domain == SocketCalls.AF_INET6 ? "6" : "")} socket")
            .Set("path", Show(local) + (state == State.Connected ? " -> " + Show(peer) : "")).Set("flags", RegularFile.OpenFlags(flags)).Set("address", Show(local)).Set("state", state.ToString().ToLowerInvariant());
        if (state == State.Listening) node.Set("backlog", backlog);
        if (state == State.Connected) node.Set("peer", Show(peer));
        if (n > 0) node.Set("options_set", n);
        info.Child("files").Set(objref.ToString(), node);
    }
}
