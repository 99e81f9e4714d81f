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
/// reaped (fdinfo Pid -1) is saved with pid 0 and made again as one of a helper process that exits and
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
        ctx.Image.Write(RecordKind.PidFd, new PayloadWriter().U32(objref).I32(pid).I32(flags));
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint objref = r.U32(); int pid = r.I32(), flags = r.I32();
        r.End();
        if (pid < 0 || (flags & ~(FileCalls.O_NONBLOCK | PIDFD_THREAD)) != 0)
            throw new ImageFormatException($"PidFd record at offset {rec.Offset}: pid {pid}, flags 0x{flags:x}");
        if (pid == 0)
        {
            ctx.Files.SetRestored(objref, OpenOfReaped(ctx, flags));
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
        long fd = ctx.Vessel.Inject(Nr.pidfd_open, later ? ctx.Pid : pid, later ? flags & ~PIDFD_THREAD : flags);
        if (fd < 0) throw new CkptException($"restart: cannot open a pidfd of pid {pid} again: {Errors.Describe((int)-fd)}", ExitCodes.RestoreConflict);
        ctx.Files.SetRestored(objref, (int)fd);
    }

    /// <summary>
    /// A pidfd of a process that exited and was reaped: the vessel forks a helper that shares its memory
    /// (clone3 with CLONE_PIDFD, for the pidfd; attached and stopped as it is born, it runs nothing of its
    /// own), which exits, and the vessel reaps it. Each such pidfd gets a helper of its own: two
    /// descriptions of one reaped process come back as pidfds of two (their pidfs inodes differ).
    /// </summary>
    private static int OpenOfReaped(RestoreContext ctx, int flags)
    {
        const ulong CLONE_VM = 0x100, CLONE_PIDFD = 0x1000;
        const int PidfdAt = 512;   // past the arguments and the (unused) id InjectClone writes
        var args = new CloneArgs { Flags = CLONE_VM | CLONE_PIDFD, Pidfd = ctx.Scratch + PidfdAt };
        var helper = Vessel.InjectClone(ctx.Vessel, ctx.Scratch, args, 0, "process for a pidfd of a reaped one", "");
        helper.SyscallGadget = ctx.Vessel.SyscallGadget;
        int fd = BitConverter.ToInt32(ctx.GetScratch(PidfdAt, 4));
        ProcessTree.EndHelper(helper, ctx.Vessel, 0);
        // CLONE_PIDFD's pidfd is O_RDWR and close-on-exec (the fd's flag is set where it is placed)
        if ((flags & FileCalls.O_NONBLOCK) != 0) ctx.Inject("fcntl(F_SETFL)", Nr.fcntl, fd, FileCalls.F_SETFL, FileCalls.O_NONBLOCK);
        return fd;
    }

    /// <summary>Pidfds to open once their thread or process exists: (objref, tid or pid, flags).</summary>
    private sealed class PendingPidfds { public readonly List<(uint Objref, int Tid, int Flags)> List = new(); }

    public void Finish(RestoreContext ctx)
    {
        if (ctx.Session.Existing<PendingPidfds>() is not { } pending) return;
        foreach (var (objref, tid, flags) in pending.List)
        {
            var fds = FdTable.FinalFds(ctx, objref);
            if (fds.Count == 0) continue;
            // the threads of its process are made now if they are not yet (they would be in CpuState's Finish)
            if (ctx.Session.Processes.FirstOrDefault(p => CpuState.SavedTids(p).Contains(tid)) is { } owner) CpuState.CreateThreads(owner);
            long fresh = ctx.Vessel.Inject(Nr.pidfd_open, tid, flags);
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
