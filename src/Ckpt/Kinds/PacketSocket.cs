using System.Buffers.Binary;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// Packet sockets (AF_PACKET, SOCK_RAW or SOCK_DGRAM: DHCP clients, LLDP and ARP tools, capture without
/// rings): the protocol it receives (an ethertype, in network order, from getsockname: SO_PROTOCOL
/// gives 0 for them), the interface it is bound to (saved by name: an interface index is not kept
/// across reboots or machines), and the options of the packet level that differ from a fresh socket's
/// (auxdata, origdev, version, reserve, loss, vnet header, timestamp, qdisc bypass, ignore outgoing,
/// fanout group). Classic filters are saved by <see cref="SocketFilter"/> as for any socket.
/// Refused: packets not read yet (the tree gets the moments inotify gets to read them: the receive
/// memory from /proc/net/packet), and rings (PACKET_RX_RING/TX_RING, which the process maps: the
/// mapping of the socket is refused by MemoryRegion). Multicast and promiscuous memberships
/// (PACKET_ADD_MEMBERSHIP) cannot be read back and are not restored.
/// Restart: injected socket(), the options, bind() to the interface of that name, then the fanout group
/// (which needs a bound socket).
/// </summary>
public sealed unsafe class PacketSocket : IStateKind
{
    public static readonly PacketSocket Instance = new();
    public string Name => "packet socket";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.PacketSocket];
    public int FinishOrder => 77;

    private const int AF_PACKET = 17, SOL_PACKET = 263, PACKET_FANOUT = 18, SOCK_PACKET = 10;

    /// <summary>Packet-level options saved when they differ from a fresh socket's.</summary>
    private static readonly (int Level, int Name, int Size)[] Options =
    [
        (SOL_PACKET, 8, 4), (SOL_PACKET, 9, 4), (SOL_PACKET, 10, 4), (SOL_PACKET, 12, 4), (SOL_PACKET, 14, 4),
        (SOL_PACKET, 15, 4), (SOL_PACKET, 17, 4), (SOL_PACKET, 20, 4), (SOL_PACKET, 23, 4), (SOL_PACKET, PACKET_FANOUT, 4),
        (SocketCalls.SOL_SOCKET, 7, 4), (SocketCalls.SOL_SOCKET, 8, 4), (SocketCalls.SOL_SOCKET, 12, 4), (SocketCalls.SOL_SOCKET, 36, 4),
        (SocketCalls.SOL_SOCKET, 29, 4),
    ];

    public void Checkpoint(CheckpointContext ctx) { }

    /// <summary>Saves the socket if it is a packet socket (else returns false); refuses one that cannot be saved.</summary>
    public static bool TryCheckpoint(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        int mine = ctx.GrabFd(f.Fd);
        try
        {
            if (SocketCalls.GetInt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_DOMAIN, "SO_DOMAIN", ctx.Pid) != AF_PACKET) return false;
            int type = SocketCalls.GetInt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_TYPE, "SO_TYPE", ctx.Pid);
            // struct sockaddr_ll: u16 family, be16 protocol, i32 ifindex, u16 hatype, u8 pkttype, u8 halen, u8 addr[8]
            // (its protocol is the one the socket receives: SO_PROTOCOL gives 0 for packet sockets)
            byte* a = stackalloc byte[20];
            int len = 20;
            if (SocketCalls.GetSockName(mine, a, &len) != 0) throw SyscallException.Last("getsockname", ctx.Pid, $"fd {f.Fd} ({f.Link})");
            int protocol = *(ushort*)(a + 2);
            int ifindex = *(int*)(a + 4);
            string what = $"fd {f.Fd} ({f.Link}, a packet socket of ethertype 0x{BinaryPrimitives.ReverseEndianness((ushort)protocol):x4})";
            if (type == SOCK_PACKET) throw new NotCheckpointableException(ctx.Pid, $"{what} is of the obsolete type SOCK_PACKET, which is not supported");
            int queued = 0;
            bool empty = QueuesAtFreeze.TryGet(ctx.Session, ctx.Pid, f.Fd, out long atFreeze) && atFreeze == 0;
            if (!empty && EventCalls.Ioctl(mine, EventCalls.FIONREAD, &queued) == 0 && queued > 0)
                throw new NotCheckpointableException(ctx.Pid, $"{what} has packets queued that it has not read, which are not saved; checkpoint once it has read them");
            string iface = ifindex == 0 ? "" : SocketCalls.InterfaceName(ifindex)
                ?? throw new NotCheckpointableException(ctx.Pid, $"{what} is bound to interface {ifindex}, which ckpt cannot name");
            var options = InetSocket.ChangedOptions(mine, AF_PACKET, type, protocol, ctx.Pid, Options);
            var p = new PayloadWriter().U32(objref).I32(f.Flags & ~FileCalls.O_CLOEXEC).I32(type).I32(protocol).Str(iface);
            p.U32((uint)options.Count);
            foreach (var (level, name, value) in options) p.I32(level).I32(name).Bytes(value);
            ctx.Image.Write(RecordKind.PacketSocket, p);
            ctx.Log.Debug($"pid {ctx.Pid} {what}: bound to '{iface}', {options.Count} option(s) set");
            return true;
        }
        finally { FileCalls.Close(mine); }
    }

    /// <summary>
    /// Does a packet socket of the frozen tree have packets it has not read? Then the tree is let go a
    /// moment to read them, as for raw sockets (<see cref="Engine.Checkpointer"/>): the receive memory of
    /// each from /proc/net/packet (sk RefCnt Type Proto Iface R Rmem User Inode).
    /// </summary>
    public static bool HasQueuedPackets(CheckpointSession s) => QueuesAtFreeze.NoteSockets(s, () =>
    {
        var rmem = new Dictionary<ulong, long>();
        try
        {
            foreach (var line in File.ReadLines("/proc/thread-self/net/packet").Skip(1))
            {
                var w = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (w.Length >= 9 && long.TryParse(w[6], out long r) && ulong.TryParse(w[8], out ulong ino)) rmem[ino] = r;
            }
        }
        catch (IOException) { }
        return rmem;
    });

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint objref = r.U32(); int flags = r.I32(), type = r.I32(), protocol = r.I32();
        string iface = r.Str();
        var options = new List<(int Level, int Name, byte[] Value)>();
        for (uint i = 0, n = r.U32(); i < n; i++) options.Add((r.I32(), r.I32(), r.Bytes().ToArray()));
        r.End();
        string what = $"packet socket{(iface.Length > 0 ? " on " + iface : "")}";
        int ifindex = iface.Length == 0 ? 0 : SocketCalls.InterfaceIndex(iface)
            ?? throw new CkptException($"restart: the {what}: there is no interface {iface} here", ExitCodes.RestoreConflict);
        int fd = (int)ctx.Inject("socket", Nr.socket, AF_PACKET, SocketCalls.TypeFor(type, flags), protocol);
        ctx.Files.SetRestored(objref, fd);
        var batch = ctx.Batch;
        batch.Reserve(options.Count + 2, options.Sum(o => o.Value.Length + 8) + 32);
        foreach (var (level, name, value) in options.Where(o => !(o.Level == SOL_PACKET && o.Name == PACKET_FANOUT)))
        {
            var v = InetSocket.Settable(level, name, value);
            batch.AddChecked($"setsockopt({level}/{name}) of the {what}", Nr.setsockopt, fd, level, name, (long)batch.AddData(v), v.Length);
        }
        if (ifindex != 0)
        {
            var ll = new byte[20];
            BinaryPrimitives.WriteUInt16LittleEndian(ll, AF_PACKET);
            BinaryPrimitives.WriteUInt16LittleEndian(ll.AsSpan(2), (ushort)protocol);
            BinaryPrimitives.WriteInt32LittleEndian(ll.AsSpan(4), ifindex);
            batch.AddChecked($"bind of the {what}", Nr.bind, fd, (long)batch.AddData(ll), ll.Length);
        }
        // the fanout group, once bound: id | type << 16 | flags << 16 as getsockopt gave it
        foreach (var (level, name, value) in options.Where(o => o.Level == SOL_PACKET && o.Name == PACKET_FANOUT))
            batch.AddChecked($"PACKET_FANOUT of the {what}", Nr.setsockopt, fd, level, name, (long)batch.AddData(value), value.Length);
        batch.Flush();
    }

    public void Finish(RestoreContext ctx) { }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint objref = r.U32(); int flags = r.I32(), type = r.I32(), protocol = r.I32();
        string iface = r.Str();
        uint n = r.U32();
        info.Child("files").Set(objref.ToString(), new InfoNode().Set("kind", "packet socket")
            .Set("path", $"packet {(type == 3 ? "raw" : "dgram")} ethertype 0x{BinaryPrimitives.ReverseEndianness((ushort)protocol):x4}{(iface.Length > 0 ? " on " + iface : "")}")
            .Set("flags", RegularFile.OpenFlags(flags)).Set("options_set", n));
    }
}
