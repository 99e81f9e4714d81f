using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Ckpt.Native;

/// <summary>
/// Netlink sockets, dumps and requests: rtnetlink (NETLINK_ROUTE: a network namespace's devices,
/// addresses, routes, rules and neighbours) and nf_tables dumps (NETLINK_NETFILTER). A socket answers for
/// the network namespace of the thread that made it.
/// </summary>
public static unsafe class NetlinkCalls
{
    public const int NETLINK_ROUTE = 0, NETLINK_NETFILTER = 12;
    public const ushort RTM_NEWLINK = 16, RTM_GETLINK = 18, RTM_NEWADDR = 20, RTM_GETADDR = 22, RTM_NEWROUTE = 24, RTM_GETROUTE = 26,
        RTM_NEWNEIGH = 28, RTM_GETNEIGH = 30, RTM_NEWRULE = 32, RTM_GETRULE = 34, RTM_GETNSID = 90;
    public const ushort NLM_F_REQUEST = 1, NLM_F_ACK = 4, NLM_F_REPLACE = 0x100, NLM_F_EXCL = 0x200, NLM_F_CREATE = 0x400, NLM_F_DUMP = 0x300;
    private const int NLMSG_ERROR = 2, NLMSG_DONE = 3;
    private const long CLONE_NEWNET = 0x40000000;

    private static uint s_seq = (uint)Environment.TickCount;

    /// <summary>A netlink socket (NETLINK_ROUTE unless told) of the calling thread's network namespace.</summary>
    public static int Open(int protocol = NETLINK_ROUTE)
    {
        int fd = SocketCalls.Socket(SocketCalls.AF_NETLINK, SocketCalls.SOCK_RAW | SocketCalls.SOCK_CLOEXEC, protocol);
        if (fd < 0) throw SyscallException.Last($"socket(AF_NETLINK, {(protocol == NETLINK_ROUTE ? "NETLINK_ROUTE" : protocol.ToString())})");
        return fd;
    }

    /// <summary>
    /// A NETLINK_ROUTE socket of the network namespace <paramref name="nsFd"/>: the calling thread enters it
    /// for the socket call and goes back to its own.
    /// </summary>
    public static int OpenIn(int nsFd)
    {
        int own = FileCalls.Open("/proc/thread-self/ns/net", FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0);
        if (own < 0) throw SyscallException.Last("open /proc/thread-self/ns/net");
        try
        {
            if (Sys.Call(Nr.setns, nsFd, CLONE_NEWNET) != 0) throw SyscallException.Last("setns (network namespace)");
            try { return Open(); }
            finally
            {
                if (Sys.Call(Nr.setns, own, CLONE_NEWNET) != 0) throw SyscallException.Last("setns (back to the thread's network namespace)");
            }
        }
        finally { FileCalls.Close(own); }
    }

    /// <summary>A request of <paramref name="type"/> and <paramref name="flags"/> (NLM_F_REQUEST added) with the fixed header <paramref name="header"/>.</summary>
    public static NetlinkMessage Message(ushort type, ushort flags, ReadOnlySpan<byte> header)
        => new((ushort)type, (ushort)(flags | NLM_F_REQUEST), ++s_seq, header);

    /// <summary>
    /// Dumps every object of <paramref name="type"/> (RTM_GET*) for the request header <paramref name="header"/>
    /// (its family picks the protocol) and attributes <paramref name="attrs"/> adds: the payload of each answer,
    /// after the nlmsghdr.
    /// </summary>
    public static List<byte[]> Dump(int fd, ushort type, ReadOnlySpan<byte> header, Action<NetlinkMessage>? attrs = null)
    {
        var m = Message(type, NLM_F_DUMP, header);
        attrs?.Invoke(m);
        var all = new List<byte[]>();
        Exchange(fd, m.Bytes(), "dump", (t, payload) =>
        {
            if (t == NLMSG_DONE) return true;
            if (t == NLMSG_ERROR) throw new SyscallException($"rtnetlink dump (type {type})", -BinaryPrimitives.ReadInt32LittleEndian(payload));
            all.Add(payload.ToArray());
            return false;
        });
        return all;
    }

    /// <summary>Sends <paramref name="message"/> (built with NLM_F_ACK) and waits for its answer: 0, or the negative errno it failed with.</summary>
    public static int Request(int fd, byte[] message)
    {
        int result = 0;
        Exchange(fd, message, "request", (t, payload) =>
        {
            if (t != NLMSG_ERROR) return false;
            result = BinaryPrimitives.ReadInt32LittleEndian(payload);
            return true;
        });
        return result;
    }

    /// <summary>Sends a get (<paramref name="message"/>, without NLM_F_DUMP) and returns the answer's payload, or null and the errno it failed with.</summary>
    public static byte[]? Get(int fd, byte[] message, out int errno)
    {
        byte[]? answer = null;
        int e = 0;
        Exchange(fd, message, "get", (t, payload) =>
        {
            if (t != NLMSG_ERROR) { answer = payload.ToArray(); return true; }
            e = -BinaryPrimitives.ReadInt32LittleEndian(payload);
            return e != 0;
        });
        errno = e;
        return answer;
    }

    private delegate bool Answer(int type, ReadOnlySpan<byte> payload);

    /// <summary>
    /// Sends <paramref name="message"/> and hands each answer to it (its sequence number's: type, and what
    /// follows the nlmsghdr) to <paramref name="onAnswer"/> until that returns true.
    /// </summary>
    private static void Exchange(int fd, byte[] message, string what, Answer onAnswer)
    {
        uint seq = BinaryPrimitives.ReadUInt32LittleEndian(message.AsSpan(8));
        Send(fd, message, what);
        var buf = new byte[1 << 16];
        while (true)
        {
            int n = Receive(fd, buf, what);
            for (int off = 0; off + 16 <= n;)
            {
                int len = (int)BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(off));
                int t = BinaryPrimitives.ReadUInt16LittleEndian(buf.AsSpan(off + 4));
                uint s = BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(off + 8));
                if (len < 16 || off + len > n) throw new IOException($"netlink: malformed answer to a {what}");
                if (s == seq && onAnswer(t, buf.AsSpan((off + 16)..(off + len)))) return;
                off += (len + 3) & ~3;
            }
        }
    }

    private static void Send(int fd, byte[] data, string what)
    {
        fixed (byte* p = data)
            if (SocketCalls.Send(fd, p, (nuint)data.Length, 0) != data.Length) throw SyscallException.Last($"send (rtnetlink {what})");
    }

    private static int Receive(int fd, byte[] buf, string what)
    {
        while (true)
        {
            nint n;
            fixed (byte* b = buf) n = SocketCalls.Recv(fd, b, (nuint)buf.Length, 0);
            if (n > 0) return (int)n;
            if (n < 0 && Marshal.GetLastPInvokeError() == Errors.EINTR) continue;
            if (n == 0) throw new IOException($"rtnetlink: the socket closed during a {what}");
            throw SyscallException.Last($"recv (rtnetlink {what})");
        }
    }
}
