using System.Buffers.Binary;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using static Ckpt.Native.TerminalCalls;

namespace Ckpt.Kinds;

/// <summary>
/// Character devices that can be reopened by path: the memory devices (/dev/null, zero, full, random,
/// urandom; also under another name, or a removed one: a removed node is made again under its name,
/// opened and removed, or the device reopened through its /dev name if that fails) and terminals. Saved by path and major:minor, which restart checks before reopening. A
/// terminal is handed over to the terminal of <c>ckpt restart</c> when it has one (its stdin, stdout
/// or stderr): a tree checkpointed in one terminal window carries on in the one it is restarted from;
/// without one, the saved terminal is reopened by path if it still exists.
/// </summary>
public sealed class CharDevice : IFileKind
{
    public static readonly CharDevice Instance = new();
    public string Name => "character device";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.CharDevice];
    public int FinishOrder => 47;

    public bool Handles(in OpenFile f)
    {
        if (f.Stat.Type != StatBuf.S_IFCHR) return false;
        int major = FileCalls.MajorOf(f.Stat.Rdev), minor = FileCalls.MinorOf(f.Stat.Rdev);
        // a memory device is the same device under any name (a node of a chroot's /dev, one removed since)
        if (MemoryDevice(major, minor) != null) return true;
        // so is a terminal: reopened through its node (one outside /dev too: a chroot's or a container's
        // /dev, a node made with mknod), checked by major:minor
        if (!f.Link.StartsWith('/')) return false;
        return IsTerminal(major, minor);   // virtual consoles, serial ttys, /dev/tty, /dev/console, /dev/pts/N
    }

    public void Checkpoint(CheckpointContext ctx) { }

    public void CheckpointFile(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        // a pty slave whose master the tree holds is rebuilt with it, not handed over
        if (Pty.TryCheckpointSlave(ctx, f, objref)) return;
        var p = new PayloadWriter().U32(objref).Str(f.Link).I32(FileCalls.MajorOf(f.Stat.Rdev)).I32(FileCalls.MinorOf(f.Stat.Rdev))
            .I32(f.Flags & ~FileCalls.O_CLOEXEC).I64(f.Pos);
        // appended fields: the node's permission bits and owner (a removed node is made again with them)
        p.U32(f.Stat.Mode & 0xfff).U32(f.Stat.Uid).U32(f.Stat.Gid);
        // appended, for a terminal: its settings and window size (raw mode of an editor, echo off...)
        if (IsTerminal(FileCalls.MajorOf(f.Stat.Rdev), FileCalls.MinorOf(f.Stat.Rdev)) && f.Link != "/dev/tty")
        {
            var (termios, winsize, hungUp) = TerminalSettings(ctx, f.Fd);
            p.Bytes(termios).Bytes(winsize);
            // appended: hung up (its master closed, its modem line dropped, vhangup): restart gives a
            // hung-up terminal back, never the one now at that name
            p.Bool(hungUp);
            if (hungUp) ctx.Log.Info($"pid {ctx.Pid}: fd {f.Fd} ({f.Link}) is a terminal that was hung up: restart gives it a hung-up terminal");
        }
        ctx.Image.Write(RecordKind.CharDevice, p);
    }

    /// <summary>
    /// The termios and window size of the terminal at fd <paramref name="fd"/> of the process (empty where
    /// the ioctl fails), and whether it was hung up: a hung-up terminal's open files answer every ioctl but
    /// a few with EIO (the kernel gave them the file operations of a hung-up tty).
    /// </summary>
    private static unsafe (byte[] Termios, byte[] Winsize, bool HungUp) TerminalSettings(CheckpointContext ctx, int fd)
    {
        int mine = ctx.GrabFd(fd);
        try
        {
            byte* t = stackalloc byte[64];
            byte* w = stackalloc byte[WinsizeSize];
            if (EventCalls.Ioctl(mine, (nuint)TCGETS, t) != 0)
                return ([], [], System.Runtime.InteropServices.Marshal.GetLastPInvokeError() == Errors.EIO);
            byte[] termios = new ReadOnlySpan<byte>(t, TermiosSize).ToArray();
            byte[] winsize = EventCalls.Ioctl(mine, (nuint)TIOCGWINSZ, w) == 0 ? new ReadOnlySpan<byte>(w, WinsizeSize).ToArray() : [];
            return (termios, winsize, false);
        }
        finally { FileCalls.Close(mine); }
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint objref = r.U32(); string path = r.Str(); int major = r.I32(), minor = r.I32(); int flags = r.I32(); long pos = r.I64();
        uint perms = r.AtEnd ? 0x180 /* 0600 */ : r.U32() & 0xfff;
        uint uid = r.AtEnd ? 0 : r.U32(), gid = r.AtEnd ? 0 : r.U32();
        byte[] termios = r.AtEnd ? [] : r.Bytes().ToArray(), winsize = r.AtEnd ? [] : r.Bytes().ToArray();
        bool hungUp = !r.AtEnd && r.Bool();
        r.End();
        if (termios.Length is not (0 or TermiosSize) || winsize.Length is not (0 or WinsizeSize))
            throw new ImageFormatException($"CharDevice record at offset {rec.Offset}: terminal settings of {termios.Length} and {winsize.Length} bytes");
        int openFlags = (flags & ~(FileCalls.O_CREAT | FileCalls.O_TRUNC | FileCalls.O_EXCL)) | FileCalls.O_NOCTTY | FileCalls.O_CLOEXEC;
        if (hungUp)
        {
            if (!IsTerminal(major, minor)) throw new ImageFormatException($"CharDevice record at offset {rec.Offset}: device {major}:{minor} hung up, but it is not a terminal");
            Placed(ctx, objref, HungUpTerminal(ctx, openFlags, major, minor), 0);
            ctx.Log.Debug($"terminal {path}: hung up, as it was (a pty whose master is closed)");
            return;
        }
        if (IsTerminal(major, minor) && path != "/dev/tty")
        {
            string? instead = null;
            // a terminal a new pty stands for (TerminalRelay): opened on it, with the settings it had
            if (ctx.Session.Options.Relay is { } relay && relay.Stands(major, minor, termios))
            {
                instead = $"/dev/pts/{relay.Index}";
                ctx.Log.Info($"terminal {path} of the image replaced by {instead}, the new pty that stands for it");
                termios = [];
            }
            // (the system console stays the console)
            else if (!(major == 5 && minor == 1) && OwnTerminal() is { } mine && mine != path)
            {
                instead = mine;
                ctx.Log.Info($"terminal {path} of the image replaced by {mine}, the terminal of ckpt restart");
            }
            if (instead != null)
            {
                path = instead;
                if (FileCalls.TryStat(path, out var t)) { major = FileCalls.MajorOf(t.Rdev); minor = FileCalls.MinorOf(t.Rdev); }
            }
        }
        // the terminal ckpt waits in the foreground of: the program's settings on it as the tree is released
        if (termios.Length > 0) ctx.Session.Options.Job?.Settings(major, minor, termios);
        if (path.EndsWith(" (deleted)"))
        {
            // a node removed while open: made again under its name, opened, and removed
            path = path[..^10];
            if (!File.Exists(path) && FileCalls.Mknod(path, StatBuf.S_IFCHR | 0x180 /* 0600 until opened */, FileCalls.MakeDev(major, minor)) == 0)
            {
                long got;
                try
                {
                    got = ctx.TryOpenInVessel(path, openFlags);
                    // its owner and mode, as the original node had them (what fstat shows)
                    SocketCalls.Lchown(path, uid, gid);
                    SocketCalls.Chmod(path, perms);
                }
                finally { FileCalls.Unlink(path); }
                if (got >= 0)
                {
                    Placed(ctx, objref, (int)got, pos);
                    return;
                }
                ctx.Log.Info($"device node {path} made again cannot be opened ({Errors.Describe((int)-got)}): the device is opened under another name");
            }
        }
        if (!IsDevice(path, major, minor) && MemoryDevice(major, minor) is { } same && IsDevice(same, major, minor))
        {
            ctx.Log.Info($"device {path} ({major}:{minor}) reopened as {same}, the same device");
            path = same;
        }
        // a device the tree's mount namespace has not (one opened before it pivoted to a root of its own):
        // opened in ckpt's namespace, the same device
        if (!IsDevice(path, major, minor) && MountNamespace.InCkptNamespace(ctx.Session, path) is var outside && outside != path && IsDevice(outside, major, minor))
        {
            ctx.Log.Info($"device {path} ({major}:{minor}) is not in the tree's mount namespace: opened in ckpt's");
            Placed(ctx, objref, MountNamespace.OpenInCkptNamespace(ctx, path, openFlags & ~FileCalls.O_CLOEXEC), pos);
            return;
        }
        if (!IsDevice(path, major, minor))
            throw new CkptException($"restart: device {path} ({major}:{minor}) is not present here{(IsTerminal(major, minor) ? "; restart from a terminal to give the processes that one" : "")}", ExitCodes.RestoreConflict);
        Placed(ctx, objref, ctx.OpenInVessel(path, openFlags), pos);
    }

    /// <summary>
    /// A hung-up terminal for the vessel: the slave of a new pty (opened through its master, TIOCGPTPEER,
    /// with <paramref name="openFlags"/>), whose master is then closed: the kernel hangs the slave up as it did the
    /// original (reads give end of file, writes and most ioctls EIO; its node is gone).
    /// </summary>
    private static unsafe int HungUpTerminal(RestoreContext ctx, int openFlags, int major, int minor)
    {
        // a pty's slave gets the index it had when that is free here (its fd links show "/dev/pts/N
        // (deleted)"): /dev/ptmx is opened until that index comes, the lower ones held meanwhile; the
        // lowest free above it when it is taken. Its master is kept until every description of the
        // image is made, so that the slaves of one pty are slaves of one pty again (Finish closes it)
        int want = Pty.IsSlave(major) ? Pty.SlaveIndex(major, minor) : -1;
        var masters = ctx.Session.State<HungUpPtys>().Masters;
        if (want < 0 || !masters.TryGetValue(want, out int master))
        {
            var held = new List<int>();
            master = -1;
            try
            {
                while (true)
                {
                    if (master >= 0) held.Add(master);
                    master = FileCalls.Open("/dev/ptmx", FileCalls.O_RDWR | FileCalls.O_NOCTTY | FileCalls.O_CLOEXEC, 0);
                    if (master < 0) throw SyscallException.Last("open /dev/ptmx (for a hung-up terminal)", ctx.Pid);
                    if (want < 0 || held.Count >= 4096 || Pty.Index(master, ctx.Pid, "/dev/ptmx") >= want) break;
                }
                int unlock = 0;
                if (EventCalls.Ioctl(master, (nuint)TIOCSPTLCK, &unlock) != 0) throw SyscallException.Last("ioctl(TIOCSPTLCK)", ctx.Pid);
            }
            catch { if (master >= 0) FileCalls.Close(master); throw; }
            finally { foreach (int fd in held) FileCalls.Close(fd); }
            masters[want < 0 ? --ctx.Session.State<HungUpPtys>().Other : want] = master;
        }
        int slave = EventCalls.Ioctl(master, (nuint)TIOCGPTPEER, (void*)(nint)openFlags);
        if (slave < 0) throw SyscallException.Last("ioctl(TIOCGPTPEER)", ctx.Pid);
        try { return ctx.Install(slave); }
        finally { FileCalls.Close(slave); }
    }

    /// <summary>The masters of the ptys made for hung-up terminals, by the index their slaves had (terminals that were no pty: negative keys).</summary>
    private sealed class HungUpPtys { public readonly Dictionary<int, int> Masters = new(); public int Other; }

    private static void Placed(RestoreContext ctx, uint objref, int fd, long pos)
    {
        // (a device that cannot seek, a terminal, keeps its offset 0)
        try { ctx.SetOffsetAndFlags(fd, pos, -1, $"fd {fd}"); }
        catch (SyscallException) { }
        ctx.Files.SetRestored(objref, fd);
    }

    private static bool IsDevice(string path, int major, int minor) => FileCalls.TryStat(path, out var st) && st.Type == StatBuf.S_IFCHR
        && FileCalls.MajorOf(st.Rdev) == major && FileCalls.MinorOf(st.Rdev) == minor;

    /// <summary>The /dev name of a memory device (null, zero, full, random, urandom), or null.</summary>
    private static string? MemoryDevice(int major, int minor) => major != 1 ? null : minor switch
    {
        3 => "/dev/null", 5 => "/dev/zero", 7 => "/dev/full", 8 => "/dev/random", 9 => "/dev/urandom", _ => null,
    };

    private static bool IsTerminal(int major, int minor) => major is 4 or (>= 136 and <= 143) || (major == 5 && minor is 0 or 1);

    private static string? s_ownTerminal;
    private static bool s_ownTerminalKnown;

    /// <summary>The terminal of ckpt's stdin, stdout or stderr (the first that is one), or null.</summary>
    private static string? OwnTerminal()
    {
        if (s_ownTerminalKnown) return s_ownTerminal;
        s_ownTerminalKnown = true;
        for (int fd = 0; fd <= 2; fd++)
        {
            var link = new FileInfo($"/proc/self/fd/{fd}").LinkTarget;
            if (link != null && FileCalls.TryStat(link, out var st) && st.Type == StatBuf.S_IFCHR
                && IsTerminal(FileCalls.MajorOf(st.Rdev), FileCalls.MinorOf(st.Rdev)) && link.StartsWith("/dev/") && link != "/dev/tty")
                return s_ownTerminal = link;
        }
        return null;
    }

    /// <summary>The masters kept for hung-up terminals are closed: their slaves in the processes hang up, as they were.</summary>
    public void Finish(RestoreContext ctx)
    {
        if (ctx.Session.Existing<HungUpPtys>() is not { } h) return;
        foreach (int m in h.Masters.Values) FileCalls.Close(m);
        h.Masters.Clear();
    }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint objref = r.U32(); string path = r.Str(); int major = r.I32(), minor = r.I32(); int flags = r.I32();
        var node = new InfoNode().Set("kind", "char device").Set("path", path)
            .Set("device", $"{major}:{minor}").Set("flags", RegularFile.OpenFlags(flags));
        r.I64();
        if (!r.AtEnd) { r.U32(); r.U32(); r.U32(); }
        if (!r.AtEnd && r.Bytes() is { Length: TermiosSize } t && r.Bytes() is var w)
        {
            uint lflag = BinaryPrimitives.ReadUInt32LittleEndian(t[LflagOffset..]);
            node.Set("terminal mode", $"{((lflag & ICANON) != 0 ? "canonical" : "raw")}, echo {((lflag & ECHO) != 0 ? "on" : "off")}");
            if (w.Length == WinsizeSize) node.Set("window", $"{BinaryPrimitives.ReadUInt16LittleEndian(w[2..])}x{BinaryPrimitives.ReadUInt16LittleEndian(w)}");
        }
        else if (!r.AtEnd) r.Bytes();
        if (!r.AtEnd && r.Bool()) node.Set("terminal", "hung up");
        info.Child("files").Set(objref.ToString(), node);
    }
}
