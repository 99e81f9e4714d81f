using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// The tree's network namespace, when it has one of its own with only the loopback device
/// (<c>unshare --net</c>, a sandbox without network, a test isolated from the machine's ports): its
/// sockets, connections over lo included, are saved as any, from inside it.
/// <para>
/// Checkpoint: every process of the tree must be in the root's network namespace. From the first freeze
/// on, ckpt's tracer thread is in it (setns: a network namespace is per thread), so that sock_diag, the
/// /proc/thread-self/net tables, the sockets ckpt makes (nf_tables holds) and its getsockopt copies see
/// the tree's. Its devices (/proc/thread-self/net/dev) must be lo alone; whether lo is up is saved
/// (SIOCGIFFLAGS). Other addresses than lo's own, routes, netfilter rules and sysctls of the namespace are
/// not saved. One NetNamespace record before the Tree record.
/// </para>
/// <para>
/// Restart: the root's fresh vessel makes a new network namespace (injected <c>unshare(CLONE_NEWNET)</c>)
/// before the other vessels are forked, ckpt's tracer thread joins it for the rest of the restart, and lo
/// is brought up as it was (SIOCSIFFLAGS; its addresses come with it).
/// </para>
/// </summary>
public sealed unsafe class NetNamespace : ITreeNamespace
{
    public static readonly NetNamespace Instance = new();
    public string Name => "network namespace";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.NetNamespace];
    public int FinishOrder => 0;

    private const int CLONE_NEWNET = 0x40000000;
    private const uint SIOCGIFFLAGS = 0x8913, SIOCSIFFLAGS = 0x8914;
    private const short IFF_UP = 1;

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

    /// <summary>The devices of the calling thread's network namespace (/proc/thread-self/net/dev).</summary>
    private static List<string> Devices()
        => File.ReadLines("/proc/thread-self/net/dev").Skip(2).Select(l => l.Split(':')[0].Trim()).Where(n => n.Length > 0).ToList();

    /// <summary>The flags of device <paramref name="name"/> of the calling thread's namespace, or sets them (<paramref name="set"/>).</summary>
    private static short Flags(string name, short? set = null)
    {
        int sock = SocketCalls.Socket(SocketCalls.AF_INET, SocketCalls.SOCK_DGRAM | SocketCalls.SOCK_CLOEXEC, 0);
        if (sock < 0) throw SyscallException.Last("socket (for SIOCGIFFLAGS)");
        try
        {
            var ifr = stackalloc byte[40];
            new Span<byte>(ifr, 40).Clear();
            var bytes = System.Text.Encoding.ASCII.GetBytes(name);
            bytes.AsSpan(0, Math.Min(bytes.Length, 15)).CopyTo(new Span<byte>(ifr, 16));
            if (EventCalls.Ioctl(sock, SIOCGIFFLAGS, ifr) != 0) throw SyscallException.Last("ioctl(SIOCGIFFLAGS)", 0, name);
            if (set is short v)
            {
                *(short*)(ifr + 16) = v;
                if (EventCalls.Ioctl(sock, SIOCSIFFLAGS, ifr) != 0) throw SyscallException.Last("ioctl(SIOCSIFFLAGS)", 0, name);
            }
            return *(short*)(ifr + 16);
        }
        finally { FileCalls.Close(sock); }
    }

    public void Write(CheckpointSession s)
    {
        var (root, own) = s.TreeNamespace("net", "network");
        if (!own) return;
        if (!t_joined) Join(s.Processes[0].Pid);
        var devices = Devices();
        if (devices.FirstOrDefault(d => d != "lo") is { } other)
            throw new NotCheckpointableException(s.Tree[0].Pid, $"its network namespace ({root}) has device {other}; only a namespace with the loopback device alone is rebuilt (unshare --net)");
        bool up = devices.Contains("lo") && (Flags("lo") & IFF_UP) != 0;
        s.Image.Write(RecordKind.NetNamespace, new PayloadWriter().Bool(up));
        s.Log.Info($"the tree is in a network namespace of its own ({root}), lo {(up ? "up" : "down")}");
    }

    private static bool Read(Record rec)
    {
        var r = rec.Reader();
        bool up = r.Bool();
        r.End();
        return up;
    }

    private sealed class Pending { public bool LoopbackUp; }

    public void Restore(RestoreSession s, Record rec) => s.Set(new Pending { LoopbackUp = Read(rec) });

    /// <summary>The root's fresh vessel makes the tree's network namespace; ckpt's tracer thread joins it and brings lo up as it was.</summary>
    public void Enter(RestoreContext root)
    {
        var s = root.Session;
        if (s.Existing<Pending>() is not { } p) return;
        long r = UserNamespace.Unshare(root, "net");
        if (r < 0) throw new CkptException($"restart: cannot make the tree's network namespace (unshare): {Errors.Describe((int)-r)}; restart as root", ExitCodes.Permission);
        Join(root.Pid);
        if (p.LoopbackUp) Flags("lo", (short)(Flags("lo") | IFF_UP));
        s.Log.Info($"the tree runs in a network namespace of its own, lo {(p.LoopbackUp ? "up" : "down")}");
    }

    public void Describe(Record rec, InfoNode info) => info.Child("net_namespace").Set("own", true).Set("loopback_up", Read(rec));
}
