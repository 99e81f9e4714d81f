using System.Globalization;

namespace Ckpt.Proc;

/// <summary>
/// /proc/PID/fdinfo/FD of anon-inode files: the common header (pos, flags, mnt_id, ino) is followed by
/// lines the object's kind prints ("eventfd-count: 5", "clockid: 1", "tfd: 3 events: 19 ...",
/// "inotify wd:1 ino:... ").
/// </summary>
public sealed class ProcFdInfo
{
    public IReadOnlyList<string> Lines { get; }
    public int Pid { get; }
    public int Fd { get; }

    private ProcFdInfo(int pid, int fd, IReadOnlyList<string> lines) { Pid = pid; Fd = fd; Lines = lines; }

    public static ProcFdInfo Read(int pid, int fd)
    {
        string path = $"/proc/{pid}/fdinfo/{fd}";
        string text = Native.FileCalls.ReadSmallText(path)
            ?? throw new IOException($"cannot read {path}: {Native.Errors.Describe(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}");
        return Parse(pid, fd, text.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    public static ProcFdInfo Parse(int pid, int fd, IReadOnlyList<string> lines) => new(pid, fd, lines);

    /// <summary>The text after "<paramref name="key"/>:" on the first line starting with it, trimmed; null if none.</summary>
    public string? Field(string key)
    {
        foreach (var l in Lines)
            if (l.StartsWith(key, StringComparison.Ordinal) && l.Length > key.Length && l[key.Length] == ':')
                return l[(key.Length + 1)..].Trim();
        return null;
    }

    /// <summary>The field, or a clear error naming the process, fd and what is missing.</summary>
    public string Require(string key)
        => Field(key) ?? throw new Engine.NotCheckpointableException(Pid, $"fd {Fd}: /proc/{Pid}/fdinfo/{Fd} has no '{key}:' line (this kernel does not show it)");

    public static long Dec(string s) => long.Parse(s, NumberStyles.Integer, CultureInfo.InvariantCulture);
    public static ulong UDec(string s) => ulong.Parse(s, NumberStyles.Integer, CultureInfo.InvariantCulture);
    public static ulong Hex(string s) => ulong.Parse(s, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
    public static int Oct(string s) => Convert.ToInt32(s, 8);

    /// <summary>
    /// Splits "key:value key:value" words (as in the "tfd:" and "inotify" lines) into a dictionary; a key
    /// whose value is in the next word ("tfd:        3") takes that word.
    /// </summary>
    public static Dictionary<string, string> Words(string line)
    {
        var d = new Dictionary<string, string>();
        var words = line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
        for (int i = 0; i < words.Length; i++)
        {
            int c = words[i].IndexOf(':');
            if (c < 0) continue;
            string k = words[i][..c], v = words[i][(c + 1)..];
            if (v.Length == 0 && i + 1 < words.Length && !words[i + 1].Contains(':')) v = words[++i];
            d[k] = v;
        }
        return d;
    }
}
