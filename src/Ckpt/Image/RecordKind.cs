namespace Ckpt.Image;

/// <summary>
/// Every record kind of the image stream. The numbers are part of the format (docs/image-format.md):
/// never renumber, only add.
/// </summary>
public enum RecordKind : uint
{
    Header = 1,
    Trailer = 2,

    Process = 10,        // Kinds/ProcessAttributes.cs
    Credentials = 11,    // Kinds/Credentials.cs
    MmState = 12,        // Kinds/MmState.cs
    Vma = 13,            // Kinds/MemoryRegion.cs
    Pages = 14,          // Kinds/MemoryRegion.cs
    Thread = 15,         // Kinds/CpuState.cs
    SignalHandlers = 16, // Kinds/SignalState.cs
    SharedPending = 17,  // Kinds/SignalState.cs
    FsState = 18,        // Kinds/FsState.cs
    FdTable = 19,        // Kinds/FdTable.cs
    Cgroups = 21,        // Kinds/Cgroups.cs (optional: the process's cgroup membership)
    Clocks = 22,         // Kinds/TimeNamespace.cs (optional, before the Tree: the machine's boot and clocks, the tree's time namespace offsets)
    UtsNamespace = 23,   // Kinds/UtsNamespace.cs (optional, before the Tree: the host and domain names of the tree's own UTS namespace)
    IpcNamespace = 24,   // Kinds/IpcNamespace.cs (optional, before the Tree: the tree had an IPC namespace of its own, empty)
    MountNamespace = 26, // Kinds/MountNamespace.cs (before the Tree: the tree's own mount namespace, ckpt's mounts and proc mounts of its own)
    NetNamespace = 27,   // Kinds/NetNamespace.cs (before the Tree: the tree's own network namespace, lo alone)
    UserNamespace = 29,  // Kinds/UserNamespace.cs (before the Tree and the other namespaces: the tree's user namespace, its maps, the namespaces it owns)
    CgroupNamespace = 28, // Kinds/CgroupNamespace.cs (before the Tree: the roots of the tree's own cgroup namespace)
    PidNamespace = 25,   // Kinds/PidNamespace.cs (before the Tree: the tree's pid namespaces below ckpt's, each task's ids in them)
    Tree = 20,           // Kinds/ProcessTree.cs (every process of the tree, zombies included; first after the header)

    RegularFile = 30,    // Kinds/RegularFile.cs
    Pipe = 31,           // Kinds/Pipe.cs
    CharDevice = 32,     // Kinds/CharDevice.cs
    FileData = 33,       // Kinds/RegularFile.cs (contents of an unlinked file)
    PipeData = 34,       // Kinds/Pipe.cs (bytes queued in a pipe)
    External = 35,       // Kinds/ExternalFile.cs (a description held with a process outside, replaced at restart)
    FileLocks = 36,      // Kinds/FileLocks.cs (flock, POSIX and OFD locks the process holds, by fd)
    Pty = 37,            // Kinds/Pty.cs (a pty master held in the tree, or a slave whose master is)
    MessageQueue = 38,   // Kinds/MessageQueue.cs (a POSIX message queue, reopened by name)
    FileOwners = 39,     // Kinds/FileOwner.cs (F_SETOWN owner, F_SETSIG signal and O_ASYNC of descriptions, by fd)

    EventFd = 40,        // Kinds/EventFd.cs
    TimerFd = 41,        // Kinds/TimerFd.cs
    SignalFd = 42,       // Kinds/SignalFd.cs
    Epoll = 43,          // Kinds/Epoll.cs (the epoll and its watches, added at restart in Finish)
    Inotify = 44,        // Kinds/Inotify.cs (the inotify instance and its watches)
    PidFd = 45,          // Kinds/PidFd.cs (a pidfd of a process of the tree)
    Fanotify = 46,       // Kinds/Fanotify.cs (the fanotify group and its marks)
    NamespaceFile = 47,  // Kinds/NamespaceFile.cs (an open /proc/PID/ns/KIND file: ckpt's namespace or the holder's own)
    MountFile = 48,      // Kinds/MountNamespace.cs (before the Tree: a file of a tmpfs of the tree's own mount namespace)
    MountFileData = 49,  // Kinds/MountNamespace.cs (before the Tree: its data ranges)
    MemoryObject = 50,     // Kinds/MemoryObject.cs (a memfd, shared anonymous memory or deleted file: saved once, mapped or opened by objref)
    MemoryObjectData = 51, // Kinds/MemoryObject.cs (its contents: data ranges only)
    MemoryFile = 52,       // Kinds/MemoryObject.cs (an open file description of a memory object)
    SysvShm = 53,          // Kinds/SysvShm.cs (a SysV shared memory segment: saved once, attached by objref)
    SysvShmData = 54,      // Kinds/SysvShm.cs (its contents: data ranges only)
    UnixSocket = 60,       // Kinds/UnixSocket.cs (a unix domain socket: type, relation to its peer, address, options)
    UnixSocketQueue = 61,  // Kinds/UnixSocket.cs (messages or bytes waiting in a unix socket's receive queue)
    UnixSocketRights = 65, // Kinds/UnixSocket.cs (which queued messages carry files in flight, SCM_RIGHTS, by objref)
    UnixSocketSenders = 68, // Kinds/UnixSocket.cs (optional: the bound sender of each queued datagram, by message index)
    UnixSocketCreds = 69,   // Kinds/UnixSocket.cs (optional: the credentials, SCM_CREDENTIALS, each queued message came with, by message index)
    SocketFilters = 64,    // Kinds/SocketFilter.cs (classic BPF filters attached to sockets, by fd, with their lock flag)
    NetlinkSocket = 63,    // Kinds/NetlinkSocket.cs (a netlink socket: protocol, port id, groups, options)
    PacketSocket = 67,     // Kinds/PacketSocket.cs (an AF_PACKET socket: type, protocol, interface by name, options)
    NetworkLock = 66,      // Kinds/InetSocket.cs (optional: the nf_tables table holding migrated connections until the restart takes them back)
    InetSocket = 62,       // Kinds/InetSocket.cs (a TCP or UDP socket: address, listen backlog, options; a connection's sequence numbers and queues)
    Seccomp = 71,          // Kinds/Seccomp.cs (each thread's seccomp mode and filters, the filters written once)
    TunFile = 72,          // Kinds/TunDevice.cs (a /dev/net/tun file: the tun/tap device it is attached to, by name, and its flags)
    PosixTimers = 70,      // Kinds/PosixTimers.cs (the process's POSIX timers: timer_create ids, clocks, notifications, time left)
}

/// <summary>Record flags (the second word of a record header).</summary>
[Flags]
public enum RecordFlags : uint
{
    None = 0,
    /// <summary>A reader that does not know the kind may skip the record.</summary>
    Optional = 1,
}
