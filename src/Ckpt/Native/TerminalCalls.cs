using System.Runtime.InteropServices;

namespace Ckpt.Native;

/// <summary>
/// Terminals: the ioctls and struct sizes ckpt uses on them (through <see cref="EventCalls.Ioctl"/> or
/// injected), and the foreground process group of ckpt's own controlling terminal.
/// </summary>
public static partial class TerminalCalls
{
    public const ulong TCGETS = 0x5401, TCSETS = 0x5402, TIOCGWINSZ = 0x5413, TIOCSWINSZ = 0x5414, TIOCSPGRP = 0x5410, TIOCGPGRP = 0x540F, TIOCSCTTY = 0x540E;
    /// <summary>Pseudo-terminals: packet mode, the lock and index of a pty, and a master's slave opened through it (TIOCGPTPEER).</summary>
    public const ulong TIOCGPKT = 0x80045438, TIOCPKT = 0x5420, TIOCGPTLCK = 0x80045439, TIOCSPTLCK = 0x40045431,
        TIOCGPTN = 0x80045430, TIOCGPTPEER = 0x5441;
    /// <summary>The kernel's struct termios (c_iflag, c_oflag, c_cflag, c_lflag, c_line, c_cc[19]) and struct winsize.</summary>
    public const int TermiosSize = 36, WinsizeSize = 8;
    /// <summary>Offset of c_lflag in struct termios, and two of its flags.</summary>
    public const int LflagOffset = 12;
    public const uint ICANON = 2, ECHO = 8;
    /// <summary>The other flags raw mode clears or sets (cfmakeraw(3)), by field, and the offsets of the fields and of c_cc.</summary>
    public const int IflagOffset = 0, OflagOffset = 4, CflagOffset = 8, CcOffset = 17, VTIME = 5, VMIN = 6;
    public const uint IGNBRK = 1, BRKINT = 2, PARMRK = 8, ISTRIP = 0x20, INLCR = 0x40, IGNCR = 0x80, ICRNL = 0x100, IXON = 0x400,
        OPOST = 1, CSIZE = 0x30, CS8 = 0x30, PARENB = 0x100, ISIG = 1, ECHONL = 0x40, IEXTEN = 0x8000;

    /// <summary>
    /// Raw mode in a kernel struct termios (<see cref="TermiosSize"/> bytes), as cfmakeraw(3) makes it:
    /// input byte by byte, without echo, signals, or processing either way.
    /// </summary>
    public static void MakeRaw(Span<byte> termios)
    {
        static void Change(Span<byte> t, int at, uint clear, uint set)
            => System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(t[at..],
                (System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(t[at..]) & ~clear) | set);
        Change(termios, IflagOffset, IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON, 0);
        Change(termios, OflagOffset, OPOST, 0);
        Change(termios, LflagOffset, ECHO | ECHONL | ICANON | ISIG | IEXTEN, 0);
        Change(termios, CflagOffset, CSIZE | PARENB, CS8);
        termios[CcOffset + VMIN] = 1;
        termios[CcOffset + VTIME] = 0;
    }

    public const short POLLIN = 1, POLLOUT = 4, POLLERR = 8, POLLHUP = 0x10, POLLNVAL = 0x20;

    /// <summary>poll(2): waits until one of <paramref name="n"/> fds is ready or <paramref name="timeoutMs"/> passes (-1: no limit).</summary>
    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    public static unsafe partial int Poll(PollFd* fds, nuint n, int timeoutMs);

    /// <summary>tcgetpgrp(3): the foreground process group of the terminal <paramref name="fd"/>, which must be the caller's controlling terminal (else -1, ENOTTY).</summary>
    [LibraryImport("libc", EntryPoint = "tcgetpgrp", SetLastError = true)]
    public static partial int TcGetPgrp(int fd);

    /// <summary>tcsetpgrp(3): makes <paramref name="pgrp"/> (a group of the caller's session) the foreground group of the caller's controlling terminal.</summary>
    [LibraryImport("libc", EntryPoint = "tcsetpgrp", SetLastError = true)]
    public static partial int TcSetPgrp(int fd, int pgrp);
}

/// <summary>struct pollfd.</summary>
[StructLayout(LayoutKind.Explicit, Size = 8)]
public struct PollFd
{
    [FieldOffset(0)] public int Fd;
    [FieldOffset(4)] public short Events;
    [FieldOffset(6)] public short Revents;
}
