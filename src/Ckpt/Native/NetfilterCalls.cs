using System.Buffers.Binary;

namespace Ckpt.Native;

/// <summary>
/// nf_tables over netlink (NETLINK_NETFILTER): a table of the inet family whose input chain drops the
/// packets sent to given TCP connections and whose output chain drops those they send, and its removal.
/// It holds migrated connections while no socket answers for them (between `checkpoint --kill` and the
/// restart): without it the kernel answers their peer's packets with a reset. Changes are sent as one
/// nfnetlink batch, a get by itself; every message asks for an ack.
/// </summary>
public static unsafe class NetfilterCalls
{
    private const int NETLINK_NETFILTER = 12;
    private const ushort NLM_F_REQUEST = 1, NLM_F_ACK = 4, NLM_F_CREATE = 0x400, NLM_F_APPEND = 0x800;
    private const ushort NLMSG_ERROR = 2, NFNL_MSG_BATCH_BEGIN = 16, NFNL_MSG_BATCH_END = 17;
    private const int NFNL_SUBSYS_NFTABLES = 10;
    public const int NFT_MSG_NEWTABLE = 0, NFT_MSG_NEWCHAIN = 3, NFT_MSG_NEWRULE = 6;
    private const int NFT_MSG_GETTABLE = 1, NFT_MSG_DELTABLE = 2;
    private const byte NFPROTO_INET = 1, NFPROTO_IPV4 = 2, NFPROTO_IPV6 = 10;
    private const int NF_DROP = 0, NF_ACCEPT = 1, NF_INET_LOCAL_IN = 1, NF_INET_LOCAL_OUT = 3;
    private const int NFT_META_NFPROTO = 15, NFT_META_L4PROTO = 16, NFT_META_TIME_NS = 30;
    private const int NFT_PAYLOAD_NETWORK_HEADER = 1, NFT_PAYLOAD_TRANSPORT_HEADER = 2;
    private const int NFT_REG_VERDICT = 0, NFT_REG_1 = 1, NFT_CMP_EQ = 0, NFT_CMP_LT = 2, NFT_BYTEORDER_HTON = 1;

    /// <summary>An nf_tables message: its nfgenmsg header (family, version, res_id big-endian), then attributes.</summary>
    private static NetlinkMessage Msg(ushort type, ushort flags, uint seq, byte family, ushort resId = 0)
        => new(type, flags, seq, [family, 0, (byte)(resId >> 8), (byte)resId]);

    private static ushort NftType(int msg) => (ushort)((NFNL_SUBSYS_NFTABLES << 8) | msg);

    /// <summary>One expression of a rule: its name and its data attributes.</summary>
    private static void Expr(NetlinkMessage m, string name, Action<NetlinkMessage> data)
    {
        m.Begin(1 /* NFTA_LIST_ELEM */).Str(1 /* NFTA_EXPR_NAME */, name).Begin(2 /* NFTA_EXPR_DATA */);
        data(m);
        m.End().End();
    }

    private static void Meta(NetlinkMessage m, int key, byte value)
    {
        Expr(m, "meta", d => d.Be32(1 /* NFTA_META_DREG */, NFT_REG_1).Be32(2 /* NFTA_META_KEY */, key));
        Cmp(m, [value]);
    }

    private static void Payload(NetlinkMessage m, int bas, int offset, ReadOnlySpan<byte> value)
    {
        int len = value.Length;
        Expr(m, "payload", d => d.Be32(1 /* DREG */, NFT_REG_1).Be32(2 /* BASE */, bas).Be32(3 /* OFFSET */, offset).Be32(4 /* LEN */, len));
        Cmp(m, value);
    }

    private static void Cmp(NetlinkMessage m, ReadOnlySpan<byte> value, int op = NFT_CMP_EQ)
    {
        var v = value.ToArray();
        Expr(m, "cmp", d => d.Be32(1 /* NFTA_CMP_SREG */, NFT_REG_1).Be32(2 /* NFTA_CMP_OP */, op)
            .Begin(3 /* NFTA_CMP_DATA */).Attr(1 /* NFTA_DATA_VALUE */, v).End());
    }

    /// <summary>
    /// Matches until <paramref name="until"/> (wall clock): meta time (ns since the epoch, host order),
    /// turned big-endian (cmp compares bytes), less than the deadline.
    /// </summary>
    private static void Before(NetlinkMessage m, DateTime until)
    {
        Expr(m, "meta", d => d.Be32(1 /* NFTA_META_DREG */, NFT_REG_1).Be32(2 /* NFTA_META_KEY */, NFT_META_TIME_NS));
        Expr(m, "byteorder", d => d.Be32(1 /* NFTA_BYTEORDER_SREG */, NFT_REG_1).Be32(2 /* DREG */, NFT_REG_1)
            .Be32(3 /* OP */, NFT_BYTEORDER_HTON).Be32(4 /* LEN */, 8).Be32(5 /* SIZE */, 8));
        var deadline = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(deadline, (ulong)(until - DateTime.UnixEpoch).Ticks * 100);
        Cmp(m, deadline, NFT_CMP_LT);
    }

    /// <summary>An IP address and port from a sockaddr_in or sockaddr_in6 (an IPv4-mapped IPv6 address as IPv4).</summary>
    private static (bool V4, byte[] Addr, byte[] Port) Split(byte[] sa)
    {
        ushort family = BinaryPrimitives.ReadUInt16LittleEndian(sa);
        byte[] port = sa[2..4];   // already in network order
        if (family == 2) return (true, sa[4..8], port);
        byte[] a6 = sa[8..24];
        bool mapped = a6.AsSpan(0, 10).IndexOfAnyExcept((byte)0) < 0 && a6[10] == 0xff && a6[11] == 0xff;
        return mapped ? (true, a6[12..16], port) : (false, a6, port);
    }

    /// <summary>A rule of <paramref name="chain"/> that drops the TCP packets from address and port <paramref name="from"/> to <paramref name="to"/>.</summary>
    private static byte[] ConnectionRule(string table, string chain, byte[] from, byte[] to, uint seq)
    {
        var (v4, fa, fp) = Split(from);
        var (_, ta, tp) = Split(to);
        var m = Msg(NftType(NFT_MSG_NEWRULE), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND, seq, NFPROTO_INET)
            .Str(1 /* NFTA_RULE_TABLE */, table).Str(2 /* NFTA_RULE_CHAIN */, chain).Begin(4 /* NFTA_RULE_EXPRESSIONS */);
        Meta(m, NFT_META_NFPROTO, v4 ? NFPROTO_IPV4 : NFPROTO_IPV6);
        Meta(m, NFT_META_L4PROTO, 6 /* TCP */);
        Payload(m, NFT_PAYLOAD_NETWORK_HEADER, v4 ? 12 : 8, fa);    // source address
        Payload(m, NFT_PAYLOAD_NETWORK_HEADER, v4 ? 16 : 24, ta);   // destination address
        Payload(m, NFT_PAYLOAD_TRANSPORT_HEADER, 0, fp);
        Payload(m, NFT_PAYLOAD_TRANSPORT_HEADER, 2, tp);
        Expr(m, "immediate", d => d.Be32(1 /* NFTA_IMMEDIATE_DREG */, NFT_REG_VERDICT)
            .Begin(2 /* NFTA_IMMEDIATE_DATA */).Begin(2 /* NFTA_DATA_VERDICT */).Be32(1 /* NFTA_VERDICT_CODE */, NF_DROP).End().End());
        return m.End().Bytes();
    }

    /// <summary>
    /// Makes table <paramref name="table"/> (family inet) with an input chain that drops the packets each
    /// peer sends to its connection's local address and port, and the connection requests (SYN without
    /// ACK) sent to each of <paramref name="listeners"/> (a local address and port; any address when it is
    /// 0.0.0.0 or ::), until <paramref name="listenersUntil"/> when given; and, when there are connections,
    /// an output chain that drops what each connection sends to its peer. Throws a <see cref="SyscallException"/>
    /// when nf_tables refuses (no such support in this kernel, no CAP_NET_ADMIN).
    /// </summary>
    public static void AddDropTable(string table, IReadOnlyList<(byte[] Local, byte[] Peer)> connections, IReadOnlyList<byte[]>? listeners = null,
        DateTime? listenersUntil = null)
    {
        uint seq = (uint)Environment.TickCount;
        var msgs = new List<byte[]>();
        const ushort create = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;
        msgs.Add(Msg(NftType(NFT_MSG_NEWTABLE), create, ++seq, NFPROTO_INET).Str(1 /* NFTA_TABLE_NAME */, table).Bytes());
        msgs.Add(Msg(NftType(NFT_MSG_NEWCHAIN), create, ++seq, NFPROTO_INET)
            .Str(1 /* NFTA_CHAIN_TABLE */, table).Str(3 /* NFTA_CHAIN_NAME */, "input")
            .Begin(4 /* NFTA_CHAIN_HOOK */).Be32(1 /* NFTA_HOOK_HOOKNUM */, NF_INET_LOCAL_IN).Be32(2 /* NFTA_HOOK_PRIORITY */, -200).End()
            .Be32(5 /* NFTA_CHAIN_POLICY */, NF_ACCEPT).Str(7 /* NFTA_CHAIN_TYPE */, "filter").Bytes());
        // what a held socket sends is dropped too: its kernel goes on transmitting for a frozen or killed
        // process (the 200 ms timer that sends corked or window-probe data, loss probes, pacing), and a
        // peer outside the tree that got bytes after the socket's state was read acknowledges beyond
        // what the restarted socket has sent, which drops every such segment as acknowledging unsent
        // data (with the peer's own data in it): the connection hung for good. Dropped at the output
        // hook, the send fails (EPERM) and the socket's sequence numbers stay where they were read
        if (connections.Count > 0)
            msgs.Add(Msg(NftType(NFT_MSG_NEWCHAIN), create, ++seq, NFPROTO_INET)
                .Str(1 /* NFTA_CHAIN_TABLE */, table).Str(3 /* NFTA_CHAIN_NAME */, "output")
                .Begin(4 /* NFTA_CHAIN_HOOK */).Be32(1 /* NFTA_HOOK_HOOKNUM */, NF_INET_LOCAL_OUT).Be32(2 /* NFTA_HOOK_PRIORITY */, -200).End()
                .Be32(5 /* NFTA_CHAIN_POLICY */, NF_ACCEPT).Str(7 /* NFTA_CHAIN_TYPE */, "filter").Bytes());
        foreach (var (local, peer) in connections)
        {
            msgs.Add(ConnectionRule(table, "input", from: peer, to: local, ++seq));
            msgs.Add(ConnectionRule(table, "output", from: local, to: peer, ++seq));
        }
        foreach (var local in listeners ?? [])
        {
            var (v4, la, lp) = Split(local);
            var m = Msg(NftType(NFT_MSG_NEWRULE), create | NLM_F_APPEND, ++seq, NFPROTO_INET)
                .Str(1 /* NFTA_RULE_TABLE */, table).Str(2 /* NFTA_RULE_CHAIN */, "input").Begin(4 /* NFTA_RULE_EXPRESSIONS */);
            Meta(m, NFT_META_NFPROTO, v4 ? NFPROTO_IPV4 : NFPROTO_IPV6);
            Meta(m, NFT_META_L4PROTO, 6 /* TCP */);
            if (la.AsSpan().IndexOfAnyExcept((byte)0) >= 0) Payload(m, NFT_PAYLOAD_NETWORK_HEADER, v4 ? 16 : 24, la);
            Payload(m, NFT_PAYLOAD_TRANSPORT_HEADER, 2, lp);
            // the TCP flags (byte 13): SYN set, ACK clear
            Expr(m, "payload", d => d.Be32(1, NFT_REG_1).Be32(2, NFT_PAYLOAD_TRANSPORT_HEADER).Be32(3, 13).Be32(4, 1));
            Expr(m, "bitwise", d => d.Be32(1 /* NFTA_BITWISE_SREG */, NFT_REG_1).Be32(2 /* DREG */, NFT_REG_1).Be32(3 /* LEN */, 1)
                .Begin(4 /* MASK */).Attr(1 /* NFTA_DATA_VALUE */, [0x12]).End()
                .Begin(5 /* XOR */).Attr(1 /* NFTA_DATA_VALUE */, [0x00]).End());
            Cmp(m, [0x02]);
            if (listenersUntil is { } until) Before(m, until);
            Expr(m, "immediate", d => d.Be32(1 /* NFTA_IMMEDIATE_DREG */, NFT_REG_VERDICT)
                .Begin(2 /* NFTA_IMMEDIATE_DATA */).Begin(2 /* NFTA_DATA_VERDICT */).Be32(1 /* NFTA_VERDICT_CODE */, NF_DROP).End().End());
            msgs.Add(m.End().Bytes());
        }
        Send(msgs, seq, $"nf_tables table {table}");
    }

    /// <summary>Removes table <paramref name="table"/> (family inet); false when there is none.</summary>
    public static bool DeleteTable(string table)
    {
        uint seq = (uint)Environment.TickCount;
        // one that is not there is found by a get: a delete that fails takes nf_tables' abort path, which
        // waited about 17 ms here (each restart of an image taken on another machine, or restarted before)
        var get = Msg(NftType(NFT_MSG_GETTABLE), NLM_F_REQUEST | NLM_F_ACK, ++seq, NFPROTO_INET).Str(1, table).Bytes();
        try { Send([get], seq, $"nf_tables table {table}", batch: false); }
        catch (SyscallException e) when (e.Errno == Errors.ENOENT) { return false; }
        var msg = Msg(NftType(NFT_MSG_DELTABLE), NLM_F_REQUEST | NLM_F_ACK, ++seq, NFPROTO_INET).Str(1, table).Bytes();
        try { Send([msg], seq, $"nf_tables table {table}"); }
        catch (SyscallException e) when (e.Errno == Errors.ENOENT) { return false; }
        return true;
    }

    /// <summary>An nf_tables object of a ruleset: its NFT_MSG_NEW* message type and body (nfgenmsg, then attributes).</summary>
    public readonly record struct NftObject(int Msg, byte[] Body)
    {
        public byte Family => Body[0];
        /// <summary>The string attribute <paramref name="attr"/> (a table's name is 1).</summary>
        public string Name(ushort attr) => StrAttr(Body, attr);
    }

    public const int NFT_MSG_NEWOBJ = 18, NFT_MSG_NEWFLOWTABLE = 22, NFT_MSG_NEWSET = 9, NFT_MSG_NEWSETELEM = 12;
    private const int NFT_MSG_GETCHAIN = 4, NFT_MSG_GETRULE = 7, NFT_MSG_GETSET = 10, NFT_MSG_GETSETELEM = 13, NFT_MSG_GETOBJ = 19, NFT_MSG_GETFLOWTABLE = 23;
    private const uint NFT_TABLE_F_DORMANT = 1, NFT_CHAIN_BINDING = 4;

    private static string StrAttr(byte[] body, ushort type)
    {
        foreach (var (t, at, len) in NetlinkMessage.Attributes(body, 4))
            if (t == type) return System.Text.Encoding.UTF8.GetString(body, at, len).TrimEnd('\0');
        return "";
    }

    /// <summary>The body <paramref name="body"/> keeps: its nfgenmsg (generation id cleared) and the attributes <paramref name="keep"/> wants, changed by <paramref name="change"/>.</summary>
    private static byte[] Keep(byte[] body, Func<ushort, bool> keep, Func<ushort, byte[], byte[]>? change = null)
    {
        var m = new NetlinkMessage(0, 0, 0, [body[0], body[1], 0, 0]);
        foreach (var (t, at, len) in NetlinkMessage.Attributes(body, 4))
            if (keep(t))
            {
                var v = body.AsSpan(at, len).ToArray();
                Copy(m, body, t, at, change?.Invoke(t, v) ?? v);
            }
        return m.Bytes()[16..];
    }

    /// <summary>Adds attribute <paramref name="t"/> with <paramref name="value"/> to <paramref name="m"/>, nested when the one at <paramref name="at"/> of <paramref name="src"/> was.</summary>
    private static void Copy(NetlinkMessage m, ReadOnlySpan<byte> src, ushort t, int at, ReadOnlySpan<byte> value)
    {
        if ((BinaryPrimitives.ReadUInt16LittleEndian(src[(at - 2)..]) & NetlinkMessage.NLA_F_NESTED) != 0) m.Begin(t).Raw(value).End();
        else m.Attr(t, value);
    }

    /// <summary>
    /// The nf_tables ruleset of the calling thread's network namespace, as the messages that make it again,
    /// in the order they must come: tables, chains, objects, sets each with its elements, flowtables, rules.
    /// Tables <paramref name="skipTable"/> names are left out. Read-only attributes (handles, use counts,
    /// positions, an element's expiration) are dropped, and the owner and persist flags of a table.
    /// Throws <see cref="NotSupportedException"/> naming what cannot be made again (a chain bound to a rule).
    /// </summary>
    public static List<NftObject> DumpRuleset(Func<string, bool> skipTable)
    {
        var list = new List<NftObject>();
        int fd = NetlinkCalls.Open(NetlinkCalls.NETLINK_NETFILTER);
        try
        {
            List<byte[]> Dump(int msg, byte family = 0, Action<NetlinkMessage>? attrs = null)
                => NetlinkCalls.Dump(fd, NftType(msg), [family, 0, 0, 0], attrs);
            var tables = new HashSet<(byte, string)>();
            foreach (var b in Dump(NFT_MSG_GETTABLE))
            {
                var o = new NftObject(0, b);
                if (skipTable(o.Name(1))) continue;
                tables.Add((o.Family, o.Name(1)));
                list.Add(new NftObject(NFT_MSG_NEWTABLE, Keep(b, t => t is 1 or 2 or 6 /* NAME, FLAGS, USERDATA */,
                    (t, v) => t == 2 ? BeU32(ReadBeU32(v) & NFT_TABLE_F_DORMANT) : v)));
            }
            bool Kept(byte[] b) => tables.Contains((b[0], StrAttr(b, 1)));
            foreach (var b in Dump(NFT_MSG_GETCHAIN).Where(Kept))
            {
                foreach (var (t, at, len) in NetlinkMessage.Attributes(b, 4))
                    if (t == 10 /* FLAGS */ && len == 4 && (ReadBeU32(b.AsSpan(at, 4).ToArray()) & NFT_CHAIN_BINDING) != 0)
                        throw new NotSupportedException($"nf_tables chain {StrAttr(b, 3)} of table {StrAttr(b, 1)} is bound to a rule");
                // TABLE, NAME, HOOK, POLICY, TYPE, COUNTERS, FLAGS, USERDATA
                list.Add(new NftObject(NFT_MSG_NEWCHAIN, Keep(b, t => t is 1 or 3 or 4 or 5 or 7 or 8 or 10 or 12)));
            }
            foreach (var b in Dump(NFT_MSG_GETOBJ).Where(Kept))
                list.Add(new NftObject(NFT_MSG_NEWOBJ, Keep(b, t => t is 1 or 2 or 3 or 4 or 8)));   // TABLE, NAME, TYPE, DATA, USERDATA
            uint setId = 0;
            foreach (var b in Dump(NFT_MSG_GETSET).Where(Kept))
            {
                // TABLE, NAME, FLAGS, KEY_TYPE, KEY_LEN, DATA_TYPE, DATA_LEN, POLICY, DESC, TIMEOUT, GC_INTERVAL, USERDATA, OBJ_TYPE, EXPR, EXPRESSIONS
                var kept = Keep(b, t => t is >= 1 and <= 9 or 11 or 12 or 13 or 15 or 17 or 18);
                var withId = new NetlinkMessage(0, 0, 0, kept).Attr(10 /* NFTA_SET_ID */, BeU32(++setId)).Bytes()[16..];
                list.Add(new NftObject(NFT_MSG_NEWSET, withId));
                string table = StrAttr(b, 1), set = StrAttr(b, 2);
                foreach (var e in Dump(NFT_MSG_GETSETELEM, b[0], m => m.Str(1, table).Str(2, set)))
                    list.Add(new NftObject(NFT_MSG_NEWSETELEM, Keep(e, t => t is 1 or 2 or 3, (t, v) => t == 3 ? Elements(v) : v)));
            }
            foreach (var b in Dump(NFT_MSG_GETFLOWTABLE).Where(Kept))
                list.Add(new NftObject(NFT_MSG_NEWFLOWTABLE, Keep(b, t => t is 1 or 2 or 3 or 7)));   // TABLE, NAME, HOOK, FLAGS
            foreach (var b in Dump(NFT_MSG_GETRULE).Where(Kept))
                list.Add(new NftObject(NFT_MSG_NEWRULE, Keep(b, t => t is 1 or 2 or 4 or 5 or 7)));   // TABLE, CHAIN, EXPRESSIONS, COMPAT, USERDATA
        }
        finally { FileCalls.Close(fd); }
        return list;
    }

    /// <summary>A set's list of elements without each element's expiration (read-only; the timeout stays).</summary>
    private static byte[] Elements(byte[] list)
    {
        var m = new NetlinkMessage(0, 0, 0, []);
        foreach (var (t, at, len) in NetlinkMessage.Attributes(list, 0))
        {
            m.Begin(t);
            foreach (var (et, eat, elen) in NetlinkMessage.Attributes(list.AsSpan(0, at + len), at))
            {
                if (et != 5 /* NFTA_SET_ELEM_EXPIRATION */) Copy(m, list, et, eat, list.AsSpan(eat, elen));
            }
            m.End();
        }
        return m.Bytes()[16..];
    }

    private static uint ReadBeU32(byte[] v) => v.Length >= 4 ? BinaryPrimitives.ReadUInt32BigEndian(v) : 0;
    private static byte[] BeU32(uint v) { var b = new byte[4]; BinaryPrimitives.WriteUInt32BigEndian(b, v); return b; }

    /// <summary>Makes a ruleset of <see cref="DumpRuleset"/> again in the calling thread's network namespace, in one transaction.</summary>
    public static void LoadRuleset(IReadOnlyList<NftObject> ruleset)
    {
        if (ruleset.Count == 0) return;
        uint seq = (uint)Environment.TickCount;
        var msgs = new List<byte[]>();
        foreach (var o in ruleset)
        {
            ushort flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;
            if (o.Msg == NFT_MSG_NEWRULE) flags |= NLM_F_APPEND;
            msgs.Add(new NetlinkMessage(NftType(o.Msg), flags, ++seq, o.Body.AsSpan(0, 4)).Raw(o.Body.AsSpan(4)).Bytes());
        }
        Send(msgs, seq, "nf_tables ruleset");
    }

    /// <summary>Sends <paramref name="msgs"/> in one batch (or, for gets, as they are) and waits for the ack of each (the first error throws).</summary>
    private static void Send(List<byte[]> msgs, uint lastSeq, string what, bool batch = true)
    {
        uint firstSeq = lastSeq - (uint)msgs.Count + 1;
        var all = new List<byte>();
        if (batch) all.AddRange(Msg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, firstSeq - 1, 0, NFNL_SUBSYS_NFTABLES).Bytes());
        foreach (var m in msgs) all.AddRange(m);
        if (batch) all.AddRange(Msg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, lastSeq + 1, 0, NFNL_SUBSYS_NFTABLES).Bytes());
        int fd = SocketCalls.Socket(16 /* AF_NETLINK */, SocketCalls.SOCK_RAW | SocketCalls.SOCK_CLOEXEC, NETLINK_NETFILTER);
        if (fd < 0) throw SyscallException.Last("socket(AF_NETLINK, NETLINK_NETFILTER)", 0, what);
        try
        {
            var data = all.ToArray();
            // a batch goes in one message: the socket's send buffer must hold it
            int size = data.Length + 4096;
            if (size > 128 << 10 && SocketCalls.SetSockOpt(fd, SocketCalls.SOL_SOCKET, SocketCalls.SO_SNDBUFFORCE, &size, 4) != 0)
                throw SyscallException.Last("setsockopt(SO_SNDBUFFORCE) (nf_tables batch)", 0, what);
            fixed (byte* p = data)
                if (SocketCalls.Send(fd, p, (nuint)data.Length, 0) != data.Length) throw SyscallException.Last("send (nf_tables batch)", 0, what);
            var buf = new byte[8192];
            int acked = 0;
            while (acked < msgs.Count)
            {
                nint n;
                fixed (byte* p = buf) n = SocketCalls.Recv(fd, p, (nuint)buf.Length, 0);
                if (n < 0) throw SyscallException.Last("recv (nf_tables acks)", 0, what);
                for (int off = 0; off + 16 <= n;)
                {
                    int len = BinaryPrimitives.ReadInt32LittleEndian(buf.AsSpan(off));
                    ushort type = BinaryPrimitives.ReadUInt16LittleEndian(buf.AsSpan(off + 4));
                    if (len < 16) break;
                    if (type == NLMSG_ERROR)
                    {
                        int err = BinaryPrimitives.ReadInt32LittleEndian(buf.AsSpan(off + 16));
                        if (err < 0) throw new SyscallException("nf_tables", -err, 0, what);
                        acked++;
                    }
                    off += (len + 3) & ~3;
                }
            }
        }
        // its release may wait for an RCU grace period (a table deleted: see CloseAside)
        finally { if (batch) ProcessCalls.CloseAside(fd); else FileCalls.Close(fd); }
    }
}
