using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;
using Ckpt.Tracing;

namespace Ckpt.Engine;

/// <summary>
/// What one checkpoint of a process tree shares across its processes: the image being written, the
/// objref table of open file descriptions (a description held by several processes is written once),
/// the tree itself, and a state bag for kinds whose objects span processes (pipes, unlinked files).
/// </summary>
/// <summary>
/// What the queues of the tree's inotify instances and netlink sockets held at the last look of the
/// quiesce loop (<see cref="Checkpointer"/>), by (pid, fd): the image is taken with them as they were
/// then, and what was queued later comes after the checkpoint's moment. Made anew at each look,
/// forgotten whenever the tree runs again.
/// </summary>
public sealed class QueuesAtFreeze
{
    public readonly Dictionary<(int Pid, int Fd), long> Bytes = new();

    /// <summary>
    /// Notes, for every socket fd of the tree found in <paramref name="queued"/> (bytes queued by socket
    /// inode, read from a /proc/net table), what it holds now; true when any holds something. The table is
    /// read only if the tree has a socket.
    /// </summary>
    public static bool NoteSockets(CheckpointSession s, Func<Dictionary<ulong, long>> queued)
    {
        var seen = s.State<QueuesAtFreeze>().Bytes;
        Dictionary<ulong, long>? table = null;
        bool any = false;
        foreach (var ctx in s.Processes)
            foreach (var f in ctx.OpenFiles)
            {
                if (f.Stat.Type != Native.StatBuf.S_IFSOCK) continue;
                table ??= queued();
                if (table.Count == 0) return false;
                if (table.TryGetValue(f.Stat.Ino, out long q)) any |= (seen[(ctx.Pid, f.Fd)] = q) > 0;
            }
        return any;
    }

    /// <summary>The bytes fd <paramref name="fd"/> of <paramref name="pid"/> held at the last look; false when not known.</summary>
    public static bool TryGet(CheckpointSession s, int pid, int fd, out long bytes)
    {
        bytes = 0;
        return s.Existing<QueuesAtFreeze>()?.Bytes.TryGetValue((pid, fd), out bytes) == true;
    }
}

public sealed class CheckpointSession : StateBag
{
    public required ImageWriter Image { get; init; }
    public required Log Log { get; init; }
    public Func<bool> Cancelled { get; init; } = () => false;
    /// <summary>Save objects shared with processes outside the tree as external instead of refusing (--external).</summary>
    public bool External { get; init; }
    /// <summary>Leave out TCP connections a listener of the tree has not accepted instead of refusing (--skip-in-flight).</summary>
    public bool SkipInFlight { get; init; }
    /// <summary>Connections left out under <see cref="SkipInFlight"/>.</summary>
    public int SkippedInFlight { get; set; }
    /// <summary>Files ckpt itself writes during the checkpoint (full paths: the image, the log).</summary>
    public IReadOnlyList<string> OwnFiles { get; init; } = [];

    /// <summary>Every live process of the tree, in creation order (a parent before its children).</summary>
    public List<CheckpointContext> Processes { get; } = new();
    /// <summary>Every process of the tree, zombies included, in creation order.</summary>
    public List<TreeEntry> Tree { get; } = new();
    /// <summary>A page range that no process of the tree maps: restart runs its injected calls from there.</summary>
    public ulong TrampolineHint { get; set; }

    /// <summary>Open file descriptions met so far (key: "pid:fd" of the first holder) → objref.</summary>
    public ObjectTable<string, int> Files { get; } = new();
    /// <summary>Descriptions already written, by (dev, ino) of what they refer to: candidates for kcmp.</summary>
    public Dictionary<(ulong Dev, ulong Ino), List<(int Pid, int Fd, string Link, uint Ref)>> FilesByInode { get; } = new();

    /// <summary>Tasks seized (and stopped) before the tree walk, under --freezer: tid → task.</summary>
    public Dictionary<int, TracedTask> Preseized { get; } = new();

    public CheckpointContext? Find(int pid) => Processes.FirstOrDefault(p => p.ProcessId == pid);

    /// <summary>
    /// The tree's namespace of kind <paramref name="name"/> (/proc/PID/ns/NAME), which every live process of
    /// it must be in (one is saved for the tree: <see cref="ITreeNamespace"/>), and whether it is not ckpt's.
    /// Null (and false) where the kernel has no such namespace.
    /// </summary>
    public (string? Root, bool Own) TreeNamespace(string name, string what)
    {
        string? mine = FileCalls.ReadLink($"/proc/self/ns/{name}");
        string? root = FileCalls.ReadLink($"/proc/{Find(Tree[0].Pid)?.Pid ?? Tree[0].Pid}/ns/{name}");
        if (mine == null || root == null) return (null, false);
        foreach (var ctx in Processes)
        {
            string? its = FileCalls.ReadLink($"/proc/{ctx.Pid}/ns/{name}");
            if (its != root)
                throw new NotCheckpointableException(ctx.Pid, $"it is in another {what} namespace ({its}) than the root of the tree ({root}); only one {what} namespace is saved, the tree's");
        }
        return (root, root != mine);
    }

    private Dictionary<(ulong Dev, ulong Ino), List<(CheckpointContext P, OpenFile F)>>? _holdersByInode;
    private Dictionary<string, (CheckpointContext P, OpenFile F)>? _firstByLink;

    /// <summary>Every fd of the tree whose object is (dev, ino), in process then fd order (the fds are all read first).</summary>
    public IReadOnlyList<(CheckpointContext P, OpenFile F)> HoldersOf(ulong dev, ulong ino)
    {
        IndexFds();
        return _holdersByInode!.TryGetValue((dev, ino), out var l) ? l : [];
    }

    /// <summary>The first fd of the tree whose link (/proc/PID/fd/N) is <paramref name="link"/>.</summary>
    public (CheckpointContext P, OpenFile F)? FirstHolderOf(string link)
    {
        IndexFds();
        return _firstByLink!.TryGetValue(link, out var h) ? h : null;
    }

    /// <summary>Indexes the fds of every process once: looking for the other holders of a pipe or socket fd by fd is quadratic.</summary>
    private void IndexFds()
    {
        if (_holdersByInode != null) return;
        _holdersByInode = new();
        _firstByLink = new();
        foreach (var p in Processes)
            foreach (var o in p.OpenFiles)
            {
                if (!_holdersByInode.TryGetValue((o.Stat.Dev, o.Stat.Ino), out var l)) _holdersByInode[(o.Stat.Dev, o.Stat.Ino)] = l = new();
                l.Add((p, o));
                _firstByLink.TryAdd(o.Link, (p, o));
            }
    }

    public void ThrowIfCancelled()
    {
        if (Cancelled()) throw new CkptException("checkpoint interrupted; the target was left running", ExitCodes.Interrupted);
    }
}

/// <summary>One process of the tree as the checkpoint found it.</summary>
public sealed record TreeEntry(int Pid, int PPid, int Pgid, int Sid, int ExitSignal, string Comm)
{
    /// <summary>Exited and not yet reaped: only its exit status is saved.</summary>
    public bool Zombie { get; init; }
    /// <summary>The status its parent's wait() will report (zombies only).</summary>
    public int WaitStatus { get; init; }
    public int Threads { get; init; } = 1;
    /// <summary>Shares its fd table (CLONE_FILES) and/or its cwd, root and umask (CLONE_FS) with its parent.</summary>
    public ShareFlags Shares { get; set; }
    /// <summary>Stopped by a signal (job control, state T) when it was seized: restored stopped.</summary>
    public bool Stopped { get; init; }
    /// <summary>The signal that stopped it (SIGSTOP, or job control's SIGTSTP, SIGTTIN, SIGTTOU); 0 when not stopped.</summary>
    public int StopSignal { get; init; }
    /// <summary>Its main thread exited while other threads run (a zombie leader): restored with it exiting again.</summary>
    public bool LeaderExited { get; init; }
    /// <summary>
    /// The root only: its session's leader had exited (a daemon that forked twice, a job whose shell is
    /// gone): restart makes the session again with a helper of the leader's pid, instead of taking the
    /// root into its own session.
    /// </summary>
    public bool SessionLeaderExited { get; set; }
}

[Flags]
public enum ShareFlags : uint { None = 0, Files = 1, Fs = 2
}

/// <summary>Everything a kind needs to checkpoint one stopped process of the tree.</summary>
public sealed class CheckpointContext : TargetContext
{
    public override int TargetPid => Pid;

    public required CheckpointSession Session { get; init; }
    /// <summary>
    /// The task through which the process is read and injected into: its main thread, or, when that
    /// exited while other threads run (a zombie leader: its /proc entries are empty and it cannot be
    /// traced), one of those threads (/proc/TID gives the process's memory, fds and attributes too).
    /// </summary>
    public required int Pid { get; init; }
    /// <summary>The process id when <see cref="Pid"/> is a thread standing for an exited main thread, else 0.</summary>
    public int Tgid { get; init; }
    /// <summary>The process's id (its thread group's): what the image and other processes know it by.</summary>
    public int ProcessId => Tgid != 0 ? Tgid : Pid;

    private Proc.ProcStatus? _status;
    /// <summary>
    /// /proc/PID/status, read once (the process is frozen: credentials, umask, signal dispositions,
    /// no_new_privs do not change meanwhile); a kind that changes what it measures reads it again itself.
    /// </summary>
    public Proc.ProcStatus Status => _status ??= Proc.ProcStatus.Read(Pid);
    /// <summary>Every thread, the leader first, with its registers and blocked mask at the stop.</summary>
    public List<(TracedTask Task, UserRegs Regs, ulong SigMask)> Threads { get; } = new();

    public TracedTask Task => Threads[0].Task;
    /// <summary>Registers of the leader at the stop, before any injection.</summary>
    public UserRegs Regs => Threads[0].Regs;
    /// <summary>The leader's blocked signal mask at the stop (all signals are blocked while the checkpoint runs).</summary>
    public ulong SigMask => Threads[0].SigMask;

    public ImageWriter Image => Session.Image;
    public Log Log => Session.Log;
    public bool External => Session.External;
    public ObjectTable<string, int> Files => Session.Files;

    /// <summary>Mappings read before anything was injected (the injection scratch page is not among them).</summary>
    public List<VmaInfo> Vmas { get; set; } = new();
    /// <summary>Whether <see cref="Vmas"/> carry their smaps VmFlags yet (see MemoryRegion.ReadRegions).</summary>
    public bool VmFlagsKnown { get; set; }
    /// <summary>A page-aligned scratch area in the target for injected calls' arguments and results.</summary>
    public ulong Scratch { get; set; }
    public const int ScratchSize = 16 * 4096;
    /// <summary>Every open fd of the target, read once the whole tree was frozen (files in flight first, see <see cref="OpenFile.InFlight"/>).</summary>
    public List<OpenFile> OpenFiles { get; } = new();
    /// <summary>fds ckpt installed in the target for files in flight: closed when it is released.</summary>
    public List<int> InFlightFds { get; } = new();

    private Dictionary<int, OpenFile>? _byFd;

    /// <summary>The open fd <paramref name="fd"/> of the target, if it has one.</summary>
    public OpenFile? FileAt(int fd)
    {
        _byFd ??= OpenFiles.ToDictionary(o => o.Fd);
        return _byFd.TryGetValue(fd, out var o) ? o : null;
    }

    public void ThrowIfCancelled() => Session.ThrowIfCancelled();

    public long Inject(string name, long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0)
        => Task.InjectChecked(name, nr, a1, a2, a3, a4, a5, a6);

    public byte[] ReadScratch(int offset, int length)
    {
        var b = new byte[length];
        MemoryCalls.ReadRemote(Pid, Scratch + (ulong)offset, b);
        return b;
    }

    public void WriteScratch(int offset, ReadOnlySpan<byte> data) => MemoryCalls.WriteRemote(Pid, Scratch + (ulong)offset, data);

    /// <summary>The batch routine in the scratch area's last page (0 when the scratch area is not executable).</summary>
    public ulong BatchCode { get; set; }
    /// <summary>Where calls run by <see cref="InjectAll"/> may put their results: scratch offsets from here on.</summary>
    public const int OutOffset = 0x4000;
    private const int BatchAreaSize = OutOffset;

    /// <summary>
    /// Runs <paramref name="calls"/> in <paramref name="task"/> (a thread of this process), in one ptrace
    /// round trip when the batch routine is in place, else one by one; returns their results. A call
    /// marked checked that fails throws (naming it), and the later ones do not run. Results they write
    /// to memory go to scratch offsets at or above <see cref="OutOffset"/>.
    /// </summary>
    public long[] InjectAll(TracedTask task, params (string Name, long Nr, long A1, long A2, long A3, bool Checked)[] calls)
        => InjectAll(task, Array.ConvertAll(calls, c => (c.Name, c.Nr, c.A1, c.A2, c.A3, 0L, c.Checked)));

    /// <summary>As <see cref="InjectAll(TracedTask, ValueTuple{string, long, long, long, long, bool}[])"/>, for calls of four arguments.</summary>
    public long[] InjectAll(TracedTask task, params (string Name, long Nr, long A1, long A2, long A3, long A4, bool Checked)[] calls)
    {
        var results = new long[calls.Length];
        if (BatchCode == 0)
        {
            for (int i = 0; i < calls.Length; i++)
            {
                var c = calls[i];
                results[i] = c.Checked ? task.InjectChecked(c.Name, c.Nr, c.A1, c.A2, c.A3, c.A4) : task.Inject(c.Nr, c.A1, c.A2, c.A3, c.A4);
            }
            return results;
        }
        var batch = new SyscallBatch(task, BatchCode, Scratch, BatchAreaSize);
        for (int i = 0; i < calls.Length; i++)
        {
            int k = i;
            var c = calls[i];
            batch.Add(c.Nr, c.A1, c.A2, c.A3, c.A4, stopOnError: c.Checked, check: r => results[k] = r, name: c.Name);
        }
        batch.Flush();
        return results;
    }
}
