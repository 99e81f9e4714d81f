using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Ckpt.Native;

/// <summary>
/// Socket calls on ckpt's own side (on pidfd_getfd copies of the target's sockets, and on the sockets
/// ckpt creates at restart), and the sock_diag netlink query that lists every unix domain socket of
/// the network namespace with its peer, name, queue lengths and shutdown state.
/// </summary>
public static unsafe partial class SocketCalls
{
    public const int AF_UNIX = 1, AF_INET = 2, AF_INET6 = 10, AF_NETLINK = 16, AF_PACKET = 17;
    public const int SOCK_STREAM = 1, SOCK_DGRAM = 2, SOCK_RAW = 3, SOCK_SEQPACKET = 5, SOCK_CLOEXEC = 0x80000, SOCK_NONBLOCK = 0x800;
    public const int SOL_SOCKET = 1;
    /// <summary>ioctl on a unix socket bound to a path: an O_PATH fd of its socket file (wherever it is now, removed or not).</summary>
    public const uint SIOCUNIXFILE = 0x89E0;
    public const int SO_TYPE = 3, SO_SNDBUF = 7, SO_RCVBUF = 8, SO_PASSCRED = 16, SO_PEERCRED = 17, SO_SNDBUFFORCE = 32, SO_RCVBUFFORCE = 33,
        SO_PROTOCOL = 38, SO_DOMAIN = 39, SO_PEEK_OFF = 42;
    public const int MSG_PEEK = 2, MSG_CTRUNC = 8, MSG_TRUNC = 0x20, MSG_DONTWAIT = 0x40, MSG_EOR = 0x80, MSG_NOSIGNAL = 0x4000, MSG_CMSG_CLOEXEC = 0x40000000;
    public const int SCM_RIGHTS = 1, SCM_CREDENTIALS = 2;
    public const int SHUT_RD = 0, SHUT_WR = 1, SHUT_RDWR = 2;
    /// <summary>sk_shutdown bits (unix_diag UNIX_DIAG_SHUTDOWN).</summary>
    public const int RCV_SHUTDOWN = 1, SEND_SHUTDOWN = 2;
    /// <summary>Socket states as unix_diag reports them.</summary>
    public const int TCP_ESTABLISHED = 1, TCP_CLOSE = 7, TCP_LISTEN = 10;
    public const int ECONNREFUSED = 111, EADDRINUSE = 98;
    private const int NETLINK_SOCK_DIAG = 4, SOCK_DIAG_BY_FAMILY = 20, NLMSG_ERROR = 2, NLMSG_DONE = 3;
    private const ushort NLM_F_REQUEST = 1, NLM_F_DUMP = 0x300;
    private const uint UDIAG_SHOW_NAME = 1, UDIAG_SHOW_VFS = 2, UDIAG_SHOW_PEER = 4, UDIAG_SHOW_ICONS = 8, UDIAG_SHOW_RQLEN = 0x10;
    private const int UNIX_DIAG_NAME = 0, UNIX_DIAG_VFS = 1, UNIX_DIAG_PEER = 2, UNIX_DIAG_ICONS = 3, UNIX_DIAG_RQLEN = 4, UNIX_DIAG_SHUTDOWN = 6;

    [LibraryImport("libc", EntryPoint = "getsockname", SetLastError = true)]
    public static partial int GetSockName(int fd, byte* addr, int* len);

    [LibraryImport("libc", EntryPoint = "getpeername", SetLastError = true)]
    public static partial int GetPeerName(int fd, byte* addr, int* len);

    [LibraryImport("libc", EntryPoint = "socket", SetLastError = true)]
    public static partial int Socket(int domain, int type, int protocol);

    [LibraryImport("libc", EntryPoint = "socketpair", SetLastError = true)]
    public static partial int SocketPair(int domain, int type, int protocol, int* sv);

    [LibraryImport("libc", EntryPoint = "sendto", SetLastError = true)]
    public static partial nint SendTo(int fd, byte* buf, nuint len, int flags, byte* to, int tolen);

    [LibraryImport("libc", EntryPoint = "bind", SetLastError = true)]
    public static partial int Bind(int fd, byte* addr, int len);

    [LibraryImport("libc", EntryPoint = "connect", SetLastError = true)]
    public static partial int Connect(int fd, byte* addr, int len);

    [LibraryImport("libc", EntryPoint = "shutdown", SetLastError = true)]
    public static partial int Shutdown(int fd, int how);

    [LibraryImport("libc", EntryPoint = "getsockopt", SetLastError = true)]
    public static partial int GetSockOpt(int fd, int level, int name, void* val, int* len);

    [LibraryImport("libc", EntryPoint = "setsockopt", SetLastError = true)]
    public static partial int SetSockOpt(int fd, int level, int name, void* val, int len);

    [LibraryImport("libc", EntryPoint = "recvmsg", SetLastError = true)]
    public static partial nint RecvMsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport("libc", EntryPoint = "sendmsg", SetLastError = true)]
    public static partial nint SendMsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport("libc", EntryPoint = "send", SetLastError = true)]
    public static partial nint Send(int fd, byte* buf, nuint len, int flags);

    [LibraryImport("libc", EntryPoint = "recv", SetLastError = true)]
    public static partial nint Recv(int fd, byte* buf, nuint len, int flags);

    [LibraryImport("libc", EntryPoint = "chmod", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Chmod(string path, uint mode);

    /// <summary>Owner of a socket file (a bound socket's path).</summary>
    [LibraryImport("libc", EntryPoint = "lchown", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Lchown(string path, uint uid, uint gid);

    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec { public void* Base; public nuint Len; }

    /// <summary>struct msghdr (x86-64, 56 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public void* Name; public int NameLen; public IoVec* Iov; public nuint IovLen;
        public void* Control; public nuint ControlLen; public int Flags;
    }

    public static int GetInt(int fd, int level, int name, string what, int pid = 0, string? detail = null)
    {
        int v = 0, len = 4;
        if (GetSockOpt(fd, level, name, &v, &len) != 0) throw SyscallException.Last($"getsockopt({what})", pid, detail);
        return v;
    }

    /// <summary>
    /// SO_PEERCRED: the process (its id in ckpt's pid namespace) and the effective uid and gid that made
    /// the connection (or socketpair), as the kernel recorded them then; pid 0 and ids -1 where none was.
    /// </summary>
    public static (int Pid, uint Uid, uint Gid) PeerCred(int fd, int pid = 0, string? detail = null)
    {
        int* c = stackalloc int[3];
        int len = 12;
        if (GetSockOpt(fd, SOL_SOCKET, SO_PEERCRED, c, &len) != 0) throw SyscallException.Last("getsockopt(SO_PEERCRED)", pid, detail);
        return (c[0], (uint)c[1], (uint)c[2]);
    }

    public static void SetInt(int fd, int level, int name, int value, string what, int pid = 0, string? detail = null)
    {
        if (SetSockOpt(fd, level, name, &value, 4) != 0) throw SyscallException.Last($"setsockopt({what} {value})", pid, detail);
    }

    /// <summary>The type argument of socket() for a socket whose description had <paramref name="fileFlags"/>: close-on-exec, and non-blocking if it was.</summary>
    public static int TypeFor(int type, int fileFlags) => type | SOCK_CLOEXEC | ((fileFlags & FileCalls.O_NONBLOCK) != 0 ? SOCK_NONBLOCK : 0);

    /// <summary>A sockaddr_un for <paramref name="name"/> (raw sun_path bytes: a path, or a leading NUL for an abstract name); its length.</summary>
    public static byte[] UnixAddress(ReadOnlySpan<byte> name)
    {
        var a = new byte[2 + name.Length + (name.Length > 0 && name[0] != 0 ? 1 : 0)];
        a[0] = AF_UNIX;
        name.CopyTo(a.AsSpan(2));
        return a;
    }

    /// <summary>What unix_diag says of one unix domain socket.</summary>
    public sealed record UnixDiag(uint Ino, int Type, int State)
    {
        /// <summary>sun_path as bound (a leading NUL: abstract name); null if the socket has no address.</summary>
        public byte[]? Name { get; set; }
        public uint VfsIno { get; set; }
        public uint VfsDev { get; set; }
        /// <summary>The peer's inode (0: the peer is closed, or is a connection not yet accepted); null: not connected.</summary>
        public uint? Peer { get; set; }
        /// <summary>Listening socket: inodes of the clients whose connections wait to be accepted.</summary>
        public uint[] Icons { get; set; } = [];
        /// <summary>Bytes queued to be read (stream/seqpacket: all; dgram: the first message); listening: connections waiting.</summary>
        public uint RQueue { get; set; }
        /// <summary>Bytes sent not yet read by the peer; listening: the backlog.</summary>
        public uint WQueue { get; set; }
        public int Shutdown { get; set; }
    }

    /// <summary>Every unix domain socket of ckpt's network namespace, by inode (sock_diag dump).</summary>
    public static Dictionary<uint, UnixDiag> DumpUnix()
    {
        // nlmsghdr (16) + unix_diag_req (24)
        var req = new byte[40];
        req[16] = AF_UNIX;
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(20), 0xffffffff);   // every state
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(28), UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN);
        var result = new Dictionary<uint, UnixDiag>();
        Dump(req, m => Parse(m, result), "unix");
        return result;
    }

    public const int IPPROTO_TCP = 6, IPPROTO_UDP = 17;

    /// <summary>TCP_BOUND_INACTIVE (include/net/tcp_states.h): the inet_diag state of a socket bound but neither listening nor connected.</summary>
    private const int TCP_BOUND_INACTIVE = 13;

    /// <summary>
    /// The inodes of the TCP sockets (IPv4 and IPv6) of ckpt's network namespace that hold a local port
    /// while neither listening nor connected (inet_diag dump of TCP_BOUND_INACTIVE): those bound by the
    /// program, and not those whose connection ended, which gave their port back.
    /// </summary>
    public static HashSet<uint> TcpBoundInactive()
    {
        var result = new HashSet<uint>();
        foreach (byte family in new[] { (byte)AF_INET, (byte)AF_INET6 })
        {
            // nlmsghdr (16) + inet_diag_req_v2 (family, protocol, ext, pad, states, inet_diag_sockid: 48)
            var req = new byte[72];
            req[16] = family;
            req[17] = 6;   // IPPROTO_TCP
            BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(20), 1u << TCP_BOUND_INACTIVE);
            // inet_diag_msg: family, state, timer, retrans, sockid (48), expires, rqueue, wqueue, uid, inode
            Dump(req, m => { if (m.Length >= 72) result.Add(BinaryPrimitives.ReadUInt32LittleEndian(m[68..])); }, "tcp");
        }
        return result;
    }

    /// <summary>
    /// The sockets of protocol <paramref name="protocol"/> (IPv4 and IPv6) of ckpt's network namespace that
    /// are shut down in some direction, by inode: their sk_shutdown (1 receive, 2 send), from the
    /// INET_DIAG_SHUTDOWN attribute of an inet_diag dump of every state.
    /// </summary>
    public static Dictionary<uint, int> InetShutdowns(int protocol)
    {
        const int INET_DIAG_SHUTDOWN = 8, MsgSize = 72;
        var result = new Dictionary<uint, int>();
        foreach (byte family in new[] { (byte)AF_INET, (byte)AF_INET6 })
        {
            var req = new byte[72];
            req[16] = family;
            req[17] = (byte)protocol;
            BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(20), uint.MaxValue);
            Dump(req, m =>
            {
                if (m.Length < MsgSize) return;
                uint ino = BinaryPrimitives.ReadUInt32LittleEndian(m[68..]);
                // rtattrs after the message: u16 len, u16 type, data, 4-byte aligned
                for (int off = MsgSize; off + 4 <= m.Length;)
                {
                    int len = BinaryPrimitives.ReadUInt16LittleEndian(m[off..]), type = BinaryPrimitives.ReadUInt16LittleEndian(m[(off + 2)..]);
                    if (len < 4 || off + len > m.Length) break;
                    if (type == INET_DIAG_SHUTDOWN && len >= 5 && m[off + 4] != 0) result[ino] = m[off + 4];
                    off += (len + 3) & ~3;
                }
            }, protocol == IPPROTO_UDP ? "udp" : "inet");
        }
        return result;
    }

    /// <summary>The index of network interface <paramref name="name"/> in ckpt's network namespace (/sys/class/net), or null when there is none.</summary>
    public static int? InterfaceIndex(string name)
        => FileCalls.ReadSmallText($"/sys/class/net/{name}/ifindex")?.Trim() is { } t && int.TryParse(t, out int i) ? i : null;

    /// <summary>The name of the network interface with index <paramref name="ifindex"/> in ckpt's network namespace, or null.</summary>
    public static string? InterfaceName(int ifindex)
    {
        foreach (var dir in Directory.EnumerateDirectories("/sys/class/net"))
            if (InterfaceIndex(Path.GetFileName(dir)) == ifindex) return Path.GetFileName(dir);
        return null;
    }

    /// <summary>
    /// Every raw socket of ckpt's network namespace, by inode, from /proc/net/raw and raw6 (the raw_diag
    /// module, which sock_diag needs for raw sockets, is often not loaded): the peer a connected one is
    /// connected to, as a sockaddr with port 0 (state 01; getpeername refuses raw sockets, which have no
    /// port), else null; and the bytes queued to be read (rx_queue).
    /// </summary>
    public static Dictionary<ulong, (byte[]? Peer, long Queued)> RawSockets() => ProcNetSockets("raw");

    /// <summary>The ICMP echo (ping) sockets, as <see cref="RawSockets"/> (getpeername fails on them: no port).</summary>
    public static Dictionary<ulong, (byte[]? Peer, long Queued)> IcmpSockets() => ProcNetSockets("icmp");

    private static Dictionary<ulong, (byte[]? Peer, long Queued)> ProcNetSockets(string table)
    {
        var result = new Dictionary<ulong, (byte[]?, long)>();
        foreach (var (file, family) in new[] { ($"/proc/thread-self/net/{table}", AF_INET), ($"/proc/thread-self/net/{table}6", AF_INET6) })
        {
            List<string> lines;
            try { lines = File.ReadLines(file).Skip(1).ToList(); } catch (IOException) { continue; }
            foreach (var line in lines)
            {
                // sl local_address rem_address st tx_queue:rx_queue tr:when retrnsmt uid timeout inode ...
                var w = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (w.Length < 10 || !ulong.TryParse(w[9], out ulong ino)) continue;
                var q = w[4].Split(':');
                long queued = q.Length == 2 && long.TryParse(q[1], System.Globalization.NumberStyles.HexNumber, null, out long r) ? r : 0;
                byte[]? peer = null;
                if (w[3] == "01")
                {
                    string hex = w[2].Split(':')[0];   // the address as the kernel's 32-bit words, each printed in host order
                    peer = new byte[family == AF_INET ? 16 : 28];
                    BinaryPrimitives.WriteUInt16LittleEndian(peer, (ushort)family);
                    int at = family == AF_INET ? 4 : 8;
                    for (int i = 0; i < hex.Length / 8; i++)
                        BinaryPrimitives.WriteUInt32LittleEndian(peer.AsSpan(at + 4 * i), Convert.ToUInt32(hex.Substring(8 * i, 8), 16));
                }
                result[ino] = (peer, queued);
            }
        }
        return result;
    }

    /// <summary>
    /// Ends the TCP socket of ckpt's network namespace with these local and peer addresses (sockaddr_in or
    /// sockaddr_in6) by SOCK_DESTROY (tcp_abort: the socket is closed with ECONNABORTED as its pending
    /// error, keeping its addresses). Needs CAP_NET_ADMIN and CONFIG_INET_DIAG_DESTROY.
    /// </summary>
    public static void DestroyTcp(byte[] local, byte[] peer)
    {
        const int SOCK_DESTROY = 21;
        // nlmsghdr (16) + inet_diag_req_v2: family, protocol, ext, pad, states, inet_diag_sockid
        // (sport, dport: big-endian 16; src, dst: 4 x 32; if: 32; cookie: 2 x 32)
        var req = new byte[72];
        ushort family = BinaryPrimitives.ReadUInt16LittleEndian(local);
        bool v6 = family == AF_INET6;
        req[16] = (byte)family;
        req[17] = 6;   // IPPROTO_TCP
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(20), uint.MaxValue);
        local.AsSpan(2, 2).CopyTo(req.AsSpan(24));
        peer.AsSpan(2, 2).CopyTo(req.AsSpan(26));
        local.AsSpan(v6 ? 8 : 4, v6 ? 16 : 4).CopyTo(req.AsSpan(28));
        peer.AsSpan(v6 ? 8 : 4, v6 ? 16 : 4).CopyTo(req.AsSpan(44));
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(64), uint.MaxValue);   // INET_DIAG_NOCOOKIE
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(68), uint.MaxValue);
        BinaryPrimitives.WriteUInt32LittleEndian(req, (uint)req.Length);
        BinaryPrimitives.WriteUInt16LittleEndian(req.AsSpan(4), SOCK_DESTROY);
        BinaryPrimitives.WriteUInt16LittleEndian(req.AsSpan(6), NLM_F_REQUEST | 4 /* NLM_F_ACK */);
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(8), 1);
        int nl = Socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        if (nl < 0) throw SyscallException.Last("socket(AF_NETLINK, NETLINK_SOCK_DIAG)");
        try
        {
            fixed (byte* r = req)
                if (Send(nl, r, (nuint)req.Length, 0) != req.Length) throw SyscallException.Last("send(SOCK_DESTROY)");
            var buf = new byte[512];
            nint n;
            do { fixed (byte* b = buf) n = Recv(nl, b, (nuint)buf.Length, 0); }
            while (n < 0 && Marshal.GetLastPInvokeError() == Errors.EINTR);
            if (n < 0) throw SyscallException.Last("recv(SOCK_DESTROY)");
            if (n >= 20 && BinaryPrimitives.ReadUInt16LittleEndian(buf.AsSpan(4)) == NLMSG_ERROR)
            {
                int err = -BinaryPrimitives.ReadInt32LittleEndian(buf.AsSpan(16));
                if (err != 0) throw new SyscallException("SOCK_DESTROY", err);
            }
        }
        finally { FileCalls.Close(nl); }
    }

    /// <summary>Sends a sock_diag dump request (its nlmsghdr filled in here) and hands each answer's payload to <paramref name="onMessage"/>.</summary>
    private static void Dump(byte[] request, SpanAction onMessage, string what)
    {
        int nl = Socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        if (nl < 0) throw SyscallException.Last("socket(AF_NETLINK, NETLINK_SOCK_DIAG)");
        try
        {
            BinaryPrimitives.WriteUInt32LittleEndian(request, (uint)request.Length);
            BinaryPrimitives.WriteUInt16LittleEndian(request.AsSpan(4), SOCK_DIAG_BY_FAMILY);
            BinaryPrimitives.WriteUInt16LittleEndian(request.AsSpan(6), NLM_F_REQUEST | NLM_F_DUMP);
            BinaryPrimitives.WriteUInt32LittleEndian(request.AsSpan(8), 1);
            fixed (byte* req = request)
                if (Send(nl, req, (nuint)request.Length, 0) != request.Length) throw SyscallException.Last($"send(sock_diag request, {what})");
            var buf = new byte[1 << 16];
            while (true)
            {
                nint n;
                fixed (byte* b = buf) n = Recv(nl, b, (nuint)buf.Length, 0);
                if (n < 0)
                {
                    if (Marshal.GetLastPInvokeError() == Errors.EINTR) continue;
                    throw SyscallException.Last($"recv(sock_diag, {what})");
                }
                if (n == 0) throw new IOException("sock_diag: the dump ended without NLMSG_DONE");
                for (int off = 0; off + 16 <= n;)
                {
                    var h = buf.AsSpan(off);
                    int len = (int)BinaryPrimitives.ReadUInt32LittleEndian(h);
                    int type = BinaryPrimitives.ReadUInt16LittleEndian(h[4..]);
                    if (len < 16 || off + len > n) throw new IOException("sock_diag: malformed netlink message");
                    if (type == NLMSG_DONE) return;
                    if (type == NLMSG_ERROR)
                    {
                        int err = -BinaryPrimitives.ReadInt32LittleEndian(h[16..]);
                        throw new SyscallException($"sock_diag ({what})", err);
                    }
                    if (type == SOCK_DIAG_BY_FAMILY) onMessage(h[16..len]);
                    off += (len + 3) & ~3;
                }
            }
        }
        finally { FileCalls.Close(nl); }
    }

    private delegate void SpanAction(ReadOnlySpan<byte> message);

    private static void Parse(ReadOnlySpan<byte> m, Dictionary<uint, UnixDiag> into)
    {
        if (m.Length < 16) return;
        var d = new UnixDiag(BinaryPrimitives.ReadUInt32LittleEndian(m[4..]), m[1], m[2]);
        for (int off = 16; off + 4 <= m.Length;)
        {
            int len = BinaryPrimitives.ReadUInt16LittleEndian(m[off..]);
            int type = BinaryPrimitives.ReadUInt16LittleEndian(m[(off + 2)..]);
            if (len < 4 || off + len > m.Length) break;
            var v = m[(off + 4)..(off + len)];
            switch (type)
            {
                case UNIX_DIAG_NAME: d.Name = v.ToArray(); break;
                case UNIX_DIAG_VFS when v.Length >= 8:
                    d.VfsIno = BinaryPrimitives.ReadUInt32LittleEndian(v); d.VfsDev = BinaryPrimitives.ReadUInt32LittleEndian(v[4..]); break;
                case UNIX_DIAG_PEER when v.Length >= 4: d.Peer = BinaryPrimitives.ReadUInt32LittleEndian(v); break;
                case UNIX_DIAG_ICONS:
                    var icons = new uint[v.Length / 4];
                    for (int i = 0; i < icons.Length; i++) icons[i] = BinaryPrimitives.ReadUInt32LittleEndian(v[(4 * i)..]);
                    d.Icons = icons;
                    break;
                case UNIX_DIAG_RQLEN when v.Length >= 8:
                    d.RQueue = BinaryPrimitives.ReadUInt32LittleEndian(v); d.WQueue = BinaryPrimitives.ReadUInt32LittleEndian(v[4..]); break;
                case UNIX_DIAG_SHUTDOWN when v.Length >= 1: d.Shutdown = v[0]; break;
            }
            off += (len + 3) & ~3;
        }
        into[d.Ino] = d;
    }
}
