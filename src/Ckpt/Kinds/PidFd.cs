using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>
/// pidfds (<c>anon_inode:[pidfd]</c>: pidfd_open, clone with CLONE_PIDFD): the process it refers to
/// (fdinfo <c>Pid</c>), which must be a process of the tree (it keeps its pid at restart), and
/// O_NONBLOCK. Restart: injected <c>pidfd_open(pid, flags)</c> once the tree exists (every process of
/// it, zombies included, is created before any other record). A pidfd of a process that exited and was
/// reaped (fdinfo Pid -1) is saved with pid 0, its identity and exit status, and made again as one of a helper process that exits and
/// is reaped (<see cref="OpenOfReaped"/>). Refused: a pidfd of a process outside the tree. A thread pidfd (PIDFD_THREAD) of a thread
/// other than a leader is made once the threads exist (CpuState makes them in Credentials' Finish):
/// another pidfd holds its fd until then, and this kind's Finish, after theirs, puts the thread's in its
/// place (dup3, the close-on-exec flag kept).
/// </summary>
public sealed class PidFd : IFileKind
{
    public static readonly PidFd Instance = new();
    public string Name => "pidfd";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.PidFd];
    public int FinishOrder => 72;   // after Credentials (70), whose Finish makes the threads

    private const int PIDFD_THREAD = FileCalls.O_EXCL;

    public bool Handles(in OpenFile f) => f.Link == "anon_inode:[pidfd]";

    public void Checkpoint(CheckpointContext ctx) { }

    public void CheckpointFile(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        var info = ProcFdInfo.Read(ctx.Pid, f.Fd);
        int pid = (int)ProcFdInfo.Dec(info.Require("Pid"));
        // a process that exited and was reaped: pid 0 in the record (one made for it exits at restart)
        if (pid <= 0) pid = 0;
        else if (!ctx.Session.Tree.Any(e => e.Pid == pid) && !ctx.Session.Tree.Any(e => !e.Zombie && Directory.Exists($"/proc/{e.Pid}/task/{pid}")))
            throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd} is a pidfd of pid {pid}, which is outside the tree; checkpoint a tree that holds it");
        int flags = f.Flags & (FileCalls.O_NONBLOCK | PIDFD_THREAD);
        var w = new PayloadWriter().U32(objref).I32(pid).I32(flags);
        // appended: a reaped process's identity (its pidfs inode: pidfds of one process share it) and the
        // status it ended with, when the kernel kept it (PIDFD_GET_INFO, Linux 6.13)
        ulong identity = 0;
        int status = -1;
        if (pid == 0)
        {
            int copy = ctx.GrabFd(f.Fd);
            try { identity = FileCalls.FstatOrThrow(copy).Ino; status = ExitStatus(copy); }
            finally { FileCalls.Close(copy); }
        }
        ctx.Image.Write(RecordKind.PidFd, w.U64(identity).I32(status));
    }

    /// <summary>The wait status a pidfd's reaped process ended with (PIDFD_GET_INFO with PIDFD_INFO_EXIT), or -1 when the kernel does not say.</summary>
    private static unsafe int ExitStatus(int pidfd)
    {
        const ulong PIDFD_INFO_EXIT = 1 << 3;
        const uint PIDFD_GET_INFO = 0xC040FF0B;   // _IOWR(0xFF, 11, 64-byte struct pidfd_info)
        var info = stackalloc ulong[8];
        for (int i = 0; i < 8; i++) info[i] = 0;
        info[0] = PIDFD_INFO_EXIT;
        if (Sys.Call(Nr.ioctl, pidfd, PIDFD_GET_INFO, (long)info) != 0 || (info[0] & PIDFD_INFO_EXIT) == 0) return -1;
        return ((int*)info)[15];   // exit_code, the struct's last field (offset 60)
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint objref = r.U32(); int pid = r.I32(), flags = r.I32();
        ulong identity = r.AtEnd ? 0 : r.U64();
        int status = r.AtEnd ? -1 : r.I32();
        r.End();
        if (pid < 0 || (flags & ~(FileCalls.O_NONBLOCK | PIDFD_THREAD)) != 0)
            throw new ImageFormatException($"PidFd record at offset {rec.Offset}: pid {pid}, flags 0x{flags:x}");
        if (pid == 0)
        {
            ctx.Files.SetRestored(objref, OpenOfReaped(ctx, flags, identity, status));
            return;
        }
        bool thread = ctx.Session.Tree != null ? !ctx.Session.Tree.Any(e => e.Pid == pid) : pid != ctx.Pid;
        // a thread made later, or a process forked late (ProcessTree.ForkLate): the process's own pidfd
        // holds the fd until Finish
        bool later = thread || ctx.Session.Late.ContainsKey(pid);
        if (later)
        {
            if (thread && (flags & PIDFD_THREAD) == 0) throw new ImageFormatException($"PidFd record at offset {rec.Offset}: pid {pid} is no process of the image, and the pidfd is no thread's");
            ctx.Session.State<PendingPidfds>().List.Add((objref, pid, flags));
        }
        long fd = PidNamespace.PidfdOpen(ctx, later ? ctx.Pid : pid, later ? flags & ~PIDFD_THREAD : flags);
        if (fd < 0) throw new CkptException($"restart: cannot open a pidfd of pid {pid} again: {Errors.Describe((int)-fd)}", ExitCodes.RestoreConflict);
        ctx.Files.SetRestored(objref, (int)fd);
    }

    /// <summary>
    /// A pidfd of a process that exited and was reaped: the vessel forks a helper that shares its memory
    /// (clone3 with CLONE_PIDFD, for the pidfd; attached and stopped as it is born, it runs nothing of its
    /// own). The pidfds of one reaped process (one <paramref name="identity"/>, in any process of the tree)
    /// are pidfds of one helper (pidfd_open while it lives: they share its inode, as the originals did);
    /// the helpers end once every record is read, in the first Finish, the way the processes had ended
    /// (<paramref name="status"/>: an exit code or a signal, which PIDFD_GET_INFO then reports; exit 0
    /// when it was not known), and their vessels reap them. An image without identities gets a helper
    /// per description, ended at once.
    /// </summary>
    private static int OpenOfReaped(RestoreContext ctx, int flags, ulong identity, int status)
    {
        var reaped = ctx.Session.State<Reaped>().ByIdentity;
        int fd;
        if (identity != 0 && reaped.TryGetValue(identity, out var known))
        {
            long got = PidNamespace.PidfdOpen(ctx, known.Helper.Tid, flags & FileCalls.O_NONBLOCK);
            if (got < 0) throw new SyscallException("pidfd_open (a reaped process's helper) (injected)", (int)-got, ctx.Pid);
            fd = (int)got;
            return fd;
        }
        const ulong CLONE_VM = 0x100, CLONE_PIDFD = 0x1000;
        const int PidfdAt = 512;   // past the arguments and the (unused) id InjectClone writes
        var args = new CloneArgs { Flags = CLONE_VM | CLONE_PIDFD, Pidfd = ctx.Scratch + PidfdAt };
        var helper = Vessel.InjectClone(ctx.Vessel, ctx.Scratch, args, 0, "process for a pidfd of a reaped one", "");
        helper.SyscallGadget = ctx.Vessel.SyscallGadget;
        fd = BitConverter.ToInt32(ctx.GetScratch(PidfdAt, 4));
        if (identity != 0) reaped[identity] = (helper, ctx, status);
        else ProcessTree.EndHelper(helper, ctx.Vessel, 0);
        // CLONE_PIDFD's pidfd is O_RDWR and close-on-exec (the fd's flag is set where it is placed)
        if ((flags & FileCalls.O_NONBLOCK) != 0) ctx.SetOffsetAndFlags(fd, 0, FileCalls.O_NONBLOCK, "a pidfd");
        return fd;
    }

    /// <summary>The helpers standing for reaped processes, by identity: alive until the first Finish.</summary>
    private sealed class Reaped { public readonly Dictionary<ulong, (Tracing.TracedTask Helper, RestoreContext Parent, int Status)> ByIdentity = new(); }

    /// <summary>Pidfds to open once their thread or process exists: (objref, tid or pid, flags).</summary>
    private sealed class PendingPidfds { public readonly List<(uint Objref, int Tid, int Flags)> List = new(); }

    public void Finish(RestoreContext ctx)
    {
        if (ctx.Session.Existing<Reaped>() is { ByIdentity.Count: > 0 } reaped)
        {
            // each ends as its process did (exit 0 when that is not known), and its vessel reaps it
            foreach (var (helper, parent, status) in reaped.ByIdentity.Values)
            {
                ProcessTree.EndAs(helper, status == -1 ? 0 : status, parent.Scratch, helper.SyscallGadget);
                ProcessTree.ReapHelper(helper.Tid, parent.Vessel);
            }
            reaped.ByIdentity.Clear();
        }
        if (ctx.Session.Existing<PendingPidfds>() is not { } pending) return;
        foreach (var (objref, tid, flags) in pending.List)
        {
            var fds = FdTable.FinalFds(ctx, objref);
            if (fds.Count == 0) continue;
            // the threads of its process are made now if they are not yet (they would be in CpuState's Finish)
            if (ctx.Session.Processes.FirstOrDefault(p => CpuState.SavedTids(p).Contains(tid)) is { } owner) CpuState.CreateThreads(owner);
            long fresh = PidNamespace.PidfdOpen(ctx, tid, flags);
            if (fresh < 0) throw new CkptException($"restart: cannot open a pidfd of {((flags & PIDFD_THREAD) != 0 ? "thread" : "pid")} {tid} again: {Errors.Describe((int)-fresh)}", ExitCodes.RestoreConflict);
            foreach (int fd in fds)
            {
                long fdFlags = ctx.Inject("fcntl(F_GETFD)", Nr.fcntl, fd, FileCalls.F_GETFD);
                ctx.Inject("dup3", Nr.dup3, fresh, fd, (fdFlags & 1) != 0 ? FileCalls.O_CLOEXEC : 0);
            }
            ctx.Inject("close", Nr.close, fresh);
        }
    }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint objref = r.U32(); int pid = r.I32(), flags = r.I32();
        info.Child("files").Set(objref.ToString(), new InfoNode().Set("kind", "pidfd").Set("path", pid == 0 ? "a process reaped" : $"pid {pid}")
            .Set("flags", RegularFile.OpenFlags(flags | FileCalls.O_RDWR)).Set("pid", pid));
    }
}
