using System.Buffers.Binary;
using System.Globalization;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// File locks a process holds: flock locks (held by an open file description), POSIX record locks
/// (fcntl F_SETLK: held by the process, on a range) and OFD locks (F_OFD_SETLK: held by a description,
/// on a range). Found in the "lock:" lines of /proc/PID/fdinfo/FD, read with every fd
/// (<see cref="FdTable.ReadOpenFiles"/>), which show the locks set through that fd's description and
/// owned by this process or by the description (/proc/locks is not read: reading it waits for an RCU
/// grace period, ~10 ms). A lock held by a description shared by several fds or processes is saved
/// once. Restart, once the fds are in place: flock(LOCK_NB), fcntl(F_SETLK) or fcntl(F_OFD_SETLK) by
/// injection in the process, on the fd the lock was seen on; a lock someone else holds meanwhile makes
/// the restart fail naming the file. Leases (fcntl F_SETLEASE: held by a description) are taken again
/// with F_SETLEASE by the process itself, which makes it the owner the break signal goes to, as the
/// kernel does. A lease being broken (someone opened the file, or tried to, and the holder has not given
/// it up yet) is taken again and broken again the same way (ckpt opens the file without blocking, with
/// no owner on it meanwhile, so that no second signal comes: the process had its signal); the kernel's
/// break timer (lease-break-time) starts anew. An opener in the tree waiting for the break restarts its
/// open, which waits again.
/// </summary>
public sealed unsafe class FileLocks : IStateKind
{
    public static readonly FileLocks Instance = new();
    public string Name => "file locks";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.FileLocks];
    public int FinishOrder => 41;

    /// <summary>BreakingLease: a lease being broken; its record's write says the lease held (write or read), its start the break's target (0: none, F_UNLCK; 1: read, F_RDLCK).</summary>
    private enum Kind : byte { Flock = 1, Posix = 2, Ofd = 3, Lease = 4, BreakingLease = 5 }

    private const int F_SETLK = 6, F_OFD_SETLK = 37, F_SETLEASE = 1024, F_SETOWN = 8, F_RDLCK = 0, F_WRLCK = 1;
    private const int LOCK_SH = 1, LOCK_EX = 2, LOCK_NB = 4;

    /// <summary>Descriptions whose locks are written already (by an earlier fd or process).</summary>
    private sealed class LockedFiles { public readonly HashSet<uint> DescriptionsDone = new(); }

    public void Checkpoint(CheckpointContext ctx)
    {
        if (!ctx.OpenFiles.Any(f => f.Locks != null)) return;
        var st = ctx.Session.State<LockedFiles>();
        var refs = ctx.State<FdTable.Refs>().ByFd;
        var locks = new List<(int Fd, Kind Kind, bool Write, long Start, long End)>();
        var seenPosix = new HashSet<(ulong Dev, ulong Ino, long Start, long End)>();
        foreach (var f in ctx.OpenFiles)
        {
            if (f.Locks == null) continue;
            if (f.InFlight)
            {
                // a lock its description holds (flock, OFD) is taken again at restart on an fd of the
                // process, and a file in flight has none; the process's own POSIX locks on the same file
                // show here too, and are saved through its own fds
                if (f.Locks.Any(l => l.Contains(" FLOCK ") || l.Contains(" OFDLCK ") || l.Contains(" LEASE ")))
                    throw new NotCheckpointableException(ctx.Pid, $"{f} holds a file lock, which is not supported for a file in flight");
                continue;
            }
            uint objref = refs.GetValueOrDefault(f.Fd);
            foreach (var line in f.Locks)
            {
                // lock:	1: POSIX  ADVISORY  WRITE 4242 fe:00:1234 10 19
                var w = line[5..].Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
                if (w.Length < 8) throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd} ({f.Link}): cannot read the lock line '{line}'");
                var kind = w[1] switch
                {
                    "FLOCK" => Kind.Flock,
                    "POSIX" => Kind.Posix,
                    "OFDLCK" => Kind.Ofd,
                    "LEASE" => Kind.Lease,
                    _ => throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd} ({f.Link}) holds a {w[1]} lock, which is not supported yet"),
                };
                if (kind == Kind.Lease && w[2] == "BREAKING")
                {
                    // lease: BREAKING, then the type it is being broken to: none, or read (a write lease
                    // downgraded); the type held is not shown: a write lease when it goes to read, else
                    // as the fd allows (a read lease cannot be taken on a file open for writing)
                    if (w[3] is not ("UNLCK" or "READ")) throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd} ({f.Link}) holds a lease being broken to {w[3]}, which is not supported");
                    if (!st.DescriptionsDone.Add(objref)) continue;
                    bool toRead = w[3] == "READ";
                    locks.Add((f.Fd, Kind.BreakingLease, toRead || (f.Flags & FileCalls.O_ACCMODE) != FileCalls.O_RDONLY, toRead ? 1 : 0, -1));
                    continue;
                }
                if (kind == Kind.Lease && w[2] != "ACTIVE")
                    throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd} ({f.Link}) holds a lease in state {w[2]}, which is not supported");
                if (kind != Kind.Lease && w[2] != "ADVISORY") throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd} ({f.Link}) holds a {w[2]} lock, which is not supported");
                if (w[3] is not ("READ" or "WRITE")) throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd} ({f.Link}) holds a lock of type {w[3]}, which is not supported");
                long start = long.Parse(w[6], CultureInfo.InvariantCulture), end = w[7] == "EOF" ? -1 : long.Parse(w[7], CultureInfo.InvariantCulture);
                // a description's lock once (its other fds and holders show it too); a process's POSIX lock once per range
                if (kind != Kind.Posix && !st.DescriptionsDone.Add(objref)) continue;
                if (kind == Kind.Posix && !seenPosix.Add((f.Stat.Dev, f.Stat.Ino, start, end))) continue;
                locks.Add((f.Fd, kind, w[3] == "WRITE", start, end));
            }
        }
        if (locks.Count == 0) return;
        var p = new PayloadWriter().U32((uint)locks.Count);
        foreach (var (fd, kind, write, start, end) in locks) p.I32(fd).U8((byte)kind).Bool(write).I64(start).I64(end);
        ctx.Image.Write(RecordKind.FileLocks, p);
        ctx.Log.Debug($"pid {ctx.Pid}: {locks.Count} file lock(s)");
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint n = r.U32();
        var batch = ctx.Batch;
        for (uint i = 0; i < n; i++)
        {
            int fd = r.I32();
            var kind = (Kind)r.U8();
            bool write = r.Bool();
            long start = r.I64(), end = r.I64();
            if (kind is not (Kind.Flock or Kind.Posix or Kind.Ofd or Kind.Lease or Kind.BreakingLease) || start < 0 || end < -1 || end >= 0 && end < start
                || kind == Kind.BreakingLease && (start > 1 || start == 1 && !write))
                throw new ImageFormatException($"FileLocks record at offset {rec.Offset}: lock {i} is impossible");
            bool lease = kind is Kind.Lease or Kind.BreakingLease;
            string what = $"the {(write ? "write" : "read")} {kind switch { Kind.Flock => "flock lock", Kind.Posix => "POSIX lock", Kind.Lease or Kind.BreakingLease => "lease", _ => "OFD lock" }}{(kind is Kind.Flock || lease ? "" : $" on bytes {start}-{(end < 0 ? "EOF" : end.ToString(CultureInfo.InvariantCulture))}")} of fd {fd} ({Target(ctx, fd)})";
            void Check(long got)
            {
                if (got < 0)
                    throw new CkptException($"restart: cannot take {what} again: {Errors.Describe((int)-got)}{(got is -11 or -13 ? lease ? " (the file is open elsewhere in a way the lease excludes)" : " (another process holds a conflicting lock)" : "")}", ExitCodes.RestoreConflict);
            }
            if (kind == Kind.Flock)
            {
                batch.Add(Nr.flock, fd, (write ? LOCK_EX : LOCK_SH) | LOCK_NB, stopOnError: true, check: Check);
                continue;
            }
            if (lease)
            {
                batch.Add(Nr.fcntl, fd, F_SETLEASE, write ? F_WRLCK : F_RDLCK, stopOnError: true, check: Check);
                if (kind == Kind.BreakingLease)
                {
                    // being broken: its owner (F_SETLEASE made the process it) cleared until FileOwner sets
                    // the saved one, and broken by an open that does not wait
                    batch.AddChecked("fcntl(F_SETOWN)", Nr.fcntl, fd, F_SETOWN, 0);
                    batch.Flush();
                    BreakLease(ctx, fd, toRead: start == 1, what);
                }
                continue;
            }
            // struct flock: short l_type, short l_whence, (pad) off_t l_start, off_t l_len, pid_t l_pid, (pad)
            var fl = new byte[32];
            BinaryPrimitives.WriteInt16LittleEndian(fl, (short)(write ? F_WRLCK : F_RDLCK));
            BinaryPrimitives.WriteInt64LittleEndian(fl.AsSpan(8), start);
            BinaryPrimitives.WriteInt64LittleEndian(fl.AsSpan(16), end < 0 ? 0 : end - start + 1);
            batch.Reserve(1, fl.Length);
            batch.Add(Nr.fcntl, fd, kind == Kind.Posix ? F_SETLK : F_OFD_SETLK, (long)batch.AddData(fl), stopOnError: true, check: Check);
        }
        r.End();
        batch.Flush();
    }

    /// <summary>
    /// Breaks the lease on fd <paramref name="fd"/> of the process as an opener does: ckpt opens the file
    /// without blocking (O_NONBLOCK: EWOULDBLOCK once the break began), for reading to bring a write lease
    /// down to a read one, else for writing (no lease left).
    /// </summary>
    private static void BreakLease(RestoreContext ctx, int fd, bool toRead, string what)
    {
        int mine = FileCalls.Open($"/proc/{ctx.Pid}/fd/{fd}", (toRead ? FileCalls.O_RDONLY : FileCalls.O_WRONLY) | FileCalls.O_NONBLOCK | FileCalls.O_NOCTTY | FileCalls.O_CLOEXEC, 0);
        if (mine >= 0)
        {
            FileCalls.Close(mine);
            throw new CkptException($"restart: {what} could not be broken again (an open for {(toRead ? "reading" : "writing")} did not conflict with it)", ExitCodes.RestoreConflict);
        }
        int e = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
        if (e != Errors.EAGAIN)
            throw new CkptException($"restart: {what} could not be broken again: {Errors.Describe(e)}", ExitCodes.RestoreConflict);
        ctx.Log.Debug($"{what}: broken again (to {(toRead ? "read" : "none")})");
    }

    private static string Target(RestoreContext ctx, int fd)
    {
        try { return MmState.ProcLink($"/proc/{ctx.Pid}/fd/{fd}"); }
        catch (IOException) { return "?"; }
    }

    public void Finish(RestoreContext ctx) { }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint n = r.U32();
        var list = info.List("file_locks");
        for (uint i = 0; i < n; i++)
        {
            int fd = r.I32(); var kind = (Kind)r.U8(); bool write = r.Bool(); long start = r.I64(), end = r.I64();
            var node = new InfoNode().Set("fd", fd).Set("kind", kind == Kind.BreakingLease ? "lease" : kind.ToString().ToLowerInvariant()).Set("type", write ? "write" : "read")
                .Set("range", kind is Kind.Flock or Kind.Lease or Kind.BreakingLease ? "whole file" : $"{start}-{(end < 0 ? "EOF" : end.ToString(CultureInfo.InvariantCulture))}");
            if (kind == Kind.BreakingLease) node.Set("being_broken_to", start == 1 ? "read" : "none");
            list.Add(node);
        }
    }
}
