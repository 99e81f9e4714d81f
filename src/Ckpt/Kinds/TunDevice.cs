using System.Text;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// tun/tap files (<c>/dev/net/tun</c>, char 10:200): a VPN's, a user-space network stack's or a virtual
/// machine's end of a tun or tap network device.
/// <para>
/// Checkpoint: on a pidfd_getfd copy, TUNGETIFF (the device's name and flags: tun or tap, no packet info,
/// vnet header, multi-queue, persist), TUNGETVNETHDRSZ, TUNGETSNDBUF, TUNGETVNETLE, and TUNGETDEVNETNS
/// for the device's network namespace: the tree's own, where NetNamespace saved the device (made again
/// persistent by ckpt before any file is opened, so that each file attaches to it), or ckpt's for a
/// persistent device (which stays when the tree is killed: attached again at restart). A device of ckpt's
/// namespace that is not persistent (it goes away with the file: its addresses and routes are the host's)
/// and one of any other namespace are refused. A file not attached to a device (opened, no TUNSETIFF yet,
/// or a detached queue) is saved as such. Packets queued in the device are not saved (a network drops
/// packets; CRIU does the same).
/// </para>
/// <para>
/// Restart: <c>/dev/net/tun</c> opened in the vessel (in the tree's network namespace), TUNSETIFF with
/// the name and flags (persist aside) attaches it to the device, then the vnet header size, send buffer
/// and byte order; a device that was not persistent has its persist flag (ckpt's, for the restart) cleared
/// through the first file attached to it, so that it goes away with its last file as before.
/// </para>
/// </summary>
public sealed unsafe class TunDevice : IFileKind
{
    public static readonly TunDevice Instance = new();
    public string Name => "tun/tap device";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.TunFile];
    public int FinishOrder => 48;

    public const nuint TUNSETIFF = 0x400454ca, TUNSETPERSIST = 0x400454cb, TUNSETOWNER = 0x400454cc, TUNSETGROUP = 0x400454ce,
        TUNGETIFF = 0x800454d2, TUNGETSNDBUF = 0x800454d3, TUNSETSNDBUF = 0x400454d4, TUNGETVNETHDRSZ = 0x800454d7,
        TUNSETVNETHDRSZ = 0x400454d8, TUNSETVNETLE = 0x400454dc, TUNGETVNETLE = 0x800454dd, TUNGETDEVNETNS = 0x54e3;
    public const int IFF_TUN = 1, IFF_TAP = 2, IFF_MULTI_QUEUE = 0x100, IFF_PERSIST = 0x800;
    /// <summary>What TUNSETIFF takes: the type and the features (no packet info, vnet header, multi-queue, NAPI...).</summary>
    public const int SetIffFlags = IFF_TUN | IFF_TAP | 0x10 | 0x20 | IFF_MULTI_QUEUE | 0x1000 | 0x2000 | 0x4000;
    private const int DefaultVnetHdrSize = 10, DefaultSndBuf = int.MaxValue;
    private const int EBADFD = 77;

    public bool Handles(in OpenFile f)
        => f.Stat.Type == StatBuf.S_IFCHR && FileCalls.MajorOf(f.Stat.Rdev) == 10 && FileCalls.MinorOf(f.Stat.Rdev) == 200;

    public void Checkpoint(CheckpointContext ctx) { }

    /// <summary>An ifreq: the name (16 bytes) then the flags (a short), 40 bytes in all.</summary>
    public static byte[] Ifreq(string name, int flags)
    {
        var ifr = new byte[40];
        var b = Encoding.ASCII.GetBytes(name);
        b.AsSpan(0, Math.Min(b.Length, 15)).CopyTo(ifr);
        BitConverter.TryWriteBytes(ifr.AsSpan(16), (short)flags);
        return ifr;
    }

    public void CheckpointFile(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        int mine = ctx.GrabFd(f.Fd);
        string name = "";
        int flags = 0, hdr = DefaultVnetHdrSize, sndbuf = DefaultSndBuf, le = 0;
        bool ckptNamespace = false;
        try
        {
            var ifr = stackalloc byte[40];
            new Span<byte>(ifr, 40).Clear();
            if (EventCalls.Ioctl(mine, TUNGETIFF, ifr) == 0)
            {
                var n = new ReadOnlySpan<byte>(ifr, 16);
                int end = n.IndexOf((byte)0);
                name = Encoding.ASCII.GetString(end < 0 ? n : n[..end]);
                flags = *(ushort*)(ifr + 16);
                int v;
                if (EventCalls.Ioctl(mine, TUNGETVNETHDRSZ, &v) == 0) hdr = v;
                if (EventCalls.Ioctl(mine, TUNGETSNDBUF, &v) == 0) sndbuf = v;
                if (EventCalls.Ioctl(mine, TUNGETVNETLE, &v) == 0) le = v;
                int ns = EventCalls.Ioctl(mine, TUNGETDEVNETNS, null);
                if (ns < 0) throw SyscallException.Last("ioctl(TUNGETDEVNETNS)", ctx.Pid, $"fd {f.Fd}");
                string nsLink;
                try { nsLink = FileCalls.ReadLink($"/proc/self/fd/{ns}") ?? ""; }
                finally { FileCalls.Close(ns); }
                var (_, treeOwn) = ctx.Session.TreeNamespace("net", "network");
                string tree = FileCalls.ReadLink($"/proc/{ctx.Session.Tree[0].Pid}/ns/net") ?? "";
                string ckpt = FileCalls.ReadLink("/proc/self/ns/net") ?? "";
                string what = $"fd {f.Fd} is the {((flags & IFF_TAP) != 0 ? "tap" : "tun")} device {name}";
                if (nsLink == ckpt && (!treeOwn || tree == ckpt))
                {
                    if ((flags & IFF_PERSIST) == 0)
                        throw new NotCheckpointableException(ctx.Pid, $"{what} of ckpt's network namespace, which goes away with its files (addresses and routes of the host's); make it persistent (ip tuntap add) or run the program in a network namespace of its own");
                    ckptNamespace = true;
                }
                else if (nsLink != tree)
                    throw new NotCheckpointableException(ctx.Pid, $"{what} of another network namespace ({nsLink}) than the tree's ({tree})");
            }
            else if (System.Runtime.InteropServices.Marshal.GetLastPInvokeError() != EBADFD)
                throw SyscallException.Last("ioctl(TUNGETIFF)", ctx.Pid, $"fd {f.Fd}");
        }
        finally { FileCalls.Close(mine); }
        ctx.Image.Write(RecordKind.TunFile, new PayloadWriter().U32(objref).I32(f.Flags & ~FileCalls.O_CLOEXEC).Str(name).I32(flags)
            .I32(hdr).I32(sndbuf).I32(le).Bool(ckptNamespace));
        ctx.Log.Info($"pid {ctx.Pid} fd {f.Fd}: " + (name == "" ? "a tun file attached to no device" :
            $"{((flags & IFF_TAP) != 0 ? "tap" : "tun")} device {name} (flags 0x{flags:x}{(ckptNamespace ? ", persistent, in ckpt's namespace" : "")})"));
    }

    private readonly record struct Saved(uint Objref, int Flags, string Device, int IffFlags, int VnetHdr, int SndBuf, int VnetLe, bool CkptNamespace);

    private static Saved Read(Record rec)
    {
        var r = rec.Reader();
        var s = new Saved(r.U32(), r.I32(), r.Str(), r.I32(), r.I32(), r.I32(), r.I32(), r.Bool());
        r.End();
        if (Encoding.ASCII.GetByteCount(s.Device) > 15) throw new ImageFormatException($"TunFile record at offset {rec.Offset}: device name '{s.Device}' longer than 15 bytes");
        return s;
    }

    /// <summary>The devices whose persist flag the restart set and must clear once a file of the tree holds them.</summary>
    private sealed class Unpersist { public readonly HashSet<string> Devices = new(); }

    /// <summary>A device NetNamespace made persistent for the restart only: cleared once a file of the tree is attached to it.</summary>
    public static void ClearPersistLater(RestoreSession s, string device) => s.State<Unpersist>().Devices.Add(device);

    /// <summary>
    /// Makes tun/tap device <paramref name="name"/> in the calling thread's network namespace, persistent (so
    /// that it stays once ckpt's file is closed), with its owner and group (uint.MaxValue: none).
    /// </summary>
    public static void MakePersistent(string name, int flags, uint owner, uint group)
    {
        int fd = FileCalls.Open("/dev/net/tun", FileCalls.O_RDWR | FileCalls.O_CLOEXEC, 0);
        if (fd < 0) throw SyscallException.Last("open /dev/net/tun", 0, name);
        try
        {
            fixed (byte* ifr = Ifreq(name, flags & SetIffFlags))
                if (EventCalls.Ioctl(fd, TUNSETIFF, ifr) != 0) throw SyscallException.Last("ioctl(TUNSETIFF)", 0, name);
            if (owner != uint.MaxValue && EventCalls.Ioctl(fd, TUNSETOWNER, (void*)(nuint)owner) != 0) throw SyscallException.Last("ioctl(TUNSETOWNER)", 0, name);
            if (group != uint.MaxValue && EventCalls.Ioctl(fd, TUNSETGROUP, (void*)(nuint)group) != 0) throw SyscallException.Last("ioctl(TUNSETGROUP)", 0, name);
            if (EventCalls.Ioctl(fd, TUNSETPERSIST, (void*)1) != 0) throw SyscallException.Last("ioctl(TUNSETPERSIST)", 0, name);
        }
        finally { FileCalls.Close(fd); }
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var t = Read(rec);
        int fd = ctx.OpenInVessel("/dev/net/tun", (t.Flags & ~(FileCalls.O_CREAT | FileCalls.O_TRUNC | FileCalls.O_EXCL)) | FileCalls.O_CLOEXEC);
        if (t.Device != "")
        {
            ulong at = ctx.PutScratch(0, Ifreq(t.Device, t.IffFlags & SetIffFlags));
            long r = ctx.Vessel.Inject(Nr.ioctl, fd, (long)TUNSETIFF, (long)at);
            if (r < 0)
                throw new CkptException($"restart: pid {ctx.Pid}: cannot attach to {((t.IffFlags & IFF_TAP) != 0 ? "tap" : "tun")} device {t.Device}" +
                    (t.CkptNamespace ? " (a persistent device of ckpt's network namespace: make it again with ip tuntap add)" : "") + $": {Errors.Describe((int)-r)}",
                    ExitCodes.RestoreConflict);
            int mine = ctx.GrabFd(fd);
            try
            {
                int v;
                if (t.VnetHdr != DefaultVnetHdrSize) { v = t.VnetHdr; Check(EventCalls.Ioctl(mine, TUNSETVNETHDRSZ, &v), "TUNSETVNETHDRSZ", ctx); }
                if (t.SndBuf != DefaultSndBuf) { v = t.SndBuf; Check(EventCalls.Ioctl(mine, TUNSETSNDBUF, &v), "TUNSETSNDBUF", ctx); }
                if (t.VnetLe != 0) { v = t.VnetLe; Check(EventCalls.Ioctl(mine, TUNSETVNETLE, &v), "TUNSETVNETLE", ctx); }
                // a device persistent for the restart only: this file holds it from now on, as the tree's did
                if (ctx.Session.Existing<Unpersist>() is { } u && u.Devices.Remove(t.Device))
                {
                    Check(EventCalls.Ioctl(mine, TUNSETPERSIST, null), "TUNSETPERSIST 0", ctx);
                    ctx.Log.Info($"tun/tap device {t.Device}: not persistent again, as it was (held by pid {ctx.Pid}'s file)");
                }
            }
            finally { FileCalls.Close(mine); }
        }
        ctx.Files.SetRestored(t.Objref, fd);
    }

    private static void Check(int r, string what, RestoreContext ctx)
    {
        if (r != 0) throw SyscallException.Last($"ioctl({what})", ctx.Pid);
    }

    public void Finish(RestoreContext ctx) { }

    public void Describe(Record rec, InfoNode info)
    {
        var t = Read(rec);
        info.Child("files").Set(t.Objref.ToString(), new InfoNode().Set("kind", (t.IffFlags & IFF_TAP) != 0 ? "tap" : "tun").Set("path", "/dev/net/tun")
            .Set("flags", RegularFile.OpenFlags(t.Flags)).Set("device", t.Device == "" ? null : t.Device).Set("iff_flags", $"0x{t.IffFlags:x}")
            .Set("in_ckpt_namespace", t.CkptNamespace));
    }
}
