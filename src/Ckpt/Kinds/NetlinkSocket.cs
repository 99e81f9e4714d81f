using System.Buffers.Binary;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// Netlink sockets (AF_NETLINK: route, uevent, audit... monitors and requesters) with nothing queued:
/// protocol and type, the port id it is bound to (getsockname: nl_pid, 0 when not bound yet), its
/// multicast groups (NETLINK_LIST_MEMBERSHIPS), its destination if connected (getpeername), and the
/// netlink and buffer options that differ from a fresh socket's. Restart: injected socket(), options,
/// bind(port id, first 32 groups), NETLINK_ADD_MEMBERSHIP for the others, connect(). A socket with
/// messages queued (answers or notifications not read yet) gets moments to read them
/// (<see cref="HasQueuedMessages"/>); one that still has some is refused: they cannot be put back.
/// Reached from <see cref="UnixSocket"/>, which owns every <c>socket:[INO]</c> fd.
/// </summary>
public sealed unsafe class NetlinkSocket : IStateKind
{
    public static readonly NetlinkSocket Instance = new();
    public string Name => "netlink socket";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.NetlinkSocket];
    public int FinishOrder => 77;

    private const int SOL_NETLINK = 270, NETLINK_ADD_MEMBERSHIP = 1, NETLINK_LIST_MEMBERSHIPS = 9;

    /// <summary>Options saved when they differ from a fresh socket's.</summary>
    private static readonly (int Level, int Name, int Size)[] Options =
    [
        (SOL_NETLINK, 3, 4) /* PKTINFO */, (SOL_NETLINK, 4, 4) /* BROADCAST_ERROR */, (SOL_NETLINK, 5, 4) /* NO_ENOBUFS */,
        (SOL_NETLINK, 6, 4) /* RX_RING: not settable, read only to notice */, (SOL_NETLINK, 8, 4) /* LISTEN_ALL_NSID */,
        (SOL_NETLINK, 10, 4) /* CAP_ACK */, (SOL_NETLINK, 11, 4) /* EXT_ACK */, (SOL_NETLINK, 12, 4) /* GET_STRICT_CHK */,
        (SocketCalls.SOL_SOCKET, 7, 4) /* SO_SNDBUF */, (SocketCalls.SOL_SOCKET, 8, 4) /* SO_RCVBUF */,
    ];

    public void Checkpoint(CheckpointContext ctx) { }

    /// <summary>
    /// Does a netlink socket of the frozen tree have messages queued (notifications or answers it has not
    /// read yet)? Then the tree is let go a moment to read them and frozen again
    /// (<see cref="Engine.Checkpointer"/>), as for inotify. The receive memory of each is read from
    /// /proc/thread-self/net/netlink (of the tracer thread's network namespace: the tree's), without a copy of every socket fd.
    /// What each held at the last look is what the image is taken with: messages queued later come
    /// after the checkpoint's moment.
    /// </summary>
    public static bool HasQueuedMessages(CheckpointSession s) => QueuesAtFreeze.NoteSockets(s, () =>
    {
        var rmem = new Dictionary<ulong, long>();
        foreach (var line in File.ReadLines("/proc/thread-self/net/netlink").Skip(1))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length >= 10 && long.TryParse(f[4], out long r) && ulong.TryParse(f[9], out ulong ino)) rmem[ino] = r;
        }
        return rmem;
    });

    /// <summary>Saves the socket if it is a netlink socket (else returns false); refuses one with messages queued.</summary>
    public static bool TryCheckpoint(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        int mine = ctx.GrabFd(f.Fd);
        try
        {
            if (SocketCalls.GetInt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_DOMAIN, "SO_DOMAIN", ctx.Pid) != SocketCalls.AF_NETLINK) return false;
            int type = SocketCalls.GetInt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_TYPE, "SO_TYPE", ctx.Pid);
            int protocol = SocketCalls.GetInt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_PROTOCOL, "SO_PROTOCOL", ctx.Pid);
            string what = $"fd {f.Fd} ({f.Link}, a netlink socket of protocol {protocol})";
            int queued = 0;
            bool empty = QueuesAtFreeze.TryGet(ctx.Session, ctx.Pid, f.Fd, out long atFreeze) && atFreeze == 0;
            if (!empty && EventCalls.Ioctl(mine, EventCalls.FIONREAD, &queued) == 0 && queued > 0)
                throw new NotCheckpointableException(ctx.Pid, $"{what} has {queued} bytes of messages queued, which cannot be put back; checkpoint once they were read");
            byte* a = stackalloc byte[16];
            int len = 16;
            if (SocketCalls.GetSockName(mine, a, &len) != 0) throw SyscallException.Last("getsockname", ctx.Pid, what);
            uint portId = *(uint*)(a + 4);
            len = 16;
            uint dstPort = 0, dstGroup = 0;
            if (SocketCalls.GetPeerName(mine, a, &len) == 0) { dstPort = *(uint*)(a + 4); dstGroup = *(uint*)(a + 8); }
            // group bitmaps: the length needed comes back in optlen
            var groups = new uint[32];
            fixed (uint* g = groups)
            {
                int glen = groups.Length * 4;
                if (SocketCalls.GetSockOpt(mine, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, g, &glen) != 0) glen = 0;
                if (glen > groups.Length * 4) throw new NotCheckpointableException(ctx.Pid, $"{what} is in more than {groups.Length * 32} multicast groups");
                Array.Resize(ref groups, glen / 4);
            }
            var options = InetSocket.ChangedOptions(mine, SocketCalls.AF_NETLINK, type, protocol, ctx.Pid, Options);
            var p = new PayloadWriter().U32(objref).I32(f.Flags & ~FileCalls.O_CLOEXEC).I32(type).I32(protocol).U32(portId).U32(dstPort).U32(dstGroup)
                .U32((uint)groups.Length);
            foreach (uint g in groups) p.U32(g);
            p.U32((uint)options.Count);
            foreach (var (level, name, value) in options) p.I32(level).I32(name).Bytes(value);
            ctx.Image.Write(RecordKind.NetlinkSocket, p);
            return true;
        }
        finally { FileCalls.Close(mine); }
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint objref = r.U32(); int flags = r.I32(), type = r.I32(), protocol = r.I32();
        uint portId = r.U32(), dstPort = r.U32(), dstGroup = r.U32();
        var groups = new uint[r.U32()];
        if (groups.Length > 1024) throw new ImageFormatException($"NetlinkSocket record at offset {rec.Offset}: {groups.Length} group words");
        for (int i = 0; i < groups.Length; i++) groups[i] = r.U32();
        var options = new List<(int Level, int Name, byte[] Value)>();
        for (uint i = 0, n = r.U32(); i < n; i++) options.Add((r.I32(), r.I32(), r.Bytes().ToArray()));
        r.End();
        string what = $"netlink socket of protocol {protocol} (port id {portId})";
        int fd = (int)ctx.Inject("socket", Nr.socket, SocketCalls.AF_NETLINK, SocketCalls.TypeFor(type, flags), protocol);
        ctx.Files.SetRestored(objref, fd);
        var batch = ctx.Batch;
        batch.Reserve(options.Count + 2 + groups.Length * 32, options.Sum(o => o.Value.Length + 8) + 64 + groups.Length * 32 * 8);
        foreach (var (level, name, value) in options)
        {
            if (level == SOL_NETLINK && name == 6) continue;   // RX_RING: gone from the kernel, read only
            var v = InetSocket.Settable(level, name, value);
            batch.AddChecked($"setsockopt({level}/{name}) of the {what}", Nr.setsockopt, fd, level, name, (long)batch.AddData(v), v.Length);
        }
        if (portId != 0 || groups.Length > 0 && groups[0] != 0)
        {
            var nl = new byte[12];
            BinaryPrimitives.WriteUInt16LittleEndian(nl, SocketCalls.AF_NETLINK);
            BinaryPrimitives.WriteUInt32LittleEndian(nl.AsSpan(4), portId);
            BinaryPrimitives.WriteUInt32LittleEndian(nl.AsSpan(8), groups.Length > 0 ? groups[0] : 0);
            batch.Add(Nr.bind, fd, (long)batch.AddData(nl), nl.Length, stopOnError: true, check: got =>
            {
                if (got < 0) throw new CkptException($"restart: cannot bind the {what} again: {Errors.Describe((int)-got)}{(got == -SocketCalls.EADDRINUSE ? " (another socket has that port id)" : "")}", ExitCodes.RestoreConflict);
            });
        }
        // the groups above the first 32, one by one (numbered from 1)
        for (int w = 1; w < groups.Length; w++)
            for (int bit = 0; bit < 32; bit++)
                if ((groups[w] & (1u << bit)) != 0)
                {
                    var g = new byte[4];
                    BinaryPrimitives.WriteInt32LittleEndian(g, w * 32 + bit + 1);
                    batch.AddChecked($"NETLINK_ADD_MEMBERSHIP of the {what}", Nr.setsockopt, fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, (long)batch.AddData(g), 4);
                }
        if (dstPort != 0 || dstGroup != 0)
        {
            var d = new byte[12];
            BinaryPrimitives.WriteUInt16LittleEndian(d, SocketCalls.AF_NETLINK);
            BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan(4), dstPort);
            BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan(8), dstGroup);
            batch.AddChecked($"connect of the {what}", Nr.connect, fd, (long)batch.AddData(d), d.Length);
        }
        batch.Flush();
    }

    public void Finish(RestoreContext ctx) { }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint objref = r.U32(); int flags = r.I32(), type = r.I32(), protocol = r.I32();
        uint portId = r.U32(); r.U32(); r.U32();
        var groups = new List<int>();
        uint words = r.U32();
        for (int w = 0; w < words; w++) { uint m = r.U32(); for (int b = 0; b < 32; b++) if ((m & (1u << b)) != 0) groups.Add(w * 32 + b + 1); }
        info.Child("files").Set(objref.ToString(), new InfoNode().Set("kind", "netlink socket").Set("path", $"netlink protocol {protocol}, port id {portId}")
            .Set("flags", RegularFile.OpenFlags(flags)).Set("groups", string.Join(",", groups)));
    }
}
