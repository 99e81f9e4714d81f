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
    /// <summary>
    /// Two-letter VmFlags from smaps (gd, nr, dd, hg, nh, ...); read only: regions with the same flags
    /// share one set (and those without any, <see cref="NoFlags"/>).
    /// </summary>
    public HashSet<string> VmFlags = NoFlags;
    public static readonly HashSet<string> NoFlags = new();
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
    /// <summary>
    /// The regions of /proc/PID/smaps with their flags and sizes. Parsed as it is read, a buffer at a time:
    /// the smaps of a process of 40000 regions is ~45 MB of text, which read whole into a string was
    /// ~135 MB of garbage and most of the checkpoint's time (its garbage collections included).
    /// </summary>
    public static List<VmaInfo> ReadSmaps(int pid) => Read($"/proc/{pid}/smaps");
    public static List<VmaInfo> ReadMaps(int pid) => Read($"/proc/{pid}/maps");

    private static List<VmaInfo> Read(string path)
    {
        var p = new Parser();
        Native.FileCalls.ReadLines(path, p.Line);
        return p.List;
    }

    /// <summary>Parses maps or smaps text: header lines start a VMA, "VmFlags:" lines fill its flags.</summary>
    public static List<VmaInfo> Parse(string text)
    {
        var p = new Parser();
        foreach (var line in text.AsSpan().EnumerateLines()) p.Line(System.Text.Encoding.UTF8.GetBytes(line.ToString()));
        return p.List;
    }

    /// <summary>Parses the lines of maps or smaps, as bytes, into <see cref="List"/>.</summary>
    private sealed class Parser
    {
        public readonly List<VmaInfo> List = new();
        // the regions of a process have a handful of flag combinations and runs of regions of one file:
        // each combination's set is made once and shared, a path's string is reused by the next region
        private readonly List<(byte[] Key, HashSet<string> Set)> _flagSets = new();
        private byte[] _lastPath = [];
        private string _lastPathString = "";

        public void Line(ReadOnlySpan<byte> line)
        {
            if (line.IsEmpty) return;
            if (line.StartsWith("VmFlags:"u8))
            {
                if (List.Count == 0) throw new FormatException("VmFlags before any mapping");
                List[^1].VmFlags = FlagSet(line[8..]);
                return;
            }
            if (List.Count > 0 && (line.StartsWith("Rss:"u8) || line.StartsWith("Swap:"u8) || line.StartsWith("Shared_"u8)))
            {
                var num = line[(line.IndexOf((byte)':') + 1)..].Trim((byte)' ');
                int sp2 = num.IndexOf((byte)' ');
                if (!System.Buffers.Text.Utf8Parser.TryParse(sp2 < 0 ? num : num[..sp2], out long kb, out int used) || used != (sp2 < 0 ? num.Length : sp2))
                    throw new FormatException($"bad smaps line: {System.Text.Encoding.UTF8.GetString(line)}");
                var v = List[^1];
                if (line[0] == 'R') v.RssKb = kb;
                else if (line[1] == 'w') v.SwapKb = kb;
                else v.SharedKb = Math.Max(v.SharedKb, 0) + kb;
                return;
            }
            int dash = line.IndexOf((byte)'-');
            int sp = line.IndexOf((byte)' ');
            if (dash <= 0 || sp < dash || !IsHex(line[..dash])) return; // an smaps key line
            List.Add(ParseHeader(line, this));
        }

        private HashSet<string> FlagSet(ReadOnlySpan<byte> flags)
        {
            flags = flags.Trim((byte)' ');
            foreach (var (key, set) in _flagSets)
                if (flags.SequenceEqual(key)) return set;
            var made = new HashSet<string>();
            foreach (var r in flags.Split((byte)' '))
                if (!flags[r].IsEmpty) made.Add(System.Text.Encoding.ASCII.GetString(flags[r]));
            if (_flagSets.Count < 64) _flagSets.Add((flags.ToArray(), made));
            return made;
        }

        public string PathString(ReadOnlySpan<byte> path)
        {
            if (path.IsEmpty) return "";
            if (!path.SequenceEqual(_lastPath)) { _lastPath = path.ToArray(); _lastPathString = System.Text.Encoding.UTF8.GetString(path); }
            return _lastPathString;
        }
    }

    private static bool IsHex(ReadOnlySpan<byte> s)
    {
        foreach (var c in s) if (!char.IsAsciiHexDigit((char)c)) return false;
        return s.Length > 0;
    }

    public static VmaInfo ParseHeader(string line)
        => ParseHeader(System.Text.Encoding.UTF8.GetBytes(line), null);

    private static VmaInfo ParseHeader(ReadOnlySpan<byte> line, Parser? paths)
    {
        // 7f1c2a000000-7f1c2a021000 rw-p 00000000 00:00 0                          [heap]
        int pos = 0;
        ReadOnlySpan<byte> Next(ReadOnlySpan<byte> line)
        {
            while (pos < line.Length && line[pos] == ' ') pos++;
            int s = pos;
            while (pos < line.Length && line[pos] != ' ') pos++;
            return line[s..pos];
        }
        var range = Next(line);
        var perms = Next(line);
        var off = Next(line);
        var dev = Next(line);
        var ino = Next(line);
        while (pos < line.Length && line[pos] == ' ') pos++;
        var path = line[pos..];
        int d = range.IndexOf((byte)'-');
        int colon = dev.IndexOf((byte)':');
        if (d < 0 || perms.Length < 4 || colon < 0
            || !Hex(range[..d], out ulong start) || !Hex(range[(d + 1)..], out ulong end) || !Hex(off, out ulong offset)
            || !Hex(dev[..colon], out ulong major) || !Hex(dev[(colon + 1)..], out ulong minor)
            || !System.Buffers.Text.Utf8Parser.TryParse(ino, out ulong inode, out int used) || used != ino.Length)
            throw new FormatException($"bad maps line: {System.Text.Encoding.UTF8.GetString(line)}");
        return new VmaInfo
        {
            Start = start, End = end,
            Read = perms[0] == 'r', Write = perms[1] == 'w', Exec = perms[2] == 'x', Shared = perms[3] == 's',
            Offset = offset,
            DevMajor = (uint)major, DevMinor = (uint)minor,
            Inode = inode,
            Path = paths != null ? paths.PathString(path) : System.Text.Encoding.UTF8.GetString(path),
        };
    }

    private static bool Hex(ReadOnlySpan<byte> s, out ulong value)
    {
        value = 0;
        return IsHex(s) && System.Buffers.Text.Utf8Parser.TryParse(s, out value, out int used, 'x') && used == s.Length;
    }
}
