namespace Ckpt.Proc;

/// <summary>ckpt's own /proc/self/mountinfo: ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS.</summary>
public static class ProcMounts
{
    /// <summary>Every line of ckpt's mountinfo, split into its fields (paths still escaped: see <see cref="Unescape"/>).</summary>
    public static IEnumerable<string[]> Lines() => File.ReadLines("/proc/self/mountinfo").Select(l => l.Split(' ')).Where(f => f.Length > 4);

    /// <summary>The mount points of the mounts <paramref name="match"/> keeps, those of a whole file system (root "/") first.</summary>
    public static IEnumerable<string> MountPoints(Func<string[], bool> match)
        => Lines().Where(match).OrderBy(f => f[3] == "/" ? 0 : 1).Select(f => Unescape(f[4]));

    /// <summary>mountinfo escapes space, tab, newline and backslash as \ooo.</summary>
    public static string Unescape(string s)
        => !s.Contains('\\') ? s : System.Text.RegularExpressions.Regex.Replace(s, @"\\([0-7]{3})", m => ((char)Convert.ToInt32(m.Groups[1].Value, 8)).ToString());
}
