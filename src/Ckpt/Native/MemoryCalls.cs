using System.Runtime.InteropServices;

namespace Ckpt.Native;

/// <summary>Memory calls: our own mmap for buffers and code, and cross-process reads/writes.</summary>
public static unsafe partial class MemoryCalls
{
    public const int PROT_NONE = 0, PROT_READ = 1, PROT_WRITE = 2, PROT_EXEC = 4;
    public const int MAP_SHARED = 1, MAP_PRIVATE = 2, MAP_FIXED = 0x10, MAP_ANONYMOUS = 0x20, MAP_GROWSDOWN = 0x100,
        MAP_NORESERVE = 0x4000, MAP_POPULATE = 0x8000, MAP_FIXED_NOREPLACE = 0x100000;
    public const int MREMAP_MAYMOVE = 1, MREMAP_FIXED = 2, MREMAP_DONTUNMAP = 4;

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    public static partial nint Mmap(nint addr, nuint len, int prot, int flags, int fd, long off);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    public static partial int Munmap(nint addr, nuint len);

    public const int MADV_COLLAPSE = 25;

    [LibraryImport("libc", EntryPoint = "process_madvise", SetLastError = true)]
    public static partial nint ProcessMadvise(int pidfd, Iovec* iov, ulong n, int advice, uint flags);

    [LibraryImport("libc", EntryPoint = "process_vm_readv", SetLastError = true)]
    public static partial nint ProcessVmReadv(int pid, Iovec* local, ulong liovcnt, Iovec* remote, ulong riovcnt, ulong flags);

    [LibraryImport("libc", EntryPoint = "process_vm_writev", SetLastError = true)]
    public static partial nint ProcessVmWritev(int pid, Iovec* local, ulong liovcnt, Iovec* remote, ulong riovcnt, ulong flags);

    /// <summary>Reads exactly dst.Length bytes at <paramref name="addr"/> of <paramref name="pid"/>.</summary>
    public static void ReadRemote(int pid, ulong addr, Span<byte> dst)
    {
        fixed (byte* p = dst)
        {
            long done = 0;
            while (done < dst.Length)
            {
                var l = new Iovec { Base = (nint)(p + done), Len = (nuint)(dst.Length - done) };
                var r = new Iovec { Base = (nint)(addr + (ulong)done), Len = l.Len };
                nint n = ProcessVmReadv(pid, &l, 1, &r, 1, 0);
                if (n <= 0) throw SyscallException.Last("process_vm_readv", pid, $"at 0x{addr + (ulong)done:x}");
                done += n;
            }
        }
    }

    /// <summary>Writes all of <paramref name="src"/> at <paramref name="addr"/> of <paramref name="pid"/>.</summary>
    public static void WriteRemote(int pid, ulong addr, ReadOnlySpan<byte> src)
    {
        fixed (byte* p = src)
        {
            long done = 0;
            while (done < src.Length)
            {
                var l = new Iovec { Base = (nint)(p + done), Len = (nuint)(src.Length - done) };
                var r = new Iovec { Base = (nint)(addr + (ulong)done), Len = l.Len };
                nint n = ProcessVmWritev(pid, &l, 1, &r, 1, 0);
                if (n <= 0) throw SyscallException.Last("process_vm_writev", pid, $"at 0x{addr + (ulong)done:x}");
                done += n;
            }
        }
    }
}

[StructLayout(LayoutKind.Sequential)]
public struct Iovec
{
    public nint Base;
    public nuint Len;
}
