using System.Buffers.Binary;
using System.Globalization;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using static Ckpt.Native.TerminalCalls;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>
/// Pseudo-terminals whose master (<c>/dev/ptmx</c>) a process of the tree holds (tmux, screen, script,
/// expect...): the master with its pty index, termios, window size, packet mode and lock; the slaves
/// (<c>/dev/pts/N</c>) held in the tree; the controlling terminal of each session leader whose
/// terminal is such a pty, and its foreground process group (appended to the Tree record), and of each
/// leader whose terminal is another (by device, for <see cref="TerminalRelay"/>). A slave whose master is
/// outside the tree is a terminal handed over by <see cref="CharDevice"/>.
/// <para>
/// Restart: a pty gets its old index by opening /dev/ptmx until that index comes (the lower ones held
/// meanwhile): ckpt keeps a copy of each master, installed in the processes that hold it. A session
/// leader with a pty as controlling terminal gets it while the tree is built, right after its setsid
/// and before it forks, so that the whole session inherits it; the foreground group is set in
/// Finish. Output written on the slave side and not yet read by the master's holder is saved: read out of
/// the master and written back through the slave with output processing (OPOST) off for that moment, so
/// that it is not processed twice; the restart writes it the same way into the new pty. Input typed and
/// not read on the slave side is saved the same way (read out of the slave, written back through the
/// master with input processing off); in canonical mode (a shell's line being typed) it is read with
/// canonical mode left for that moment, whole lines and the partial one, and written back in canonical
/// mode with echo, signals and the editing characters off, so that the same lines form again. Refused:
/// output queued in packet mode or on a locked pty, input on a locked pty, and canonical input with a
/// line ended by EOF (kept as a NUL a raw read cannot tell apart).
/// </para>
/// </summary>
public sealed unsafe class Pty : IFileKind
{
    public static readonly Pty Instance = new();
    public string Name => "pty";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.Pty];
    public int FinishOrder => 48;

    // (the terminal and pty ioctls: TerminalCalls)
    private const byte RoleMaster = 0, RoleSlave = 1;

    public bool Handles(in OpenFile f)
        => f.Stat.Type == StatBuf.S_IFCHR && FileCalls.MajorOf(f.Stat.Rdev) == 5 && FileCalls.MinorOf(f.Stat.Rdev) == 2;

    /// <summary>The pty number N (of /dev/pts/N) of a master fd of ckpt (TIOCGPTN).</summary>
    internal static int Index(int master, int pid, string what)
    {
        int n = 0;
        if (EventCalls.Ioctl(master, (nuint)TIOCGPTN, &n) != 0) throw SyscallException.Last("ioctl(TIOCGPTN)", pid, what);
        return n;
    }

    public static bool IsSlave(int major) => major is >= 136 and <= 143;
    public static int SlaveIndex(int major, int minor) => (major - 136) * 256 + minor;

    // ---------------------------------------------------------------- checkpoint

    /// <summary>The ptys whose master a process of the tree holds: index → (pid, fd) of one holder.</summary>
    private sealed class Masters { public Dictionary<int, (int Pid, int Fd)>? ByIndex; }

    private static Dictionary<int, (int Pid, int Fd)> InternalMasters(CheckpointSession s)
    {
        var st = s.State<Masters>();
        if (st.ByIndex != null) return st.ByIndex;
        st.ByIndex = new();
        foreach (var ctx in s.Processes)
            foreach (var f in ctx.OpenFiles)
                if (Instance.Handles(f))
                {
                    int mine = ctx.GrabFd(f.Fd);
                    try
                    {
                        st.ByIndex.TryAdd(Index(mine, ctx.Pid, $"fd {f.Fd}"), (ctx.Pid, f.Fd));
                    }
                    finally { FileCalls.Close(mine); }
                }
        return st.ByIndex;
    }

    /// <summary>
    /// The controlling terminal of each session leader of the tree: those that are a pty of the tree
    /// (leader, pty index, foreground group), and the others (a terminal window's, a console...: leader,
    /// the terminal's major:minor, foreground group; a restart from a terminal gives such a leader a new
    /// pty, <see cref="TerminalRelay"/>). Both written in the Tree record.
    /// </summary>
    public static (List<(int Pid, int Index, int Tpgid)> Inside, List<(int Pid, int Major, int Minor, int Tpgid)> Outside) Cttys(CheckpointSession s)
    {
        var inside = new List<(int, int, int)>();
        var outside = new List<(int, int, int, int)>();
        var masters = InternalMasters(s);
        foreach (var (pid, major, minor, tpgid) in LeaderTerminals(s))
            if (IsSlave(major) && masters.ContainsKey(SlaveIndex(major, minor))) inside.Add((pid, SlaveIndex(major, minor), tpgid));
            else outside.Add((pid, major, minor, tpgid));
        return (inside, outside);
    }

    /// <summary>Each live session leader of the tree that has a controlling terminal: its device and foreground group (/proc/PID/stat).</summary>
    private static List<(int Pid, int Major, int Minor, int Tpgid)> LeaderTerminals(CheckpointSession s)
    {
        var list = new List<(int, int, int, int)>();
        foreach (var e in s.Tree)
        {
            if (e.Zombie || e.Sid != e.Pid) continue;
            var stat = ProcStat.Read(e.Pid);
            int ttyNr = int.Parse(stat.Field(7), CultureInfo.InvariantCulture), tpgid = int.Parse(stat.Field(8), CultureInfo.InvariantCulture);
            if (ttyNr == 0) continue;
            list.Add((e.Pid, (ttyNr >> 8) & 0xfff, (ttyNr & 0xff) | ((ttyNr >> 12) & 0xfff00), tpgid));
        }
        return list;
    }

    public void Checkpoint(CheckpointContext ctx) { }

    public void CheckpointFile(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        int mine = ctx.GrabFd(f.Fd);
        try
        {
            int index = Index(mine, ctx.Pid, $"fd {f.Fd}"), pkt = 0, locked = 0, outq = 0;
            string what = $"fd {f.Fd} (/dev/ptmx, the master of /dev/pts/{index})";
            byte* termios = stackalloc byte[64];
            byte* winsize = stackalloc byte[WinsizeSize];
            if (EventCalls.Ioctl(mine, (nuint)TCGETS, termios) != 0) throw SyscallException.Last("ioctl(TCGETS)", ctx.Pid, what);
            if (EventCalls.Ioctl(mine, (nuint)TIOCGWINSZ, winsize) != 0) throw SyscallException.Last("ioctl(TIOCGWINSZ)", ctx.Pid, what);
            EventCalls.Ioctl(mine, (nuint)TIOCGPKT, &pkt);
            EventCalls.Ioctl(mine, (nuint)TIOCGPTLCK, &locked);
            // written on the slave side, not read yet by the master's holder: read out and put back
            byte[] output = [];
            if (EventCalls.Ioctl(mine, EventCalls.FIONREAD, &outq) == 0 && outq > 0)
            {
                if (pkt != 0 || locked != 0)
                    throw new NotCheckpointableException(ctx.Pid, $"{what} has {outq} bytes of output its holder has not read yet, which cannot be put back {(pkt != 0 ? "in packet mode" : "on a locked pty")}; checkpoint again once it has read them");
                output = TakeQueued(mine, ctx.Pid, what);
                WriteOutput(mine, index, output, ctx.Pid, what);
            }
            // typed (written to the master), not read yet on the slave side: read out and put back
            int inq = SlaveInputQueue(mine);
            byte[] input = [];
            uint lflag = *(uint*)(termios + LflagOffset);
            if (locked != 0)
            {
                if (inq > 0) throw new NotCheckpointableException(ctx.Pid, $"{what} has {inq} bytes of input not read yet on /dev/pts/{index}, which cannot be read on a locked pty; checkpoint again once it has read them");
            }
            else if ((lflag & ICANON) != 0)
            {
                // in canonical mode a partial line is not counted by FIONREAD: looked for always
                input = TakeCanonicalInput(mine, index, ctx.Pid, what);
                WriteInput(master: mine, index, input, ctx.Pid, what);
                // (a line ended by EOF is kept as a NUL byte the line discipline marks, which a raw read
                // cannot tell from a NUL typed)
                if (input.Contains((byte)0))
                    throw new NotCheckpointableException(ctx.Pid, $"{what} has {input.Length} bytes of input not read yet on /dev/pts/{index} with a line ended by EOF (^D) or a NUL in it, which cannot be put back as it was; checkpoint again once it has read them");
            }
            else if (inq > 0)
            {
                input = TakeInput(mine, index, ctx.Pid, what);
                WriteInput(master: mine, index, input, ctx.Pid, what);
            }
            ctx.Image.Write(RecordKind.Pty, new PayloadWriter().U32(objref).U8(RoleMaster).I32(index).I32(f.Flags & ~FileCalls.O_CLOEXEC)
                .Raw(new ReadOnlySpan<byte>(termios, TermiosSize)).Raw(new ReadOnlySpan<byte>(winsize, WinsizeSize)).Bool(pkt != 0).Bool(locked != 0)
                .Bytes(output).Bytes(input));
            if (output.Length > 0) ctx.Log.Info($"{what}: {output.Length} bytes of output not read yet saved");
            if (input.Length > 0) ctx.Log.Info($"{what}: {input.Length} bytes of input not read yet saved");
        }
        finally { FileCalls.Close(mine); }
    }

    /// <summary>What waits to be read on a pty fd (the output in a master, the input on a slave): read while FIONREAD says there is some, so that a blocking description never blocks.</summary>
    private static byte[] TakeQueued(int master, int pid, string what)
    {
        var all = new MemoryStream();
        var buf = new byte[65536];
        int n = 0;
        while (EventCalls.Ioctl(master, EventCalls.FIONREAD, &n) == 0 && n > 0)
        {
            nint got;
            fixed (byte* b = buf) got = FileCalls.Read(master, b, (nuint)Math.Min(n, buf.Length));
            if (got < 0 && System.Runtime.InteropServices.Marshal.GetLastPInvokeError() == Errors.EINTR) continue;
            if (got <= 0) throw SyscallException.Last("read (pty output)", pid, what);
            all.Write(buf, 0, (int)got);
            if (all.Length > 1 << 20) throw new NotCheckpointableException(pid, $"{what} has more than 1 MiB of output not read yet");
        }
        return all.ToArray();
    }

    /// <summary>
    /// A slave description of ckpt for the pty of <paramref name="master"/> (TIOCGPTPEER: of its own devpts
    /// instance, whatever the mount namespace, where /dev/pts/N could be another's), or -1 (errno set).
    /// </summary>
    private static int Slave(int master, int flags) => EventCalls.Ioctl(master, (nuint)TIOCGPTPEER, (void*)(nint)flags);

    /// <summary>The input waiting on the slave side of pty <paramref name="index"/> (not in canonical mode), read through a slave description of ckpt.</summary>
    private static byte[] TakeInput(int master, int index, int pid, string what)
    {
        int s = Slave(master, FileCalls.O_RDWR | FileCalls.O_NOCTTY | FileCalls.O_NONBLOCK | FileCalls.O_CLOEXEC);
        if (s < 0) throw SyscallException.Last($"open /dev/pts/{index}", pid, what);
        try { return TakeQueued(s, pid, what); }
        finally { FileCalls.Close(s); }
    }

    /// <summary>
    /// The input waiting on the slave side of pty <paramref name="index"/> in canonical mode, whole lines
    /// and the partial one: canonical mode is left for that moment (the line discipline then hands all it
    /// holds to a read), and entered again with nothing queued.
    /// </summary>
    private static byte[] TakeCanonicalInput(int master, int index, int pid, string what)
    {
        int s = Slave(master, FileCalls.O_RDWR | FileCalls.O_NOCTTY | FileCalls.O_NONBLOCK | FileCalls.O_CLOEXEC);
        if (s < 0) throw SyscallException.Last($"open /dev/pts/{index}", pid, what);
        try
        {
            return WithTermios(s, pid, what, flags => flags[3] &= ~ICANON, cc => { cc[VMIN] = 1; cc[VTIME] = 0; },
                () => TakeQueued(s, pid, what));
        }
        finally { FileCalls.Close(s); }
    }

    /// <summary>Offset of c_cc in struct termios, and the indexes of its characters used here.</summary>
    private const int CcOffset = 17, VERASE = 2, VKILL = 3, VEOF = 4, VTIME = 5, VMIN = 6, VEOL = 11, VREPRINT = 12, VWERASE = 14, VLNEXT = 15, VEOL2 = 16;

    /// <summary>
    /// Writes input into pty <paramref name="index"/> through its master (<paramref name="master"/>) with
    /// the slave's input processing off for that moment (no translation, no signal characters, no echo),
    /// so that its reader gets it exactly as given. In canonical mode, canonical mode stays (the lines
    /// form again, the last one partial if it was) and the editing characters are off (erase, kill, EOF,
    /// word erase, reprint, literal next: the bytes queued are what their editing left).
    /// </summary>
    private static void WriteInput(int master, int index, byte[] data, int pid, string what)
    {
        if (data.Length == 0) return;
        byte* t = stackalloc byte[64];
        if (EventCalls.Ioctl(master, (nuint)TCGETS, t) != 0) throw SyscallException.Last("ioctl(TCGETS)", pid, what);
        bool canonical = (*(uint*)(t + LflagOffset) & ICANON) != 0;
        // what shows in FIONREAD once taken in: all of it, or in canonical mode the whole lines (up to the
        // last newline or end-of-line character)
        int whole = data.Length;
        if (canonical)
        {
            byte eol = t[CcOffset + VEOL], eol2 = t[CcOffset + VEOL2];
            whole = 0;
            for (int i = 0; i < data.Length; i++)
                if (data[i] == (byte)'\n' || (eol != 0 && data[i] == eol) || (eol2 != 0 && data[i] == eol2)) whole = i + 1;
        }
        WriteUnprocessed(master, data, "write (pty input)", pid, what, flags =>
        {
            flags[0] = 0;                                                                   // c_iflag: no ICRNL, IXON, ISTRIP...
            flags[3] &= ~((canonical ? 0 : ICANON) | 0x1u | 0x8u | 0x40u | 0x8000u);     // c_lflag: no ISIG, ECHO, ECHONL, IEXTEN
        }, settle: () =>
        {
            // the line discipline takes it in from a work queue: wait until the reader side holds it all,
            // before the flags are put back (a partial line is not counted: a moment more for it)
            for (int i = 0; i < 200 && SlaveInputQueue(master) < whole; i++) Thread.Sleep(1);
            if (whole < data.Length) Thread.Sleep(5);
        }, cc: canonical ? cc =>
        {
            foreach (int c in (int[])[VERASE, VKILL, VEOF, VREPRINT, VWERASE, VLNEXT]) cc[c] = 0;
        } : null);
    }

    /// <summary>
    /// Writes output into pty <paramref name="index"/> through its slave with output processing off for
    /// that moment (OPOST cleared), so that the master reads it exactly as given.
    /// </summary>
    private static void WriteOutput(int master, int index, byte[] data, int pid, string what)
    {
        if (data.Length == 0) return;
        int s = Slave(master, FileCalls.O_RDWR | FileCalls.O_NOCTTY | FileCalls.O_CLOEXEC);
        if (s < 0) throw SyscallException.Last($"open /dev/pts/{index}", pid, what);
        try { WriteUnprocessed(s, data, "write (pty output)", pid, what, flags => flags[1] &= ~1u /* c_oflag: no OPOST */); }
        finally { FileCalls.Close(s); }
    }

    /// <summary>The termios flag words c_iflag, c_oflag, c_cflag, c_lflag, to change for <see cref="WriteUnprocessed"/>.</summary>
    private delegate void TermiosFlags(Span<uint> flags);

    /// <summary>The termios control characters (c_cc), to change for <see cref="WriteUnprocessed"/>.</summary>
    private delegate void TermiosChars(Span<byte> cc);

    /// <summary>
    /// Writes <paramref name="data"/> to a pty fd with its termios flags changed by <paramref name="change"/>
    /// for that moment (until <paramref name="settle"/> returns), then put back.
    /// </summary>
    private static void WriteUnprocessed(int fd, byte[] data, string op, int pid, string what, TermiosFlags change, Action? settle = null, TermiosChars? cc = null)
        => WithTermios(fd, pid, what, change, cc, () =>
        {
            FileCalls.WriteAll(fd, data, op, pid, what);
            settle?.Invoke();
            return 0;
        });

    /// <summary>Runs <paramref name="body"/> with the pty fd's termios flags and control characters changed for that moment, then put back.</summary>
    private static T WithTermios<T>(int fd, int pid, string what, TermiosFlags change, TermiosChars? cc, Func<T> body)
    {
        byte* saved = stackalloc byte[64], raw = stackalloc byte[64];
        if (EventCalls.Ioctl(fd, (nuint)TCGETS, saved) != 0) throw SyscallException.Last("ioctl(TCGETS)", pid, what);
        new Span<byte>(saved, 64).CopyTo(new Span<byte>(raw, 64));
        change(new Span<uint>(raw, 4));
        cc?.Invoke(new Span<byte>(raw + CcOffset, TermiosSize - CcOffset));
        if (EventCalls.Ioctl(fd, (nuint)TCSETS, raw) != 0) throw SyscallException.Last("ioctl(TCSETS)", pid, what);
        try { return body(); }
        finally { EventCalls.Ioctl(fd, (nuint)TCSETS, saved); }
    }

    /// <summary>Bytes waiting to be read on the slave side of pty <paramref name="index"/> (0 when it cannot be opened).</summary>
    private static int SlaveInputQueue(int master)
    {
        int fd = Slave(master, FileCalls.O_RDWR | FileCalls.O_NOCTTY | FileCalls.O_NONBLOCK | FileCalls.O_CLOEXEC);
        if (fd < 0) return 0;
        try
        {
            int n = 0;
            return EventCalls.Ioctl(fd, EventCalls.FIONREAD, &n) == 0 ? n : 0;
        }
        finally { FileCalls.Close(fd); }
    }

    /// <summary>A /dev/pts/N fd: saved here when the tree holds the master of that pty (else it is a terminal of <see cref="CharDevice"/>).</summary>
    public static bool TryCheckpointSlave(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        int major = FileCalls.MajorOf(f.Stat.Rdev), minor = FileCalls.MinorOf(f.Stat.Rdev);
        if (!IsSlave(major) || !InternalMasters(ctx.Session).ContainsKey(SlaveIndex(major, minor))) return false;
        ctx.Image.Write(RecordKind.Pty, new PayloadWriter().U32(objref).U8(RoleSlave).I32(SlaveIndex(major, minor)).I32(f.Flags & ~FileCalls.O_CLOEXEC));
        return true;
    }

    // ---------------------------------------------------------------- restart

    /// <summary>The ptys made so far: index → ckpt's copy of the master.</summary>
    private sealed class Made { public readonly Dictionary<int, int> Master = new(); }

    /// <summary>
    /// Pty <paramref name="index"/>, made in the vessel of <paramref name="ctx"/> if it is not made yet:
    /// /dev/ptmx is opened until the index comes (ptys get the lowest free index; the lower ones are held
    /// meanwhile, then closed). Returns ckpt's copy of the master.
    /// </summary>
    private static int Make(RestoreContext ctx, int index)
    {
        var made = ctx.Session.State<Made>();
        if (made.Master.TryGetValue(index, out int have)) return have;
        var held = new List<int>();
        try
        {
            while (true)
            {
                int fd = ctx.OpenInVessel("/dev/ptmx", FileCalls.O_RDWR | FileCalls.O_NOCTTY | FileCalls.O_CLOEXEC);
                int mine = ctx.GrabFd(fd);
                int n;
                try { n = Index(mine, ctx.Pid, "/dev/ptmx"); }
                catch { FileCalls.Close(mine); throw; }
                if (n == index)
                {
                    // unlocked (unlockpt), so that its slave can be opened; the master's record sets the saved lock state
                    int unlock = 0;
                    if (EventCalls.Ioctl(mine, (nuint)TIOCSPTLCK, &unlock) != 0) { FileCalls.Close(mine); throw SyscallException.Last("ioctl(TIOCSPTLCK)", ctx.Pid); }
                    ctx.Inject("close", Nr.close, fd);
                    made.Master[index] = ctx.Session.Own(mine);
                    return mine;
                }
                FileCalls.Close(mine);
                held.Add(fd);
                if (n > index || held.Count > 4096)
                    throw new CkptException($"restart: pseudo-terminal /dev/pts/{index} is in use here; close it (or restart where it is free)", ExitCodes.RestoreConflict);
            }
        }
        finally
        {
            foreach (int fd in held) ctx.Inject("close", Nr.close, fd);
        }
    }

    /// <summary>
    /// At the Tree record, right after the setsid of session leader <paramref name="ctx"/>: makes pty
    /// <paramref name="index"/> its controlling terminal (the processes it forks next inherit it).
    /// </summary>
    public static void AcquireCtty(RestoreContext ctx, int index)
    {
        Make(ctx, index);
        TakeCtty(ctx, index);
    }

    /// <summary>Session leader <paramref name="ctx"/> takes /dev/pts/<paramref name="index"/>, which exists, as its controlling terminal.</summary>
    public static void TakeCtty(RestoreContext ctx, int index)
    {
        int fd = ctx.OpenInVessel($"/dev/pts/{index}", FileCalls.O_RDWR | FileCalls.O_NOCTTY | FileCalls.O_CLOEXEC);
        long rc = ctx.Vessel.Inject(Nr.ioctl, fd, (long)TIOCSCTTY, 0);
        ctx.Inject("close", Nr.close, fd);
        if (rc < 0) throw new CkptException($"restart: pid {ctx.Pid} cannot take /dev/pts/{index} as its controlling terminal again: {Errors.Describe((int)-rc)}", ExitCodes.RestoreConflict);
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint objref = r.U32();
        byte role = r.U8();
        int index = r.I32(), flags = r.I32();
        if (index < 0 || role > RoleSlave) throw new ImageFormatException($"Pty record at offset {rec.Offset}: index {index}, role {role}");
        if (role == RoleSlave)
        {
            r.End();
            Make(ctx, index);
            int fd = ctx.OpenInVessel($"/dev/pts/{index}", (flags & ~(FileCalls.O_CREAT | FileCalls.O_TRUNC | FileCalls.O_EXCL)) | FileCalls.O_NOCTTY | FileCalls.O_CLOEXEC);
            ctx.Files.SetRestored(objref, fd);
            return;
        }
        byte[] termios = r.Raw(TermiosSize).ToArray(), winsize = r.Raw(WinsizeSize).ToArray();
        bool pkt = r.Bool(), locked = r.Bool();
        byte[] output = r.AtEnd ? [] : r.Bytes().ToArray();
        byte[] input = r.AtEnd ? [] : r.Bytes().ToArray();
        r.End();
        int master = Make(ctx, index);
        string what = $"the master of /dev/pts/{index}";
        fixed (byte* t = termios)
            if (EventCalls.Ioctl(master, (nuint)TCSETS, t) != 0) throw SyscallException.Last("ioctl(TCSETS)", ctx.Pid, what);
        fixed (byte* w = winsize)
            if (EventCalls.Ioctl(master, (nuint)TIOCSWINSZ, w) != 0) throw SyscallException.Last("ioctl(TIOCSWINSZ)", ctx.Pid, what);
        // the output its holder had not read, as it was (before the lock: the slave must open)
        WriteOutput(master, index, output, ctx.Pid, what);
        WriteInput(master, index, input, ctx.Pid, what);
        int on = pkt ? 1 : 0, lk = locked ? 1 : 0;
        if (EventCalls.Ioctl(master, (nuint)TIOCPKT, &on) != 0) throw SyscallException.Last("ioctl(TIOCPKT)", ctx.Pid, what);
        if (EventCalls.Ioctl(master, (nuint)TIOCSPTLCK, &lk) != 0) throw SyscallException.Last("ioctl(TIOCSPTLCK)", ctx.Pid, what);
        // the description's own flags (the master was opened O_RDWR|O_NOCTTY)
        if (FileCalls.Fcntl(master, 4 /* F_SETFL */, flags & (FileCalls.O_NONBLOCK | FileCalls.O_APPEND)) != 0) throw SyscallException.Last("fcntl(F_SETFL)", ctx.Pid, what);
        ctx.Files.SetRestored(objref, ctx.Install(master));
    }

    /// <summary>The foreground process group of a session leader's pty (the session exists, every group of it too).</summary>
    public void Finish(RestoreContext ctx)
    {
        if (ctx.Session.State<Foreground>().ByLeader.TryGetValue(ctx.Pid, out var fg) is false || fg.Tpgid <= 0) return;
        int fd = ctx.OpenInVessel($"/dev/pts/{fg.Index}", FileCalls.O_RDWR | FileCalls.O_NOCTTY | FileCalls.O_CLOEXEC);
        Span<byte> pg = stackalloc byte[4];
        // (the group's id as the leader sees it: in a pid namespace of the tree, its id there)
        BinaryPrimitives.WriteInt32LittleEndian(pg, PidNamespace.Seen(ctx.Pid, fg.Tpgid));
        ulong a = ctx.PutScratch(0, pg);
        long rc = ctx.Vessel.Inject(Nr.ioctl, fd, (long)TIOCSPGRP, (long)a);
        ctx.Inject("close", Nr.close, fd);
        if (rc < 0) ctx.Log.Info($"pid {ctx.Pid}: foreground group {fg.Tpgid} of /dev/pts/{fg.Index} not restored: {Errors.Describe((int)-rc)}");
    }

    /// <summary>Each session leader's pty and foreground group, from the Tree record.</summary>
    public sealed class Foreground { public readonly Dictionary<int, (int Index, int Tpgid)> ByLeader = new(); }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint objref = r.U32();
        byte role = r.U8();
        int index = r.I32(), flags = r.I32();
        var node = new InfoNode().Set("kind", role == RoleMaster ? "pty master" : "pty slave")
            .Set("path", role == RoleMaster ? $"/dev/ptmx (/dev/pts/{index})" : $"/dev/pts/{index}").Set("flags", RegularFile.OpenFlags(flags));
        if (role == RoleMaster)
        {
            var w = r.Raw(TermiosSize + WinsizeSize)[TermiosSize..];
            node.Set("window", $"{BinaryPrimitives.ReadUInt16LittleEndian(w[2..])}x{BinaryPrimitives.ReadUInt16LittleEndian(w)}");
            r.Bool(); r.Bool();
            if (!r.AtEnd && r.Bytes().Length is int queued and > 0) node.Set("output not read", $"{queued} bytes");
            if (!r.AtEnd && r.Bytes().Length is int typed and > 0) node.Set("input not read", $"{typed} bytes");
        }
        info.Child("files").Set(objref.ToString(), node);
    }
}
