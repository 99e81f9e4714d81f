using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Ckpt.Native;

/// <summary>Shared memory objects on our own side: memfd and its seals, SysV shared memory segments.</summary>
public static unsafe partial class SharedMemoryCalls
{
    public const uint MFD_CLOEXEC = 1, MFD_ALLOW_SEALING = 2;
    public const int F_ADD_SEALS = 1033, F_GET_SEALS = 1034;
    public const uint F_SEAL_SEAL = 1, F_SEAL_SHRINK = 2, F_SEAL_GROW = 4, F_SEAL_WRITE = 8, F_SEAL_FUTURE_WRITE = 0x10, F_SEAL_EXEC = 0x20;

    [LibraryImport("libc", EntryPoint = "memfd_create", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int MemfdCreate(string name, uint flags);

    // SysV shared memory (raw system calls: the kernel's shmid64_ds layout, not glibc's)
    public const long NrShmget = 29, NrShmat = 30, NrShmctl = 31, NrShmdt = 67;
    public const int IPC_CREAT = 0x200, IPC_EXCL = 0x400, IPC_RMID = 0, IPC_SET = 1, IPC_STAT = 2;
    public const int SHM_RDONLY = 0x1000, SHM_EXEC = 0x8000;
    /// <summary>Mode bits of a segment: marked for removal (IPC_RMID while attached), locked.</summary>
    public const uint SHM_DEST = 0x200, SHM_LOCKED = 0x400;

    /// <summary>struct shmid64_ds on x86-64 (112 bytes): the fields ckpt uses.</summary>
    public struct ShmInfo
    {
        public int Key;
        public uint Uid, Gid, Cuid, Cgid, Mode;
        public ulong Size;
        public int Cpid, Lpid;
        public ulong Nattch;
    }

    private const int DsSize = 112;

    /// <summary>IPC_STAT of segment <paramref name="shmid"/>; false (errno set) if there is none.</summary>
    public static bool Stat(int shmid, out ShmInfo info)
    {
        byte* b = stackalloc byte[DsSize];
        info = default;
        if (Sys.Call(NrShmctl, shmid, IPC_STAT, (long)b) != 0) return false;
        var s = new ReadOnlySpan<byte>(b, DsSize);
        info.Key = BinaryPrimitives.ReadInt32LittleEndian(s);
        info.Uid = BinaryPrimitives.ReadUInt32LittleEndian(s[4..]);
        info.Gid = BinaryPrimitives.ReadUInt32LittleEndian(s[8..]);
        info.Cuid = BinaryPrimitives.ReadUInt32LittleEndian(s[12..]);
        info.Cgid = BinaryPrimitives.ReadUInt32LittleEndian(s[16..]);
        info.Mode = BinaryPrimitives.ReadUInt32LittleEndian(s[20..]);
        info.Size = BinaryPrimitives.ReadUInt64LittleEndian(s[48..]);
        info.Cpid = BinaryPrimitives.ReadInt32LittleEndian(s[80..]);
        info.Lpid = BinaryPrimitives.ReadInt32LittleEndian(s[84..]);
        info.Nattch = BinaryPrimitives.ReadUInt64LittleEndian(s[88..]);
        return true;
    }

    /// <summary>IPC_SET: owner and permission bits (the only fields the kernel takes).</summary>
    public static bool SetOwner(int shmid, uint uid, uint gid, uint mode)
    {
        byte* b = stackalloc byte[DsSize];
        if (Sys.Call(NrShmctl, shmid, IPC_STAT, (long)b) != 0) return false;
        SysvIpcCalls.SetPerm(new Span<byte>(b, DsSize), uid, gid, mode);
        return Sys.Call(NrShmctl, shmid, IPC_SET, (long)b) == 0;
    }

    public static int Get(int key, ulong size, int flags) => (int)Sys.Call(NrShmget, key, (long)size, flags);
    public static nint Attach(int shmid, nint addr, int flags) => (nint)Sys.Call(NrShmat, shmid, addr, flags);
    public static int Detach(nint addr) => (int)Sys.Call(NrShmdt, addr);
    public static int Remove(int shmid) => (int)Sys.Call(NrShmctl, shmid, IPC_RMID, 0);
}
