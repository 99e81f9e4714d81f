using System.Runtime.InteropServices;

namespace Ckpt.Native;

/// <summary>
/// Terminals: the ioctls and struct sizes ckpt uses on them (through <see cref="EventCalls.Ioctl"/> or
/// injected), and the foreground process group of ckpt's own controlling terminal.
/// </summary>
public static partial class TerminalCalls
{
    public const ulong TCGETS = 0x5401, TCSETS = 0x5402, TIOCGWINSZ = 0x5413, TIOCSWINSZ = 0x5414, TIOCSPGRP = 0x5410, TIOCSCTTY = 0x540E;
    /// <summary>Pseudo-terminals: packet mode, the lock and index of a pty, and a master's slave opened through it (TIOCGPTPEER).</summary>
    public const ulong TIOCGPKT = 0x80045438, TIOCPKT = 0x5420, TIOCGPTLCK = 0x80045439, TIOCSPTLCK = 0x40045431,
        TIOCGPTN = 0x80045430, TIOCGPTPEER = 0x5441;
    /// <summary>The kernel's struct termios (c_iflag, c_oflag, c_cflag, c_lflag, c_line, c_cc[19]) and struct winsize.</summary>
    public const int TermiosSize = 36, WinsizeSize = 8;
    /// <summary>Offset of c_lflag in struct termios, and two of its flags.</summary>
    public const int LflagOffset = 12;
    public const uint ICANON = 2, ECHO = 8;

    /// <summary>tcgetpgrp(3): the foreground process group of the terminal <paramref name="fd"/>, which must be the caller's controlling terminal (else -1, ENOTTY).</summary>
    [LibraryImport("libc", EntryPoint = "tcgetpgrp", SetLastError = true)]
    public static partial int TcGetPgrp(int fd);

    /// <summary>tcsetpgrp(3): makes <paramref name="pgrp"/> (a group of the caller's session) the foreground group of the caller's controlling terminal.</summary>
    [LibraryImport("libc", EntryPoint = "tcsetpgrp", SetLastError = true)]
    public static partial int TcSetPgrp(int fd, int pgrp);
}
