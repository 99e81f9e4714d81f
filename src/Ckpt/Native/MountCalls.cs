using System.Runtime.InteropServices;

namespace Ckpt.Native;

/// <summary>
/// The mount API on ckpt's own side: fsopen, fsconfig, fsmount (a new file system, detached), open_tree (a
/// detached copy of a mount), mount_setattr, move_mount (attach), and umount2. Each returns what the call
/// returned (-1 with errno set on failure).
/// </summary>
public static unsafe partial class MountCalls
{
    private const long NrOpenTree = 428, NrMoveMount = 429, NrFsopen = 430, NrFsconfig = 431, NrFsmount = 432, NrMountSetattr = 442;

    public const uint FSOPEN_CLOEXEC = 1, FSMOUNT_CLOEXEC = 1, MOVE_MOUNT_F_EMPTY_PATH = 4,
        OPEN_TREE_CLONE = 1, OPEN_TREE_CLOEXEC = 0x80000;
    public const int FSCONFIG_SET_FLAG = 0, FSCONFIG_SET_STRING = 1, FSCONFIG_SET_FD = 5, FSCONFIG_CMD_CREATE = 6;
    /// <summary>MOUNT_ATTR_*: per-mount flags (fsmount, mount_setattr).</summary>
    public const uint MOUNT_ATTR_RDONLY = 1, MOUNT_ATTR_NOSUID = 2, MOUNT_ATTR_NODEV = 4, MOUNT_ATTR_NOEXEC = 8,
        MOUNT_ATTR_NOATIME = 0x10, MOUNT_ATTR_STRICTATIME = 0x20, MOUNT_ATTR__ATIME = 0x70, MOUNT_ATTR_NODIRATIME = 0x80,
        MOUNT_ATTR_NOSYMFOLLOW = 0x200000;
    public const int MNT_DETACH = 2;
    public const ulong MS_PRIVATE = 1 << 18;

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial long Syscall(long nr, string a1, long a2);

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial long Syscall(long nr, long a1, long a2, string? a3, string? a4, long a5);

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial long Syscall(long nr, long a1, string a2, long a3);

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial long Syscall(long nr, long a1, string a2, long a3, string a4, long a5);

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial long Syscall(long nr, long a1, string a2, long a3, MountAttr* a4, long a5);

    /// <summary>fsopen(2): a file system context of type <paramref name="fsType"/> (close-on-exec).</summary>
    public static int FsOpen(string fsType) => (int)Syscall(NrFsopen, fsType, FSOPEN_CLOEXEC);

    /// <summary>fsconfig(2) of context <paramref name="fs"/>.</summary>
    public static int FsConfig(int fs, int cmd, string? key, string? value, int aux) => (int)Syscall(NrFsconfig, fs, cmd, key, value, aux);

    /// <summary>fsmount(2): the created file system as a detached mount with <paramref name="attributes"/> (close-on-exec).</summary>
    public static int FsMount(int fs, uint attributes) => (int)Sys.Call(NrFsmount, fs, FSMOUNT_CLOEXEC, attributes);

    private const long NrFspick = 433;
    private const uint FSPICK_CLOEXEC = 1, FSPICK_EMPTY_PATH = 8;
    private const int FSCONFIG_CMD_RECONFIGURE = 7;

    /// <summary>The super block of mount <paramref name="mountFd"/> given flag <paramref name="flag"/> ("ro"...): fspick(2), fsconfig(2) and a reconfigure. 0, or -1 with errno set.</summary>
    public static int Reconfigure(int mountFd, string flag)
    {
        int fs = (int)Syscall(NrFspick, mountFd, "", FSPICK_CLOEXEC | FSPICK_EMPTY_PATH);
        if (fs < 0) return -1;
        int rc = FsConfig(fs, FSCONFIG_SET_FLAG, flag, null, 0) != 0 ? -1 : FsConfig(fs, FSCONFIG_CMD_RECONFIGURE, null, null, 0);
        int errno = Marshal.GetLastPInvokeError();
        FileCalls.Close(fs);
        Marshal.SetLastPInvokeError(errno);
        return rc;
    }

    /// <summary>open_tree(2) with OPEN_TREE_CLONE: a detached copy of the mount at <paramref name="path"/> (under <paramref name="dirfd"/>; "" with AT_EMPTY_PATH: <paramref name="dirfd"/>'s).</summary>
    public static int CloneTree(int dirfd, string path, uint flags = 0)
        => (int)Syscall(NrOpenTree, dirfd, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | flags);

    /// <summary>move_mount(2) of the detached mount <paramref name="mountFd"/> onto <paramref name="path"/>.</summary>
    public static int Attach(int mountFd, string path)
        => (int)Syscall(NrMoveMount, mountFd, "", FileCalls.AT_FDCWD, path, MOVE_MOUNT_F_EMPTY_PATH);

    /// <summary>mount_setattr(2) of mount <paramref name="mountFd"/> itself: <paramref name="set"/> and <paramref name="clear"/> MOUNT_ATTR_* flags, propagation (MS_PRIVATE...; 0: unchanged).</summary>
    public static int SetAttributes(int mountFd, ulong set, ulong clear, ulong propagation)
    {
        var a = new MountAttr { AttrSet = set, AttrClr = clear, Propagation = propagation };
        return (int)Syscall(NrMountSetattr, mountFd, "", FileCalls.AT_EMPTY_PATH, &a, sizeof(MountAttr));
    }

    /// <summary>mount_setattr(2) of the mount at <paramref name="path"/> itself (not following a last symbolic link): <paramref name="set"/> and <paramref name="clear"/> MOUNT_ATTR_* flags.</summary>
    public static int SetAttributes(string path, ulong set, ulong clear)
    {
        var a = new MountAttr { AttrSet = set, AttrClr = clear };
        return (int)Syscall(NrMountSetattr, FileCalls.AT_FDCWD, path, FileCalls.AT_SYMLINK_NOFOLLOW, &a, sizeof(MountAttr));
    }

    /// <summary>pivot_root(2): the calling thread's mount namespace gets <paramref name="newRoot"/> as its root, the old one put on <paramref name="putOld"/>.</summary>
    [LibraryImport("libc", EntryPoint = "pivot_root", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int PivotRoot(string newRoot, string putOld);

    [LibraryImport("libc", EntryPoint = "umount2", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Umount2(string target, int flags);
}

/// <summary>struct mount_attr (linux/mount.h, MOUNT_ATTR_SIZE_VER0 = 32).</summary>
[StructLayout(LayoutKind.Explicit, Size = 32)]
public struct MountAttr
{
    [FieldOffset(0)] public ulong AttrSet;
    [FieldOffset(8)] public ulong AttrClr;
    [FieldOffset(16)] public ulong Propagation;
    [FieldOffset(24)] public ulong UsernsFd;
}
