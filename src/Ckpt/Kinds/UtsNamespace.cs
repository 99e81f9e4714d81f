using System.Text;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// The tree's UTS namespace, when it has one of its own (<c>unshare --uts</c>, a build sandbox, a
/// container's): its host name and NIS domain name, which the tree may have set without touching the
/// machine's.
/// <para>
/// Checkpoint: every process of the tree must be in the root's UTS namespace; when that is not ckpt's, one
/// UtsNamespace record before the Tree record holds the two names, read with <c>uname</c> run in the root.
/// </para>
/// <para>
/// Restart: the root's fresh vessel makes a new UTS namespace (injected <c>unshare(CLONE_NEWUTS)</c>) and
/// sets the names in it (<c>sethostname</c>, <c>setdomainname</c>) before any other vessel is forked from
/// it, so every process of the tree is in it, and the machine's names are left alone. A tree that was in
/// ckpt's UTS namespace has no record and runs in the restart's, as before.
/// </para>
/// </summary>
public sealed class UtsNamespace : ITreeNamespace
{
    public static readonly UtsNamespace Instance = new();
    public string Name => "UTS namespace";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.UtsNamespace];
    public int FinishOrder => 0;

    private const long CLONE_NEWUTS = 0x04000000;
    private const int FieldLength = 65;   // struct utsname: sysname, nodename, release, version, machine, domainname

    /// <summary>Writes the UtsNamespace record (before the Tree record) when the tree has a UTS namespace of its own.</summary>
    public void Write(CheckpointSession s)
    {
        if (!s.TreeNamespace("uts", "UTS").Own) return;
        var root = s.Processes[0];
        root.Inject("uname", Nr.uname, (long)root.Scratch + CheckpointContext.OutOffset);
        var uts = root.ReadScratch(CheckpointContext.OutOffset, 6 * FieldLength);
        string host = Field(uts, 1), domain = Field(uts, 5);
        var p = new PayloadWriter().Str(host).Str(domain);
        // optional: an older reader restarts the tree in its own UTS namespace, as it did before
        s.Image.Write(RecordKind.UtsNamespace, p, RecordFlags.Optional);
        s.Log.Info($"the tree is in a UTS namespace of its own (host name {host}, domain name {domain})");
    }

    private static string Field(byte[] uts, int i)
    {
        var f = uts.AsSpan(i * FieldLength, FieldLength);
        int end = f.IndexOf((byte)0);
        return Encoding.UTF8.GetString(end < 0 ? f : f[..end]);
    }

    private static (string Host, string Domain) Read(Record rec)
    {
        var r = rec.Reader();
        string host = r.Str(), domain = r.Str();
        r.End();
        if (Encoding.UTF8.GetByteCount(host) >= FieldLength || Encoding.UTF8.GetByteCount(domain) >= FieldLength)
            throw new ImageFormatException($"UtsNamespace record at offset {rec.Offset} has a name longer than {FieldLength - 1} bytes");
        return (host, domain);
    }

    /// <summary>The names of the UTS namespace to make, until the root's vessel exists (<see cref="Enter"/>).</summary>
    private sealed class Pending { public string Host = "", Domain = ""; }

    /// <summary>Before the first vessel is forked: the tree had a UTS namespace of its own.</summary>
    public void Restore(RestoreSession s, Record rec)
    {
        var (host, domain) = Read(rec);
        s.Set(new Pending { Host = host, Domain = domain });
    }

    /// <summary>
    /// Puts the root's fresh vessel into a new UTS namespace with the saved names, before the other vessels
    /// are forked from it. A restart that cannot make one (no CAP_SYS_ADMIN) fails: the tree would
    /// otherwise set the machine's names, or run under names it did not have.
    /// </summary>
    public void Enter(RestoreContext root)
    {
        var s = root.Session;
        if (s.Existing<Pending>() is not { } p) return;
        long r = UserNamespace.Unshare(root, "uts");
        if (r < 0) throw new CkptException($"restart: cannot make the tree's UTS namespace (unshare): {Errors.Describe((int)-r)}; restart as root", ExitCodes.Permission);
        foreach (var (name, nr, what) in new[] { (p.Host, Nr.sethostname, "sethostname"), (p.Domain, Nr.setdomainname, "setdomainname") })
        {
            var bytes = Encoding.UTF8.GetBytes(name);
            MemoryCalls.WriteRemote(root.Pid, Engine.Vessel.Scratch, bytes);
            long got = root.Vessel.Inject(nr, (long)Engine.Vessel.Scratch, bytes.Length);
            if (got < 0) throw new SyscallException($"{what} (injected)", (int)-got, root.Pid, name);
        }
        s.Log.Info($"the tree runs in a UTS namespace of its own: host name {p.Host}, domain name {p.Domain}");
    }

    public void Describe(Record rec, InfoNode info)
    {
        var (host, domain) = Read(rec);
        info.Child("uts_namespace").Set("hostname", host).Set("domainname", domain);
    }
}
