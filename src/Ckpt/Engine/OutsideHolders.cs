using System.Globalization;
using Ckpt.Native;

namespace Ckpt.Engine;

/// <summary>
/// Which processes outside the tree hold the other end of a pipe or socket (<see cref="FindFd"/>), or map or hold open a memory object (shared anonymous memory, a memfd,
/// a deleted file, a SysV segment): read once per checkpoint, the first time a memory object is saved,
/// from every other process's /proc/PID/maps and its fds that name a memfd or a deleted file.
/// </summary>
public sealed class OutsideHolders
{
    private Dictionary<(ulong Dev, ulong Ino), (int Pid, string Where)>? _index;

    private Dictionary<string, List<(int Pid, int Fd)>>? _fds;

    /// <summary>
    /// A process outside the tree with an fd whose link is <paramref name="link"/> (a pipe or socket
    /// end) and that <paramref name="accept"/> takes (given its pid and fd), or null. The fds of every
    /// other process are read once per checkpoint, when an end is first missing from the tree (a tree
    /// with thousands of pipes or connections whose other end was closed looks for each of them).
    /// </summary>
    public (int Pid, int Fd)? FindFd(CheckpointSession s, string link, Func<int, int, bool>? accept = null)
    {
        _fds ??= IndexFds(s);
        if (!_fds.TryGetValue(link, out var holders)) return null;
        foreach (var (pid, fd) in holders)
        {
            try { if (accept == null || accept(pid, fd)) return (pid, fd); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
        return null;
    }

    /// <summary>Every fd of the processes outside the tree whose link is a pipe, a socket or a FIFO's path, by link.</summary>
    private static Dictionary<string, List<(int Pid, int Fd)>> IndexFds(CheckpointSession s)
    {
        var index = new Dictionary<string, List<(int Pid, int Fd)>>();
        foreach (int pid in OtherProcesses(s))
            foreach (string name in FileCalls.ListDir($"/proc/{pid}/fd") ?? [])
            {
                if (FileCalls.ReadLink($"/proc/{pid}/fd/{name}") is not { } link || !int.TryParse(name, out int fd)) continue;
                if (!(link.StartsWith('/') || link.StartsWith("pipe:[", StringComparison.Ordinal) || link.StartsWith("socket:[", StringComparison.Ordinal))) continue;
                if (!index.TryGetValue(link, out var l)) index[link] = l = new(1);
                l.Add((pid, fd));
            }
        return index;
    }

    /// <summary>The pids in /proc but ckpt's own and the tree's (read without a stat per entry).</summary>
    private static IEnumerable<int> OtherProcesses(CheckpointSession s)
    {
        var tree = s.Processes.Select(p => p.ProcessId).ToHashSet();
        int self = Environment.ProcessId;
        foreach (string name in FileCalls.ListDir("/proc") ?? [])
            if (int.TryParse(name, out int pid) && pid != self && !tree.Contains(pid)) yield return pid;
    }

    /// <summary>A process outside the tree that holds the object with this (device, inode), or null.</summary>
    public (int Pid, string Where)? Find(CheckpointSession s, ulong dev, ulong ino)
    {
        _index ??= Build(s);
        return _index.TryGetValue((dev, ino), out var h) ? h : null;
    }

    private static Dictionary<(ulong, ulong), (int, string)> Build(CheckpointSession s)
    {
        var index = new Dictionary<(ulong, ulong), (int, string)>();
        foreach (int pid in OtherProcesses(s))
        {
            string dir = $"/proc/{pid}";
            try
            {
                // (read as it comes, a line made a string only when it matters: a process of many regions
                // has megabytes of maps, and every process on the machine is read)
                try
                {
                    FileCalls.ReadLines($"{dir}/maps", bytes =>
                    {
                        // start-end perms offset MAJ:MIN inode path: only shared-memory-like backings matter
                        if (bytes.IndexOf("(deleted)"u8) < 0 && bytes.IndexOf("/SYSV"u8) < 0) return;
                        var line = System.Text.Encoding.UTF8.GetString(bytes);
                        var f = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
                        if (f.Length < 6) return;
                        var mm = f[3].Split(':');
                        ulong major = ulong.Parse(mm[0], NumberStyles.HexNumber), minor = ulong.Parse(mm[1], NumberStyles.HexNumber);
                        ulong ino = ulong.Parse(f[4], CultureInfo.InvariantCulture);
                        index.TryAdd((FileCalls.MakeDev(major, minor), ino), (pid, $"mapping {f[0]} ({f[5].Trim()})"));
                    });
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
                // a memfd, shared anonymous memory or a deleted file has no link left (st_nlink 0): only
                // those fds are named (readlink), the others cost one fstatat each
                FileCalls.StatEntries($"{dir}/fd", (name, st) =>
                {
                    if (st.Nlink != 0 || index.ContainsKey((st.Dev, st.Ino))) return;
                    var link = FileCalls.ReadLink($"{dir}/fd/{name}");
                    if (link != null) index.TryAdd((st.Dev, st.Ino), (pid, $"fd {name} ({link})"));
                });
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { }
        }
        return index;
    }
}
