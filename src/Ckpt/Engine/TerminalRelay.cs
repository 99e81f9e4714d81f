using System.Runtime.InteropServices;
using Ckpt.Native;
using static Ckpt.Native.TerminalCalls;

namespace Ckpt.Engine;

/// <summary>
/// A restored session leader whose controlling terminal was outside the tree (an interactive shell of a
/// terminal window, a program started under <c>setsid</c> on a terminal, the shell of an ssh login): the
/// terminal <c>ckpt restart</c> runs in cannot become its controlling terminal (it is the controlling
/// terminal of the caller's session already), so the restart gives the leader a new pseudo-terminal as its
/// controlling terminal and, like <c>script</c> or <c>screen</c>, relays between it and its own terminal
/// while it waits: what is typed goes to the program (ckpt's terminal in raw mode: Ctrl-C, Ctrl-Z and the
/// editing keys reach the program's own terminal, which acts on them as it did), what the program writes
/// comes out, and a resize of ckpt's window resizes the program's terminal. The terminal fds the tree had
/// on that terminal are opened on the new one, which gets the settings they had; the leader gets its
/// session's foreground group back. When the leader ends, ckpt's terminal gets its settings back and ckpt
/// exits with the leader's status.
/// <para>
/// Only a restart that waits for the tree from the foreground of a terminal (<see cref="JobControl"/>)
/// relays, and only for the root of the tree; otherwise (<c>--detach</c>, <c>--frozen</c>, no terminal) the
/// leader has no controlling terminal and its terminal fds are handed over as before.
/// </para>
/// </summary>
public sealed unsafe class TerminalRelay : IDisposable
{
    private const int SIGWINCH = 28;
    private readonly Log _log;
    private int _master = -1;
    private byte[]? _saved;          // ckpt's terminal settings while relaying, given back at the end
    private bool _settingsApplied;   // the image's settings are on the new pty
    private int _major, _minor;      // the terminal of the image the new pty stands for

    private TerminalRelay(Log log) { _log = log; }

    /// <summary>A relay, when ckpt waits for the tree in the foreground of its terminal (<paramref name="job"/>) and its standard input is that terminal; else null.</summary>
    public static TerminalRelay? OfCaller(JobControl? job, Log log)
    {
        if (job == null) return null;
        byte* t = stackalloc byte[64];
        return EventCalls.Ioctl(0, (nuint)TCGETS, t) == 0 ? new TerminalRelay(log) : null;
    }

    /// <summary>A new pty stands for the leader's terminal (<see cref="Open"/> was called).</summary>
    public bool Active => _master >= 0;

    /// <summary>The number N of /dev/pts/N of the new pty.</summary>
    public int Index { get; private set; } = -1;

    /// <summary>
    /// Makes the new pty for session leader <paramref name="leader"/>, whose controlling terminal in the
    /// image was device <paramref name="major"/>:<paramref name="minor"/>: unlocked, with the settings and
    /// window size of ckpt's terminal until the image's settings come (<see cref="Stands"/>).
    /// </summary>
    public void Open(int leader, int major, int minor)
    {
        int master = FileCalls.Open("/dev/ptmx", FileCalls.O_RDWR | FileCalls.O_NOCTTY | FileCalls.O_CLOEXEC, 0);
        if (master < 0) throw SyscallException.Last("open /dev/ptmx (the terminal of a session leader)", leader);
        try
        {
            int unlock = 0, n = 0;
            if (EventCalls.Ioctl(master, (nuint)TIOCSPTLCK, &unlock) != 0) throw SyscallException.Last("ioctl(TIOCSPTLCK)", leader);
            if (EventCalls.Ioctl(master, (nuint)TIOCGPTN, &n) != 0) throw SyscallException.Last("ioctl(TIOCGPTN)", leader);
            byte* t = stackalloc byte[64];
            if (EventCalls.Ioctl(0, (nuint)TCGETS, t) == 0) EventCalls.Ioctl(master, (nuint)TCSETS, t);
            CopyWindowSize(master);
            Index = n;
        }
        catch
        {
            FileCalls.Close(master);
            throw;
        }
        _master = master;
        _major = major;
        _minor = minor;
        _log.Info($"pid {leader}: its controlling terminal ({major}:{minor}) is outside the tree: a new pty, /dev/pts/{Index}, stands for it, relayed to ckpt's terminal");
    }

    /// <summary>
    /// Whether the new pty stands for terminal <paramref name="major"/>:<paramref name="minor"/> of the image;
    /// if so, the settings a terminal fd had on it (<paramref name="termios"/>, when saved) are applied to
    /// the new pty (the first ones that come).
    /// </summary>
    public bool Stands(int major, int minor, byte[] termios)
    {
        if (!Active || major != _major || minor != _minor) return false;
        if (termios.Length == TermiosSize && !_settingsApplied)
        {
            _settingsApplied = true;
            fixed (byte* t = termios)
                if (EventCalls.Ioctl(_master, (nuint)TCSETS, t) != 0)
                    _log.Info($"the settings of terminal {major}:{minor} not applied to /dev/pts/{Index}: {Errors.Describe(Marshal.GetLastPInvokeError())}");
        }
        return true;
    }

    /// <summary>The window size of ckpt's terminal to the pty (its foreground group gets SIGWINCH when it changes).</summary>
    private void CopyWindowSize(int master)
    {
        byte* w = stackalloc byte[WinsizeSize];
        if (EventCalls.Ioctl(0, (nuint)TIOCGWINSZ, w) == 0) EventCalls.Ioctl(master, (nuint)TIOCSWINSZ, w);
    }

    /// <summary>
    /// Relays between ckpt's terminal and the pty until <paramref name="pid"/> (the restored leader, a child
    /// of ckpt) ends, and returns its exit status (128 + signal when a signal ended it).
    /// </summary>
    public int Run(int pid)
    {
        int pidfd = ProcessCalls.PidfdOpen(pid);
        // what the program writes goes to ckpt's stdout, as script(1) does (a terminal, or where it was redirected)
        const int output = 1;
        FileCalls.Fcntl(_master, 4 /* F_SETFL */, FileCalls.O_NONBLOCK | FileCalls.O_RDWR);
        var raw = new byte[64];
        fixed (byte* r = raw)
            if (EventCalls.Ioctl(0, (nuint)TCGETS, r) == 0)
            {
                _saved = (byte[])raw.Clone();
                MakeRaw(raw);
                if (EventCalls.Ioctl(0, (nuint)TCSETS, r) != 0) _saved = null;
            }
        using var winch = PosixSignalRegistration.Create(PosixSignal.SIGWINCH, _ => CopyWindowSize(_master));
        try
        {
            // the window may have changed since the checkpoint: the program draws itself again
            CopyWindowSize(_master);
            int fg = TcGetPgrpOf(_master);
            if (fg > 0) ProcessCalls.Kill(-fg, SIGWINCH);
            Relay(pidfd, output);
        }
        finally
        {
            FileCalls.Close(pidfd);
            if (_saved != null)
                fixed (byte* s = _saved) EventCalls.Ioctl(0, (nuint)TCSETS, s);
        }
        // its status (it has ended), as a restart without a relay waits for it
        return JobControl.Wait(pid, null);
    }

    /// <summary>The foreground process group of the pty's slave side, asked through its master (TIOCGPGRP).</summary>
    private static int TcGetPgrpOf(int master)
    {
        int pg = 0;
        return EventCalls.Ioctl(master, (nuint)TIOCGPGRP, &pg) == 0 ? pg : -1;
    }

    /// <summary>
    /// The relay proper: typed input to the master (kept while the pty's input is full), the master's
    /// output to ckpt's terminal, until the leader has ended and what it wrote is out.
    /// </summary>
    private void Relay(int pidfd, int output)
    {
        var buf = new byte[16384];
        var pending = new byte[16384];
        int pendingAt = 0, pendingLen = 0;
        bool input = true, master = true;
        PollFd* fds = stackalloc PollFd[3];
        fixed (byte* b = buf, q = pending)
            while (true)
            {
                int n = 0;
                int ii = -1, mi = -1;
                if (input && pendingLen == 0) { ii = n; fds[n++] = new PollFd { Fd = 0, Events = POLLIN }; }
                if (master) { mi = n; fds[n++] = new PollFd { Fd = _master, Events = (short)(POLLIN | (pendingLen > 0 ? POLLOUT : 0)) }; }
                int pi = n;
                fds[n++] = new PollFd { Fd = pidfd, Events = POLLIN };
                if (Poll(fds, (nuint)n, -1) < 0)
                {
                    if (Marshal.GetLastPInvokeError() == Errors.EINTR) continue;
                    throw SyscallException.Last("poll (terminal relay)", 0);
                }
                // the program's output first: what it wrote before it ended comes out before the end
                if (mi >= 0 && fds[mi].Revents != 0)
                {
                    if ((fds[mi].Revents & (POLLIN | POLLHUP | POLLERR)) != 0) master = Drain(b, buf.Length, output);
                    if (master && (fds[mi].Revents & POLLOUT) != 0 && pendingLen > 0)
                    {
                        nint w = FileCalls.Write(_master, q + pendingAt, (nuint)pendingLen);
                        if (w > 0) { pendingAt += (int)w; pendingLen -= (int)w; }
                        else if (w < 0 && Marshal.GetLastPInvokeError() is not (Errors.EAGAIN or Errors.EINTR)) pendingLen = 0;
                    }
                }
                if (ii >= 0 && fds[ii].Revents != 0)
                {
                    nint got = FileCalls.Read(0, q, (nuint)pending.Length);
                    // (written to the master when it takes it: the next poll)
                    if (got > 0) { pendingAt = 0; pendingLen = (int)got; }
                    else if (got == 0 || Marshal.GetLastPInvokeError() is not (Errors.EAGAIN or Errors.EINTR)) input = false;
                }
                if ((fds[pi].Revents & POLLIN) != 0)
                {
                    if (master) Drain(b, buf.Length, output);
                    return;
                }
            }
    }

    /// <summary>Writes what the master has to read out to ckpt's terminal; false once the pty has no slave open any more (EIO).</summary>
    private bool Drain(byte* b, int size, int output)
    {
        while (true)
        {
            nint got = FileCalls.Read(_master, b, (nuint)size);
            if (got > 0)
            {
                for (nint at = 0; at < got;)
                {
                    nint w = FileCalls.Write(output, b + at, (nuint)(got - at));
                    if (w > 0) at += w;
                    else if (w < 0 && Marshal.GetLastPInvokeError() == Errors.EINTR) continue;
                    else break;   // ckpt's terminal is gone: the output is lost, as it would be
                }
                continue;
            }
            if (got < 0 && Marshal.GetLastPInvokeError() == Errors.EINTR) continue;
            return got < 0 && Marshal.GetLastPInvokeError() == Errors.EAGAIN;
        }
    }

    public void Dispose()
    {
        if (_master >= 0) FileCalls.Close(_master);
        _master = -1;
    }
}
