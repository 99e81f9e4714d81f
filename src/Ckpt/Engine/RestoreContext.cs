using System.Text;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Tracing;

namespace Ckpt.Engine;

public sealed class RestoreOptions
{
    public bool Detach { get; init; }
    public bool Frozen { get; init; }
    /// <summary>Rebuild 2 MiB blocks that were fully present as transparent huge pages (--huge-pages).</summary>
    public bool HugePages { get; init; }
    /// <summary>Run the tree in a time namespace whose clocks go on from the checkpoint's (--time-namespace; automatic on another machine or boot).</summary>
    public bool TimeNamespace { get; init; }
    /// <summary>The image input when it comes through a pipe: drained into a spool file if a pid of the tree is taken (see Vessel.RetryTakenPid).</summary>
    public Image.SpoolingInput? Spool { get; init; }
    public Func<bool> Cancelled { get; init; } = () => false;
    /// <summary>Replacements for external fds: image fd → fd of ckpt (--inherit-fd); default: the same number.</summary>
    public Dictionary<int, int> InheritFds { get; init; } = new();
    /// <summary>The caller waits for the tree from the foreground of its terminal: the root's group gets that foreground as the tree is released.</summary>
    public JobControl? Job { get; init; }
    /// <summary>The caller can relay its terminal to a new pty for a root that led a session on a terminal outside the tree (<see cref="TerminalRelay"/>).</summary>
    public TerminalRelay? Relay { get; init; }
}

/// <summary>
/// What one restart of a process tree shares across its processes: the header and options, the tree
/// (from the Tree record), every process being rebuilt, the master copies in ckpt of objects that more
/// than one process holds (objref → fd of ckpt), and a state bag for kinds whose objects span processes.
/// </summary>
public sealed class RestoreSession : StateBag
{
    public required ImageHeader Header { get; init; }
    public required Log Log { get; init; }
    public required RestoreOptions Options { get; init; }

    /// <summary>The saved tree, zombies included, in creation order (null for images of format 1, one process).</summary>
    public List<TreeEntry>? Tree { get; set; }
    /// <summary>Every process being rebuilt, in creation order.</summary>
    public List<RestoreContext> Processes { get; } = new();
    /// <summary>How the image's xstate buffers are laid out for this CPU, where they differ (<see cref="Kinds.XstateLayout"/>).</summary>
    public Kinds.XstateLayout.Plan? Xstate { get; set; }
    /// <summary>The process whose records are being read.</summary>
    public RestoreContext? Current { get; set; }
    /// <summary>Processes forked only when their Process record comes, from their parent (whose pages they share): pid → entry.</summary>
    public Dictionary<int, TreeEntry> Late { get; } = new();
    public bool MultiProcess => Processes.Count + Late.Count > 1;
    /// <summary>The signal actions every vessel has when it is created (ckpt's own, taken just before the first fork; index = signal).</summary>
    public Native.KernelSigaction[]? VesselActions { get; set; }

    /// <summary>Open file descriptions held by ckpt for installing into later processes: objref → fd of ckpt.</summary>
    public Dictionary<uint, int> Masters { get; } = new();
    private readonly List<int> _ownFds = new();

    /// <summary>An fd of ckpt that lives until the end of the restart (closed then, success or not).</summary>
    public int Own(int fd) { _ownFds.Add(fd); return fd; }

    /// <summary>Closes an fd given to <see cref="Own"/> before the end of the restart.</summary>
    public void CloseOwn(int fd) { if (_ownFds.Remove(fd)) FileCalls.Close(fd); }

    public RestoreContext? Find(int pid) => Processes.FirstOrDefault(p => p.Pid == pid);

    public void ThrowIfCancelled()
    {
        if (Options.Cancelled()) throw new CkptException("restart interrupted; nothing was left running", ExitCodes.Interrupted);
    }

    /// <summary>Closes every fd ckpt kept for the restart (masters, pipe ends, pidfds).</summary>
    public void Close()
    {
        foreach (var p in Processes) p.Close();
        foreach (int fd in Masters.Values.Concat(_ownFds).Distinct()) FileCalls.Close(fd);
        Masters.Clear();
        _ownFds.Clear();
    }
}

/// <summary>Everything a kind needs to rebuild one process inside its vessel.</summary>
public sealed class RestoreContext : TargetContext
{
    public override int TargetPid => Pid;

    public required RestoreSession Session { get; init; }
    public ImageHeader Header => Session.Header;
    public Log Log => Session.Log;
    public RestoreOptions Options => Session.Options;

    /// <summary>The vessel (set once it was created).</summary>
    public TracedTask? Task { get; set; }
    /// <summary>Threads other than the leader, created by the restore; released with it.</summary>
    public List<TracedTask> OtherThreads { get; } = new();
    public int Pid { get; set; }
    /// <summary>fds of ckpt kept in the vessel as candidates for external fds: ckpt fd → vessel fd.</summary>
    public Dictionary<int, int> Inherited { get; } = new();
    /// <summary>The affinity the vessel had before it was pinned to the tracer's CPU, given back on release.</summary>
    public ulong[]? VesselAffinity { get; set; }
    /// <summary>Base of the trampoline area in the vessel: page 0 holds the syscall gadget, the rest is scratch.</summary>
    public ulong Trampoline { get; set; }
    public const int TrampolineSize = 16 * 4096;
    /// <summary>
    /// ptrace options of a vessel, inherited by the threads and children it is made to clone: killed if
    /// ckpt dies, clones traced from birth, and seccomp filters suspended while traced (they are
    /// installed before the last injected calls: <see cref="Kinds.Seccomp"/>).
    /// </summary>
    public const int VesselOptions = Native.Ptrace.O_TRACESYSGOOD | Native.Ptrace.O_EXITKILL | Native.Ptrace.O_TRACECLONE | Native.Ptrace.O_TRACEFORK | Native.Ptrace.O_SUSPEND_SECCOMP;
    public ulong Scratch => Trampoline + 4096;
    public const int ScratchSize = TrampolineSize - 4096;
    /// <summary>What it shares with its parent (CLONE_FILES: its fds are the parent's, already placed; CLONE_FS).</summary>
    public ShareFlags Shares { get; init; }
    /// <summary>Was stopped by a signal (job control) at the checkpoint: released stopped, by <see cref="StopSignal"/>.</summary>
    public bool Stopped { get; set; }
    /// <summary>The signal that had stopped it: job control's SIGTSTP, SIGTTIN or SIGTTOU, else 0 (SIGSTOP).</summary>
    public int StopSignal { get; set; }
    /// <summary>
    /// Forked from its restored parent (<see cref="RestoreSession.Late"/>), not from a fresh vessel: it
    /// holds the parent's regions (those its image has too are kept by MmState, and the ones its Vma
    /// records say were inherited keep their pages) and signal actions (all set again).
    /// </summary>
    public bool LateForked { get; init; }
    /// <summary>The process it was forked from when <see cref="LateForked"/>.</summary>
    public RestoreContext? ForkedFrom { get; init; }
    /// <summary>Its main thread had exited while other threads ran (a zombie leader): the vessel, which is that thread, exits again once the others are made (<see cref="Kinds.CpuState"/>).</summary>
    public bool LeaderExited { get; set; }
    /// <summary>ckpt's fds were closed in the vessel already (all but the candidates for external fds, in <see cref="Inherited"/>).</summary>
    public bool FdsCleaned { get; set; }
    /// <summary>Its Process record was read (the vessel holds its state, not just a copy of ckpt).</summary>
    public bool Started { get; set; }

    /// <summary>Restored file descriptions: objref → fd number in the vessel (temporary until placed).</summary>
    public ObjectTable<string, int> Files { get; } = new();

    public TracedTask Vessel => Task ?? throw new ImageFormatException("image has process state before its Process record");

    public long Inject(string name, long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0)
        => Vessel.InjectChecked(name, nr, a1, a2, a3, a4, a5, a6);

    private SyscallBatch? _batch;

    /// <summary>
    /// Calls queued for the vessel's leader, run with one ptrace round trip at the next
    /// <see cref="FlushBatch"/> (by the kind that queued them, and by the restorer before every record
    /// but a Vma and before the finish steps). The batch uses the whole scratch area when it is flushed.
    /// </summary>
    public SyscallBatch Batch => _batch ??= BatchFor(Vessel);

    /// <summary>A batch for one thread of the vessel (the routine in the trampoline, the scratch area for its descriptors).</summary>
    public SyscallBatch BatchFor(TracedTask task)
    {
        if (Trampoline == 0) throw new InvalidOperationException("no trampoline in the vessel yet");
        return new SyscallBatch(task, Trampoline + SyscallBatch.CodeOffset, Scratch, ScratchSize);
    }

    /// <summary>Calls queued in <see cref="Batch"/> and not run yet.</summary>
    public int PendingBatchCalls => _batch?.Count ?? 0;
    /// <summary>Round trips and calls run by <see cref="Batch"/> so far (for the log).</summary>
    public (int Flushes, int Calls) BatchStats => (_batch?.Flushes ?? 0, _batch?.CallsRun ?? 0);

    /// <summary>Runs the calls queued in <see cref="Batch"/>, if any.</summary>
    public void FlushBatch() => _batch?.Flush();

    /// <summary>Copies bytes into the scratch area at <paramref name="offset"/>; returns their address in the vessel.</summary>
    public ulong PutScratch(int offset, ReadOnlySpan<byte> data)
    {
        if (offset + data.Length > ScratchSize) throw new CkptException($"restart: {data.Length} bytes do not fit the scratch area", ExitCodes.Internal);
        MemoryCalls.WriteRemote(Pid, Scratch + (ulong)offset, data);
        return Scratch + (ulong)offset;
    }

    public byte[] GetScratch(int offset, int length)
    {
        var b = new byte[length];
        MemoryCalls.ReadRemote(Pid, Scratch + (ulong)offset, b);
        return b;
    }

    /// <summary>Opens a path inside the vessel; returns the fd or throws naming the path.</summary>
    public int OpenInVessel(string path, int flags, int mode = 0)
    {
        long fd = TryOpenInVessel(path, flags, mode);
        if (fd < 0) throw new CkptException($"restart: cannot open {path}: {Errors.Describe((int)-fd)}", ExitCodes.RestoreConflict);
        return (int)fd;
    }

    /// <summary>As <see cref="OpenInVessel"/>, returning the fd or -errno.</summary>
    public long TryOpenInVessel(string path, int flags, int mode = 0)
    {
        // an fd's link under /proc is followed to reach its file: a description opened with O_NOFOLLOW
        // (shm_open adds it) and reopened through one would get ELOOP (it loses the flag, which only open reads)
        if (path.StartsWith("/proc/", StringComparison.Ordinal) && path.Contains("/fd/", StringComparison.Ordinal)) flags &= ~FileCalls.O_NOFOLLOW;
        var bytes = Encoding.UTF8.GetBytes(path + "\0");
        ulong p;
        if (Trampoline != 0) p = PutScratch(ScratchSize - 4096, bytes);
        else
        {
            // a fresh vessel (while the tree is built): the scratch page every vessel has from ckpt
            if (bytes.Length > 4096) throw new CkptException($"restart: path {path} is too long", ExitCodes.RestoreConflict);
            MemoryCalls.WriteRemote(Pid, Engine.Vessel.Scratch, bytes);
            p = Engine.Vessel.Scratch;
        }
        return Vessel.Inject(Nr.openat, FileCalls.AT_FDCWD, (long)p, flags, mode);
    }

    private int _ckptPidfd = -1;

    /// <summary>
    /// Gives the vessel the open file description that fd <paramref name="ckptFd"/> of ckpt refers to
    /// (injected pidfd_getfd on a pidfd of ckpt); returns its fd in the vessel (close-on-exec).
    /// </summary>
    public int Install(int ckptFd)
    {
        if (_ckptPidfd < 0)
            _ckptPidfd = Kinds.PidNamespace.Current?.NsOf(Pid) is > 0
                // ckpt cannot be seen from a pid namespace of the tree: its pidfd of itself, reopened
                ? OpenInVessel($"/proc/{Environment.ProcessId}/fd/{Kinds.PidNamespace.CkptPidfd}", FileCalls.O_RDONLY | FileCalls.O_CLOEXEC)
                : (int)Inject("pidfd_open (ckpt)", Nr.pidfd_open, Environment.ProcessId, 0);
        return (int)Inject("pidfd_getfd", Nr.pidfd_getfd, _ckptPidfd, ckptFd, 0);
    }

    /// <summary>
    /// Sets the file offset and/or the status flags (O_NONBLOCK, O_APPEND...; -1: left) of the description
    /// at fd <paramref name="fd"/> of the vessel, through ckpt's own copy of it (pidfd_getfd): a few
    /// microseconds, where a call injected into the vessel is a ptrace round trip (a process of thousands
    /// of files).
    /// </summary>
    public void SetOffsetAndFlags(int fd, long pos, int statusFlags, string what)
    {
        if (pos == 0 && statusFlags < 0) return;
        int mine = GrabFd(fd);
        try
        {
            if (pos != 0 && FileCalls.Lseek(mine, pos, FileCalls.SEEK_SET) < 0) throw SyscallException.Last($"lseek {what} to {pos}", Pid);
            if (statusFlags >= 0 && FileCalls.Fcntl(mine, FileCalls.F_SETFL, statusFlags) < 0) throw SyscallException.Last($"fcntl(F_SETFL) of {what}", Pid);
        }
        finally { FileCalls.Close(mine); }
    }

    /// <summary>Closes the vessel's pidfd of ckpt, before fds are placed at their final numbers.</summary>
    public void CloseInstaller()
    {
        if (_ckptPidfd >= 0) Inject("close", Nr.close, _ckptPidfd);
        _ckptPidfd = -1;
    }

    /// <summary>The vessel fd of a description restored here, or installed from ckpt's master copy if an earlier process restored it.</summary>
    public int FileFd(uint objref, string what)
    {
        if (Files.TryGetRestored(objref, out int mine)) return mine;
        if (!Session.Masters.TryGetValue(objref, out int master))
            throw new ImageFormatException($"{what} refers to objref {objref}, which the image never defined");
        int fd = Install(master);
        Files.SetRestored(objref, fd);
        return fd;
    }

    public void ThrowIfCancelled() => Session.ThrowIfCancelled();
}
