using System.Globalization;

namespace Ckpt.Proc;

/// <summary>
/// Parses /proc/PID/limits into the 16 resource limits, indexed by RLIMIT_* number.
/// Values are in the units the rlimit itself uses (the kernel prints them unconverted: RLIMIT_CPU in
/// seconds, RLIMIT_RTTIME in microseconds, the rest in bytes or counts), so they can be handed to
/// prlimit as they are. "unlimited" is RLIM_INFINITY, <see cref="Unlimited"/>.
/// </summary>
public static class ProcLimits
{
    public const int RLIMIT_CPU = 0, RLIMIT_FSIZE = 1, RLIMIT_DATA = 2, RLIMIT_STACK = 3, RLIMIT_CORE = 4,
        RLIMIT_RSS = 5, RLIMIT_NPROC = 6, RLIMIT_NOFILE = 7, RLIMIT_MEMLOCK = 8, RLIMIT_AS = 9, RLIMIT_LOCKS = 10,
        RLIMIT_SIGPENDING = 11, RLIMIT_MSGQUEUE = 12, RLIMIT_NICE = 13, RLIMIT_RTPRIO = 14, RLIMIT_RTTIME = 15;
    public const int Count = 16;
    public const ulong Unlimited = ulong.MaxValue;

    /// <summary>The kernel's row names (fs/proc/base.c) in RLIMIT_* order.</summary>
    public static readonly string[] Names =
    [
        "Max cpu time", "Max file size", "Max data size", "Max stack size", "Max core file size",
        "Max resident set", "Max processes", "Max open files", "Max locked memory", "Max address space",
        "Max file locks", "Max pending signals", "Max msgqueue size", "Max nice priority",
        "Max realtime priority", "Max realtime timeout",
    ];

    /// <summary>The units column of each row ("" where the kernel prints none).</summary>
    public static readonly string[] Units =
    [
        "seconds", "bytes", "bytes", "bytes", "bytes", "bytes", "processes", "files", "bytes", "bytes",
        "locks", "signals", "bytes", "", "", "us",
    ];

    public static (ulong Soft, ulong Hard)[] Read(int pid) => Parse(Native.FileCalls.ReadText($"/proc/{pid}/limits"));

    /// <summary>
    /// Parses the text of /proc/PID/limits. Rows are found by name, so their order does not matter; rows
    /// of unknown names are ignored; a missing row, or a units column other than the one the kernel
    /// uses for that limit, is a <see cref="FormatException"/>.
    /// </summary>
    public static (ulong Soft, ulong Hard)[] Parse(string text)
    {
        var result = new (ulong Soft, ulong Hard)[Count];
        var seen = new bool[Count];
        foreach (var rawLine in text.AsSpan().EnumerateLines())
        {
            var line = rawLine;
            if (line.IsEmpty || line.StartsWith("Limit ")) continue;
            int index = -1;
            for (int i = 0; i < Count; i++)
            {
                // "Max file size" must not match "Max file locks": the name ends at a space run.
                if (line.StartsWith(Names[i]) && line.Length > Names[i].Length && line[Names[i].Length] == ' ')
                {
                    index = i;
                    break;
                }
            }
            if (index < 0) continue;
            var rest = line[Names[index].Length..].ToString()
                .Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (rest.Length < 2 || rest.Length > 3) throw new FormatException($"bad limits line: {line}");
            string units = rest.Length == 3 ? rest[2] : "";
            if (units != Units[index])
                throw new FormatException($"limits line \"{Names[index]}\" is in units \"{units}\", expected \"{Units[index]}\"");
            if (seen[index]) throw new FormatException($"limits line \"{Names[index]}\" appears twice");
            result[index] = (Value(rest[0], line), Value(rest[1], line));
            seen[index] = true;
        }
        for (int i = 0; i < Count; i++)
            if (!seen[i]) throw new FormatException($"limits has no \"{Names[i]}\" line");
        return result;
    }

    private static ulong Value(string s, ReadOnlySpan<char> line)
    {
        if (s == "unlimited") return Unlimited;
        return ulong.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out ulong v) ? v
            : throw new FormatException($"bad limits value \"{s}\" in: {line}");
    }
}
