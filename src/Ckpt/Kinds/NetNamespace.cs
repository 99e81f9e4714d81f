using System.Buffers.Binary;
using System.Net;
using System.Text;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// The tree's network namespace, when it has one of its own (<c>unshare --net</c>, a container with a veth
/// to the host, a sandbox without network, a test isolated from the machine's ports): its devices and
/// their configuration; its sockets, connections included, are saved as any, from inside it.
/// <para>
/// Checkpoint: every process of the tree must be in the root's network namespace. From the first freeze
/// on, ckpt's tracer thread is in it (setns: a network namespace is per thread), so that sock_diag, the
/// /proc/thread-self/net tables, the sockets ckpt makes (nf_tables holds) and its getsockopt copies see
/// the tree's. rtnetlink dumps of the namespace give its devices: lo, dummy devices, veth pairs (both ends
/// inside, or the other end in ckpt's namespace: a container's link to the host, whose name, MAC, MTU,
/// flags, bridge, addresses and routes are saved too), and the tunnel devices every namespace gets when
/// their module is loaded (tunl0, sit0...), tun/tap devices (persistent, or held by a file of the tree:
/// TunDevice), bridges (their settings; their ports made ports again; VLAN filtering refused); any
/// other kind, or a port of a bond or team, is refused.
/// Each device's index, name, MAC, MTU, queue length and flags (up, noarp, promisc, allmulti, multicast)
/// are saved, then the namespace's addresses, routes (every table), policy rules and permanent neighbour
/// entries, as rtnetlink messages, leaving out what the kernel makes by itself (addresses and routes of
/// protocol kernel or router advertisements, IPv6 temporary addresses, the default rules). Its nf_tables
/// ruleset (ckpt's own tables aside) is saved as the messages that make it; iptables-legacy tables are
/// refused. Its sysctls are: those of /proc/sys/net/{core,ipv4,ipv6,unix} and the usual per-device
/// ones (forwarding, rp_filter, disable_ipv6, accept_ra...) of all, default and each device; at restart those
/// that differ from the new namespace's are set. One NetNamespace record before the Tree record.
/// </para>
/// <para>
/// Restart: the root's fresh vessel makes a new network namespace (injected <c>unshare(CLONE_NEWNET)</c>)
/// before the other vessels are forked, ckpt's tracer thread joins it for the rest of the restart, and
/// makes the devices again with their indexes (a veth's host end in ckpt's namespace, with its name,
/// given back to its bridge; a host end whose name is still taken, by a namespace the kernel is still
/// tearing down, is waited for up to 3 s; a tun/tap device made persistent through /dev/net/tun, with the
/// next free index, which the namespace's addresses, routes and neighbours then name), sets their flags, then replays the addresses (without duplicate
/// address detection), routes (device routes first), rules and neighbours; the nf_tables ruleset is made
/// in one transaction once the devices exist, before they are up.
/// </para>
/// </summary>
public sealed unsafe class NetNamespace : ITreeNamespace
{
    public static readonly NetNamespace Instance = new();
    public string Name => "network namespace";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.NetNamespace];
    public int FinishOrder => 0;

    private const int CLONE_NEWNET = 0x40000000;
    private const uint IFF_UP = 1, IFF_NOARP = 0x80, IFF_PROMISC = 0x100, IFF_ALLMULTI = 0x200, IFF_MULTICAST = 0x1000;
    /// <summary>The device flags a restart sets as they were.</summary>
    private const uint RestoredFlags = IFF_UP | IFF_NOARP | IFF_PROMISC | IFF_ALLMULTI | IFF_MULTICAST;
    private const ushort ARPHRD_LOOPBACK = 772;
    private const ushort IFLA_ADDRESS = 1, IFLA_IFNAME = 3, IFLA_MTU = 4, IFLA_LINK = 5, IFLA_MASTER = 10, IFLA_TXQLEN = 13,
        IFLA_LINKINFO = 18, IFLA_NET_NS_FD = 28, IFLA_LINK_NETNSID = 37;
    private const ushort IFLA_INFO_KIND = 1, IFLA_INFO_DATA = 2, VETH_INFO_PEER = 1;
    private const ushort IFA_ADDRESS = 1, IFA_LOCAL = 2, IFA_LABEL = 3, IFA_BROADCAST = 4, IFA_ANYCAST = 5, IFA_CACHEINFO = 6,
        IFA_FLAGS = 8, IFA_RT_PRIORITY = 9, IFA_PROTO = 11;
    private const uint IFA_F_TEMPORARY = 0x01, IFA_F_NODAD = 0x02, IFA_F_TENTATIVE = 0x40;
    private const ushort RTA_DST = 1, RTA_SRC = 2, RTA_IIF = 3, RTA_OIF = 4, RTA_GATEWAY = 5, RTA_PRIORITY = 6, RTA_PREFSRC = 7,
        RTA_METRICS = 8, RTA_MULTIPATH = 9, RTA_FLOW = 11, RTA_TABLE = 15, RTA_MARK = 16, RTA_VIA = 18, RTA_NEWDST = 19, RTA_PREF = 20,
        RTA_ENCAP_TYPE = 21, RTA_ENCAP = 22, RTA_UID = 25, RTA_TTL_PROPAGATE = 26, RTA_NH_ID = 30;
    private const byte RTPROT_KERNEL = 2, RTPROT_RA = 9, RT_TABLE_LOCAL = 255;
    private const uint RTM_F_CLONED = 0x200;
    private const ushort FRA_PRIORITY = 6, FRA_TABLE = 15, FRA_PROTOCOL = 21;
    private const ushort NDA_DST = 1, NDA_LLADDR = 2, NUD_PERMANENT = 0x80;
    private const ushort NETNSA_NSID = 1, NETNSA_FD = 3;

    /// <summary>Tunnel devices the kernel gives every network namespace while their module is loaded: made again by the kernel, configured by ckpt.</summary>
    private static readonly Dictionary<string, string> FallbackDevices = new()
    {
        ["tunl0"] = "ipip", ["sit0"] = "sit", ["ip6tnl0"] = "ip6tnl", ["gre0"] = "gre", ["gretap0"] = "gretap", ["erspan0"] = "erspan",
        ["ip6gre0"] = "ip6gre", ["ip_vti0"] = "vti", ["ip6_vti0"] = "vti6",
    };

    /// <summary>Whether ckpt's tracer thread is in the tree's network namespace (set once per checkpoint, on the tracer thread).</summary>
    [ThreadStatic] private static bool t_joined;

    /// <summary>
    /// Checkpoint, after the first freeze and before any socket is looked at: ckpt's tracer thread joins the
    /// tree's network namespace when it has one of its own. Refuses a tree in more than one.
    /// </summary>
    public static void JoinTreeNamespace(CheckpointSession s)
    {
        if (t_joined) return;
        var (_, own) = s.TreeNamespace("net", "network");
        if (!own) return;
        Join(s.Processes[0].Pid);
        s.Log.Info("the tree is in a network namespace of its own: ckpt's tracer thread works inside it");
    }

    private static void Join(int pid)
    {
        ProcessCalls.JoinNamespace(pid, "net", CLONE_NEWNET);
        t_joined = true;
    }

    /// <summary>A device of the namespace, and for a veth whose other end is in ckpt's namespace, that end (the host end).</summary>
    private sealed class Link
    {
        public int Index;
        public string Name = "", Kind = "";   // "loopback", "dummy", "veth", or a fallback tunnel's kind
        public uint Flags, Mtu, TxQueue;
        public byte[] Mac = [];
        /// <summary>A veth's other end: its name and index, and whether it is in ckpt's namespace (else in the tree's).</summary>
        public string PeerName = "";
        public int PeerIndex;
        public bool PeerOutside;
        public byte[] PeerMac = [];
        public uint PeerMtu, PeerFlags;
        /// <summary>The bridge the host end is a port of, or "".</summary>
        public string PeerMaster = "";
        /// <summary>The host end's addresses and routes (rtnetlink messages; their device index is the old host end's).</summary>
        public List<(ushort Type, byte[] Msg)> PeerConfig = new();
        /// <summary>A tun/tap device's TUNSETIFF flags (persist included), owner and group (uint.MaxValue: none).</summary>
        public int TunFlags;
        public uint TunOwner = uint.MaxValue, TunGroup = uint.MaxValue;
        /// <summary>A macvlan's or ipvlan's IFLA_INFO_DATA attributes that make it (mode, flags...), its lower device the Peer (in ckpt's namespace, or the tree's); a bridge's settings.</summary>
        public byte[] KindData = [];
        /// <summary>The bridge of the namespace it is a port of (its index), or 0.</summary>
        public int Master;
    }

    private const ushort IFLA_BR_VLAN_FILTERING = 7;
    /// <summary>
    /// A bridge's settings made again: forward delay, hello time, max age, ageing time, STP, priority, group
    /// forward mask, multicast snooping, netfilter calls (VLAN filtering, off, is not given: a kernel without
    /// it refuses even "off").
    /// </summary>
    private static readonly ushort[] BridgeData = [1, 2, 3, 4, 5, 6, 9, 23, 36, 37, 38];

    /// <summary>Devices stacked on a lower device (a container engine's macvlan or ipvlan network), and the IFLA_INFO_DATA attributes they are made with.</summary>
    private static readonly Dictionary<string, ushort[]> StackedKinds = new()
    {
        ["macvlan"] = [1, 2, 7, 9],   // IFLA_MACVLAN_MODE, FLAGS, BC_QUEUE_LEN, BC_CUTOFF
        ["macvtap"] = [1, 2, 7, 9],
        ["ipvlan"] = [1, 2],          // IFLA_IPVLAN_MODE, FLAGS
    };

    private sealed class NetState
    {
        public List<Link> Links = new();
        /// <summary>Addresses, routes, rules and neighbours of the namespace, in the order they are made again.</summary>
        public List<(ushort Type, byte[] Msg)> Config = new();
        /// <summary>The namespace's sysctls (path under /proc/sys/net, value), those of its devices last.</summary>
        public List<(string Path, string Value)> Sysctls = new();
        /// <summary>Its nf_tables ruleset (iptables-nft's rules too), as the messages that make it.</summary>
        public List<NetfilterCalls.NftObject> Ruleset = new();
    }

    /// <summary>The directories whose writable files are the namespace's own sysctls (their subdirectories aside).</summary>
    private static readonly string[] SysctlDirs = ["core", "ipv4", "ipv6", "unix", "ipv6/icmp"];
    /// <summary>The per-device settings saved for "all", "default" and each device (a container engine's or an administrator's usual ones).</summary>
    private static readonly string[] Conf4 = ["forwarding", "rp_filter", "route_localnet", "accept_local", "arp_ignore", "arp_announce", "arp_filter",
        "proxy_arp", "src_valid_mark", "send_redirects", "accept_redirects", "promote_secondaries"];
    private static readonly string[] Conf6 = ["forwarding", "disable_ipv6", "accept_ra", "autoconf", "accept_dad", "addr_gen_mode", "use_tempaddr",
        "keep_addr_on_down", "proxy_ndp", "accept_redirects"];

    /// <summary>
    /// The sysctls of the calling thread's network namespace (/proc/sys/net answers for the namespace of the
    /// thread that looks): every writable file of <see cref="SysctlDirs"/>, then <see cref="Conf4"/> and
    /// <see cref="Conf6"/> for all, default and each of <paramref name="devices"/>. Unreadable ones are left out.
    /// </summary>
    private static List<(string Path, string Value)> ReadSysctls(IEnumerable<string> devices)
    {
        var list = new List<(string, string)>();
        void Add(string rel) { if (Sysctl(rel) is { } v) list.Add((rel, v)); }
        const UnixFileMode rw = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        foreach (var dir in SysctlDirs)
        {
            var d = new DirectoryInfo("/proc/sys/net/" + dir);
            if (!d.Exists) continue;
            foreach (var f in d.EnumerateFiles().Where(f => (f.UnixFileMode & rw) == rw).Select(f => f.Name).Order(StringComparer.Ordinal))
                Add($"{dir}/{f}");
        }
        foreach (var dev in new[] { "all", "default" }.Concat(devices))
        {
            foreach (var k in Conf4) Add($"ipv4/conf/{dev}/{k}");
            foreach (var k in Conf6) Add($"ipv6/conf/{dev}/{k}");
        }
        return list;
    }

    /// <summary>The value of sysctl net/<paramref name="rel"/> of the calling thread's namespace (without its newline), or null when it cannot be read.</summary>
    private static string? Sysctl(string rel)
    {
        int fd = FileCalls.Open("/proc/sys/net/" + rel, FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0);
        if (fd < 0) return null;
        try
        {
            var buf = stackalloc byte[512];
            nint n = FileCalls.Read(fd, buf, 512);
            return n < 0 ? null : Encoding.ASCII.GetString(buf, (int)n).TrimEnd('\n');
        }
        finally { FileCalls.Close(fd); }
    }

    /// <summary>
    /// Sets the sysctls of <paramref name="list"/> whose path is per device (<paramref name="devices"/>: those of
    /// the devices, else the others) that differ from the calling thread's namespace's; one that cannot be set
    /// (a kernel without it, a value it refuses) is logged.
    /// </summary>
    private static int WriteSysctls(RestoreSession s, List<(string Path, string Value)> list, bool devices)
    {
        int set = 0;
        foreach (var (rel, value) in list)
        {
            bool perDevice = rel.Contains("/conf/") && !rel.Contains("/conf/all/") && !rel.Contains("/conf/default/");
            if (perDevice != devices) continue;
            string path = "/proc/sys/net/" + rel;
            try
            {
                if (Sysctl(rel) is not { } now || now == value) continue;
                using (var f = new FileStream(path, FileMode.Open, FileAccess.Write)) f.Write(Encoding.ASCII.GetBytes(value + "\n"));
                set++;
                s.Log.Debug($"sysctl net/{rel} = {value}");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                s.Log.Info($"the tree's sysctl net/{rel} cannot be set to {value} here: {e.Message}");
            }
        }
        return set;
    }

    // ---- checkpoint ----

    public void Write(CheckpointSession s)
    {
        var (root, own) = s.TreeNamespace("net", "network");
        if (!own) return;
        if (!t_joined) Join(s.Processes[0].Pid);
        int pid = s.Tree[0].Pid;
        var state = new NetState();
        int nl = NetlinkCalls.Open();
        try
        {
            var dump = NetlinkCalls.Dump(nl, NetlinkCalls.RTM_GETLINK, new byte[16]);
            var names = dump.ToDictionary(m => Index(m), m => Attrs(m, 16).Str(IFLA_IFNAME));
            foreach (var m in dump)
                state.Links.Add(ReadLink(s, m, names, nl, pid, root!));
            state.Links.Sort((a, b) => a.Index.CompareTo(b.Index));
            foreach (var l in state.Links.Where(l => l.Master != 0))
                if (state.Links.Find(b => b.Index == l.Master) is not { Kind: "bridge" })
                    throw new NotCheckpointableException(pid, $"its network namespace ({root}) has device {l.Name}, a port of {names.GetValueOrDefault(l.Master, "?")}: only bridges of the namespace are rebuilt (not bonds or teams)");
            var saved = state.Links.Select(l => l.Index).ToHashSet();

            foreach (var m in NetlinkCalls.Dump(nl, NetlinkCalls.RTM_GETADDR, new byte[8]))
                if (KeepAddress(m) is { } a && saved.Contains(BinaryPrimitives.ReadInt32LittleEndian(m.AsSpan(4)))) state.Config.Add((NetlinkCalls.RTM_NEWADDR, a));
            var routes = new List<byte[]>();
            foreach (byte family in new byte[] { 2, 10 })
                foreach (var m in NetlinkCalls.Dump(nl, NetlinkCalls.RTM_GETROUTE, [family, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
                    if (KeepRoute(m, pid, names) is { } r) routes.Add(r);
            // device routes first: a gateway must be reachable when its route is made
            state.Config.AddRange(routes.OrderBy(r => HasGateway(r) ? 1 : 0).Select(r => (NetlinkCalls.RTM_NEWROUTE, r)));
            foreach (byte family in new byte[] { 2, 10 })
                foreach (var m in NetlinkCalls.Dump(nl, NetlinkCalls.RTM_GETRULE, [family, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
                    if (KeepRule(m)) state.Config.Add((NetlinkCalls.RTM_NEWRULE, m));
            foreach (var m in NetlinkCalls.Dump(nl, NetlinkCalls.RTM_GETNEIGH, new byte[12]))
                if (KeepNeighbour(m) is { } n) state.Config.Add((NetlinkCalls.RTM_NEWNEIGH, n));
        }
        finally { FileCalls.Close(nl); }
        state.Sysctls = ReadSysctls(state.Links.Select(l => l.Name));
        foreach (var legacy in new[] { "ip_tables_names", "ip6_tables_names", "arp_tables_names" })
            if (File.Exists("/proc/thread-self/net/" + legacy) && File.ReadAllText("/proc/thread-self/net/" + legacy).Trim() is { Length: > 0 } names)
                throw new NotCheckpointableException(pid, $"its network namespace has iptables-legacy tables ({legacy}: {names.Replace('\n', ' ')}); " +
                    "their rules are not saved (nf_tables rules are: iptables-nft)");
        // ckpt's own tables (holds of listeners and connections while the tree is read) are left out
        try { state.Ruleset = NetfilterCalls.DumpRuleset(table => table.StartsWith("ckpt_", StringComparison.Ordinal)); }
        catch (NotSupportedException e) { throw new NotCheckpointableException(pid, $"its network namespace's {e.Message}: such chains are not made again"); }

        var p = new PayloadWriter().Bool(state.Links.Any(l => l.Kind == "loopback" && (l.Flags & IFF_UP) != 0));
        p.U32((uint)state.Links.Count);
        foreach (var l in state.Links)
        {
            p.I32(l.Index).Str(l.Name).Str(l.Kind).U32(l.Flags).U32(l.Mtu).Bytes(l.Mac).U32(l.TxQueue)
             .Str(l.PeerName).I32(l.PeerIndex).Bool(l.PeerOutside).Bytes(l.PeerMac).U32(l.PeerMtu).U32(l.PeerFlags).Str(l.PeerMaster);
            WriteMessages(p, l.PeerConfig);
            p.I32(l.TunFlags).U32(l.TunOwner).U32(l.TunGroup).Bytes(l.KindData).I32(l.Master);
        }
        WriteMessages(p, state.Config);
        p.U32((uint)state.Sysctls.Count);
        foreach (var (path, value) in state.Sysctls) p.Str(path).Str(value);
        p.U32((uint)state.Ruleset.Count);
        foreach (var o in state.Ruleset) p.U32((uint)o.Msg).Bytes(o.Body);
        s.Image.Write(RecordKind.NetNamespace, p);
        s.Log.Info($"the tree is in a network namespace of its own ({root}): {string.Join(", ", state.Links.Select(Describe))}; " +
                   $"{state.Config.Count} addresses, routes, rules and neighbours, {state.Sysctls.Count} sysctls, {RulesetSummary(state.Ruleset)}");
        foreach (var (t, m) in state.Config) s.Log.Debug($"  {Summary(t, m, state)}");
    }

    private static void WriteMessages(PayloadWriter p, List<(ushort Type, byte[] Msg)> list)
    {
        p.U32((uint)list.Count);
        foreach (var (t, m) in list) p.U32(t).Bytes(m);
    }

    private static int Index(byte[] ifinfo) => BinaryPrimitives.ReadInt32LittleEndian(ifinfo.AsSpan(4));

    /// <summary>One device of the tree's namespace (ifinfomsg and attributes), its host end looked at when it is a veth's.</summary>
    private static Link ReadLink(CheckpointSession s, byte[] m, Dictionary<int, string> names, int nl, int pid, string root)
    {
        var a = Attrs(m, 16);
        var info = a.Nested(IFLA_LINKINFO);
        var l = new Link
        {
            Index = Index(m), Name = a.Str(IFLA_IFNAME), Flags = BinaryPrimitives.ReadUInt32LittleEndian(m.AsSpan(8)),
            Mtu = a.U32(IFLA_MTU), Mac = a.Bytes(IFLA_ADDRESS), TxQueue = a.U32(IFLA_TXQLEN),
            Kind = info?.Str(IFLA_INFO_KIND) ?? "",
        };
        ushort type = BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(2));
        if (l.Kind == "" && type == ARPHRD_LOOPBACK) l.Kind = "loopback";
        string where = $"its network namespace ({root}) has device {l.Name}";
        // a port of a bridge of the namespace (checked once every device is read: Write)
        l.Master = a.Has(IFLA_MASTER) ? (int)a.U32(IFLA_MASTER) : 0;
        if (l.Kind is "loopback" or "dummy") return l;
        if (l.Kind == "bridge")
        {
            var data = info!.Nested(IFLA_INFO_DATA);
            if (data?.Bytes(IFLA_BR_VLAN_FILTERING) is [not 0, ..])
                throw new NotCheckpointableException(pid, $"{where}, a bridge filtering VLANs: its VLANs are not saved");
            l.KindData = Rebuild(m, 0, data, t => BridgeData.Contains(t));
            return l;
        }
        if (l.Kind == "tun") return ReadTun(s, l, info!, pid, where);
        if (FallbackDevices.TryGetValue(l.Name, out var fallback) && fallback == l.Kind) return l;
        bool stacked = StackedKinds.TryGetValue(l.Kind, out var dataAttrs);
        if (l.Kind != "veth" && !stacked)
            throw new NotCheckpointableException(pid, $"{where} of kind {(l.Kind == "" ? $"type {type}" : l.Kind)}; ckpt rebuilds lo, dummy, veth, bridge, macvlan, ipvlan and tun/tap devices");
        string what = stacked ? $"a {l.Kind} whose lower device" : "a veth whose other end";
        l.PeerIndex = (int)a.U32(IFLA_LINK);
        if (stacked) l.KindData = Rebuild(m, 0, info!.Nested(IFLA_INFO_DATA), t => dataAttrs!.Contains(t));
        if (!a.Has(IFLA_LINK_NETNSID))
        {
            // both ends (the lower device) in the tree's namespace
            l.PeerName = names.GetValueOrDefault(l.PeerIndex, "");
            if (l.PeerName == "") throw new NotCheckpointableException(pid, $"{where}, {what} (index {l.PeerIndex}) is not found");
            return l;
        }
        int nsid = a.I32(IFLA_LINK_NETNSID);
        int ckptNs = OpenCkptNamespace();
        try
        {
            if (NsidOf(nl, ckptNs) != nsid)
                throw new NotCheckpointableException(pid, $"{where}, {what} is in another network namespace than ckpt's (nsid {nsid}); run ckpt in that namespace");
            int host = NetlinkCalls.OpenIn(ckptNs);
            try
            {
                if (stacked) ReadLowerDevice(s, host, l, pid, where);
                else ReadHostEnd(s, host, l, pid, where);
            }
            finally { FileCalls.Close(host); }
        }
        finally { FileCalls.Close(ckptNs); }
        return l;
    }

    /// <summary>A macvlan's or ipvlan's lower device in ckpt's namespace (socket <paramref name="host"/>): its name, which the restart stacks the device on again.</summary>
    private static void ReadLowerDevice(CheckpointSession s, int host, Link l, int pid, string where)
    {
        var m = GetLink(host, l.PeerIndex, null, out int errno)
            ?? throw new NotCheckpointableException(pid, $"{where}, a {l.Kind} whose lower device (index {l.PeerIndex} of ckpt's namespace) is not found: {Errors.Describe(errno)}");
        l.PeerOutside = true;
        l.PeerName = Attrs(m, 16).Str(IFLA_IFNAME);
        s.Log.Info($"device {l.Name} is a {l.Kind} on {l.PeerName} (index {l.PeerIndex}) of ckpt's namespace");
    }

    /// <summary>
    /// A tun/tap device of the tree's namespace: its flags, owner and group (IFLA_INFO_DATA). One that is not
    /// persistent lives only while files are attached to it: one of the tree's must be (else its holder is
    /// outside the tree: slirp4netns, pasta, a VPN client of the host).
    /// </summary>
    private static Link ReadTun(CheckpointSession s, Link l, AttrSet info, int pid, string where)
    {
        const ushort IFLA_TUN_OWNER = 1, IFLA_TUN_GROUP = 2, IFLA_TUN_TYPE = 3, IFLA_TUN_PI = 4, IFLA_TUN_VNET_HDR = 5, IFLA_TUN_PERSIST = 6,
            IFLA_TUN_MULTI_QUEUE = 7, IFLA_TUN_NUM_DISABLED_QUEUES = 9;
        var d = info.Nested(IFLA_INFO_DATA) ?? throw new NotCheckpointableException(pid, $"{where}, a tun/tap device this kernel tells nothing of (IFLA_INFO_DATA)");
        byte U8(ushort t) => d.Bytes(t) is [var b, ..] ? b : (byte)0;
        int flags = U8(IFLA_TUN_TYPE) == 2 ? TunDevice.IFF_TAP : TunDevice.IFF_TUN;
        if (U8(IFLA_TUN_PI) == 0) flags |= 0x1000;   // IFF_NO_PI
        if (U8(IFLA_TUN_VNET_HDR) != 0) flags |= 0x4000;
        if (U8(IFLA_TUN_MULTI_QUEUE) != 0) flags |= TunDevice.IFF_MULTI_QUEUE;
        bool persistent = U8(IFLA_TUN_PERSIST) != 0;
        if (persistent) flags |= TunDevice.IFF_PERSIST;
        l.TunFlags = flags;
        l.TunOwner = d.Has(IFLA_TUN_OWNER) ? d.U32(IFLA_TUN_OWNER) : uint.MaxValue;
        l.TunGroup = d.Has(IFLA_TUN_GROUP) ? d.U32(IFLA_TUN_GROUP) : uint.MaxValue;
        if (d.U32(IFLA_TUN_NUM_DISABLED_QUEUES) != 0)
            throw new NotCheckpointableException(pid, $"{where}, a tun/tap device with detached queues (TUNSETQUEUE): they are not attached again");
        if (!persistent && !AttachedFiles(s).Contains(l.Name))
            throw new NotCheckpointableException(pid, $"{where}, a tun/tap device held by files outside the tree (slirp4netns, pasta?); checkpoint their holder with the tree");
        return l;
    }

    /// <summary>The tun/tap devices files of the tree are attached to (fdinfo "iff:"), looked for once per checkpoint.</summary>
    private sealed class TunHolders { public HashSet<string>? Names; }

    private static HashSet<string> AttachedFiles(CheckpointSession s)
    {
        var held = s.State<TunHolders>();
        if (held.Names != null) return held.Names;
        var names = held.Names = new HashSet<string>();
        foreach (var p in s.Processes)
            foreach (var f in p.OpenFiles)
                if (TunDevice.Instance.Handles(f) && Proc.ProcFdInfo.Read(p.Pid, f.Fd).Field("iff") is { Length: > 0 } name)
                    names.Add(name);
        return names;
    }

    /// <summary>An fd of ckpt's own network namespace (its main thread's: the tracer thread may be in the tree's).</summary>
    private static int OpenCkptNamespace()
    {
        int fd = FileCalls.Open("/proc/self/ns/net", FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0);
        return fd >= 0 ? fd : throw SyscallException.Last("open /proc/self/ns/net");
    }

    /// <summary>The id the tree's namespace (socket <paramref name="nl"/>) gives the namespace <paramref name="nsFd"/>, or -1.</summary>
    private static int NsidOf(int nl, int nsFd)
    {
        var req = NetlinkCalls.Message(NetlinkCalls.RTM_GETNSID, NetlinkCalls.NLM_F_ACK, [0, 0, 0, 0]).U32(NETNSA_FD, (uint)nsFd).Bytes();
        var answer = NetlinkCalls.Get(nl, req, out int errno);
        if (answer == null) throw new SyscallException("rtnetlink RTM_GETNSID", errno);
        var a = Attrs(answer, 4);
        return a.Has(NETNSA_NSID) ? a.I32(NETNSA_NSID) : -1;
    }

    /// <summary>A veth's host end (socket <paramref name="host"/> of ckpt's namespace): name, MAC, MTU, flags, bridge, addresses and routes.</summary>
    private static void ReadHostEnd(CheckpointSession s, int host, Link l, int pid, string where)
    {
        var m = GetLink(host, l.PeerIndex, null, out int errno)
            ?? throw new NotCheckpointableException(pid, $"{where}, a veth whose other end (index {l.PeerIndex} of ckpt's namespace) is not found: {Errors.Describe(errno)}");
        var a = Attrs(m, 16);
        if (a.Nested(IFLA_LINKINFO)?.Str(IFLA_INFO_KIND) != "veth" || a.U32(IFLA_LINK) != (uint)l.Index)
            throw new NotCheckpointableException(pid, $"{where}, a veth whose other end (index {l.PeerIndex} of ckpt's namespace) is not found");
        l.PeerOutside = true;
        l.PeerName = a.Str(IFLA_IFNAME);
        l.PeerMac = a.Bytes(IFLA_ADDRESS);
        l.PeerMtu = a.U32(IFLA_MTU);
        l.PeerFlags = BinaryPrimitives.ReadUInt32LittleEndian(m.AsSpan(8));
        if (a.Has(IFLA_MASTER) && GetLink(host, (int)a.U32(IFLA_MASTER), null, out _) is { } master)
            l.PeerMaster = Attrs(master, 16).Str(IFLA_IFNAME);
        foreach (var am in NetlinkCalls.Dump(host, NetlinkCalls.RTM_GETADDR, new byte[8]))
            if (BinaryPrimitives.ReadInt32LittleEndian(am.AsSpan(4)) == l.PeerIndex && KeepAddress(am) is { } keep)
                l.PeerConfig.Add((NetlinkCalls.RTM_NEWADDR, keep));
        var routes = new List<byte[]>();
        foreach (byte family in new byte[] { 2, 10 })
            foreach (var rm in NetlinkCalls.Dump(host, NetlinkCalls.RTM_GETROUTE, [family, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
            {
                var ra = Attrs(rm, 12);
                if (ra.Has(RTA_OIF) && ra.U32(RTA_OIF) == (uint)l.PeerIndex && KeepRoute(rm, 0, null) is { } r) routes.Add(r);
            }
        l.PeerConfig.AddRange(routes.OrderBy(r => HasGateway(r) ? 1 : 0).Select(r => (NetlinkCalls.RTM_NEWROUTE, r)));
        s.Log.Info($"device {l.Name}'s other end is {l.PeerName} (index {l.PeerIndex}) in ckpt's namespace" +
                   (l.PeerMaster != "" ? $", a port of {l.PeerMaster}" : "") + $", {l.PeerConfig.Count} addresses and routes");
    }

    /// <summary>An address as it is made again (attributes a new address takes), or null for one the kernel makes itself.</summary>
    private static byte[]? KeepAddress(byte[] m)
    {
        var a = Attrs(m, 8);
        byte family = m[0];
        if (family is not (2 or 10)) return null;
        if (a.Has(IFA_PROTO) && a.Bytes(IFA_PROTO) is [>= 1 and <= 3, ..]) return null;   // kernel: lo, router advertisement, link-local
        uint flags = a.Has(IFA_FLAGS) ? a.U32(IFA_FLAGS) : m[2];
        if (family == 10 && (flags & IFA_F_TEMPORARY) != 0) return null;   // privacy address: the kernel makes new ones
        var addr = a.Bytes(family == 10 ? IFA_ADDRESS : IFA_LOCAL);
        // kernels without IFA_PROTO: lo's own and link-local IPv6 addresses come by themselves
        if (family == 2 && m[1] == 8 && addr is [127, 0, 0, 1]) return null;
        if (family == 10 && m[1] == 128 && addr.Length == 16 && addr.AsSpan(0, 15).IndexOfAnyExcept((byte)0) < 0 && addr[15] == 1) return null;
        if (family == 10 && addr is [0xfe, 0x80, ..] && !a.Has(IFA_PROTO) && m[1] == 64) return null;
        bool forever = !a.Has(IFA_CACHEINFO) || a.Bytes(IFA_CACHEINFO) is { Length: >= 8 } ci && BinaryPrimitives.ReadUInt32LittleEndian(ci.AsSpan(4)) == uint.MaxValue;
        var keep = Rebuild(m, 8, a, t => t is IFA_ADDRESS or IFA_LOCAL or IFA_LABEL or IFA_BROADCAST or IFA_ANYCAST or IFA_RT_PRIORITY or IFA_PROTO
                                       || (t == IFA_CACHEINFO && !forever));
        var km = new NetlinkMessage(0, 0, 0, keep).U32(IFA_FLAGS, flags).Bytes();
        return km[16..];
    }

    /// <summary>A route as it is made again, or null for one the kernel makes itself (protocol kernel or router advertisement, cached).</summary>
    private static byte[]? KeepRoute(byte[] m, int pid, Dictionary<int, string>? names)
    {
        byte protocol = m[5];
        uint flags = BinaryPrimitives.ReadUInt32LittleEndian(m.AsSpan(8));
        if (protocol is RTPROT_KERNEL or RTPROT_RA || (flags & RTM_F_CLONED) != 0) return null;
        var a = Attrs(m, 12);
        if (names != null && a.Has(RTA_NH_ID))
            throw new NotCheckpointableException(pid, $"its network namespace has a route using a nexthop object ({Summary(NetlinkCalls.RTM_NEWROUTE, m, null)}); nexthop objects are not rebuilt");
        return Rebuild(m, 12, a, t => t is RTA_DST or RTA_SRC or RTA_IIF or RTA_OIF or RTA_GATEWAY or RTA_PRIORITY or RTA_PREFSRC or RTA_METRICS
            or RTA_MULTIPATH or RTA_FLOW or RTA_TABLE or RTA_MARK or RTA_VIA or RTA_NEWDST or RTA_PREF or RTA_ENCAP_TYPE or RTA_ENCAP or RTA_UID or RTA_TTL_PROPAGATE);
    }

    private static bool HasGateway(byte[] route) { var a = Attrs(route, 12); return a.Has(RTA_GATEWAY) || a.Has(RTA_VIA) || a.Has(RTA_MULTIPATH); }

    /// <summary>Whether a policy rule is one of the tree's own (not the kernel's default rules).</summary>
    private static bool KeepRule(byte[] m)
    {
        var a = Attrs(m, 12);
        if (a.Has(FRA_PROTOCOL)) return a.Bytes(FRA_PROTOCOL) is not [RTPROT_KERNEL];
        uint prio = a.Has(FRA_PRIORITY) ? a.U32(FRA_PRIORITY) : 0;
        uint table = a.Has(FRA_TABLE) ? a.U32(FRA_TABLE) : m[4];
        return !((prio, table) is (0, 255) or (32766, 254) or (32767, 253));
    }

    /// <summary>A permanent neighbour entry (ip neigh add ... nud permanent) as it is made again, or null.</summary>
    private static byte[]? KeepNeighbour(byte[] m)
    {
        if (m[0] is not (2 or 10) || (BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(8)) & NUD_PERMANENT) == 0) return null;
        return Rebuild(m, 12, Attrs(m, 12), t => t is NDA_DST or NDA_LLADDR);
    }

    /// <summary>The fixed header of <paramref name="m"/> (<paramref name="header"/> bytes: none for a nested list) and those of its attributes <paramref name="a"/> (none when null) that <paramref name="keep"/> wants.</summary>
    private static byte[] Rebuild(byte[] m, int header, AttrSet? a, Func<ushort, bool> keep)
    {
        var b = new NetlinkMessage(0, 0, 0, m.AsSpan(0, header));
        foreach (var (t, at, len) in a?.All ?? [])
            if (keep(t)) b.Attr(t, m.AsSpan(at, len));
        return b.Bytes()[16..];
    }

    // ---- restart ----

    private static NetState Read(Record rec)
    {
        var r = rec.Reader();
        bool up = r.Bool();
        var st = new NetState();
        if (r.AtEnd)
        {
            // an image of an older ckpt: lo alone
            st.Links.Add(new Link { Index = 1, Name = "lo", Kind = "loopback", Flags = up ? IFF_UP : 0 });
            return st;
        }
        uint n = r.U32();
        for (uint i = 0; i < n; i++)
        {
            var l = new Link
            {
                Index = r.I32(), Name = r.Str(), Kind = r.Str(), Flags = r.U32(), Mtu = r.U32(), Mac = r.Bytes().ToArray(), TxQueue = r.U32(),
                PeerName = r.Str(), PeerIndex = r.I32(), PeerOutside = r.Bool(), PeerMac = r.Bytes().ToArray(), PeerMtu = r.U32(),
                PeerFlags = r.U32(), PeerMaster = r.Str(),
            };
            ReadMessages(ref r, l.PeerConfig);
            l.TunFlags = r.I32(); l.TunOwner = r.U32(); l.TunGroup = r.U32(); l.KindData = r.Bytes().ToArray(); l.Master = r.I32();
            st.Links.Add(l);
        }
        ReadMessages(ref r, st.Config);
        uint ns = r.U32();
        for (uint i = 0; i < ns; i++) st.Sysctls.Add((r.Str(), r.Str()));
        uint no = r.U32();
        for (uint i = 0; i < no; i++)
        {
            int msg = (int)r.U32();
            var body = r.Bytes().ToArray();
            if (body.Length < 4) throw new ImageFormatException($"NetNamespace record at offset {rec.Offset}: an nf_tables message of {body.Length} bytes");
            st.Ruleset.Add(new NetfilterCalls.NftObject(msg, body));
        }
        r.End();
        return st;
    }

    private static void ReadMessages(ref PayloadReader r, List<(ushort Type, byte[] Msg)> into)
    {
        uint n = r.U32();
        for (uint i = 0; i < n; i++)
        {
            uint t = r.U32();
            into.Add(((ushort)t, r.Bytes().ToArray()));
        }
    }

    public void Restore(RestoreSession s, Record rec) => s.Set(Read(rec));

    /// <summary>The root's fresh vessel makes the tree's network namespace; ckpt's tracer thread joins it and makes its devices and configuration again.</summary>
    public void Enter(RestoreContext root)
    {
        var s = root.Session;
        if (s.Existing<NetState>() is not { } st) return;
        long r = UserNamespace.Unshare(root, "net");
        if (r < 0) throw new CkptException($"restart: cannot make the tree's network namespace (unshare): {Errors.Describe((int)-r)}; restart as root", ExitCodes.Permission);
        Join(root.Pid);
        int nl = NetlinkCalls.Open();
        int hostNs = -1, host = -1;
        try
        {
            // the namespace's own settings first: a device made later takes conf/default's
            int set = WriteSysctls(s, st.Sysctls, devices: false);
            var existing = NetlinkCalls.Dump(nl, NetlinkCalls.RTM_GETLINK, new byte[16]).ToDictionary(m => Attrs(m, 16).Str(IFLA_IFNAME), Index);
            var made = new HashSet<int>();
            var remap = new Dictionary<int, int>();
            foreach (var l in st.Links)
            {
                if (made.Contains(l.Index)) continue;   // the other end of a veth made before
                if (l.Kind == "loopback" || FallbackDevices.ContainsKey(l.Name))
                {
                    if (!existing.TryGetValue(l.Name, out int have) || have != l.Index)
                        throw new CkptException($"restart: the tree's network device {l.Name} ({l.Kind}, index {l.Index}) is not in the new namespace{(have > 0 ? $" with that index (it has {have})" : "")}; load the kernel module of {l.Kind} and restart again", ExitCodes.RestoreConflict);
                    if (l.Mtu > 0) Change(nl, l.Index, l.Name, m => m.U32(IFLA_MTU, l.Mtu));
                    continue;
                }
                if (l.Kind == "tun")
                {
                    // made through /dev/net/tun (not rtnetlink): it takes the next free index, and the
                    // namespace's addresses, routes and neighbours of it follow that index
                    try { TunDevice.MakePersistent(l.Name, l.TunFlags, l.TunOwner, l.TunGroup); }
                    catch (SyscallException e)
                    {
                        throw new CkptException($"restart: cannot make the tree's {((l.TunFlags & TunDevice.IFF_TAP) != 0 ? "tap" : "tun")} device {l.Name}: {Errors.Describe(e.Errno)}", ExitCodes.RestoreConflict, e);
                    }
                    if ((l.TunFlags & TunDevice.IFF_PERSIST) == 0) TunDevice.ClearPersistLater(s, l.Name);
                    int now = IndexOf(nl, l.Name) ?? throw new CkptException($"restart: the tun/tap device {l.Name} is not found after it was made", ExitCodes.Internal);
                    if (now != l.Index) { remap[l.Index] = now; s.Log.Info($"tun/tap device {l.Name}: index {now} (was {l.Index})"); }
                    Change(nl, now, l.Name, m =>
                    {
                        if (l.Mtu > 0) m.U32(IFLA_MTU, l.Mtu);
                        if (l.Mac.Length > 0) m.Attr(IFLA_ADDRESS, l.Mac);
                        if (l.TxQueue > 0) m.U32(IFLA_TXQLEN, l.TxQueue);
                    });
                    s.Log.Info($"made network device {Describe(l)}");
                    continue;
                }
                // ckpt's namespace, for a veth's host end or a macvlan's lower device there
                if (l.PeerOutside && hostNs < 0)
                {
                    hostNs = OpenCkptNamespace();
                    host = NetlinkCalls.OpenIn(hostNs);
                }
                if (StackedKinds.ContainsKey(l.Kind))
                {
                    MakeStacked(s, nl, host, l, remap);
                    made.Add(l.Index);
                    continue;
                }
                Make(s, nl, l, st, hostNs);
                made.Add(l.Index);
                if (l.Kind == "veth" && !l.PeerOutside) made.Add(l.PeerIndex);
                if (l.PeerOutside) ConfigureHostEnd(s, host, l);
            }
            // each device's own (disable_ipv6...) before it is up and has addresses
            set += WriteSysctls(s, st.Sysctls, devices: true);
            // the firewall before any packet can come (netdev chains want their devices)
            try { NetfilterCalls.LoadRuleset(st.Ruleset); }
            catch (SyscallException e)
            {
                throw new CkptException($"restart: cannot make the nf_tables ruleset of the tree's network namespace again ({RulesetSummary(st.Ruleset)}): {Errors.Describe(e.Errno)}", ExitCodes.RestoreConflict, e);
            }
            if (set > 0) s.Log.Info($"{set} sysctls of the tree's network namespace set as they were");
            foreach (var l in st.Links.Where(l => l.Master != 0))
                Change(nl, remap.GetValueOrDefault(l.Index, l.Index), l.Name, m => m.U32(IFLA_MASTER, (uint)remap.GetValueOrDefault(l.Master, l.Master)));
            foreach (var l in st.Links)
                Change(nl, remap.GetValueOrDefault(l.Index, l.Index), l.Name, null, l.Flags & RestoredFlags);
            foreach (var (t, m) in st.Config) Replay(nl, t, m, st, remap);
        }
        finally
        {
            FileCalls.Close(nl);
            if (host >= 0) FileCalls.Close(host);
            if (hostNs >= 0) FileCalls.Close(hostNs);
        }
        s.Log.Info($"the tree runs in a network namespace of its own: {string.Join(", ", st.Links.Select(Describe))}; {st.Config.Count} addresses, routes, rules and neighbours, {RulesetSummary(st.Ruleset)}");
    }

    /// <summary>Makes device <paramref name="l"/> (a dummy, or a veth with its other end, in ckpt's namespace <paramref name="hostNs"/> or in the tree's) with its index, name, MAC, MTU and queue length.</summary>
    private static void Make(RestoreSession s, int nl, Link l, NetState st, int hostNs)
    {
        int peerIndex = l.PeerIndex;
        var deadline = DateTime.UtcNow.AddSeconds(3);
        while (true)
        {
            var m = LinkMessage(NetlinkCalls.NLM_F_CREATE | NetlinkCalls.NLM_F_EXCL, l.Index, 0, 0, l.Name, l.Mac, l.Mtu, l.TxQueue)
                .Begin(IFLA_LINKINFO).Str(IFLA_INFO_KIND, l.Kind);
            if (l.Kind == "veth")
            {
                var peer = st.Links.Find(p => p.Index == l.PeerIndex && !l.PeerOutside);
                var hdr = new byte[16];
                BinaryPrimitives.WriteInt32LittleEndian(hdr.AsSpan(4), peerIndex);
                m.Begin(IFLA_INFO_DATA).Begin(VETH_INFO_PEER).Raw(hdr).Str(IFLA_IFNAME, l.PeerName);
                byte[] mac = peer?.Mac ?? l.PeerMac;
                uint mtu = peer?.Mtu ?? l.PeerMtu;
                if (mac.Length > 0) m.Attr(IFLA_ADDRESS, mac);
                if (mtu > 0) m.U32(IFLA_MTU, mtu);
                if (peer != null && peer.TxQueue > 0) m.U32(IFLA_TXQLEN, peer.TxQueue);
                if (l.PeerOutside) m.U32(IFLA_NET_NS_FD, (uint)hostNs);
                m.End().End();
            }
            else if (l.KindData.Length > 0) m.Begin(IFLA_INFO_DATA).Raw(l.KindData).End();
            int err = -NetlinkCalls.Request(nl, m.End().Bytes());
            if (err == 0) break;
            // the host end's old index is taken in ckpt's namespace: any will do there
            if (err == Errors.EBUSY && l.PeerOutside && peerIndex != 0) { peerIndex = 0; continue; }
            // the host end's name is taken: by the old one while the kernel tears the killed tree's namespace down, or by a tree still running
            if (err == Errors.EEXIST && l.PeerOutside && DateTime.UtcNow < deadline) { Thread.Sleep(20); continue; }
            string what = l.PeerOutside ? $" with its other end {l.PeerName} in ckpt's namespace" : l.Kind == "veth" ? $" with its other end {l.PeerName}" : "";
            string hint = err == Errors.EEXIST && l.PeerOutside
                ? $"; a device named {l.PeerName} exists on this machine (the checkpointed tree still running?): remove it (ip link del {l.PeerName}) and restart again"
                : "";
            throw new CkptException($"restart: cannot make the tree's network device {l.Name} ({l.Kind}, index {l.Index}){what}: {Errors.Describe(err)}{hint}", ExitCodes.RestoreConflict);
        }
        s.Log.Info($"made network device {Describe(l)}");
    }

    /// <summary>
    /// Makes macvlan or ipvlan <paramref name="l"/> on its lower device: one of ckpt's namespace (found by
    /// name there, refused when this machine has none) through socket <paramref name="host"/> of ckpt's
    /// namespace with IFLA_NET_NS_FD the tree's (the calling thread's), or one of the tree's by its index.
    /// </summary>
    private static void MakeStacked(RestoreSession s, int nl, int host, Link l, Dictionary<int, int> remap)
    {
        int lower = l.PeerOutside
            ? IndexOf(host, l.PeerName) ?? throw new CkptException($"restart: the tree's network device {l.Name} is a {l.Kind} on {l.PeerName}, which this machine does not have; restart where it has, or make it", ExitCodes.RestoreConflict)
            : remap.GetValueOrDefault(l.PeerIndex, l.PeerIndex);
        int treeNs = l.PeerOutside ? FileCalls.Open("/proc/thread-self/ns/net", FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0) : -1;
        if (l.PeerOutside && treeNs < 0) throw SyscallException.Last("open /proc/thread-self/ns/net");
        try
        {
            var m = LinkMessage(NetlinkCalls.NLM_F_CREATE | NetlinkCalls.NLM_F_EXCL, l.Index, 0, 0, l.Name, l.Mac, l.Mtu, l.TxQueue).U32(IFLA_LINK, (uint)lower);
            if (treeNs >= 0) m.U32(IFLA_NET_NS_FD, (uint)treeNs);
            m.Begin(IFLA_LINKINFO).Str(IFLA_INFO_KIND, l.Kind).Begin(IFLA_INFO_DATA).Raw(l.KindData).End().End();
            int err = -NetlinkCalls.Request(l.PeerOutside ? host : nl, m.Bytes());
            if (err != 0)
                throw new CkptException($"restart: cannot make the tree's network device {l.Name} ({l.Kind} on {l.PeerName}): {Errors.Describe(err)}", ExitCodes.RestoreConflict);
        }
        finally { if (treeNs >= 0) FileCalls.Close(treeNs); }
        int now = IndexOf(nl, l.Name) ?? throw new CkptException($"restart: the tree's network device {l.Name} is not found after it was made", ExitCodes.Internal);
        if (now != l.Index) { remap[l.Index] = now; s.Log.Info($"network device {l.Name}: index {now} (was {l.Index})"); }
        s.Log.Info($"made network device {Describe(l)}");
    }

    /// <summary>The host end of veth <paramref name="l"/> (socket <paramref name="host"/> of ckpt's namespace): its bridge, flags, addresses and routes.</summary>
    private static void ConfigureHostEnd(RestoreSession s, int host, Link l)
    {
        int index = IndexOf(host, l.PeerName)
            ?? throw new CkptException($"restart: the host end {l.PeerName} of the tree's network device {l.Name} is not found after it was made", ExitCodes.Internal);
        if (l.PeerMaster != "")
        {
            int master = IndexOf(host, l.PeerMaster)
                ?? throw new CkptException($"restart: the host end {l.PeerName} of the tree's network device {l.Name} was a port of {l.PeerMaster}, which this machine does not have; make it (ip link add {l.PeerMaster} type bridge) and restart again", ExitCodes.RestoreConflict);
            Change(host, index, l.PeerName, m => m.U32(IFLA_MASTER, (uint)master));
        }
        Change(host, index, l.PeerName, null, l.PeerFlags & RestoredFlags);
        foreach (var (t, m) in l.PeerConfig) Replay(host, t, m, null, new Dictionary<int, int> { [l.PeerIndex] = index });
        s.Log.Info($"its other end {l.PeerName} (index {index}) in ckpt's namespace{(l.PeerMaster != "" ? $", port of {l.PeerMaster}" : "")}, {l.PeerConfig.Count} addresses and routes");
    }

    private static int? IndexOf(int nl, string name) => GetLink(nl, 0, name, out _) is { } answer ? Index(answer) : null;

    /// <summary>Device <paramref name="index"/>, or the one named <paramref name="name"/>, of socket <paramref name="nl"/>'s namespace (ifinfomsg and attributes), or null and the errno.</summary>
    private static byte[]? GetLink(int nl, int index, string? name, out int errno)
    {
        var hdr = new byte[16];
        BinaryPrimitives.WriteInt32LittleEndian(hdr.AsSpan(4), index);
        var m = NetlinkCalls.Message(NetlinkCalls.RTM_GETLINK, NetlinkCalls.NLM_F_ACK, hdr);
        if (name != null) m.Str(IFLA_IFNAME, name);
        return NetlinkCalls.Get(nl, m.Bytes(), out errno);
    }

    private static NetlinkMessage LinkMessage(ushort flags, int index, uint ifFlags, uint change, string? name = null, byte[]? mac = null, uint mtu = 0, uint txq = 0)
    {
        var hdr = new byte[16];
        BinaryPrimitives.WriteInt32LittleEndian(hdr.AsSpan(4), index);
        BinaryPrimitives.WriteUInt32LittleEndian(hdr.AsSpan(8), ifFlags);
        BinaryPrimitives.WriteUInt32LittleEndian(hdr.AsSpan(12), change);
        var m = NetlinkCalls.Message(NetlinkCalls.RTM_NEWLINK, (ushort)(flags | NetlinkCalls.NLM_F_ACK), hdr);
        if (name != null) m.Str(IFLA_IFNAME, name);
        if (mac is { Length: > 0 }) m.Attr(IFLA_ADDRESS, mac);
        if (mtu > 0) m.U32(IFLA_MTU, mtu);
        if (txq > 0) m.U32(IFLA_TXQLEN, txq);
        return m;
    }

    /// <summary>Changes device <paramref name="index"/>: attributes <paramref name="attrs"/> adds, or its flags to <paramref name="flags"/> (those of <see cref="RestoredFlags"/>).</summary>
    private static void Change(int nl, int index, string name, Action<NetlinkMessage>? attrs, uint? flags = null)
    {
        var m = LinkMessage(0, index, flags ?? 0, flags.HasValue ? RestoredFlags : 0);
        attrs?.Invoke(m);
        int r = NetlinkCalls.Request(nl, m.Bytes());
        if (r < 0) throw new CkptException($"restart: cannot set network device {name} (index {index}) as it was: {Errors.Describe(-r)}", ExitCodes.RestoreConflict);
    }

    /// <summary>Makes an address, route, rule or neighbour again; one that is there already is left as it is. <paramref name="remap"/>: device indexes to change (old, new).</summary>
    private static void Replay(int nl, ushort type, byte[] msg, NetState? st, Dictionary<int, int> remap)
    {
        var body = (byte[])msg.Clone();
        void Map(int at)
        {
            if (remap.TryGetValue(BinaryPrimitives.ReadInt32LittleEndian(body.AsSpan(at)), out int to)) BinaryPrimitives.WriteInt32LittleEndian(body.AsSpan(at), to);
        }
        if (remap.Count > 0)
        {
            if (type is NetlinkCalls.RTM_NEWADDR or NetlinkCalls.RTM_NEWNEIGH) Map(4);   // ifa_index, ndm_ifindex
            if (type == NetlinkCalls.RTM_NEWROUTE)
                foreach (var (t, at, len) in Attrs(body, 12).All)
                    if (t is RTA_OIF or RTA_IIF && len == 4) Map(at);
        }
        if (type == NetlinkCalls.RTM_NEWADDR)
            foreach (var (t, at, len) in Attrs(body, 8).All)
                if (t == IFA_FLAGS && len == 4 && (BinaryPrimitives.ReadUInt32LittleEndian(body.AsSpan(at)) & IFA_F_TENTATIVE) == 0)
                    // an address past duplicate detection is not tested again (a second of tentative state,
                    // in which the restarted tree could not send from it)
                    BinaryPrimitives.WriteUInt32LittleEndian(body.AsSpan(at), BinaryPrimitives.ReadUInt32LittleEndian(body.AsSpan(at)) | IFA_F_NODAD);
        ushort flags = (ushort)(NetlinkCalls.NLM_F_ACK | NetlinkCalls.NLM_F_CREATE | (type == NetlinkCalls.RTM_NEWNEIGH ? NetlinkCalls.NLM_F_REPLACE : NetlinkCalls.NLM_F_EXCL));
        var m = NetlinkCalls.Message(type, flags, body).Bytes();
        int r = NetlinkCalls.Request(nl, m);
        if (r < 0 && -r != Errors.EEXIST)
            throw new CkptException($"restart: cannot make the tree's {Summary(type, msg, st)} again: {Errors.Describe(-r)}", ExitCodes.RestoreConflict);
    }

    // ---- description ----

    /// <summary>"nf_tables: 2 tables (ip nat, inet filter), 3 chains, 5 rules" or "no nf_tables ruleset".</summary>
    private static string RulesetSummary(List<NetfilterCalls.NftObject> ruleset)
    {
        if (ruleset.Count == 0) return "no nf_tables ruleset";
        var tables = ruleset.Where(o => o.Msg == NetfilterCalls.NFT_MSG_NEWTABLE).Select(o => $"{FamilyName(o.Family)} {o.Name(1)}").ToList();
        return $"nf_tables: {tables.Count} tables ({string.Join(", ", tables)}), {ruleset.Count(o => o.Msg == NetfilterCalls.NFT_MSG_NEWCHAIN)} chains, " +
               $"{ruleset.Count(o => o.Msg == NetfilterCalls.NFT_MSG_NEWSET)} sets, {ruleset.Count(o => o.Msg == NetfilterCalls.NFT_MSG_NEWRULE)} rules";
    }

    private static string FamilyName(byte f) => f switch { 1 => "inet", 2 => "ip", 3 => "arp", 5 => "netdev", 7 => "bridge", 10 => "ip6", _ => $"family {f}" };

    private static string Describe(Link l)
    {
        var sb = new StringBuilder($"{l.Name} ({l.Kind}, index {l.Index}, {((l.Flags & IFF_UP) != 0 ? "up" : "down")}");
        if (l.Mtu > 0) sb.Append($", mtu {l.Mtu}");
        if (l.Kind == "tun") sb.Append($", {((l.TunFlags & TunDevice.IFF_TAP) != 0 ? "tap" : "tun")}{((l.TunFlags & TunDevice.IFF_PERSIST) != 0 ? ", persistent" : "")}");
        if (l.Master != 0) sb.Append($", port of #{l.Master}");
        if (StackedKinds.ContainsKey(l.Kind)) sb.Append($", on {l.PeerName}{(l.PeerOutside ? " of ckpt's namespace" : "")}");
        if (l.Kind == "veth") sb.Append($", other end {l.PeerName}{(l.PeerOutside ? " in ckpt's namespace" : "")}{(l.PeerMaster != "" ? $" on {l.PeerMaster}" : "")}");
        return sb.Append(')').ToString();
    }

    /// <summary>An address, route, rule or neighbour in words ("address 10.0.0.2/24 on eth0", "route default via 10.0.0.1 dev eth0").</summary>
    private static string Summary(ushort type, byte[] m, NetState? st)
    {
        string Dev(int index) => st?.Links.Find(l => l.Index == index)?.Name ?? $"#{index}";
        static string Ip(byte[] b) => b.Length is 4 or 16 ? new IPAddress(b).ToString() : Convert.ToHexString(b);
        switch (type)
        {
            case NetlinkCalls.RTM_NEWADDR:
            {
                var a = Attrs(m, 8);
                var addr = a.Has(IFA_LOCAL) ? a.Bytes(IFA_LOCAL) : a.Bytes(IFA_ADDRESS);
                return $"address {Ip(addr)}/{m[1]} on {Dev(BinaryPrimitives.ReadInt32LittleEndian(m.AsSpan(4)))}";
            }
            case NetlinkCalls.RTM_NEWROUTE:
            {
                var a = Attrs(m, 12);
                var sb = new StringBuilder("route ");
                sb.Append(a.Has(RTA_DST) ? $"{Ip(a.Bytes(RTA_DST))}/{m[1]}" : "default");
                if (a.Has(RTA_GATEWAY)) sb.Append($" via {Ip(a.Bytes(RTA_GATEWAY))}");
                if (a.Has(RTA_OIF)) sb.Append($" dev {Dev((int)a.U32(RTA_OIF))}");
                uint table = a.Has(RTA_TABLE) ? a.U32(RTA_TABLE) : m[4];
                if (table != 254) sb.Append($" table {table}");
                return sb.ToString();
            }
            case NetlinkCalls.RTM_NEWRULE:
            {
                var a = Attrs(m, 12);
                return $"rule {(a.Has(FRA_PRIORITY) ? a.U32(FRA_PRIORITY) : 0)} lookup {(a.Has(FRA_TABLE) ? a.U32(FRA_TABLE) : m[4])}";
            }
            case NetlinkCalls.RTM_NEWNEIGH:
            {
                var a = Attrs(m, 12);
                return $"neighbour {Ip(a.Bytes(NDA_DST))} lladdr {Convert.ToHexString(a.Bytes(NDA_LLADDR))} dev {Dev(BinaryPrimitives.ReadInt32LittleEndian(m.AsSpan(4)))}";
            }
            default: return $"rtnetlink object of type {type}";
        }
    }

    public void Describe(Record rec, InfoNode info)
    {
        var st = Read(rec);
        var n = info.Child("net_namespace").Set("own", true)
            .Set("loopback_up", st.Links.Any(l => l.Kind == "loopback" && (l.Flags & IFF_UP) != 0));
        var devices = n.List("devices");
        foreach (var l in st.Links)
        {
            var d = new InfoNode().Set("index", l.Index).Set("name", l.Name).Set("kind", l.Kind).Set("up", (l.Flags & IFF_UP) != 0)
                .Set("mtu", l.Mtu).Set("mac", l.Mac.Length > 0 ? Convert.ToHexString(l.Mac) : null);
            if (l.Master != 0) d.Set("master", st.Links.Find(b => b.Index == l.Master)?.Name ?? $"#{l.Master}");
            if (StackedKinds.ContainsKey(l.Kind)) d.Set("lower", l.PeerName).Set("lower_in_ckpt_namespace", l.PeerOutside);
            if (l.Kind == "veth")
            {
                d.Set("peer", l.PeerName).Set("peer_in_ckpt_namespace", l.PeerOutside);
                if (l.PeerOutside) d.Set("peer_bridge", l.PeerMaster == "" ? null : l.PeerMaster).Set("peer_config", string.Join("; ", l.PeerConfig.Select(c => Summary(c.Type, c.Msg, null))));
            }
            devices.Add(d);
        }
        n.Set("sysctls", st.Sysctls.Count).Set("nf_tables", RulesetSummary(st.Ruleset));
        var config = n.List("config");
        foreach (var (t, m) in st.Config)
        {
            var words = Summary(t, m, st).Split(' ', 2);
            config.Add(new InfoNode().Set("kind", words[0]).Set("what", words.Length > 1 ? words[1] : ""));
        }
    }

    // ---- attributes ----

    private static AttrSet Attrs(byte[] m, int header) => new(m, NetlinkMessage.Attributes(m, header));

    /// <summary>The attributes of a message, by type (the first of each).</summary>
    private sealed class AttrSet(byte[] m, List<(ushort Type, int At, int Length)> all)
    {
        public List<(ushort Type, int At, int Length)> All => all;
        private (ushort Type, int At, int Length)? Find(ushort t) { foreach (var x in all) if (x.Type == t) return x; return null; }
        public bool Has(ushort t) => Find(t) != null;
        public byte[] Bytes(ushort t) => Find(t) is { } x ? m.AsSpan(x.At, x.Length).ToArray() : [];
        public uint U32(ushort t) => Find(t) is { Length: >= 4 } x ? BinaryPrimitives.ReadUInt32LittleEndian(m.AsSpan(x.At)) : 0;
        public int I32(ushort t) => (int)U32(t);
        public string Str(ushort t) => Find(t) is { } x ? Encoding.UTF8.GetString(m.AsSpan(x.At, x.Length)).TrimEnd('\0') : "";
        public AttrSet? Nested(ushort t) => Find(t) is { } x ? new AttrSet(m, NetlinkMessage.Attributes(m.AsSpan(0, x.At + x.Length), x.At)) : null;
    }
}
