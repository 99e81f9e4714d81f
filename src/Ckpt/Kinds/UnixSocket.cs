using System.Runtime.InteropServices;
using System.Text;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// Unix domain sockets (stream, datagram, seqpacket). A socket is known by its inode (fd link
/// <c>socket:[INO]</c>); sock_diag gives its type, state, peer, address, queue lengths and shutdown
/// state. Saved: a connected pair whose two ends the tree holds (socketpair, or a connection accepted
/// from a listener: restored as a socketpair, without the addresses), with the peer credentials of each
/// end (rebuilt by the process, or a helper with the pid, that made it: <see cref="Maker"/>), a socket whose peer was closed,
/// an unconnected socket (bound to a path or an abstract name, or not), a listening socket with no
/// connection waiting. The bytes or messages queued in each socket's receive queue are read without
/// being consumed (MSG_PEEK walking with SO_PEEK_OFF on a pidfd_getfd copy) and written again at restart
/// from the other end. A peer held outside the tree is refused naming its holder (or saved as external
/// with --external); other sockets (TCP, UDP, netlink...) are refused.
/// </summary>
public sealed unsafe class UnixSocket : IFileKind
{
    public static readonly UnixSocket Instance = new();
    public string Name => "unix socket";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.UnixSocket, RecordKind.UnixSocketQueue, RecordKind.UnixSocketRights, RecordKind.UnixSocketSenders, RecordKind.UnixSocketCreds];
    /// <summary>After the credentials (70): listen() records the caller's credentials as the peer credentials of future connections.</summary>
    public int FinishOrder => 75;

    /// <summary>How a socket is rebuilt.</summary>
    public enum Relation : byte
    {
        /// <summary>Not connected: socket(), then bind() if it had an address.</summary>
        Unconnected = 0,
        /// <summary>Connected to a socket the tree holds, which is connected back: one socketpair for both.</summary>
        Pair = 1,
        /// <summary>Connected to a socket that was closed: a socketpair whose other end is closed once the queue is written.</summary>
        PeerClosed = 2,
        /// <summary>Listening: socket(), bind(), listen(backlog); then its waiting clients connect, in the order they waited.</summary>
        Listening = 3,
        /// <summary>Connected to a listener of the tree that has not accepted it yet: socket(), connect() once the listener listens.</summary>
        Waiting = 4,
        /// <summary>
        /// A datagram socket connected to a bound one that is not connected back (a client of a datagram
        /// server such as /dev/log, in the tree or not, or itself): socket(), bind() if it had an address,
        /// connect() to the peer's address once every socket is bound.
        /// </summary>
        ConnectedTo = 5,
    }

    private const int MaxQueueBytes = 32 << 20;
    private const int QueueChunk = 4 << 20;

    /// <summary>
    /// Socket options saved when they differ from a fresh unix socket's (the buffer sizes, SO_PASSCRED and
    /// SO_PEEK_OFF have fields of their own): SO_PASSSEC, SO_PASSPIDFD, SO_PRIORITY, SO_RCVLOWAT, SO_MARK,
    /// SO_RCVTIMEO, SO_SNDTIMEO, SO_TIMESTAMP, SO_TIMESTAMPNS, SO_KEEPALIVE, SO_LINGER, SO_OOBINLINE,
    /// SO_DONTROUTE, SO_NO_CHECK.
    /// </summary>
    private static readonly (int Level, int Name, int Size)[] Options =
    [
        (SocketCalls.SOL_SOCKET, 34, 4), (SocketCalls.SOL_SOCKET, 76, 4), (SocketCalls.SOL_SOCKET, 12, 4),
        (SocketCalls.SOL_SOCKET, 18, 4), (SocketCalls.SOL_SOCKET, 36, 4), (SocketCalls.SOL_SOCKET, 20, 16),
        (SocketCalls.SOL_SOCKET, 21, 16), (SocketCalls.SOL_SOCKET, 29, 4), (SocketCalls.SOL_SOCKET, 35, 4),
        (SocketCalls.SOL_SOCKET, 9, 4), (SocketCalls.SOL_SOCKET, 13, 8), (SocketCalls.SOL_SOCKET, 10, 4),
        (SocketCalls.SOL_SOCKET, 5, 4), (SocketCalls.SOL_SOCKET, 11, 4),
    ];

    public bool Handles(in OpenFile f) => f.Link.StartsWith("socket:[");

    public void Checkpoint(CheckpointContext ctx) { }

    private sealed class CheckpointState
    {
        public Dictionary<uint, SocketCalls.UnixDiag>? Diag;
        private Dictionary<uint, SocketCalls.UnixDiag>? _listenerOf;

        /// <summary>The listening socket connection <paramref name="ino"/> waits to be accepted by, or null (an index of every listener's queue, made once).</summary>
        public SocketCalls.UnixDiag? ListenerOf(uint ino)
        {
            if (_listenerOf == null)
            {
                _listenerOf = new();
                foreach (var l in Diag!.Values)
                    if (l.State == SocketCalls.TCP_LISTEN)
                        foreach (uint c in l.Icons) _listenerOf.TryAdd(c, l);
            }
            return _listenerOf.GetValueOrDefault(ino);
        }
    }

    public void CheckpointFile(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        var st = ctx.Session.State<CheckpointState>();
        st.Diag ??= SocketCalls.DumpUnix();
        uint ino = (uint)f.Stat.Ino;
        if (!st.Diag.TryGetValue(ino, out var d))
        {
            if (InetSocket.TryCheckpoint(ctx, f, objref) || NetlinkSocket.TryCheckpoint(ctx, f, objref) || PacketSocket.TryCheckpoint(ctx, f, objref)) return;
            throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd} is {DescribeOther(ctx, f)}, which is not supported yet (only unix domain, TCP, UDP, raw IP, netlink and packet sockets are)");
        }
        string what = $"fd {f.Fd} ({f.Link}, a unix {TypeName(d.Type)} socket{(d.Name is { Length: > 0 } ? " " + ShowName(d.Name) : "")})";
        if (d.Type is not (SocketCalls.SOCK_STREAM or SocketCalls.SOCK_DGRAM or SocketCalls.SOCK_SEQPACKET))
            throw new NotCheckpointableException(ctx.Pid, $"{what} has a type that is not supported");

        var rel = Relation.Unconnected;
        ulong peer = 0;
        int backlog = 0;
        uint[] waiting = [];
        bool InTree(uint i) => FindInTree(ctx, $"socket:[{i}]") != null;
        if (d.State == SocketCalls.TCP_LISTEN)
        {
            waiting = d.Icons;
            if (WaitingProblem(st.Diag, d, InTree) is { } why)
            {
                int all = Math.Max(d.Icons.Length, (int)d.RQueue);
                if (!ctx.Session.SkipInFlight)
                    throw new NotCheckpointableException(ctx.Pid, $"{what} is listening with {all} connection(s) waiting to be accepted, {why}, which is not supported; checkpoint once they were accepted, or leave those out with --skip-in-flight");
                // (their clients find them closed once the listener is gone, as when a server ends)
                waiting = d.Icons.Where(c => ConnectionProblem(st.Diag, c, InTree) == null).ToArray();
                ctx.Session.Log.Info($"pid {ctx.Pid}: {what}: {all - waiting.Length} connection(s) waiting to be accepted left out (--skip-in-flight): {why}");
                ctx.Session.SkippedInFlight += all - waiting.Length;
            }
            rel = Relation.Listening;
            backlog = (int)d.WQueue;
        }
        byte[] connectTo = [];
        if (d.Peer is uint cp && d.Type == SocketCalls.SOCK_DGRAM && DatagramPeerAddress(ctx, st.Diag, d, cp, what) is { } to)
        {
            rel = Relation.ConnectedTo;
            peer = cp;
            connectTo = to;
        }
        else if (d.Peer is uint p)
        {
            if (p == ino) throw new NotCheckpointableException(ctx.Pid, $"{what} is connected to itself, which is not supported");
            var listener = st.ListenerOf(ino);
            if (listener != null)
            {
                string of = $"the listening socket {ShowName(listener.Name)} (socket:[{listener.Ino}])";
                if (!InTree(listener.Ino))
                    throw new NotCheckpointableException(ctx.Pid, $"{what} waits to be accepted by {of}, which is held outside the tree; not supported");
                // (with --skip-in-flight the listener leaves out only the connections that cannot be saved)
                if ((ctx.Session.SkipInFlight ? ConnectionProblem(st.Diag, ino, InTree) : WaitingProblem(st.Diag, listener, InTree)) is { } why)
                    throw new NotCheckpointableException(ctx.Pid, $"{what} waits to be accepted by {of}, whose waiting connections cannot be saved: {why}; checkpoint once they were accepted");
                rel = Relation.Waiting;
                peer = listener.Ino;
            }
        }
        CheckpointContext? pairHolder = null;
        int pairFd = -1;
        if (rel is not (Relation.Listening or Relation.Waiting or Relation.ConnectedTo) && d.Peer is uint p2)
        {
            uint p = p2;
            string peerLink = $"socket:[{p}]";
            var holder = p == 0 ? null : ctx.Session.FirstHolderOf(peerLink);
            if (holder is { } h)
            {
                (pairHolder, pairFd) = (h.P, h.F.Fd);
                if (!st.Diag.TryGetValue(p, out var pd) || pd.Peer != ino)
                    throw new NotCheckpointableException(ctx.Pid, $"{what} is connected to {peerLink} (pid {h.P.Pid} fd {h.F.Fd}{(pd?.Name is { Length: > 0 } ? ", " + ShowName(pd.Name) : "")}), which is not connected back to it (a datagram socket connected to a bound one); not supported yet");
                rel = Relation.Pair;
                peer = p;
            }
            else
            {
                var outside = p == 0 ? null : ctx.Session.State<OutsideHolders>().FindFd(ctx.Session, peerLink);
                if (outside != null && ctx.External)
                {
                    ExternalFile.Instance.CheckpointFile(ctx, f, objref);
                    return;
                }
                if (outside != null)
                    throw new NotCheckpointableException(ctx.Pid, $"{what} is connected to {peerLink}, which is held outside the tree by pid {outside.Value.Pid} (fd {outside.Value.Fd}); checkpoint a tree that holds both ends, or save it as external with --external and hand in a replacement at restart");
                // no process holds the peer: it was closed (the kernel keeps the survivor's link to it)
                ctx.Log.Debug($"{what}: its peer {(p == 0 ? "" : peerLink + " ")}is closed");
                rel = Relation.PeerClosed;
            }
        }

        // the address: only rebuilt for sockets that are not connected (a connection is rebuilt as a socketpair)
        byte[] name = d.Name ?? [];
        string path = "";
        uint mode = 0, uid = 0, gid = 0;
        bool removed = false;
        if (rel is Relation.Unconnected or Relation.Listening or Relation.Waiting or Relation.ConnectedTo && name.Length > 0 && name[0] != 0)
        {
            string raw = Encoding.UTF8.GetString(name).TrimEnd('\0');
            path = raw.StartsWith('/') ? raw : Path.Combine(MmState.ProcLink($"/proc/{ctx.Pid}/cwd"), raw);
            // a relative name: the directory it was bound in is where its socket file is (or was, if removed)
            bool known = raw.StartsWith('/');
            if (!known && BoundFile(ctx, f.Fd) is { } bound && bound.EndsWith("/" + raw, StringComparison.Ordinal))
                (path, known) = (bound, true);
            if (!FileCalls.TryStat(MountNamespace.Reach(ctx.Session, path), out var fst))
            {
                // its socket file was removed (the process unlinks it once bound, or a cleanup did):
                // bound again at restart, and removed again once the queues are written
                if (Marshal.GetLastPInvokeError() != Errors.ENOENT || !known)
                    throw new NotCheckpointableException(ctx.Pid, $"{what} is bound to {path}, whose socket file was removed or moved since; it cannot be bound again");
                removed = true;
            }
            else if (fst.Type != StatBuf.S_IFSOCK || fst.Ino != d.VfsIno)
            {
                // another file took its name (a new instance of a server made its socket there): bound
                // again by that name where the other file cannot be seen (BindHidden)
                if (!known)
                    throw new NotCheckpointableException(ctx.Pid, $"{what} is bound to {path}, where another file is now; it cannot be bound again");
                removed = true;
            }
            if (Encoding.UTF8.GetByteCount(path) > 107)
                throw new NotCheckpointableException(ctx.Pid, $"{what} is bound to {path}, too long a path to bind again");
            if (!removed) { mode = fst.Mode & 0xfff; uid = fst.Uid; gid = fst.Gid; }
        }

        int mine = ctx.GrabFd(f.Fd);
        int sndbuf, rcvbuf, peekOff;
        bool passcred;
        List<(int Level, int Name, byte[] Value)> options;
        // the peer credentials this end reports (who made the connection), and for a pair its peer's:
        // the process that holds the other end reads them through it
        var cred = NoCred;
        var peerCred = NoCred;
        List<(byte[] Data, int[]? Fds)> queue;
        // the sender of each datagram queued in a socket that is not one end of a pair (which only its peer sends to)
        var senders = d.Type == SocketCalls.SOCK_DGRAM && rel is Relation.Unconnected or Relation.ConnectedTo ? new List<byte[]?>() : null;
        List<PeerCredentials?>? creds = null;
        try
        {
            sndbuf = SocketCalls.GetInt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_SNDBUF, "SO_SNDBUF", ctx.Pid);
            rcvbuf = SocketCalls.GetInt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_RCVBUF, "SO_RCVBUF", ctx.Pid);
            passcred = SocketCalls.GetInt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_PASSCRED, "SO_PASSCRED", ctx.Pid) != 0;
            options = InetSocket.ChangedOptions(mine, SocketCalls.AF_UNIX, d.Type, 0, ctx.Pid, Options);
            peekOff = SocketCalls.GetInt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_PEEK_OFF, "SO_PEEK_OFF", ctx.Pid);
            if (rel is Relation.Pair or Relation.PeerClosed)
            {
                cred = PeerCredentials.Of(SocketCalls.PeerCred(mine, ctx.Pid, what));
                if (pairHolder != null)
                {
                    int theirs = pairHolder.GrabFd(pairFd);
                    try { peerCred = PeerCredentials.Of(SocketCalls.PeerCred(theirs, pairHolder.Pid, $"fd {pairFd}")); }
                    finally { FileCalls.Close(theirs); }
                }
            }
            // a stream or seqpacket socket that is not connected has no queue (and recvmsg says ENOTCONN)
            bool hasQueue = rel is Relation.Pair or Relation.PeerClosed or Relation.ConnectedTo || (rel == Relation.Unconnected && d.Type == SocketCalls.SOCK_DGRAM);
            // the credentials each message came with, which a receiver with SO_PASSCRED reads with it
            if (hasQueue && passcred) creds = new();
            queue = hasQueue ? PeekQueue(mine, d, peekOff, ctx.Pid, what, senders, creds) : [];
        }
        finally { FileCalls.Close(mine); }
        long total = queue.Sum(m => (long)m.Data.Length);
        // files in flight: the process's fds for them that InstallInFlight made (their objrefs are known
        // once every file of the process is saved: a socket may carry itself, or one saved after it)
        var rights = new List<(int Index, int[] Fds)>();
        for (int i = 0; i < queue.Count; i++)
        {
            if (queue[i].Fds is not { } fds) continue;
            try { rights.Add((i, fds.Select(r => InFlightFd(ctx, r)).ToArray())); }
            finally { foreach (int r in fds) FileCalls.Close(r); }
        }
        if (queue.Count > 0 && rel is Relation.Unconnected or Relation.ConnectedTo && (name.Length == 0 || d.Type != SocketCalls.SOCK_DGRAM))
            throw new NotCheckpointableException(ctx.Pid, $"{what} is not connected and has {total} bytes queued that cannot be sent to it again; not supported");

        var w = new PayloadWriter().U32(objref).U64(ino).U8((byte)d.Type).U8((byte)rel).U64(peer)
            .I32(f.Flags & ~FileCalls.O_CLOEXEC).U8((byte)d.Shutdown).I32(sndbuf).I32(rcvbuf).Bool(passcred).I32(peekOff)
            .Bytes(name).Str(path).U32(mode).U32(uid).U32(gid).I32(backlog).U32((uint)queue.Count).Bool(removed);
        w.U32((uint)waiting.Length);
        foreach (uint c in waiting) w.U64(c);
        w.Bytes(connectTo);
        // appended: the peer credentials of this end and of its peer (a pair)
        WriteCred(w, cred);
        WriteCred(w, peerCred);
        // appended: whether an end of a datagram pair is bound to its abstract name again (a stream's or
        // seqpacket's name may be the one of the listener it was accepted from, which cannot be told apart)
        bool rebind = rel is Relation.Pair or Relation.PeerClosed && name.Length > 1 && name[0] == 0 && d.Type == SocketCalls.SOCK_DGRAM;
        w.Bool(rebind);
        // appended: the socket options that differ from a fresh socket's
        w.U32((uint)options.Count);
        foreach (var (level, oname, value) in options) w.I32(level).I32(oname).Bytes(value);
        ctx.Image.Write(RecordKind.UnixSocket, w);
        // the queue, after the files in flight in it (by objref) and the senders' addresses: written by
        // WriteQueues once every file of the process is saved if files are in flight, else now
        if (rights.Count > 0) ctx.State<PendingQueues>().List.Add((ino, queue, senders, rights, creds));
        else WriteQueue(ctx, ino, queue, senders, null, creds);
        ctx.Log.Info($"{what}: {rel}, {queue.Count} message(s), {total} bytes queued{(rights.Count > 0 ? $", {rights.Sum(x => x.Fds.Length)} file(s) in flight" : "")}{(waiting.Length > 0 ? $", {waiting.Length} connection(s) waiting to be accepted" : "")}");
    }

    /// <summary>
    /// The address a datagram socket connected to <paramref name="peer"/> connects to again (sun_path bytes:
    /// an absolute path, or a NUL and an abstract name), when the peer is a bound socket that is not connected
    /// back to it (or is itself); null when the peer is connected back (a pair) or closed. A peer whose name no
    /// longer reaches it is refused.
    /// </summary>
    private static byte[]? DatagramPeerAddress(CheckpointContext ctx, Dictionary<uint, SocketCalls.UnixDiag> diag, SocketCalls.UnixDiag d, uint peer, string what)
    {
        if (peer == 0 || !diag.TryGetValue(peer, out var pd)) return null;
        if (peer != d.Ino && pd.Peer == d.Ino) return null;
        byte[] name = pd.Name ?? [];
        if (name.Length == 0)
            throw new NotCheckpointableException(ctx.Pid, $"{what} is connected to socket:[{peer}], which has no address and is not connected back to it; it cannot be reached again");
        if (peer != d.Ino && pd.Peer is uint pp && pp != 0 && diag.TryGetValue(pp, out var ppd) && ppd.Peer == peer)
            throw new NotCheckpointableException(ctx.Pid, $"{what} is connected to socket:[{peer}] {ShowName(name)}, which is itself one end of a connected pair (rebuilt without its address); not supported");
        if (name[0] == 0) return name;
        string raw = Encoding.UTF8.GetString(name).TrimEnd('\0');
        string path = raw;
        if (!raw.StartsWith('/'))
        {
            // a relative name: where its socket file is (or was), else relative to the directory of a
            // holder (the tree's, or an outside one's)
            var inTree = ctx.Session.FirstHolderOf($"socket:[{peer}]");
            if (inTree is { } h && BoundFile(h.P, h.F.Fd) is { } bound && bound.EndsWith("/" + raw, StringComparison.Ordinal))
                path = bound;
            else
            {
                int? holder = inTree?.P.Pid ?? ctx.Session.State<OutsideHolders>().FindFd(ctx.Session, $"socket:[{peer}]")?.Pid;
                if (holder == null)
                    throw new NotCheckpointableException(ctx.Pid, $"{what} is connected to socket:[{peer}] bound to the relative name {raw}, whose directory is not known");
                path = Path.Combine(MmState.ProcLink($"/proc/{holder}/cwd"), raw);
            }
        }
        // a socket of the tree (or this one) is bound again at restart, before the connects (its own record
        // checks its file); one outside must still be reachable by its name
        bool ours = peer == d.Ino || FindInTree(ctx, $"socket:[{peer}]") != null;
        bool reachable = FileCalls.TryStat(MountNamespace.Reach(ctx.Session, path), out var fst) && fst.Type == StatBuf.S_IFSOCK && fst.Ino == pd.VfsIno;
        if (!ours && !reachable)
            throw new NotCheckpointableException(ctx.Pid, $"{what} is connected to socket:[{peer}] bound to {path}, whose socket file was removed or replaced since; it cannot be reached again");
        // (one of the tree whose name another file took, or whose directory went, is bound again where no
        // path reaches it, BindHidden; the connect goes through the mount namespace it was bound in, known
        // by its inode: several sockets of the tree may have been bound to that name, each removed before
        // the next was bound)
        if (Encoding.UTF8.GetByteCount(path) > 107)
            throw new NotCheckpointableException(ctx.Pid, $"{what} is connected to {path}, too long a path to connect to again");
        return Encoding.UTF8.GetBytes(path);
    }

    /// <summary>
    /// Why the connections waiting on <paramref name="listener"/> cannot be saved, or null. They can when
    /// every client is held by the tree (each is connected again at restart, in the same order) and none
    /// sent anything yet: what a client sends before it is accepted waits in a socket no fd reaches. A
    /// client closed before it was accepted leaves a connection whose data cannot be known either.
    /// </summary>
    private static string? WaitingProblem(Dictionary<uint, SocketCalls.UnixDiag> diag, SocketCalls.UnixDiag listener, Func<uint, bool> inTree)
    {
        if (listener.RQueue != listener.Icons.Length || listener.Icons.Contains(0u))
            return "one of them from a socket closed since (what it sent cannot be read)";
        foreach (uint c in listener.Icons)
            if (ConnectionProblem(diag, c, inTree) is { } why) return why;
        return null;
    }

    /// <summary>Why the waiting connection from client socket <paramref name="c"/> cannot be saved, or null.</summary>
    private static string? ConnectionProblem(Dictionary<uint, SocketCalls.UnixDiag> diag, uint c, Func<uint, bool> inTree)
    {
        if (c == 0) return "one of them from a socket closed since (what it sent cannot be read)";
        if (!inTree(c)) return $"one from socket:[{c}], held outside the tree";
        if (!diag.TryGetValue(c, out var cd)) return $"one from socket:[{c}], which sock_diag does not list";
        if (cd.WQueue > 0) return $"one from socket:[{c}], which sent data that waits unread with the connection";
        if (cd.Shutdown != 0) return $"one from socket:[{c}], which was shut down";
        return null;
    }

    /// <summary>
    /// Where the socket file of a unix socket (fd <paramref name="fd"/> of the process) bound to a path is
    /// now, or was if removed (SIOCUNIXFILE: its path, " (deleted)" taken off); null if the kernel does not
    /// tell (not bound to a path, or not allowed).
    /// </summary>
    private static string? BoundFile(CheckpointContext holder, int fd)
    {
        int copy = holder.GrabFd(fd);
        try
        {
            int file = EventCalls.Ioctl(copy, SocketCalls.SIOCUNIXFILE, null);
            if (file < 0) return null;
            try
            {
                string? link = FileCalls.ReadLink($"/proc/self/fd/{file}");
                if (link == null || !link.StartsWith('/')) return null;
                return link.EndsWith(" (deleted)", StringComparison.Ordinal) ? link[..^" (deleted)".Length] : link;
            }
            finally { FileCalls.Close(file); }
        }
        finally { FileCalls.Close(copy); }
    }

    /// <summary>A process of the tree holding <paramref name="link"/>.</summary>
    private static (int Pid, int Fd)? FindInTree(CheckpointContext ctx, string link)
        => ctx.Session.FirstHolderOf(link) is { } h ? (h.P.Pid, h.F.Fd) : null;

    /// <summary>
    /// Reads the receive queue of a socket without consuming it: MSG_PEEK from offset 0 with SO_PEEK_OFF
    /// (which moves past each message peeked), until nothing is left; the socket's own peek offset is put
    /// back afterwards. A stream gives one block of bytes; datagram and seqpacket sockets give one entry
    /// per message (a message longer than the buffer comes in pieces, MSG_TRUNC marking all but the last).
    /// </summary>
    [ThreadStatic] private static byte[]? t_peekBuffer;

    private static List<(byte[] Data, int[]? Fds)> PeekQueue(int fd, SocketCalls.UnixDiag d, int savedPeekOff, int pid, string what, List<byte[]?>? senders = null,
        List<PeerCredentials?>? creds = null)
    {
        var msgs = new List<(byte[] Data, int[]? Fds)>();
        bool stream = d.Type == SocketCalls.SOCK_STREAM;
        bool shutRd = (d.Shutdown & SocketCalls.RCV_SHUTDOWN) != 0;
        SocketCalls.SetInt(fd, SocketCalls.SOL_SOCKET, SocketCalls.SO_PEEK_OFF, 0, "SO_PEEK_OFF");
        try
        {
            // one buffer for every socket (a fresh 1 MiB each time cost a clear and a GC per few sockets)
            var buf = t_peekBuffer ??= GC.AllocateUninitializedArray<byte>(1 << 20);
            var ctl = new byte[CmsgRoom];
            var from = new byte[110];   // sockaddr_un
            byte[]? curFrom = null;
            PeerCredentials? curCred = null;
            var cur = new MemoryStream();
            List<int>? curFds = null;
            long total = 0;
            bool anyFds = false;
            while (true)
            {
                nint n;
                int flags;
                int[]? fds = null;
                fixed (byte* b = buf)
                fixed (byte* c = ctl)
                fixed (byte* a = from)
                {
                    var iov = new SocketCalls.IoVec { Base = b, Len = (nuint)buf.Length };
                    var mh = new SocketCalls.MsgHdr { Iov = &iov, IovLen = 1, Control = c, ControlLen = (nuint)ctl.Length };
                    if (!stream) { mh.Name = a; mh.NameLen = from.Length; }
                    n = SocketCalls.RecvMsg(fd, &mh, SocketCalls.MSG_PEEK | SocketCalls.MSG_DONTWAIT | SocketCalls.MSG_CMSG_CLOEXEC);
                    flags = mh.Flags;
                    if (n >= 0) fds = Rights(c, (int)mh.ControlLen, flags, pid, what);
                    if (n >= 0 && creds != null && cur.Length == 0) curCred = Credentials(c, (int)mh.ControlLen);
                    // the sender's address (sun_path bytes; none from an unbound sender)
                    if (n >= 0 && !stream && cur.Length == 0) curFrom = mh.NameLen > 2 ? from.AsSpan(2, Math.Min(mh.NameLen, from.Length) - 2).ToArray() : null;
                }
                if (n < 0)
                {
                    int e = Marshal.GetLastPInvokeError();
                    if (e == Errors.EINTR) continue;
                    if (e == Errors.EAGAIN) break;
                    CloseAll(msgs, curFds);
                    throw new SyscallException("recvmsg(MSG_PEEK)", e, pid, what);
                }
                if (fds != null) { (curFds ??= new()).AddRange(fds); anyFds = true; }
                // 0 at the end of a stream, or (datagrams) after a shutdown for reading: nothing more
                // (a zero-length datagram queued in a socket shut down for reading is lost)
                if (n == 0 && (stream || shutRd) && fds == null) break;
                total += n;
                if (total > MaxQueueBytes) { CloseAll(msgs, curFds); throw new NotCheckpointableException(pid, $"{what} has more than {MaxQueueBytes >> 20} MiB queued"); }
                // (a stream's peek glues the bytes before a piece that carries files to it, and no call
                // tells where that piece starts: the files come back with the glued bytes, which a
                // reader of the whole gets the same way)
                if (stream) { msgs.Add((buf[..(int)n], curFds?.ToArray())); creds?.Add(curCred); curFds = null; continue; }
                cur.Write(buf, 0, (int)n);
                if ((flags & SocketCalls.MSG_TRUNC) != 0) continue;   // the rest of this message comes next
                msgs.Add((cur.ToArray(), curFds?.ToArray()));
                senders?.Add(curFrom);
                creds?.Add(curCred);
                curFds = null;
                cur.SetLength(0);
                if (msgs.Count > 1 << 20) { CloseAll(msgs, null); throw new NotCheckpointableException(pid, $"{what} has more than 2^20 messages queued"); }
            }
            // a stream's pieces make one block of bytes, unless files are in flight: each piece then
            // keeps the files that came with it (a peek stops after the piece that carries files)
            // (a peek stops where the writer changes when the credentials are read: pieces of one writer
            // make one block, each with its writer's credentials)
            if (stream && msgs.Count > 1 && !anyFds)
            {
                if (creds == null) msgs = [(msgs.SelectMany(m => m.Data).ToArray(), null)];
                else
                {
                    var joined = new List<(byte[] Data, int[]? Fds)>();
                    var joinedCreds = new List<PeerCredentials?>();
                    for (int i = 0; i < msgs.Count;)
                    {
                        int j = i + 1;
                        while (j < msgs.Count && creds[j] == creds[i]) j++;
                        joined.Add((msgs.Skip(i).Take(j - i).SelectMany(m => m.Data).ToArray(), null));
                        joinedCreds.Add(creds[i]);
                        i = j;
                    }
                    msgs = joined;
                    creds.Clear();
                    creds.AddRange(joinedCreds);
                }
            }
        }
        finally
        {
            SocketCalls.SetInt(fd, SocketCalls.SOL_SOCKET, SocketCalls.SO_PEEK_OFF, savedPeekOff, "SO_PEEK_OFF");
        }
        return msgs;
    }

    /// <summary>Room for the control data of one message: SCM_RIGHTS (at most 253 fds) and SCM_CREDENTIALS.</summary>
    private const int CmsgRoom = 16 + 253 * 4 + 64;

    private static void CloseAll(List<(byte[] Data, int[]? Fds)> msgs, List<int>? more)
    {
        foreach (var (_, fds) in msgs) foreach (int f in fds ?? []) FileCalls.Close(f);
        foreach (int f in more ?? []) FileCalls.Close(f);
    }

    /// <summary>
    /// The next control message in <paramref name="c"/>[..<paramref name="len"/>] from <paramref name="off"/>
    /// (moved past it): its level, type and where its data is; false after the last whole one.
    /// </summary>
    private static bool NextCmsg(byte* c, int len, ref int off, out int level, out int type, out int data, out int dataLen)
    {
        level = type = data = dataLen = 0;
        if (off + 16 > len) return false;
        long clen = *(long*)(c + off);
        if (clen < 16 || off + clen > len) return false;
        level = *(int*)(c + off + 8);
        type = *(int*)(c + off + 12);
        data = off + 16;
        dataLen = (int)clen - 16;
        off += (int)((clen + 7) & ~7L);
        return true;
    }

    /// <summary>The credentials (SCM_CREDENTIALS) in the control data of a peek, or null.</summary>
    private static PeerCredentials? Credentials(byte* c, int len)
    {
        for (int off = 0; NextCmsg(c, len, ref off, out int level, out int type, out int d, out int n);)
            if (level == SocketCalls.SOL_SOCKET && type == SocketCalls.SCM_CREDENTIALS && n >= 12)
                return new PeerCredentials(*(int*)(c + d), *(uint*)(c + d + 4), *(uint*)(c + d + 8));
        return null;
    }

    /// <summary>The fds a peek gave ckpt for files in flight (SCM_RIGHTS), or null; a cut control message is refused.</summary>
    private static int[]? Rights(byte* c, int len, int flags, int pid, string what)
    {
        List<int>? fds = null;
        for (int off = 0; NextCmsg(c, len, ref off, out int level, out int type, out int d, out int n);)
            if (level == SocketCalls.SOL_SOCKET && type == SocketCalls.SCM_RIGHTS)
                for (int i = 0; i + 4 <= n; i += 4) (fds ??= new()).Add(*(int*)(c + d + i));
        if ((flags & SocketCalls.MSG_CTRUNC) != 0)
        {
            foreach (int f in fds ?? []) FileCalls.Close(f);
            throw new NotCheckpointableException(pid, $"{what} has a message whose control data (files in flight) does not fit ckpt's buffer; not supported");
        }
        return fds?.ToArray();
    }

    /// <summary>
    /// Does a unix listener of the frozen tree have connections waiting to be accepted, or a socket of the
    /// tree wait to be accepted by a listener (those cannot be saved)? Then the tree is let go a moment
    /// to accept them and frozen again (<see cref="Engine.Checkpointer"/>). A fresh sock_diag dump, not
    /// kept: the next freeze needs its own.
    /// </summary>
    public static bool HasWaitingConnections(CheckpointSession s)
    {
        var inodes = new HashSet<uint>();
        foreach (var ctx in s.Processes)
            foreach (var f in ctx.OpenFiles)
                if (f.Stat.Type == StatBuf.S_IFSOCK) inodes.Add((uint)f.Stat.Ino);
        if (inodes.Count == 0) return false;
        var diag = SocketCalls.DumpUnix();
        foreach (var d in diag.Values)
        {
            if (d.State != SocketCalls.TCP_LISTEN || d.RQueue == 0 && d.Icons.Length == 0) continue;
            // waiting connections that can be saved need no moment
            bool ours = inodes.Contains(d.Ino);
            if (!ours && !d.Icons.Any(inodes.Contains)) continue;
            if (!ours || WaitingProblem(diag, d, inodes.Contains) != null) return true;
        }
        return false;
    }

    /// <summary>
    /// Puts every file in flight in the unix sockets of the process (SCM_RIGHTS messages in their receive
    /// queues, and in the queues of sockets themselves in flight) into the process as an fd of its own, so
    /// that each is saved as any description, and shared with its other holders; <see cref="FdTable"/>
    /// leaves them out of the fd table, and the process closes them when it is released. They are passed
    /// the way the process got them: ckpt sends them (SCM_RIGHTS) into a socket pair made in the process,
    /// which receives them (injected recvmsg); a process of another user may not take files from ckpt by
    /// pidfd_getfd. Called once the scratch area is in place, before any kind.
    /// </summary>
    public static void InstallInFlight(CheckpointContext ctx)
    {
        var st = ctx.Session.State<CheckpointState>();
        var work = new Queue<OpenFile>(ctx.OpenFiles.Where(f => f.Link.StartsWith("socket:[")));
        if (work.Count == 0) return;
        var scanned = new HashSet<ulong>();
        var installed = new List<OpenFile>();
        RightsPassage? passage = null;
        try
        {
            while (work.TryDequeue(out var f))
            {
                if (!scanned.Add(f.Stat.Ino)) continue;
                st.Diag ??= SocketCalls.DumpUnix();
                if (!st.Diag.TryGetValue((uint)f.Stat.Ino, out var d) || d.State == SocketCalls.TCP_LISTEN) continue;
                if (d.RQueue == 0 && d.Type == SocketCalls.SOCK_STREAM) continue;
                if (d.Type is not (SocketCalls.SOCK_STREAM or SocketCalls.SOCK_DGRAM or SocketCalls.SOCK_SEQPACKET)) continue;
                if (d.Peer == null && d.Type != SocketCalls.SOCK_DGRAM) continue;   // not connected: no queue
                string what = $"fd {f.Fd} ({f.Link}, a unix {TypeName(d.Type)} socket)";
                int mine = ctx.GrabFd(f.Fd);
                List<(byte[] Data, int[]? Fds)> queue;
                try
                {
                    int peekOff = SocketCalls.GetInt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_PEEK_OFF, "SO_PEEK_OFF", ctx.Pid);
                    queue = PeekQueue(mine, d, peekOff, ctx.Pid, what);
                }
                finally { FileCalls.Close(mine); }
                var fds = queue.SelectMany(m => m.Fds ?? []).ToList();
                try
                {
                    for (int at = 0; at < fds.Count; at += MaxRights)
                    {
                        passage ??= new RightsPassage(ctx);
                        foreach (int t in passage.Pass(fds.Skip(at).Take(MaxRights).ToArray()))
                        {
                            ctx.InFlightFds.Add(t);
                            var of = FdTable.ReadOpenFile(ctx.Pid, t) with { InFlight = true };
                            installed.Add(of);
                            if (of.Link.StartsWith("socket:[")) work.Enqueue(of);
                        }
                    }
                }
                finally { foreach (int r in fds) FileCalls.Close(r); }
            }
        }
        finally { passage?.Close(); }
        if (installed.Count == 0) return;
        // a file met in flight inside another one in flight is saved before it
        installed.Reverse();
        ctx.OpenFiles.InsertRange(0, installed);
        ctx.Log.Debug($"pid {ctx.Pid}: {installed.Count} file(s) in flight in unix sockets, installed as fds {string.Join(',', ctx.InFlightFds)}");
    }

    /// <summary>The most fds one SCM_RIGHTS message may carry (SCM_MAX_FD).</summary>
    private const int MaxRights = 253;

    /// <summary>
    /// A datagram socket pair made in a frozen process for the checkpoint: ckpt holds one end and sends
    /// files (SCM_RIGHTS) through it; the process receives them on the other by an injected recvmsg, whose
    /// message header, one byte of data and control buffer are in the scratch area's result part.
    /// </summary>
    private sealed class RightsPassage
    {
        private readonly CheckpointContext _ctx;
        private readonly int _theirs, _mine;
        private const int Pair = CheckpointContext.OutOffset, Header = Pair + 64, Vec = Header + 64, Byte = Vec + 16, Control = Byte + 16;

        public RightsPassage(CheckpointContext ctx)
        {
            _ctx = ctx;
            ctx.Inject("socketpair (to pass the files in flight)", Nr.socketpair, SocketCalls.AF_UNIX,
                SocketCalls.SOCK_DGRAM | SocketCalls.SOCK_CLOEXEC, 0, (long)(ctx.Scratch + Pair));
            var sv = ctx.ReadScratch(Pair, 8);
            _theirs = BitConverter.ToInt32(sv, 0);
            int other = BitConverter.ToInt32(sv, 4);
            try { _mine = ctx.GrabFd(other); }
            catch { ctx.Task.Inject(Nr.close, _theirs); throw; }
            finally { ctx.Task.Inject(Nr.close, other); }
        }

        /// <summary>Sends <paramref name="fds"/> (ckpt's) and returns the process's fds for them, in order.</summary>
        public int[] Pass(int[] fds)
        {
            var ctl = RightsControl(fds);
            byte one = 1;
            fixed (byte* c = ctl)
            {
                var iov = new SocketCalls.IoVec { Base = &one, Len = 1 };
                var mh = new SocketCalls.MsgHdr { Iov = &iov, IovLen = 1, Control = c, ControlLen = (nuint)ctl.Length };
                nint n;
                do n = SocketCalls.SendMsg(_mine, &mh, SocketCalls.MSG_DONTWAIT | SocketCalls.MSG_NOSIGNAL);
                while (n < 0 && Marshal.GetLastPInvokeError() == Errors.EINTR);
                if (n < 0) throw SyscallException.Last("sendmsg (files in flight, to the process)", _ctx.Pid);
            }
            // struct msghdr { name, namelen, iov, iovlen, control, controllen, flags } and its iovec, in the process
            ulong s = _ctx.Scratch;
            var head = new byte[56];
            BitConverter.TryWriteBytes(head.AsSpan(16), s + Vec);
            BitConverter.TryWriteBytes(head.AsSpan(24), 1L);
            BitConverter.TryWriteBytes(head.AsSpan(32), s + Control);
            BitConverter.TryWriteBytes(head.AsSpan(40), (long)CmsgRoom);
            var vec = new byte[16];
            BitConverter.TryWriteBytes(vec, s + Byte);
            BitConverter.TryWriteBytes(vec.AsSpan(8), 1L);
            _ctx.WriteScratch(Header, head);
            _ctx.WriteScratch(Vec, vec);
            _ctx.Inject("recvmsg (files in flight)", Nr.recvmsg, _theirs, (long)(s + Header), SocketCalls.MSG_CMSG_CLOEXEC | SocketCalls.MSG_DONTWAIT);
            var back = _ctx.ReadScratch(Control, CmsgRoom);
            int flags = BitConverter.ToInt32(_ctx.ReadScratch(Header + 48, 4));
            fixed (byte* b = back)
            {
                var got = Rights(b, (int)Math.Min(BitConverter.ToInt64(_ctx.ReadScratch(Header + 40, 8)), CmsgRoom), 0, _ctx.Pid, "");
                if ((flags & SocketCalls.MSG_CTRUNC) != 0 || got == null || got.Length != fds.Length)
                {
                    foreach (int t in got ?? []) _ctx.Task.Inject(Nr.close, t);
                    throw new NotCheckpointableException(_ctx.Pid, $"{fds.Length} file(s) in flight in its unix sockets could not be put in the process for the checkpoint ({got?.Length ?? 0} came): its fd limit (RLIMIT_NOFILE) is reached; raise it");
                }
                return got;
            }
        }

        public void Close()
        {
            FileCalls.Close(_mine);
            _ctx.Task.Inject(Nr.close, _theirs);
        }
    }

    /// <summary>The process's fd for the description that fd <paramref name="mine"/> of ckpt (from a peek) refers to: one of the files installed in flight.</summary>
    private static int InFlightFd(CheckpointContext ctx, int mine)
    {
        var st = FileCalls.FstatOrThrow(mine, ctx.Pid);
        foreach (var f in ctx.OpenFiles)
        {
            if (!f.InFlight || f.Stat.Dev != st.Dev || f.Stat.Ino != st.Ino) continue;
            if (ProcessCalls.Kcmp(Environment.ProcessId, ctx.Pid, ProcessCalls.KCMP_FILE, mine, f.Fd) == 0) return f.Fd;
        }
        throw new CkptException($"pid {ctx.Pid}: a file in flight in a unix socket was not installed for the checkpoint", ExitCodes.Internal);
    }

    /// <summary>Queues that carry files in flight, written once every file of the process has its objref.</summary>
    private sealed class PendingQueues { public readonly List<(ulong Ino, List<(byte[] Data, int[]? Fds)> Queue, List<byte[]?>? Senders, List<(int Index, int[] Fds)> Rights, List<PeerCredentials?>? Creds)> List = new(); }

    /// <summary>
    /// Writes the queues that carry files in flight, after every file of the process (<see cref="FdTable"/>
    /// calls it before its table): each file in flight by the objref of the description it is.
    /// </summary>
    public static void WriteQueues(CheckpointContext ctx)
    {
        if (ctx.Existing<PendingQueues>() is not { } pending) return;
        var byFd = ctx.State<FdTable.Refs>().ByFd;
        foreach (var (ino, queue, senders, rights, creds) in pending.List)
            WriteQueue(ctx, ino, queue, senders, rights.Select(x => (x.Index, x.Fds.Select(fd => byFd.TryGetValue(fd, out uint r) ? r
                : throw new CkptException($"pid {ctx.Pid}: the file in flight installed as fd {fd} was not saved", ExitCodes.Internal)).ToArray())).ToList(), creds);
        ctx.Forget<PendingQueues>();
    }

    /// <summary>A socket's queue: which messages carry files (by objref), who sent each datagram, then the messages.</summary>
    private static void WriteQueue(CheckpointContext ctx, ulong ino, List<(byte[] Data, int[]? Fds)> queue, List<byte[]?>? senders, List<(int Index, uint[] Refs)>? rights,
        List<PeerCredentials?>? creds)
    {
        // the credentials of each message (optional: a reader without it sends them as ckpt's)
        if (creds != null && creds.Any(c => c != null))
        {
            var cw = new PayloadWriter().U64(ino).U32((uint)creds.Count(c => c != null));
            for (int i = 0; i < creds.Count; i++)
                if (creds[i] is { } c) cw.U32((uint)i).I32(c.Pid).U32(c.Uid).U32(c.Gid);
            ctx.Image.Write(RecordKind.UnixSocketCreds, cw, RecordFlags.Optional);
        }
        if (rights is { Count: > 0 })
        {
            var rw = new PayloadWriter().U64(ino).U32((uint)rights.Count);
            foreach (var (index, refs) in rights)
            {
                rw.U32((uint)index).U32((uint)refs.Length);
                foreach (uint r in refs) rw.U32(r);
            }
            ctx.Image.Write(RecordKind.UnixSocketRights, rw);
        }
        // the senders' addresses (optional: a reader without it sends them from an unbound socket)
        if (senders != null && senders.Any(x => x != null))
        {
            var sw = new PayloadWriter().U64(ino).U32((uint)senders.Count(x => x != null));
            for (int i = 0; i < senders.Count; i++)
                if (senders[i] is { } a) sw.U32((uint)i).Bytes(a);
            ctx.Image.Write(RecordKind.UnixSocketSenders, sw, RecordFlags.Optional);
        }
        // the messages in order, in records of at most QueueChunk bytes (a stream is cut anywhere)
        var q = new PayloadWriter();
        int inRecord = 0, bytes = 0;
        void Flush()
        {
            if (inRecord == 0) return;
            var head = new PayloadWriter().U64(ino).U32((uint)inRecord);
            ctx.Image.Write(RecordKind.UnixSocketQueue, head.Span, q.Span);
            q.Clear(); inRecord = 0; bytes = 0;
        }
        foreach (var (m, _) in queue)
        {
            if (inRecord > 0 && bytes + m.Length > QueueChunk) Flush();
            q.Bytes(m); inRecord++; bytes += m.Length;
        }
        Flush();
    }

    private static string DescribeOther(CheckpointContext ctx, in OpenFile f)
    {
        try
        {
            int mine = ctx.GrabFd(f.Fd);
            try
            {
                int dom = SocketCalls.GetInt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_DOMAIN, "SO_DOMAIN");
                int type = SocketCalls.GetInt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_TYPE, "SO_TYPE");
                string v6 = dom == SocketCalls.AF_INET6 ? " (IPv6)" : "";
                string kind = dom switch
                {
                    SocketCalls.AF_INET or SocketCalls.AF_INET6 => type switch
                    {
                        SocketCalls.SOCK_STREAM => "a TCP socket" + v6,
                        SocketCalls.SOCK_DGRAM => SocketCalls.GetInt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_PROTOCOL, "SO_PROTOCOL") switch
                        {
                            136 => "a UDP-Lite socket",
                            1 or 58 => "an ICMP echo (ping) socket",
                            _ => "a UDP socket",
                        } + v6,
                        SocketCalls.SOCK_RAW => "a raw IP socket" + v6,
                        _ => "an IP socket" + v6,
                    },
                    SocketCalls.AF_NETLINK => "a netlink socket",
                    SocketCalls.AF_PACKET => "a packet socket",
                    SocketCalls.AF_UNIX => "a unix domain socket that sock_diag does not list (another network namespace?)",
                    _ => $"a socket of address family {dom}",
                };
                return $"{kind} ({f.Link})";
            }
            finally { FileCalls.Close(mine); }
        }
        catch (SyscallException) { return $"a socket ({f.Link})"; }
    }

    public static string TypeName(int type) => type switch
    {
        SocketCalls.SOCK_STREAM => "stream",
        SocketCalls.SOCK_DGRAM => "datagram",
        SocketCalls.SOCK_SEQPACKET => "seqpacket",
        _ => $"type-{type}",
    };

    /// <summary>A socket address for messages: a path, <c>@name</c> for an abstract name, or "unnamed".</summary>
    public static string ShowName(byte[]? name)
    {
        if (name == null || name.Length == 0) return "unnamed";
        if (name[0] == 0) return "@" + Encoding.UTF8.GetString(name.AsSpan(1)).Replace('\0', '@');
        return Encoding.UTF8.GetString(name).TrimEnd('\0');
    }

    // ---------------------------------------------------------------- restart

    private sealed class RestoreState
    {
        /// <summary>ckpt's copy of each socket rebuilt (or about to be installed), by inode.</summary>
        public readonly Dictionary<ulong, int> Mine = new();
        /// <summary>Where each socket's queued data is sent from: the other end of its pair (ckpt's copy), or its address (unconnected datagram socket).</summary>
        public readonly Dictionary<ulong, (int Fd, byte[]? Addr, int Type)> SendFrom = new();
        /// <summary>Shutdown state and buffer sizes, applied once every queue was written.</summary>
        public readonly List<(int Fd, int Shutdown, int Sndbuf, int Rcvbuf, int PeekOff)> Pending = new();
        public bool Applied;
        /// <summary>Sockets whose queue carries files in flight: message index → objrefs of the files.</summary>
        public readonly Dictionary<ulong, Dictionary<uint, uint[]>> Rights = new();
        /// <summary>Messages read so far from the queue of each socket with files in flight.</summary>
        public readonly Dictionary<ulong, uint> Sent = new();
        /// <summary>Sockets whose queued datagrams came from bound senders: message index → the sender's address (sun_path bytes).</summary>
        public readonly Dictionary<ulong, Dictionary<uint, byte[]>> Senders = new();
        /// <summary>The credentials queued messages came with (UnixSocketCreds): socket inode → message index → credentials.</summary>
        public readonly Dictionary<ulong, Dictionary<uint, PeerCredentials>> Creds = new();
        /// <summary>Every socket rebuilt with an address: its sun_path bytes (as a string key) → ckpt's copy (the senders of queued datagrams).</summary>
        public readonly Dictionary<string, int> ByName = new();
        /// <summary>The queues of those sockets, in order, written in Finish with their files and senders.</summary>
        public readonly List<(ulong Ino, (int Fd, byte[]? Addr, int Type) From, byte[] Msg, uint[]? Refs, byte[]? Sender, PeerCredentials? Cred)> Deferred = new();
        /// <summary>Socket files made by bind() for sockets whose file had been removed: removed again once the queues are written.</summary>
        public readonly List<string> Removed = new();
        /// <summary>An unbound datagram socket of ckpt that sends the queues of unconnected datagram sockets.</summary>
        public int Sender = -1;
        /// <summary>Datagram sockets connected to a bound one (ckpt's copy, the peer's address): connected once every queue was written.</summary>
        public readonly List<(int Mine, byte[] Addr, ulong Peer, string What)> Connects = new();
        /// <summary>Sockets waiting to be accepted, by inode: connected by their listener's Finish.</summary>
        public readonly Dictionary<ulong, (RestoreContext Ctx, uint Objref, int Mine, string What)> Clients = new();
    }

    /// <summary>
    /// Listening sockets of one process: listen() is called in Finish, on the final fd, then the clients that
    /// waited on it connect (in order, to <c>Addr</c>); a socket file that had been removed is removed after that.
    /// </summary>
    private sealed class Listens { public readonly List<(uint Objref, int Backlog, string What, ulong[] Waiting, byte[]? Addr, string? Removed)> List = new(); }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var st = ctx.Session.State<RestoreState>();
        var r = rec.Reader();
        if (rec.Kind == RecordKind.UnixSocketRights)
        {
            var (rino, byIndex) = ReadRights(rec);
            if (!st.SendFrom.ContainsKey(rino) || !st.Rights.TryAdd(rino, byIndex))
                throw new ImageFormatException($"UnixSocketRights record at offset {rec.Offset} for an unknown socket:[{rino}], or a second one");
            return;
        }
        if (rec.Kind == RecordKind.UnixSocketSenders)
        {
            ulong sino = r.U64();
            var byIndex = new Dictionary<uint, byte[]>();
            for (uint i = 0, n = r.U32(); i < n; i++)
            {
                uint index = r.U32();
                byte[] a = r.Bytes().ToArray();
                if (a.Length is 0 or > 108 || !byIndex.TryAdd(index, a)) throw new ImageFormatException($"UnixSocketSenders record at offset {rec.Offset}: message {index}");
            }
            r.End();
            if (!st.SendFrom.ContainsKey(sino) || !st.Senders.TryAdd(sino, byIndex))
                throw new ImageFormatException($"UnixSocketSenders record at offset {rec.Offset} for an unknown socket:[{sino}], or a second one");
            return;
        }
        if (rec.Kind == RecordKind.UnixSocketCreds)
        {
            ulong cino = r.U64();
            var byIndex = new Dictionary<uint, PeerCredentials>();
            for (uint i = 0, n = r.U32(); i < n; i++)
            {
                uint index = r.U32();
                if (!byIndex.TryAdd(index, new PeerCredentials(r.I32(), r.U32(), r.U32()))) throw new ImageFormatException($"UnixSocketCreds record at offset {rec.Offset}: message {index} twice");
            }
            r.End();
            if (!st.SendFrom.ContainsKey(cino) || !st.Creds.TryAdd(cino, byIndex))
                throw new ImageFormatException($"UnixSocketCreds record at offset {rec.Offset} for an unknown socket:[{cino}], or a second one");
            return;
        }
        if (rec.Kind == RecordKind.UnixSocketQueue)
        {
            ulong qino = r.U64(); uint count = r.U32();
            if (!st.SendFrom.TryGetValue(qino, out var from))
                throw new ImageFormatException($"UnixSocketQueue record at offset {rec.Offset} for an unknown socket:[{qino}]");
            // a queue with files in flight, or with datagrams of bound senders, is written in Finish, once
            // every description and every bound socket was rebuilt
            st.Rights.TryGetValue(qino, out var rights);
            st.Senders.TryGetValue(qino, out var senders);
            st.Creds.TryGetValue(qino, out var creds);
            using var standIns = new CredentialPids(ctx);
            for (uint i = 0; i < count; i++)
            {
                var msg = r.Bytes();
                uint index = st.Sent.TryGetValue(qino, out uint k) ? k : 0;
                st.Sent[qino] = index + 1;
                PeerCredentials? came = creds != null && creds.TryGetValue(index, out var c) ? c : null;
                if (rights == null && senders == null) { SendQueued(st, from, msg, qino, cred: came, pids: standIns); continue; }
                st.Deferred.Add((qino, from, msg.ToArray(), rights?.GetValueOrDefault(index), senders?.GetValueOrDefault(index), came));
            }
            r.End();
            return;
        }
        uint objref = r.U32(); ulong ino = r.U64(); int type = r.U8(); var rel = (Relation)r.U8(); ulong peer = r.U64();
        int flags = r.I32(); int shutdown = r.U8(); int sndbuf = r.I32(); int rcvbuf = r.I32(); bool passcred = r.Bool();
        int peekOff = r.I32(); byte[] name = r.Bytes().ToArray(); string path = r.Str(); uint mode = r.U32(); uint uid = r.U32();
        uint gid = r.U32(); int backlog = r.I32(); r.U32();
        bool removed = !r.AtEnd && r.Bool();
        var waiting = new ulong[r.AtEnd ? 0 : (int)r.U32()];
        for (int i = 0; i < waiting.Length; i++) waiting[i] = r.U64();
        byte[] connectTo = r.AtEnd ? [] : r.Bytes().ToArray();
        var cred = NoCred;
        var peerCred = NoCred;
        if (!r.AtEnd)
        {
            cred = new PeerCredentials(r.I32(), r.U32(), r.U32());
            peerCred = new PeerCredentials(r.I32(), r.U32(), r.U32());
        }
        bool rebind = !r.AtEnd && r.Bool();
        var options = new List<(int Level, int Name, byte[] Value)>();
        for (uint i = 0, n = r.AtEnd ? 0 : r.U32(); i < n; i++) options.Add((r.I32(), r.I32(), r.Bytes().ToArray()));
        r.End();
        if (rebind && (rel is not (Relation.Pair or Relation.PeerClosed) || name.Length < 2 || name[0] != 0))
            throw new ImageFormatException($"UnixSocket record at offset {rec.Offset}: a socket to bind to its name again that is not an end of a pair with an abstract name");
        if (rel == Relation.ConnectedTo && (connectTo.Length == 0 || type != SocketCalls.SOCK_DGRAM))
            throw new ImageFormatException($"UnixSocket record at offset {rec.Offset}: a socket connected to a bound one without its address, or not a datagram socket");
        if (waiting.Length > 0 && rel != Relation.Listening)
            throw new ImageFormatException($"UnixSocket record at offset {rec.Offset} lists waiting connections for a socket that does not listen");
        if (type is not (SocketCalls.SOCK_STREAM or SocketCalls.SOCK_DGRAM or SocketCalls.SOCK_SEQPACKET))
            throw new ImageFormatException($"UnixSocket record at offset {rec.Offset} has socket type {type}");
        string what = $"socket:[{ino}] (unix {TypeName(type)}{(name.Length > 0 ? " " + ShowName(name) : "")})";

        int vfd, mine;
        switch (rel)
        {
            case Relation.Pair:
                if (st.Mine.TryGetValue(ino, out mine))
                {
                    vfd = ctx.Install(mine);   // the other end was rebuilt first, with this one
                    break;
                }
                (vfd, mine, int other) = CreatePair(ctx, type, cred, peerCred);
                st.Mine[ino] = mine;
                st.Mine[peer] = other;
                st.SendFrom[ino] = (other, null, type);
                st.SendFrom[peer] = (mine, null, type);
                break;
            case Relation.PeerClosed:
                (vfd, mine, int closed) = CreatePair(ctx, type, cred, NoCred);   // ckpt closes `closed` at the end of the restart
                st.Mine[ino] = mine;
                st.SendFrom[ino] = (closed, null, type);
                shutdown = 0;   // the close of the other end sets it again
                break;
            case Relation.Unconnected:
            case Relation.Listening:
            case Relation.Waiting:
            case Relation.ConnectedTo:
                vfd = (int)ctx.Inject("socket", Nr.socket, SocketCalls.AF_UNIX, type | SocketCalls.SOCK_CLOEXEC, 0);
                mine = ctx.Session.Own(ctx.GrabFd(vfd));
                st.Mine[ino] = mine;
                byte[]? addr = null;
                bool hidden = false;
                if (name.Length > 0)
                {
                    addr = path.Length > 0 ? SocketCalls.UnixAddress(Encoding.UTF8.GetBytes(path)) : SocketCalls.UnixAddress(name);
                    string raw = Encoding.UTF8.GetString(name).TrimEnd('\0');
                    byte[]? bindAddr = null;
                    // a socket whose file was removed or replaced, where something is now: bound where that cannot be seen
                    hidden = removed && path.Length > 0 && (FileCalls.TryLstat(path, out _) || !Directory.Exists(Path.GetDirectoryName(path)));
                    if (path.Length > 0 && !raw.StartsWith('/') && path.EndsWith("/" + raw, StringComparison.Ordinal))
                    {
                        // bound by a relative name: bound again by that name from the directory it was relative
                        // to, so that getsockname gives the same name (the cwd is set in FsState's Finish; a
                        // hidden one's directory is made and entered on its tmpfs, BindHidden)
                        string dir = path[..^(raw.Length + 1)];
                        long cd = ctx.Vessel.Inject(Nr.chdir, (long)ctx.PutScratch(0, Encoding.UTF8.GetBytes((dir.Length == 0 ? "/" : dir) + "\0")));
                        if (cd == 0 || hidden) bindAddr = SocketCalls.UnixAddress(Encoding.UTF8.GetBytes(raw));
                    }
                    if (hidden && waiting.Length > 0)
                        throw new CkptException($"restart: {what} has connections waiting to be accepted, and another file is at its path {path} now: its clients cannot connect to it again", ExitCodes.RestoreConflict);
                    if (path.Length > 0 && !hidden) RemoveStale(path, type, what);
                    bindAddr ??= addr;   // addr (absolute) is where ckpt sends the queued datagrams from
                    long b = hidden ? BindHidden(ctx, vfd, bindAddr, path, ino) : BindAgain(ctx, vfd, bindAddr);
                    if (b < 0)
                        throw new CkptException($"restart: cannot bind {what} to {(path.Length > 0 ? path : ShowName(name))} again: {Errors.Describe((int)-b)}", ExitCodes.RestoreConflict);
                    if (path.Length > 0 && !hidden)
                    {
                        if (SocketCalls.Lchown(path, uid, gid) != 0) throw SyscallException.Last($"lchown({path})");
                        if (SocketCalls.Chmod(path, mode) != 0) throw SyscallException.Last($"chmod({path})");
                        // (a listener's waiting clients connect to its file first)
                        if (removed && waiting.Length == 0) st.Removed.Add(path);
                    }
                }
                st.SendFrom[ino] = (-1, type == SocketCalls.SOCK_DGRAM ? addr : null, type);
                if (name.Length > 0) st.ByName.TryAdd(Convert.ToHexString(name), mine);
                if (rel == Relation.Listening)
                    ctx.State<Listens>().List.Add((objref, backlog, what, waiting, addr, removed && !hidden && waiting.Length > 0 ? path : null));
                if (rel == Relation.Waiting) st.Clients[ino] = (ctx, objref, mine, what);
                if (rel == Relation.ConnectedTo) st.Connects.Add((mine, SocketCalls.UnixAddress(connectTo), peer, what));
                break;
            default:
                throw new ImageFormatException($"UnixSocket record at offset {rec.Offset} has relation {(int)rel}");
        }
        if (rebind)
        {
            long b = BindAgain(ctx, vfd, SocketCalls.UnixAddress(name));
            if (b < 0) throw new CkptException($"restart: cannot bind {what} to {ShowName(name)} again: {Errors.Describe((int)-b)}", ExitCodes.RestoreConflict);
        }
        ctx.SetOffsetAndFlags(vfd, 0, flags & FileCalls.O_NONBLOCK, "a unix socket");
        if (passcred) SocketCalls.SetInt(mine, SocketCalls.SOL_SOCKET, SocketCalls.SO_PASSCRED, 1, "SO_PASSCRED");
        foreach (var (level, oname, value) in options)
            fixed (byte* v = value)
                if (SocketCalls.SetSockOpt(mine, level, oname, v, value.Length) != 0) throw SyscallException.Last($"setsockopt({level}, {oname})", 0, what);
        st.Pending.Add((mine, shutdown, sndbuf, rcvbuf, peekOff));
        ctx.Files.SetRestored(objref, vfd);
    }

    /// <summary>
    /// Binds fd <paramref name="vfd"/> of the process to <paramref name="addr"/>; returns 0 or -errno. A name
    /// still taken (EADDRINUSE) may be held by the checkpointed sockets themselves, dead but not yet
    /// collected: sockets that carried each other in flight (a loop) outlive their process until the
    /// kernel's garbage collector of sockets in flight runs, which sending a file (SCM_RIGHTS) starts.
    /// </summary>
    private static long BindAgain(RestoreContext ctx, int vfd, byte[] addr)
    {
        long b = ctx.Vessel.Inject(Nr.bind, vfd, (long)ctx.PutScratch(0, addr), addr.Length);
        for (int i = 0; i < 20 && b == -SocketCalls.EADDRINUSE; i++)
        {
            CollectGarbageInFlight();
            if (i > 0) Thread.Sleep(5);
            b = ctx.Vessel.Inject(Nr.bind, vfd, (long)ctx.PutScratch(0, addr), addr.Length);
        }
        return b;
    }

    /// <summary>Starts the kernel's collection of unix sockets that are only in flight in each other's queues (sends a file over a pair of ckpt's).</summary>
    private static void CollectGarbageInFlight()
    {
        int* sv = stackalloc int[2];
        if (SocketCalls.SocketPair(SocketCalls.AF_UNIX, SocketCalls.SOCK_DGRAM | SocketCalls.SOCK_CLOEXEC, 0, sv) != 0) return;
        SendQueued(new RestoreState(), (sv[0], null, SocketCalls.SOCK_DGRAM), [1], 0, [sv[0]]);   // sv[0] in sv[1]'s queue: no loop
        FileCalls.Close(sv[0]);
        FileCalls.Close(sv[1]);
    }

    /// <summary>
    /// The peer credentials a connected unix socket reports (SO_PEERCRED): the process that made the
    /// connection or the pair (its pid in ckpt's pid namespace), with its effective uid and gid then.
    /// </summary>
    /// <summary>
    /// Stand-ins (<see cref="Vessel.StandIn"/>) for the ended senders of queued messages, whose pid the
    /// credentials they are sent with again must name: made when first needed, ended on Dispose.
    /// </summary>
    private sealed class CredentialPids(RestoreContext ctx) : IDisposable
    {
        private readonly Dictionary<int, int> _standIns = new();

        /// <summary><paramref name="pid"/> if a process has it, else a stand-in's pid (that one if it can get it).</summary>
        public int Existing(int pid)
        {
            if (_standIns.TryGetValue(pid, out int s)) return s;
            if (Directory.Exists($"/proc/{pid}")) return pid;
            s = Vessel.StandIn(pid, $"the ended sender of a message queued in a unix socket");
            if (s != pid) ctx.Log.Info($"pid {ctx.Pid}: messages queued by pid {pid}, which has ended, are queued again as from pid {s} (pid {pid} is in use)");
            _standIns[pid] = s;
            return s;
        }

        public void Dispose()
        {
            foreach (int s in _standIns.Values) Vessel.KillAndReap(s);
            _standIns.Clear();
        }
    }

    private readonly record struct PeerCredentials(int Pid, uint Uid, uint Gid)
    {
        public bool Known => Pid > 0;
        public static PeerCredentials Of((int Pid, uint Uid, uint Gid) c) => new(c.Pid, c.Uid, c.Gid);
        public override string ToString() => $"pid {Pid} uid {Uid} gid {Gid}";
    }

    /// <summary>None recorded (what the kernel reports then), or an image without them.</summary>
    private static readonly PeerCredentials NoCred = new(0, uint.MaxValue, uint.MaxValue);

    private static void WriteCred(PayloadWriter w, PeerCredentials c) => w.I32(c.Pid).U32(c.Uid).U32(c.Gid);

    /// <summary>
    /// The two ends of a connected pair, made so that each reports the peer credentials it had
    /// (<paramref name="cred"/> for the end the record is about, <paramref name="peerCred"/> for its peer):
    /// by one socketpair() when both name the same (a pair some process made), else by a connection
    /// (an accepted one: the client end names the listener's maker, the accepted end the connector). The
    /// calls run in a task with the pid and the effective ids named (<see cref="Maker"/>). The vessel gets
    /// the record's end; ckpt keeps a copy of both.
    /// </summary>
    private static (int VesselFd, int Mine, int Other) CreatePair(RestoreContext ctx, int type, PeerCredentials cred, PeerCredentials peerCred)
    {
        int mine, other, kept = -1;
        if (!cred.Known || !peerCred.Known || peerCred == cred || type == SocketCalls.SOCK_DGRAM)
        {
            using var m = Maker.For(ctx, cred);
            m.Become(cred);
            ulong sv = m.Put(0, new byte[8]);
            m.Call("socketpair", Nr.socketpair, SocketCalls.AF_UNIX, type | SocketCalls.SOCK_CLOEXEC, 0, (long)sv);
            m.Back();
            var b = m.Get(0, 8);
            int first = BitConverter.ToInt32(b, 0);
            // made in the vessel's own fd table (by the vessel, or a helper sharing it): the vessel keeps its end
            // where it is (a close and an install less: two ptrace round trips per pair)
            if (m.InTableOf(ctx)) mine = ctx.Session.Own(m.Take(kept = first, close: false));
            else mine = m.Take(first);
            other = m.Take(BitConverter.ToInt32(b, 4));
        }
        else (mine, other) = Connect(ctx, type, cred, peerCred);
        int vfd = kept >= 0 ? kept : ctx.Install(mine);
        // room to queue the saved data whatever the saved buffer size (set back in Finish)
        SetBuffer(mine, SocketCalls.SO_SNDBUFFORCE, 16 << 20);
        SetBuffer(other, SocketCalls.SO_SNDBUFFORCE, 16 << 20);
        return (vfd, mine, other);
    }

    /// <summary>
    /// A connection between two new sockets whose peer credentials differ: a listener made by a task
    /// with <paramref name="cred"/> (bound to an abstract name the kernel picks: the ends report it as
    /// their address), a client connected by one with <paramref name="peerCred"/>, and the accepted end;
    /// returns (client, accepted), ckpt's copies.
    /// </summary>
    private static (int Client, int Accepted) Connect(RestoreContext ctx, int type, PeerCredentials cred, PeerCredentials peerCred)
    {
        using var a = Maker.For(ctx, cred);
        using var second = cred.Pid == peerCred.Pid ? null : Maker.For(ctx, peerCred);
        var b = second ?? a;
        a.Become(cred);
        int l = (int)a.Call("socket", Nr.socket, SocketCalls.AF_UNIX, type | SocketCalls.SOCK_CLOEXEC, 0);
        a.Call("bind (autobind)", Nr.bind, l, (long)a.Put(0, [SocketCalls.AF_UNIX, 0]), 2);
        a.Call("listen", Nr.listen, l, 1);
        a.Back();
        byte[] addr = new byte[110];
        int len = addr.Length;
        int copy = a.Take(l, close: false);
        fixed (byte* p = addr)
            if (SocketCalls.GetSockName(copy, p, &len) != 0) throw SyscallException.Last("getsockname (autobound listener)");
        FileCalls.Close(copy);
        b.Become(peerCred);
        int c = (int)b.Call("socket", Nr.socket, SocketCalls.AF_UNIX, type | SocketCalls.SOCK_CLOEXEC, 0);
        b.Call("connect", Nr.connect, c, (long)b.Put(0, addr.AsSpan(0, len)), len);
        b.Back();
        int s = (int)a.Call("accept4", Nr.accept4, l, 0, 0, SocketCalls.SOCK_CLOEXEC);
        a.Call("close", Nr.close, l);
        return (b.Take(c), a.Take(s));
    }

    /// <summary>
    /// A task that makes sockets as the process <see cref="PeerCredentials.Pid"/> did: that process's
    /// vessel if the tree has it already; else, the pid being free (a process that exited, like a child that
    /// made a pair and was reaped, or one of the tree forked later), a helper forked by the holder with that
    /// pid (CLONE_VM|CLONE_FILES: what it makes is in the holder's fd table), which exits and is reaped once
    /// done (the sockets keep its pid number); else (the pid is taken) the holder itself, whose pid the
    /// sockets then report. <see cref="Become"/>
    /// takes the effective ids for the calls that record them (vessels are root until their credentials
    /// are set, in Finish), <see cref="Back"/> gives them up.
    /// </summary>
    private sealed class Maker : IDisposable
    {
        private readonly RestoreContext _ctx;
        private readonly Tracing.TracedTask _task;
        private readonly RestoreContext _fds;
        private readonly ulong _scratch;
        private readonly bool _helper;
        private PeerCredentials _as = NoCred;

        private Maker(RestoreContext ctx, Tracing.TracedTask task, RestoreContext fds, ulong scratch, bool helper)
            => (_ctx, _task, _fds, _scratch, _helper) = (ctx, task, fds, scratch, helper);

        public static Maker For(RestoreContext ctx, PeerCredentials cred)
        {
            var own = new Maker(ctx, ctx.Vessel, ctx, ctx.Scratch + 1024, helper: false);
            if (!cred.Known || cred.Pid == ctx.Pid) return own;
            var s = ctx.Session;
            if (s.Find(cred.Pid) is { Task: not null } o)
            {
                o.FlushBatch();
                return new Maker(ctx, o.Vessel, o, o.Trampoline != 0 ? o.Scratch : Vessel.Scratch, helper: false);
            }
            // (a process of the tree forked later gets the pid once the helper is gone)
            if (Directory.Exists($"/proc/{cred.Pid}")) return Fallback(own, cred, "is in use");
            const ulong CLONE_VM = 0x100, CLONE_FILES = 0x400;
            try
            {
                var helper = Vessel.InjectClone(ctx.Vessel, ctx.Scratch, new CloneArgs { Flags = CLONE_VM | CLONE_FILES }, cred.Pid, "pid", "");
                helper.SyscallGadget = ctx.Vessel.SyscallGadget;
                return new Maker(ctx, helper, ctx, ctx.Scratch + 1024, helper: true);
            }
            catch (CkptException e) { return Fallback(own, cred, $"cannot be taken ({e.Message})"); }
        }

        private static Maker Fallback(Maker own, PeerCredentials cred, string why)
        {
            own._ctx.Log.Info($"a unix socket's peer credentials name pid {cred.Pid}, which {why}: made by pid {own._ctx.Pid}, whose pid they name instead");
            return own;
        }

        public long Call(string name, long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0)
            => _task.InjectChecked(name, nr, a1, a2, a3, a4);

        public ulong Put(int offset, ReadOnlySpan<byte> data)
        {
            MemoryCalls.WriteRemote(_task.Tid, _scratch + (ulong)offset, data);
            return _scratch + (ulong)offset;
        }

        public byte[] Get(int offset, int length)
        {
            var b = new byte[length];
            MemoryCalls.ReadRemote(_task.Tid, _scratch + (ulong)offset, b);
            return b;
        }

        /// <summary>ckpt's copy of fd <paramref name="fd"/> of the task (kept for the restart), closed in the task.</summary>
        /// <summary>Whether what this task makes is in <paramref name="ctx"/>'s fd table (its vessel, or a helper sharing it).</summary>
        public bool InTableOf(RestoreContext ctx) => _fds == ctx;

        public int Take(int fd, bool close = true)
        {
            int mine = _fds.GrabFd(fd);
            if (close) Call("close", Nr.close, fd);
            return close ? _ctx.Session.Own(mine) : mine;
        }

        public void Become(PeerCredentials c)
        {
            if (!c.Known) return;
            if (c.Gid != 0) Call("setresgid", Nr.setresgid, -1, c.Gid, -1);
            if (c.Uid != 0) Call("setresuid", Nr.setresuid, -1, c.Uid, -1);
            _as = c;
        }

        public void Back()
        {
            if (!_as.Known) return;
            if (_as.Uid != 0) Call("setresuid", Nr.setresuid, -1, 0, -1);
            if (_as.Gid != 0) Call("setresgid", Nr.setresgid, -1, 0, -1);
            _as = NoCred;
        }

        public void Dispose()
        {
            if (_helper) ProcessTree.EndHelper(_task, _ctx.Vessel, 0);
            else if (_as.Known)
            {
                try { Back(); }
                catch (Exception e) { _ctx.Log.Error($"giving up the ids taken for a unix socket: {e.Message}"); }
            }
        }
    }

    /// <summary>SO_SNDBUFFORCE / SO_RCVBUFFORCE (any size; needs CAP_NET_ADMIN), else SO_SNDBUF / SO_RCVBUF (capped by the sysctl maximum).</summary>
    private static void SetBuffer(int fd, int force, int value)
    {
        if (SocketCalls.SetSockOpt(fd, SocketCalls.SOL_SOCKET, force, &value, 4) == 0) return;
        int plain = force == SocketCalls.SO_SNDBUFFORCE ? SocketCalls.SO_SNDBUF : SocketCalls.SO_RCVBUF;
        SocketCalls.SetInt(fd, SocketCalls.SOL_SOCKET, plain, value, plain == SocketCalls.SO_SNDBUF ? "SO_SNDBUF" : "SO_RCVBUF");
    }

    /// <summary>
    /// Binds vessel fd <paramref name="vfd"/> to <paramref name="addr"/>, a path where another file is now,
    /// the way the original is bound: by that name, to a socket file no path reaches. The vessel (a single
    /// thread, still root) enters a mount namespace of its own for the moment, private to it, mounts a
    /// tmpfs on the socket's directory (or on its nearest existing ancestor, the rest made inside), binds
    /// there and goes back to ckpt's namespace (the socket keeps its tmpfs); the file at the path is not
    /// touched, and the cwd and root, which setns resets, are set later by FsState.
    /// </summary>
    private static long BindHidden(RestoreContext ctx, int vfd, byte[] addr, string path, ulong ino)
    {
        const int CLONE_NEWNS = 0x20000;
        const long MS_REC = 0x4000, MS_PRIVATE = 1 << 18;
        string dir = Path.GetDirectoryName(path) ?? "/";
        string anc = dir;
        while (!Directory.Exists(anc)) anc = Path.GetDirectoryName(anc) ?? "/";
        int ns = ctx.OpenInVessel("/proc/self/ns/mnt", FileCalls.O_RDONLY | FileCalls.O_CLOEXEC);
        ulong Str(int at, string v) => ctx.PutScratch(at, Encoding.UTF8.GetBytes(v + "\0"));
        try
        {
            ctx.Inject("unshare(CLONE_NEWNS)", Nr.unshare, CLONE_NEWNS);
            try
            {
                ctx.Inject("mount(/, MS_REC|MS_PRIVATE)", Nr.mount, 0, (long)Str(0, "/"), 0, MS_REC | MS_PRIVATE, 0);
                ctx.Inject($"mount(tmpfs on {anc})", Nr.mount, (long)Str(0, "none"), (long)Str(256, anc), (long)Str(4096, "tmpfs"), 0, 0);
                for (string d = anc; d != dir;)
                {
                    d = Path.Combine(d, Path.GetRelativePath(d, dir).Split('/')[0]);
                    ctx.Inject($"mkdir({d})", Nr.mkdir, (long)Str(0, d), 0x1ed /* 0755 */);
                }
                // (a relative name is bound from the directory, as it is on the tmpfs now)
                if (addr.Length > 2 && addr[2] != (byte)'/') ctx.Inject($"chdir({dir})", Nr.chdir, (long)Str(0, dir));
                long b = ctx.Vessel.Inject(Nr.bind, vfd, (long)ctx.PutScratch(0, addr), addr.Length);
                // kept (by ckpt's fd of it) for the sockets of the tree connected to this one (ConnectTo)
                int hns = ctx.OpenInVessel("/proc/self/ns/mnt", FileCalls.O_RDONLY | FileCalls.O_CLOEXEC);
                ctx.Session.State<HiddenBinds>().NamespaceBySocket[ino] = ctx.Session.Own(ctx.GrabFd(hns));
                ctx.Inject("close", Nr.close, hns);
                return b;
            }
            finally { ctx.Inject("setns(mount namespace of ckpt)", Nr.setns, ns, CLONE_NEWNS); }
        }
        finally { ctx.Inject("close", Nr.close, ns); }
    }

    /// <summary>
    /// The mount namespaces (ckpt's fds) in which sockets bound where no path reaches them (by their saved
    /// inode: several may have had one name, each removed before the next was bound) can be reached by their path.
    /// </summary>
    private sealed class HiddenBinds { public readonly Dictionary<ulong, int> NamespaceBySocket = new(); }

    /// <summary>
    /// connect() of ckpt's copy <paramref name="fd"/> to <paramref name="addr"/>; to a socket bound by
    /// <see cref="BindHidden"/>, from a thread of its own that enters the mount namespace where its path
    /// leads to it (setns wants the thread's fs unshared first). 0, or errno.
    /// </summary>
    private static int ConnectTo(RestoreSession s, int fd, byte[] addr, ulong peer)
    {
        int err = 0;
        void Connect()
        {
            fixed (byte* a = addr)
                if (SocketCalls.Connect(fd, a, addr.Length) != 0) err = Marshal.GetLastPInvokeError();
        }
        if (s.Existing<HiddenBinds>() is not { } hidden || !hidden.NamespaceBySocket.TryGetValue(peer, out int ns))
        {
            Connect();
            return err;
        }
        const long CLONE_NEWNS = 0x20000;
        var entered = NamespaceThread.Run([(ns, CLONE_NEWNS, "the hidden name's mount")], () => { Connect(); return null; }, "ckpt-connect-hidden");
        return entered.EnterErrno != 0 ? entered.EnterErrno : err;
    }

    /// <summary>A socket file left by a listener that is gone (nobody accepts on it) is removed; anything else at the path is a conflict.</summary>
    private static void RemoveStale(string path, int type, string what)
    {
        if (!FileCalls.TryStat(path, out var fst)) return;
        if (fst.Type != StatBuf.S_IFSOCK)
            throw new CkptException($"restart: cannot bind {what} to {path}: the path exists and is not a socket", ExitCodes.RestoreConflict);
        int probe = SocketCalls.Socket(SocketCalls.AF_UNIX, type | SocketCalls.SOCK_CLOEXEC | SocketCalls.SOCK_NONBLOCK, 0);
        if (probe < 0) throw SyscallException.Last("socket");
        try
        {
            var addr = SocketCalls.UnixAddress(Encoding.UTF8.GetBytes(path));
            int rc;
            fixed (byte* a = addr) rc = SocketCalls.Connect(probe, a, addr.Length);
            int e = rc == 0 ? 0 : Marshal.GetLastPInvokeError();
            if (e != SocketCalls.ECONNREFUSED)
                throw new CkptException($"restart: cannot bind {what} to {path}: a socket there is in use", ExitCodes.RestoreConflict);
        }
        finally { FileCalls.Close(probe); }
        if (FileCalls.Unlink(path) != 0) throw SyscallException.Last($"unlink({path})");
    }

    /// <summary>
    /// Sends a queued datagram again from a socket bound to its sender's address, so that the receiver gets
    /// that address with it: the socket of the restart bound there (ckpt's copy), else a socket of ckpt bound
    /// there for the moment; when the address is taken by a socket outside the restart, from an unbound one
    /// (the address is lost: logged).
    /// </summary>
    private static void SendAs(RestoreContext ctx, RestoreState st, byte[] sender, (int Fd, byte[]? Addr, int Type) to, ReadOnlySpan<byte> msg, ulong ino, int[]? fds,
        PeerCredentials? cred, CredentialPids pids)
    {
        if (st.ByName.TryGetValue(Convert.ToHexString(sender), out int mine))
        {
            SendQueued(st, (-1, to.Addr, to.Type), msg, ino, fds, mine, cred, pids);
            return;
        }
        if (sender[0] != 0 && sender[0] != (byte)'/')
        {
            ctx.Log.Info($"socket:[{ino}]: a queued datagram from {ShowName(sender)} (a relative name) is sent from an unbound socket");
            SendQueued(st, (-1, to.Addr, to.Type), msg, ino, fds, cred: cred, pids: pids);
            return;
        }
        int tmp = SocketCalls.Socket(SocketCalls.AF_UNIX, SocketCalls.SOCK_DGRAM | SocketCalls.SOCK_CLOEXEC, 0);
        if (tmp < 0) throw SyscallException.Last("socket");
        try
        {
            var a = SocketCalls.UnixAddress(sender);
            int rc;
            fixed (byte* p = a) rc = SocketCalls.Bind(tmp, p, a.Length);
            if (rc != 0)
            {
                ctx.Log.Info($"socket:[{ino}]: a queued datagram from {ShowName(sender)} is sent from an unbound socket (that address is in use: {Errors.Describe(Marshal.GetLastPInvokeError())})");
                SendQueued(st, (-1, to.Addr, to.Type), msg, ino, fds, cred: cred, pids: pids);
                return;
            }
            try
            {
                SetBuffer(tmp, SocketCalls.SO_SNDBUFFORCE, 16 << 20);
                SendQueued(st, (-1, to.Addr, to.Type), msg, ino, fds, tmp, cred, pids);
            }
            finally { if (sender[0] != 0) FileCalls.Unlink(Encoding.UTF8.GetString(sender).TrimEnd('\0')); }
        }
        finally { FileCalls.Close(tmp); }
    }

    /// <summary>The control data of a message that carries <paramref name="fds"/> (SCM_RIGHTS): cmsghdr { u64 len; i32 level; i32 type; } then the fds, padded to 8 bytes.</summary>
    private static byte[] RightsControl(int[] fds)
    {
        var ctl = new byte[(16 + fds.Length * 4 + 7) & ~7];
        BitConverter.TryWriteBytes(ctl, (long)(16 + fds.Length * 4));
        BitConverter.TryWriteBytes(ctl.AsSpan(8), SocketCalls.SOL_SOCKET);
        BitConverter.TryWriteBytes(ctl.AsSpan(12), SocketCalls.SCM_RIGHTS);
        for (int i = 0; i < fds.Length; i++) BitConverter.TryWriteBytes(ctl.AsSpan(16 + 4 * i), fds[i]);
        return ctl;
    }

    /// <summary>The control data of a message sent with credentials (SCM_CREDENTIALS): cmsghdr then struct ucred { pid, uid, gid }, padded to 8 bytes.</summary>
    private static byte[] CredentialsControl(int pid, uint uid, uint gid)
    {
        var ctl = new byte[32];
        BitConverter.TryWriteBytes(ctl, 28L);
        BitConverter.TryWriteBytes(ctl.AsSpan(8), SocketCalls.SOL_SOCKET);
        BitConverter.TryWriteBytes(ctl.AsSpan(12), SocketCalls.SCM_CREDENTIALS);
        BitConverter.TryWriteBytes(ctl.AsSpan(16), pid);
        BitConverter.TryWriteBytes(ctl.AsSpan(20), uid);
        BitConverter.TryWriteBytes(ctl.AsSpan(24), gid);
        return ctl;
    }

    private static void SendQueued(RestoreState st, (int Fd, byte[]? Addr, int Type) from, ReadOnlySpan<byte> msg, ulong ino, int[]? fds = null, int via = -1,
        PeerCredentials? cred = null, CredentialPids? pids = null)
    {
        int fd = from.Fd;
        byte[]? addr = null;
        if (fd < 0 && via >= 0) { fd = via; addr = from.Addr; }
        else if (fd < 0)
        {
            addr = from.Addr ?? throw new ImageFormatException($"socket:[{ino}] has queued data but nothing can send to it");
            if (st.Sender < 0)
            {
                st.Sender = SocketCalls.Socket(SocketCalls.AF_UNIX, SocketCalls.SOCK_DGRAM | SocketCalls.SOCK_CLOEXEC, 0);
                if (st.Sender < 0) throw SyscallException.Last("socket");
                SetBuffer(st.Sender, SocketCalls.SO_SNDBUFFORCE, 16 << 20);
            }
            fd = st.Sender;
        }
        bool stream = from.Type == SocketCalls.SOCK_STREAM;
        byte[]? ctl = fds is { Length: > 0 } ? RightsControl(fds) : null;
        // the credentials it came with: the kernel takes them from root (CAP_SETUID, CAP_SETGID and
        // CAP_SYS_ADMIN) for a pid that exists, a stand-in's when the sender has ended
        if (cred is { } cr && pids != null && cr.Pid > 0)
        {
            var cc = CredentialsControl(pids.Existing(cr.Pid), cr.Uid, cr.Gid);
            ctl = ctl == null ? cc : [.. cc, .. ctl];
        }
        fixed (byte* p = msg)
        fixed (byte* a = addr)
        fixed (byte* c = ctl)
        {
            int done = 0;
            do
            {
                var iov = new SocketCalls.IoVec { Base = p + done, Len = (nuint)(msg.Length - done) };
                var mh = new SocketCalls.MsgHdr { Name = a, NameLen = addr?.Length ?? 0, Iov = &iov, IovLen = 1 };
                if (done == 0 && ctl != null) { mh.Control = c; mh.ControlLen = (nuint)ctl.Length; }
                nint n = SocketCalls.SendMsg(fd, &mh, SocketCalls.MSG_DONTWAIT | SocketCalls.MSG_NOSIGNAL);
                if (n < 0)
                {
                    int e = Marshal.GetLastPInvokeError();
                    if (e == Errors.EINTR) continue;
                    throw new SyscallException("sendmsg", e, 0, $"(queueing {msg.Length} bytes into socket:[{ino}] again)");
                }
                if (!stream && n != msg.Length) throw new CkptException($"restart: a message of {msg.Length} bytes for socket:[{ino}] was cut to {n}", ExitCodes.Internal);
                done += (int)n;
            } while (done < msg.Length);
        }
    }

    public void Finish(RestoreContext ctx)
    {
        var st = ctx.Session.State<RestoreState>();
        if (!st.Applied)
        {
            // the queues that carry files in flight, with ckpt's copies of the files (FdTable kept them)
            using var standIns = new CredentialPids(ctx);
            foreach (var (qino, from, msg, refs, sender, cred) in st.Deferred)
            {
                int[]? fds = refs?.Select(o => ctx.Session.Masters.TryGetValue(o, out int m) ? m
                    : throw new ImageFormatException($"socket:[{qino}] has in flight the description {o}, which no FdTable kept")).ToArray();
                if (sender != null && from.Addr != null) SendAs(ctx, st, sender, from, msg, qino, fds, cred, standIns);
                else SendQueued(st, from, msg, qino, fds, cred: cred, pids: standIns);
            }
            st.Deferred.Clear();
            // datagram sockets connect to their peers once their queues are written (a connected socket
            // takes messages from its peer only) and every socket is bound (before removed files go)
            foreach (var (fd, addr, peer, what) in st.Connects)
            {
                int e = ConnectTo(ctx.Session, fd, addr, peer);
                if (e != 0)
                    throw new CkptException($"restart: {what} cannot connect to {ShowName(addr.AsSpan(2).ToArray())} again: {Errors.Describe(e)}", ExitCodes.RestoreConflict);
            }
            // every queue is written: shutdowns (a stream's also marks its peer), buffer sizes, peek offsets
            st.Applied = true;
            foreach (var (fd, shut, snd, rcv, peekOff) in st.Pending)
            {
                if (shut is >= 1 and <= 3 && SocketCalls.Shutdown(fd, shut - 1) != 0 && Marshal.GetLastPInvokeError() != 107 /* ENOTCONN */)
                    throw SyscallException.Last($"shutdown({shut - 1})");
                // the kernel doubles what it is given; FORCE: a size above the sysctl maximum is kept too
                if (snd > 0) SetBuffer(fd, SocketCalls.SO_SNDBUFFORCE, snd / 2);
                if (rcv > 0) SetBuffer(fd, SocketCalls.SO_RCVBUFFORCE, rcv / 2);
                if (peekOff >= 0) SocketCalls.SetInt(fd, SocketCalls.SOL_SOCKET, SocketCalls.SO_PEEK_OFF, peekOff, "SO_PEEK_OFF");
            }
            if (st.Sender >= 0) FileCalls.Close(st.Sender);
            st.Sender = -1;
            foreach (var path in st.Removed)
                if (FileCalls.Unlink(path) != 0) throw SyscallException.Last($"unlink({path})");
        }
        foreach (var (objref, backlog, what, waiting, addr, removedPath) in ctx.State<Listens>().List)
        {
            var fds = FdTable.FinalFds(ctx, objref);
            if (fds.Count == 0) continue;
            long rc = ctx.Vessel.Inject(Nr.listen, fds[0], backlog);
            if (rc < 0) throw new CkptException($"restart: listen on {what}: {Errors.Describe((int)-rc)}", ExitCodes.RestoreConflict);
            foreach (ulong c in waiting) ConnectWaiting(st, c, addr, what);
            if (removedPath != null && FileCalls.Unlink(removedPath) != 0) throw SyscallException.Last($"unlink({removedPath})");
        }
    }

    /// <summary>
    /// Connects a socket that waited to be accepted to its listener (listening now): from the process that
    /// holds it, whose credentials are set (they become the peer credentials the server sees), the kinds
    /// finishing each for every process before the next; from ckpt's copy if it has no fd there (in flight
    /// only) or the process cannot (its root or permissions do not reach the address).
    /// </summary>
    private static void ConnectWaiting(RestoreState st, ulong ino, byte[]? addr, string listener)
    {
        if (!st.Clients.TryGetValue(ino, out var cl))
            throw new ImageFormatException($"{listener} has a connection waiting from socket:[{ino}], which the image does not hold");
        if (addr == null) throw new ImageFormatException($"{listener} has connections waiting but no address");
        var fds = FdTable.FinalFds(cl.Ctx, cl.Objref);
        long rc = -1;
        if (fds.Count > 0) rc = cl.Ctx.Vessel.Inject(Nr.connect, fds[0], (long)cl.Ctx.PutScratch(0, addr), addr.Length);
        if (rc == 0) return;
        cl.Ctx.Log.Info($"{cl.What}: connected to {listener} by ckpt{(rc < -1 ? $" ({Errors.Describe((int)-rc)} from pid {cl.Ctx.Pid})" : "")}: the server sees ckpt's credentials as its peer's");
        int ok;
        fixed (byte* a = addr) ok = SocketCalls.Connect(cl.Mine, a, addr.Length);
        if (ok != 0)
            throw new CkptException($"restart: {cl.What} cannot wait on {listener} again: {Errors.Describe(Marshal.GetLastPInvokeError())}", ExitCodes.RestoreConflict);
    }

    /// <summary>A UnixSocketRights record: the socket, and the objrefs of the files each of its messages carries.</summary>
    private static (ulong Ino, Dictionary<uint, uint[]> ByIndex) ReadRights(Record rec)
    {
        var r = rec.Reader();
        ulong ino = r.U64();
        var byIndex = new Dictionary<uint, uint[]>();
        for (uint i = 0, n = r.U32(); i < n; i++)
        {
            uint index = r.U32(), k = r.U32();
            if (k == 0 || k > 253) throw new ImageFormatException($"UnixSocketRights record at offset {rec.Offset}: message {index} carries {k} files");
            var refs = new uint[k];
            for (int j = 0; j < k; j++) refs[j] = r.U32();
            byIndex[index] = refs;
        }
        r.End();
        return (ino, byIndex);
    }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        if (rec.Kind == RecordKind.UnixSocketRights)
        {
            var (rino, byIndex) = ReadRights(rec);
            info.Child("files in flight").Set($"socket:[{rino}]", string.Join("; ", byIndex.Select(x => $"message {x.Key}: objref {string.Join(',', x.Value)}")));
            return;
        }
        if (rec.Kind == RecordKind.UnixSocketSenders)
        {
            ulong sino = r.U64(); uint ns = r.U32();
            var senders = new List<string>();
            for (uint i = 0; i < ns; i++) { uint index = r.U32(); senders.Add($"message {index}: {ShowName(r.Bytes().ToArray())}"); }
            info.Child("datagram senders").Set($"socket:[{sino}]", string.Join("; ", senders));
            return;
        }
        if (rec.Kind == RecordKind.UnixSocketCreds)
        {
            ulong cino = r.U64(); uint nc = r.U32();
            var creds = new List<string>();
            for (uint i = 0; i < nc; i++) { uint index = r.U32(); creds.Add($"message {index}: pid {r.I32()} uid {r.U32()} gid {r.U32()}"); }
            info.Child("message credentials").Set($"socket:[{cino}]", string.Join("; ", creds));
            return;
        }
        if (rec.Kind == RecordKind.UnixSocketQueue)
        {
            ulong qino = r.U64(); uint count = r.U32();
            long bytes = 0;
            for (uint i = 0; i < count; i++) bytes += r.Bytes().Length;
            var q = info.Child("socket queues");
            string key = $"socket:[{qino}]";
            var prev = q.Get(key) as string;
            q.Set(key, prev == null ? $"{count} message(s), {bytes} bytes" : $"{prev} + {count} message(s), {bytes} bytes");
            return;
        }
        uint objref = r.U32(); ulong ino = r.U64(); int type = r.U8(); var rel = (Relation)r.U8(); ulong peer = r.U64();
        int flags = r.I32(); int shutdown = r.U8(); int sndbuf = r.I32(); int rcvbuf = r.I32(); bool passcred = r.Bool();
        r.I32(); byte[] name = r.Bytes().ToArray(); string path = r.Str(); r.U32(); r.U32(); r.U32(); int backlog = r.I32(); uint msgs = r.U32();
        if (!r.AtEnd) r.Bool();
        for (uint i = 0, n = r.AtEnd ? 0 : r.U32(); i < n; i++) r.U64();
        if (!r.AtEnd) r.Bytes();
        var cred = r.AtEnd ? NoCred : new PeerCredentials(r.I32(), r.U32(), r.U32());
        var node = new InfoNode().Set("kind", $"unix {TypeName(type)} socket").Set("path", $"socket:[{ino}]")
            .Set("flags", RegularFile.OpenFlags(flags)).Set("relation", rel switch
            {
                Relation.Pair => $"connected to socket:[{peer}]",
                Relation.PeerClosed => "peer closed",
                Relation.Listening => $"listening (backlog {backlog})",
                Relation.Waiting => $"waiting to be accepted by socket:[{peer}]",
                Relation.ConnectedTo => $"connected to socket:[{peer}]",
                _ => "not connected",
            });
        if (name.Length > 0) node.Set("address", path.Length > 0 ? path : ShowName(name));
        if (shutdown != 0) node.Set("shutdown", shutdown switch { 1 => "read", 2 => "write", _ => "read and write" });
        node.Set("sndbuf", sndbuf).Set("rcvbuf", rcvbuf).Set("queued messages", msgs);
        if (passcred) node.Set("passcred", true);
        if (cred.Known) node.Set("peer credentials", cred.ToString());
        info.Child("files").Set(objref.ToString(), node);
    }
}
