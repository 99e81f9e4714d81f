using Ckpt.Image;
using Ckpt.Kinds;

namespace Ckpt.Engine;

/// <summary>
/// The one table of state kinds. Checkpoint runs them in this order, so records appear in the stream in
/// this order; restart dispatches each record to the kind that owns it.
/// </summary>
public static class KindTable
{
    public static readonly IStateKind[] Ordered =
    [
        ProcessTree.Instance,         // Tree: every process of the tree (written once, first; creates the vessels)
        UserNamespace.Instance,       // the tree's user namespace: made before the namespaces it owns and the vessels
        TimeNamespace.Instance,       // Clocks: written before the Tree, read before the vessels are forked
        UtsNamespace.Instance,        // the tree's own UTS namespace: likewise
        IpcNamespace.Instance,        // the tree's own (empty) IPC namespace: likewise
        PidNamespace.Instance,        // the tree's pid namespaces and each task's ids there: likewise
        MountNamespace.Instance,      // the tree's own mount namespace (proc mounts of its own, mounted last): likewise
        NetNamespace.Instance,        // the tree's own network namespace (devices, addresses, routes, firewall; ckpt's tracer thread works inside it): likewise
        CgroupNamespace.Instance,     // the tree's own cgroup namespace (its root cgroups): likewise
        ProcessAttributes.Instance,   // Process: pid, comm, rlimits, nice, itimers (creates the vessel)
        Cgroups.Instance,             // cgroup membership (joined before the memory is filled: pages are charged to it)
        Credentials.Instance,         // uids, gids, groups, capabilities
        MmState.Instance,             // layout, brk, arg/env, auxv, exe (places the trampoline, moves the vDSO)
        MemoryObject.Instance,        // memfd, shared anonymous, deleted files: written by MemoryRegion and FdTable when first met
                                      // (a file kind: placed before RegularFile, which would take unlinked files)
        SysvShm.Instance,             // SysV segments: written by MemoryRegion when first attached
        MemoryRegion.Instance,        // Vma + Pages
        FsState.Instance,             // cwd, root, umask
        RegularFile.Instance,         // file descriptions...
        MessageQueue.Instance,        //   POSIX message queues (written by RegularFile)
        Pipe.Instance,
        Pty.Instance,                 // ptys whose master the tree holds (slaves: written by CharDevice)
        CharDevice.Instance,
        TunDevice.Instance,           // tun/tap files (their devices: NetNamespace, or persistent ones of ckpt's namespace)
        EventFd.Instance,             // anon-inode objects: eventfd, timerfd, signalfd,
        TimerFd.Instance,
        SignalFd.Instance,
        Epoll.Instance,               //   epoll (watches added in Finish, once the fds are placed),
        Inotify.Instance,             //   inotify,
        Fanotify.Instance,            //   fanotify,
        PidFd.Instance,               //   pidfds
        NamespaceFile.Instance,       // open namespace files (/proc/PID/ns/KIND)
        UnixSocket.Instance,          // unix domain sockets (+ their receive queues); other sockets are refused there,
        InetSocket.Instance,          //   but for TCP/UDP sockets (written by UnixSocket)
        NetlinkSocket.Instance,       //   and netlink sockets (written by UnixSocket)
        PacketSocket.Instance,        //   and packet sockets (written by UnixSocket)
        ExternalFile.Instance,        // written by Pipe and UnixSocket for ends whose peer is outside (--external)
        FdTable.Instance,             // ...and the fd numbers that refer to them
        FileLocks.Instance,           // file locks, taken again once the fds are in place
        FileOwner.Instance,           // signal-driven I/O: F_SETOWN owner, F_SETSIG, O_ASYNC (set in Finish)
        SocketFilter.Instance,        // classic BPF socket filters (attached in Finish)
        SignalState.Instance,         // handlers, shared pending
        PosixTimers.Instance,         // timer_create timers (armed in Finish just before the threads' registers are loaded)
        Seccomp.Instance,             // seccomp mode and filters per thread (installed by CpuState near the end of each thread's setup)
        CpuState.Instance,            // per thread: registers, xstate, mask, pending, rseq, robust list
    ];

    public static readonly IFileKind[] FileKinds = Ordered.OfType<IFileKind>().ToArray();

    private static readonly Dictionary<RecordKind, IStateKind> ByRecord = BuildIndex();

    private static Dictionary<RecordKind, IStateKind> BuildIndex()
    {
        var d = new Dictionary<RecordKind, IStateKind>();
        foreach (var k in Ordered)
            foreach (var r in k.Records)
                d.Add(r, k);
        return d;
    }

    public static IStateKind ForRecord(Record rec)
        => ByRecord.TryGetValue(rec.Kind, out var k) ? k
            : throw new ImageFormatException($"record {rec.Kind} at offset {rec.Offset} is not expected here");
}
