using System.Globalization;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// The fd table: which fd numbers refer to which open file description (by objref), and each fd's
/// close-on-exec flag. Descriptions shared by several fds (dup, F_DUPFD) or several processes (inherited
/// across fork, passed over a socket) are written once, by the first holder; fds are found equal with
/// kcmp(KCMP_FILE). At restart a description defined by an earlier process is installed from the copy
/// ckpt keeps of it (pidfd_getfd in the vessel), so it is the same description again.
/// </summary>
public sealed class FdTable : IStateKind
{
    public static readonly FdTable Instance = new();
    public string Name => "fd table";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.FdTable];
    public int FinishOrder => 40;


    /// <summary>Reads every fd of the target: link, stat of the object, flags and position from fdinfo.</summary>
    public static List<OpenFile> ReadOpenFiles(int pid)
    {
        var names = FileCalls.ListDir($"/proc/{pid}/fd") ?? throw SyscallException.Last($"open /proc/{pid}/fd", pid);
        // (loops, not Select on what Order returns: a generic virtual call, resolved at its first use by
        // the type loader of a Native AOT program, costs ~0.5 ms of every start; see Checkpointer.Freeze)
        var fds = new int[names.Count];
        for (int i = 0; i < fds.Length; i++) fds[i] = int.Parse(names[i], CultureInfo.InvariantCulture);
        Array.Sort(fds);
        var files = new List<OpenFile>(fds.Length);
        foreach (int fd in fds) files.Add(ReadOpenFile(pid, fd));
        return files;
    }

    /// <summary>Reads one fd of the target: link, stat of the object, flags, position and locks from fdinfo.</summary>
    public static OpenFile ReadOpenFile(int pid, int fd)
    {
        string path = $"/proc/{pid}/fd/{fd}";
        string link = FileCalls.ReadLink(path) ?? throw new CkptException($"cannot read {path}");
        FileCalls.TryStat(path, out var st);
        long pos = 0; int flags = 0, mnt = 0;
        List<string>? locks = null;
        string info = FileCalls.ReadSmallText($"/proc/{pid}/fdinfo/{fd}") ?? throw new CkptException($"cannot read /proc/{pid}/fdinfo/{fd}");
        foreach (var line in info.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            if (line.StartsWith("pos:")) pos = long.Parse(line[4..].Trim(), CultureInfo.InvariantCulture);
            else if (line.StartsWith("flags:")) flags = Convert.ToInt32(line[6..].Trim(), 8);
            else if (line.StartsWith("mnt_id:")) mnt = int.Parse(line[7..].Trim(), CultureInfo.InvariantCulture);
            else if (line.StartsWith("lock:")) (locks ??= new()).Add(line);
        }
        return new OpenFile(fd, link, st, flags, pos, mnt) { Locks = locks };
    }

    /// <summary>
    /// Writes every open file description once, in fd order, through the file kind that handles it,
    /// then the table itself.
    /// </summary>
    public void Checkpoint(CheckpointContext ctx)
    {
        var byInode = ctx.Session.FilesByInode;
        var refs = new List<(OpenFile File, uint Ref)>();
        // the fds a child inherited across fork are mostly its parent's same fd numbers: one kcmp each
        int ppid = ctx.Session.Tree.FirstOrDefault(e => e.Pid == ctx.ProcessId)?.PPid ?? 0;
        var parentRefs = ctx.Session.Find(ppid)?.State<Refs>().ByFd;
        foreach (var f in ctx.OpenFiles)
        {
            ctx.ThrowIfCancelled();
            // the same description held by an earlier fd of this process or of an earlier process
            uint objref = 0;
            int at = 0;
            List<(int Pid, int Fd, string Link, uint Ref)>? seen = null;
            if (!f.InFlight && parentRefs != null && parentRefs.TryGetValue(f.Fd, out uint inherited)
                && ProcessCalls.Kcmp(ppid, ctx.Pid, ProcessCalls.KCMP_FILE, f.Fd, f.Fd) == 0)
                objref = inherited;
            else if (byInode.TryGetValue((f.Stat.Dev, f.Stat.Ino), out seen)) (objref, at) = FindDescription(seen, ctx.Pid, f.Fd);
            if (objref == 0)
            {
                var kind = KindTable.FileKinds.FirstOrDefault(k => k.Handles(f))
                    ?? throw new NotCheckpointableException(ctx.Pid, $"{(f.InFlight ? "a file in flight (SCM_RIGHTS) in one of its unix sockets" : $"fd {f.Fd}")} is {Describe(f)}, which is not supported yet");
                objref = ctx.Files.Intern($"{ctx.Pid}:{f.Fd}").Ref;
                // known before the kind runs: a socket may hold itself in flight in its own queue
                ctx.State<Refs>().ByFd[f.Fd] = objref;
                kind.CheckpointFile(ctx, f, objref);
                if (seen == null) byInode[(f.Stat.Dev, f.Stat.Ino)] = seen = new();
                seen.Insert(at, (ctx.Pid, f.Fd, f.Link, objref));   // one holder per description is enough for kcmp
            }
            refs.Add((f, objref));
            ctx.State<Refs>().ByFd[f.Fd] = objref;
        }
        // the queues of unix sockets that carry files in flight, now that each of those files has its objref
        UnixSocket.WriteQueues(ctx);
        var table = refs.Where(x => !x.File.InFlight).ToList();
        var p = new PayloadWriter().U32((uint)table.Count);
        foreach (var (f, r) in table) p.I32(f.Fd).Bool((f.Flags & FileCalls.O_CLOEXEC) != 0).U32(r);
        // the descriptions only in flight in a socket queue: restored, kept by ckpt to be sent again, and not placed
        var inFlight = new List<uint>();
        foreach (var (f, r) in refs) if (f.InFlight && !inFlight.Contains(r)) inFlight.Add(r);
        if (inFlight.Count > 0)
        {
            p.U32((uint)inFlight.Count);
            foreach (uint r in inFlight) p.U32(r);
        }
        ctx.Image.Write(RecordKind.FdTable, p);
    }

    /// <summary>
    /// The objref of the description fd <paramref name="fd"/> of <paramref name="pid"/> refers to, if an
    /// earlier holder of the same file was saved with it (0 if not), and where a new description goes in
    /// <paramref name="seen"/>. The descriptions of a file are kept in the kernel's order of its file
    /// objects, which kcmp(KCMP_FILE) gives (1: less, 2: greater): a binary search, so a file opened
    /// thousands of times costs a dozen kcmp calls per fd, not thousands. Without an order (3, or an
    /// error) each is compared in turn.
    /// </summary>
    private static (uint Ref, int At) FindDescription(List<(int Pid, int Fd, string Link, uint Ref)> seen, int pid, int fd)
    {
        int lo = 0, hi = seen.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) / 2;
            long c = ProcessCalls.Kcmp(seen[mid].Pid, pid, ProcessCalls.KCMP_FILE, seen[mid].Fd, fd);
            if (c == 0) return (seen[mid].Ref, mid);
            if (c == 1) lo = mid + 1;
            else if (c == 2) hi = mid;
            else
            {
                foreach (var e in seen)
                    if (ProcessCalls.Kcmp(e.Pid, pid, ProcessCalls.KCMP_FILE, e.Fd, fd) == 0) return (e.Ref, 0);
                return (0, seen.Count);
            }
        }
        return (0, lo);
    }

    private static string Describe(OpenFile f)
    {
        if (f.Link.StartsWith("socket:")) return $"a socket ({f.Link})";
        if (f.Link.StartsWith("anon_inode:"))
        {
            string name = f.Link[11..].Trim('[', ']');
            return $"{(name.Length > 0 && "aeio".Contains(name[0]) ? "an" : "a")} {name} object ({f.Link})";
        }
        return f.Stat.Type switch
        {
            StatBuf.S_IFCHR => $"the character device {f.Link} ({FileCalls.MajorOf(f.Stat.Rdev)}:{FileCalls.MinorOf(f.Stat.Rdev)})",
            StatBuf.S_IFBLK => $"the block device {f.Link}",
            StatBuf.S_IFIFO => $"a pipe or FIFO ({f.Link})",
            _ => f.Link,
        };
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        MemoryRegion.CloseMappedFile(ctx);
        // the fd table of a process that shares it with its parent (CLONE_FILES) was placed by the parent
        if (ctx.Shares.HasFlag(ShareFlags.Files)) return;
        var r = rec.Reader();
        uint n = r.U32();
        var entries = new List<(int Fd, bool Cloexec, int Temp)>();
        var placed = ctx.State<Placement>().Fds;
        for (int i = 0; i < n; i++)
        {
            int fd = r.I32(); bool cloexec = r.Bool(); uint objref = r.U32();
            entries.Add((fd, cloexec, ctx.FileFd(objref, $"fd {fd}")));   // restored here, or installed from ckpt
            if (!placed.TryGetValue(objref, out var l)) placed[objref] = l = new List<int>();
            l.Add(fd);
        }
        // files in flight in socket queues: ckpt keeps its own copy (UnixSocket sends them again in Finish)
        uint nf = r.AtEnd ? 0 : r.U32();
        for (uint i = 0; i < nf; i++)
        {
            uint objref = r.U32();
            if (!ctx.Session.Masters.ContainsKey(objref)) ctx.Session.Masters[objref] = ctx.GrabFd(ctx.FileFd(objref, $"a file in flight (objref {objref})"));
        }
        r.End();
        ctx.CloseInstaller();
        // a later process may hold the same descriptions: ckpt keeps a copy of each to install there
        if (ctx.Session.MultiProcess)
            foreach (var (objref, vfd) in ctx.Files.Restored)
                if (!ctx.Session.Masters.ContainsKey(objref)) ctx.Session.Masters[objref] = ctx.GrabFd(vfd);
        var temps = ctx.Files.Restored.Select(kv => kv.Value).ToHashSet();
        var batch = ctx.Batch;
        foreach (var (fd, temp, flags) in Placements(entries, temps, ctx.Inherited.Values))
        {
            int from = temp, to = fd;
            if (flags < 0) batch.AddChecked("close", Nr.close, from);
            else if (from == to) batch.AddChecked("fcntl(F_SETFD)", Nr.fcntl, to, 2 /* F_SETFD */, flags == FileCalls.O_CLOEXEC ? 1 : 0);
            else batch.Add(Nr.dup3, from, to, flags, check: got =>
            {
                if (got < 0) throw new SyscallException("dup3 (injected)", (int)-got, ctx.Pid, $"fd {from} to {to}");
            });
        }
        batch.Flush();
    }

    /// <summary>
    /// The calls that put each description at its final numbers, in order: (fd, temp, flags) is
    /// dup3(temp, fd, flags), or fcntl(F_SETFD) when the temporary is at that very number, or, with flags
    /// -1, close(temp). The temporaries (one per description, at the lowest numbers the kernel gave) sit
    /// among the final numbers: finals are placed in ascending order, a temporary in the way moved first
    /// to the lowest free number that no final still to be placed needs, and each temporary closed once
    /// its description has all its numbers, so that the table never holds many more fds than it will in
    /// the end (a process near its fd limit, every fd its own description, would not fit twice).
    /// <paramref name="others"/>: more fds of the vessel (ckpt's replacements for external fds), closed
    /// unless one is a temporary.
    /// </summary>
    internal static List<(int Fd, int Temp, int Flags)> Placements(List<(int Fd, bool Cloexec, int Temp)> entries, HashSet<int> temps, IEnumerable<int> others)
    {
        var calls = new List<(int, int, int)>();
        var finals = new HashSet<int>();
        var left = new Dictionary<int, int>();   // temporary -> its final numbers still to place
        foreach (var (fd, _, temp) in entries)
        {
            finals.Add(fd);
            left[temp] = left.GetValueOrDefault(temp) + 1;
        }
        var at = new Dictionary<int, int>();     // temporary (by its first number) -> where it is now
        var holder = new Dictionary<int, int>(); // number -> the temporary there
        foreach (int t in temps)
        {
            if (!left.ContainsKey(t)) { calls.Add((t, t, -1)); continue; }   // no fd of the table: closed now
            at[t] = t;
            holder[t] = t;
        }
        var spare = new HashSet<int>(others.Where(o => !temps.Contains(o)));
        var placed = new HashSet<int>();
        int cursor = 0;
        bool Free(int n) => !holder.ContainsKey(n) && !placed.Contains(n) && !spare.Contains(n);
        foreach (var (fd, cloexec, temp) in entries.OrderBy(e => e.Fd))
        {
            int flags = cloexec ? FileCalls.O_CLOEXEC : 0;
            int where = at[temp];
            if (where == fd) calls.Add((fd, fd, flags));
            else
            {
                if (holder.TryGetValue(fd, out int other))
                {
                    // another description's temporary is in the way: to the lowest free number that no
                    // final still to place needs (or, if there is none below it, one still to place)
                    while (!(Free(cursor) && (!finals.Contains(cursor) || cursor > fd))) cursor++;
                    int to = cursor;
                    calls.Add((to, fd, FileCalls.O_CLOEXEC));
                    holder.Remove(fd);
                    holder[to] = other;
                    at[other] = to;
                }
                spare.Remove(fd);   // (an unused replacement on a final number is closed by the dup3)
                calls.Add((fd, where, flags));
            }
            holder.Remove(fd);
            placed.Add(fd);
            if (--left[temp] == 0)
            {
                int now = at[temp];
                if (!placed.Contains(now))
                {
                    calls.Add((now, now, -1));
                    holder.Remove(now);
                    if (now < cursor) cursor = now;
                }
            }
        }
        foreach (int o in spare) calls.Add((o, o, -1));
        return calls;
    }

    /// <summary>Checkpoint: the objref of each fd of the process (filled when the table is written).</summary>
    public sealed class Refs { public readonly Dictionary<int, uint> ByFd = new(); }

    /// <summary>Restart: the final fd numbers of each objref, in image order (filled when the FdTable record is restored).</summary>
    public sealed class Placement { public readonly Dictionary<uint, List<int>> Fds = new(); }

    /// <summary>The final fd numbers that hold <paramref name="objref"/> (for kinds that finish after the fds were placed).</summary>
    public static IReadOnlyList<int> FinalFds(RestoreContext ctx, uint objref)
        => ctx.State<Placement>().Fds.TryGetValue(objref, out var l) ? l : [];

    public void Finish(RestoreContext ctx) { }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint n = r.U32();
        var list = info.List("fds");
        var descs = info.Child("files");
        // an entry naming a description gets the kind and path its record gave it
        InfoNode WithDescription(InfoNode node, uint objref)
        {
            if ((descs.Get(objref.ToString()) ?? info.SharedFiles?.Get(objref.ToString())) is InfoNode d)
                node.Set("kind", d.Get("kind")).Set("path", d.Get("path"));
            return node;
        }
        for (int i = 0; i < n; i++)
        {
            int fd = r.I32(); bool cloexec = r.Bool(); uint objref = r.U32();
            list.Add(WithDescription(new InfoNode().Set("fd", fd).Set("objref", objref).Set("cloexec", cloexec), objref));
        }
        if (!r.AtEnd)
        {
            var flying = info.List("in_flight");
            for (uint i = 0, nf = r.U32(); i < nf; i++)
            {
                uint objref = r.U32();
                flying.Add(WithDescription(new InfoNode().Set("objref", objref), objref));
            }
        }
    }
}
