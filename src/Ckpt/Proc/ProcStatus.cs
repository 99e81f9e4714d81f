using System.Globalization;
using System.Text;

namespace Ckpt.Proc;

/// <summary>The fields of /proc/PID/status that checkpointing needs.</summary>
public sealed class ProcStatus
{
    /// <summary>The command name (comm), with the kernel's "\\" and "\n" escapes undone.</summary>
    public string Name { get; init; } = "";
    /// <summary>The file mode creation mask; null when the kernel did not print one (a task without fs, e.g. a zombie).</summary>
    public int? Umask { get; init; }
    /// <summary>State letter: R, S, D, T, t, Z, X, I, ...</summary>
    public char State { get; init; }
    /// <summary>The state's description in parentheses, e.g. "sleeping".</summary>
    public string StateName { get; init; } = "";
    public int Tgid { get; init; }
    public int Pid { get; init; }
    public int PPid { get; init; }
    public int TracerPid { get; init; }
    /// <summary>NSpid: the task's id in the pid namespace of /proc's mount (first) and in each namespace below it down to its own (last); just <see cref="Pid"/> where the kernel prints none.</summary>
    public int[] NsPid { get; init; } = [];
    /// <summary>NSpgid and NSsid: the process group and session ids at the same levels as <see cref="NsPid"/> (0 where a level cannot see them); empty where the kernel prints none.</summary>
    public int[] NsPgid { get; init; } = [];
    public int[] NsSid { get; init; } = [];
    /// <summary>Real, effective, saved set and filesystem UID.</summary>
    public uint[] Uid { get; init; } = [];
    /// <summary>Real, effective, saved set and filesystem GID.</summary>
    public uint[] Gid { get; init; } = [];
    /// <summary>Supplementary groups (possibly empty).</summary>
    public uint[] Groups { get; init; } = [];
    public int Threads { get; init; }
    /// <summary>SigQ: signals queued for the real UID, and the RLIMIT_SIGPENDING limit.</summary>
    public ulong SigQueued { get; init; }
    public ulong SigQueueLimit { get; init; }
    public ulong SigPnd { get; init; }
    public ulong ShdPnd { get; init; }
    public ulong SigBlk { get; init; }
    public ulong SigIgn { get; init; }
    public ulong SigCgt { get; init; }
    public ulong CapInh { get; init; }
    public ulong CapPrm { get; init; }
    public ulong CapEff { get; init; }
    public ulong CapBnd { get; init; }
    public ulong CapAmb { get; init; }
    public bool NoNewPrivs { get; init; }
    /// <summary>Seccomp mode: 0 disabled, 1 strict, 2 filter.</summary>
    public int Seccomp { get; init; }
    /// <summary>VmLck: kB of locked memory (0 when the kernel did not print it: a task without memory).</summary>
    public long VmLckKb { get; init; }

    public uint RealUid => Uid[0];
    public uint EffectiveUid => Uid[1];
    public uint SavedUid => Uid[2];
    public uint FsUid => Uid[3];
    public uint RealGid => Gid[0];
    public uint EffectiveGid => Gid[1];
    public uint SavedGid => Gid[2];
    public uint FsGid => Gid[3];

    public static ProcStatus Read(int pid) => Parse(Native.FileCalls.ReadText($"/proc/{pid}/status"));
    /// <summary>One thread's status (its own SigPnd, SigBlk...).</summary>
    public static ProcStatus Read(int pid, int tid) => Parse(Native.FileCalls.ReadText($"/proc/{pid}/task/{tid}/status"));

    /// <summary>Parses the text of /proc/PID/status. Every field except Umask must be present.</summary>
    public static ProcStatus Parse(string text)
    {
        var kv = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var rawLine in text.AsSpan().EnumerateLines())
        {
            var line = rawLine;
            if (line.IsEmpty) continue;
            int colon = line.IndexOf(':');
            if (colon <= 0) throw new FormatException($"bad status line: {line}");
            var key = line[..colon].ToString();
            var value = line[(colon + 1)..];
            if (key == "Name")
            {
                // "Name:\t<comm>": the name may itself hold tabs and spaces, so remove only the one separator tab.
                if (value.StartsWith('\t')) value = value[1..];
                kv.TryAdd(key, value.ToString());
            }
            else kv.TryAdd(key, value.Trim().ToString());
        }

        string Get(string key) => kv.TryGetValue(key, out var v) ? v : throw new FormatException($"/proc status has no {key} field");
        int Int(string key) => ParseInt(key, Get(key));
        ulong Hex(string key) => ParseHex(key, Get(key));

        var state = Get("State");
        if (state.Length == 0) throw new FormatException("empty State field");
        string stateName = "";
        int open = state.IndexOf('('), close = state.LastIndexOf(')');
        if (open > 0 && close > open) stateName = state[(open + 1)..close];

        var sigq = Get("SigQ");
        int slash = sigq.IndexOf('/');
        if (slash <= 0) throw new FormatException($"bad SigQ field: {sigq}");

        int? umask = null;
        if (kv.TryGetValue("Umask", out var um))
        {
            try { umask = Convert.ToInt32(um, 8); }
            catch (Exception e) when (e is FormatException or OverflowException or ArgumentException)
            { throw new FormatException($"bad Umask field: {um}"); }
        }

        return new ProcStatus
        {
            Name = Unescape(Get("Name")),
            Umask = umask,
            State = state[0],
            StateName = stateName,
            Tgid = Int("Tgid"),
            Pid = Int("Pid"),
            PPid = Int("PPid"),
            TracerPid = Int("TracerPid"),
            NsPid = kv.TryGetValue("NSpid", out var nspid) ? NsIds(nspid) : [Int("Pid")],
            NsPgid = kv.TryGetValue("NSpgid", out var nspgid) ? NsIds(nspgid) : [],
            NsSid = kv.TryGetValue("NSsid", out var nssid) ? NsIds(nssid) : [],
            Uid = Ids("Uid", Get("Uid"), 4),
            Gid = Ids("Gid", Get("Gid"), 4),
            Groups = Ids("Groups", Get("Groups"), -1),
            Threads = Int("Threads"),
            SigQueued = ParseU64("SigQ", sigq[..slash]),
            SigQueueLimit = ParseU64("SigQ", sigq[(slash + 1)..]),
            SigPnd = Hex("SigPnd"),
            ShdPnd = Hex("ShdPnd"),
            SigBlk = Hex("SigBlk"),
            SigIgn = Hex("SigIgn"),
            SigCgt = Hex("SigCgt"),
            CapInh = Hex("CapInh"),
            CapPrm = Hex("CapPrm"),
            CapEff = Hex("CapEff"),
            CapBnd = Hex("CapBnd"),
            CapAmb = Hex("CapAmb"),
            NoNewPrivs = Int("NoNewPrivs") != 0,
            Seccomp = Int("Seccomp"),
            VmLckKb = kv.TryGetValue("VmLck", out var lck) && long.TryParse(lck.Split(' ')[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out long kb) ? kb : 0,
        };
    }

    private static int[] NsIds(string value)
    {
        var parts = value.Split((char[])['\t', ' '], StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) throw new FormatException("empty NSpid field");
        return parts.Select(x => ParseInt("NSpid", x)).ToArray();
    }

    /// <summary>Undoes the kernel's escaping of the name in status: only backslash and newline are escaped.</summary>
    private static string Unescape(string s)
    {
        if (!s.Contains('\\')) return s;
        var sb = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] == '\\' && i + 1 < s.Length)
            {
                char n = s[i + 1];
                if (n == '\\') { sb.Append('\\'); i++; continue; }
                if (n == 'n') { sb.Append('\n'); i++; continue; }
            }
            sb.Append(s[i]);
        }
        return sb.ToString();
    }

    private static uint[] Ids(string key, string value, int count)
    {
        var parts = value.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
        if (count >= 0 && parts.Length != count) throw new FormatException($"{key} field has {parts.Length} values, expected {count}: {value}");
        var ids = new uint[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!uint.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out ids[i]))
                throw new FormatException($"bad {key} field: {value}");
        return ids;
    }

    private static int ParseInt(string key, string v)
        => int.TryParse(v, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int r) ? r
            : throw new FormatException($"bad {key} field: {v}");

    private static ulong ParseU64(string key, string v)
        => ulong.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out ulong r) ? r
            : throw new FormatException($"bad {key} field: {v}");

    private static ulong ParseHex(string key, string v)
        => v.Length <= 16 && ulong.TryParse(v, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong r) ? r
            : throw new FormatException($"bad {key} field: {v}");
}
