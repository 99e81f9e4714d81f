using System.Globalization;

namespace Ckpt.Proc;

/// <summary>One line of /proc/PID/maps (or smaps header), with the VmFlags of smaps when known.</summary>
public sealed class VmaInfo
{
    public ulong Start, End;
    public bool Read, Write, Exec, Shared;
    public ulong Offset;
    public uint DevMajor, DevMinor;
    public ulong Inode;
    public string Path = "";
    /// <summary>Two-letter VmFlags from smaps (gd, nr, dd, hg, nh, ...).</summary>
    public HashSet<string> VmFlags = new();
    /// <summary>Resident and swapped kB from smaps ("Rss:", "Swap:"); -1 when not known (maps).</summary>
    public long RssKb = -1, SwapKb = -1;
    /// <summary>kB of its pages mapped by other processes too, from smaps ("Shared_Clean:" + "Shared_Dirty:"); -1 when not known (maps).</summary>
    public long SharedKb = -1;

    public ulong Length => End - Start;
    public bool IsSpecial => Path.StartsWith('[') && Path.EndsWith(']');
    public bool IsDeleted => Path.EndsWith(" (deleted)", StringComparison.Ordinal);
    public bool IsFileBacked => Inode != 0 && Path.StartsWith('/');
    public override string ToString() => $"{Start:x}-{End:x} {(Read ? 'r' : '-')}{(Write ? 'w' : '-')}{(Exec ? 'x' : '-')}{(Shared ? 's' : 'p')} {Path}";
}

/// <summary>Parses /proc/PID/maps and /proc/PID/smaps.</summary>
public static class ProcMaps
{
    public static List<VmaInfo> ReadSmaps(int pid) => Parse(Native.FileCalls.ReadText($"/proc/{pid}/smaps"));
    public static List<VmaInfo> ReadMaps(int pid) => Parse(Native.FileCalls.ReadText($"/proc/{pid}/maps"));

    /// <summary>Parses maps or smaps text: header lines start a VMA, "VmFlags:" lines fill its flags.</summary>
    public static List<VmaInfo> Parse(string text)
    {
        var list = new List<VmaInfo>();
        foreach (var rawLine in text.AsSpan().EnumerateLines())
        {
            var line = rawLine;
            if (line.IsEmpty) continue;
            if (line.StartsWith("VmFlags:"))
            {
                if (list.Count == 0) throw new FormatException("VmFlags before any mapping");
                foreach (var f in line[8..].ToString().Split(' ', StringSplitOptions.RemoveEmptyEntries))
                    list[^1].VmFlags.Add(f);
                continue;
            }
            if (list.Count > 0 && (line.StartsWith("Rss:") || line.StartsWith("Swap:") || line.StartsWith("Shared_")))
            {
                var num = line[(line.IndexOf(':') + 1)..].Trim();
                int sp2 = num.IndexOf(' ');
                long kb = long.Parse(sp2 < 0 ? num : num[..sp2], CultureInfo.InvariantCulture);
                var v = list[^1];
                if (line[0] == 'R') v.RssKb = kb;
                else if (line[1] == 'w') v.SwapKb = kb;
                else v.SharedKb = Math.Max(v.SharedKb, 0) + kb;
                continue;
            }
            int dash = line.IndexOf('-');
            int sp = line.IndexOf(' ');
            if (dash <= 0 || sp < dash || !IsHex(line[..dash])) continue; // an smaps key line
            list.Add(ParseHeader(line.ToString()));
        }
        return list;
    }

    private static bool IsHex(ReadOnlySpan<char> s)
    {
        foreach (var c in s) if (!char.IsAsciiHexDigit(c)) return false;
        return s.Length > 0;
    }

    public static VmaInfo ParseHeader(string line)
    {
        // 7f1c2a000000-7f1c2a021000 rw-p 00000000 00:00 0                          [heap]
        int pos = 0;
        string Next()
        {
            while (pos < line.Length && line[pos] == ' ') pos++;
            int s = pos;
            while (pos < line.Length && line[pos] != ' ') pos++;
            return line[s..pos];
        }
        var range = Next();
        var perms = Next();
        var off = Next();
        var dev = Next();
        var ino = Next();
        while (pos < line.Length && line[pos] == ' ') pos++;
        var path = pos < line.Length ? line[pos..] : "";
        int d = range.IndexOf('-');
        int colon = dev.IndexOf(':');
        if (d < 0 || perms.Length < 4 || colon < 0) throw new FormatException($"bad maps line: {line}");
        return new VmaInfo
        {
            Start = ulong.Parse(range.AsSpan(0, d), NumberStyles.HexNumber),
            End = ulong.Parse(range.AsSpan(d + 1), NumberStyles.HexNumber),
            Read = perms[0] == 'r', Write = perms[1] == 'w', Exec = perms[2] == 'x', Shared = perms[3] == 's',
            Offset = ulong.Parse(off, NumberStyles.HexNumber),
            DevMajor = uint.Parse(dev.AsSpan(0, colon), NumberStyles.HexNumber),
            DevMinor = uint.Parse(dev.AsSpan(colon + 1), NumberStyles.HexNumber),
            Inode = ulong.Parse(ino, CultureInfo.InvariantCulture),
            Path = path,
        };
    }
}
