using System.Runtime.InteropServices;

namespace Ckpt.Native;

/// <summary>Memory calls: our own mmap for buffers and code, and cross-process reads/writes.</summary>
public static unsafe partial class MemoryCalls
{
    public const int PROT_NONE = 0, PROT_READ = 1, PROT_WRITE = 2, PROT_EXEC = 4;
    public const int MAP_SHARED = 1, MAP_PRIVATE = 2, MAP_FIXED = 0x10, MAP_ANONYMOUS = 0x20, MAP_GROWSDOWN = 0x100,
        MAP_NORESERVE = 0x4000, MAP_POPULATE = 0x8000, MAP_FIXED_NOREPLACE = 0x100000;
    public const int MREMAP_MAYMOVE = 1, MREMAP_FIXED = 2, MREMAP_DONTUNMAP = 4;
    /// <summary>Huge pages (hugetlbfs): MAP_HUGETLB, and the shift at which mmap (and shmget) take log2 of their size.</summary>
    public const int MAP_HUGETLB = 0x40000, MAP_HUGE_SHIFT = 26;

    /// <summary>The mmap flags for huge pages of 2^<paramref name="shift"/> bytes; 0 for ordinary pages (shift 0).</summary>
    public static int HugePageFlags(int shift) => shift == 0 ? 0 : MAP_HUGETLB | (shift << MAP_HUGE_SHIFT);

    /// <summary>log2 of the page size of a file of hugetlbfs (its block size); 0 for a file on ordinary pages.</summary>
    public static int HugePageShift(in StatBuf st)
        => st.Blksize > 4096 && (st.Blksize & (st.Blksize - 1)) == 0 ? System.Numerics.BitOperations.Log2((ulong)st.Blksize) : 0;

    /// <summary>What a restart that found the machine's pool of huge pages short says about it.</summary>
    public static string NoHugePages(int shift) => $"not enough free huge pages of {1L << shift >> 10} KiB: raise /proc/sys/vm/nr_hugepages";

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    public static partial nint Mmap(nint addr, nuint len, int prot, int flags, int fd, long off);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    public static partial int Munmap(nint addr, nuint len);

    public const int MADV_COLLAPSE = 25, MADV_POPULATE_WRITE = 23;

    /// <summary>
    /// Makes the whole pages of ckpt's own memory in [<paramref name="start"/>, +<paramref name="length"/>)
    /// present in one call (MADV_POPULATE_WRITE) before they are filled: a page fault per page costs
    /// several times more on a VM with shadow page tables (~13 us against ~1 us, plus ~6 us at first
    /// touch, measured). Best effort: a failure leaves them to fault in.
    /// </summary>
    public static void PopulateWrite(byte* start, long length)
    {
        ulong from = ((ulong)start + 4095) & ~4095UL, to = ((ulong)start + (ulong)length) & ~4095UL;
        if (to > from) Sys.Call(Nr.madvise, (long)from, (long)(to - from), MADV_POPULATE_WRITE);
    }

    /// <summary>
    /// Makes present, in one call, the next <paramref name="length"/> bytes of the garbage collector's area
    /// for new objects (found from the address of a fresh one), clipped to its 4 MiB region: a command
    /// allocates a few hundred KiB there as it starts, and each page it touches first costs a page fault
    /// (~13 us on a VM, against ~0.8 us a page populated at once, measured: ~120 faults of a checkpoint,
    /// ~170 of a restart). The pages the collector has not committed yet are made writable as it would
    /// (it commits by mprotect too, again when it comes to them). Best effort: a failure changes nothing.
    /// </summary>
    public static void PopulateAllocationArea(long length)
    {
        const long region = 4 << 20;
        var probe = new byte[1];
        ulong at;
        fixed (byte* p = probe) at = (ulong)p;
        ulong from = (at + 4095) & ~4095UL, end = (at & ~(ulong)(region - 1)) + region;
        ulong to = Math.Min(from + (ulong)length, end);
        if (to <= from) return;
        if (Sys.Call(Nr.mprotect, (long)from, (long)(to - from), PROT_READ | PROT_WRITE) == 0) PopulateWrite((byte*)from, (long)(to - from));
    }

    [LibraryImport("libc", EntryPoint = "process_madvise", SetLastError = true)]
    public static partial nint ProcessMadvise(int pidfd, Iovec* iov, ulong n, int advice, uint flags);

    [LibraryImport("libc", EntryPoint = "process_vm_readv", SetLastError = true)]
    public static partial nint ProcessVmReadv(int pid, Iovec* local, ulong liovcnt, Iovec* remote, ulong riovcnt, ulong flags);

    [LibraryImport("libc", EntryPoint = "process_vm_writev", SetLastError = true)]
    public static partial nint ProcessVmWritev(int pid, Iovec* local, ulong liovcnt, Iovec* remote, ulong riovcnt, ulong flags);

    // userfaultfd: pages are put into another process's fresh anonymous memory with UFFDIO_COPY, which
    // allocates each page and copies into it (process_vm_writev has the kernel clear a page first, then copy)
    public const int UFFD_USER_MODE_ONLY = 1;
    public const ulong UFFD_API = 0xAA, UFFDIO_REGISTER_MODE_MISSING = 1, UFFDIO_COPY_MODE_DONTWAKE = 1;
    public const nuint UFFDIO_API = 0xC018AA3F, UFFDIO_REGISTER = 0xC020AA00, UFFDIO_UNREGISTER = 0x8010AA01, UFFDIO_COPY = 0xC028AA03;

    /// <summary>UFFDIO_API handshake on a new userfaultfd (no features asked for); false on failure (errno set).</summary>
    public static bool UffdHandshake(int uffd)
    {
        var api = new UffdioApi { Api = UFFD_API };
        return EventCalls.Ioctl(uffd, UFFDIO_API, &api) == 0;
    }

    /// <summary>Registers [start, start+len) of the userfaultfd's process for missing-page handling; false on failure (errno set).</summary>
    public static bool UffdRegister(int uffd, ulong start, ulong len)
    {
        var r = new UffdioRegister { Start = start, Len = len, Mode = UFFDIO_REGISTER_MODE_MISSING };
        return EventCalls.Ioctl(uffd, UFFDIO_REGISTER, &r) == 0;
    }

    public static void UffdUnregister(int uffd, ulong start, ulong len, int pid)
    {
        var r = new UffdioRange { Start = start, Len = len };
        if (EventCalls.Ioctl(uffd, UFFDIO_UNREGISTER, &r) != 0) throw SyscallException.Last("ioctl(UFFDIO_UNREGISTER)", pid, $"{start:x}-{start + len:x}");
    }

    /// <summary>
    /// Copies <paramref name="len"/> bytes at <paramref name="src"/> (ours) to pages of the userfaultfd's
    /// process at <paramref name="dst"/>, which must not be there yet (UFFDIO_COPY). Returns how many bytes
    /// were copied before an error, with the errno as <paramref name="errno"/> (0: all of them).
    /// </summary>
    public static long UffdCopy(int uffd, ulong dst, byte* src, long len, out int errno)
    {
        long done = 0;
        errno = 0;
        while (done < len)
        {
            var c = new UffdioCopy { Dst = dst + (ulong)done, Src = (ulong)(src + done), Len = (ulong)(len - done), Mode = UFFDIO_COPY_MODE_DONTWAKE };
            if (EventCalls.Ioctl(uffd, UFFDIO_COPY, &c) == 0) return len;
            int e = Marshal.GetLastPInvokeError();
            if (c.Copy > 0) { done += c.Copy; continue; }   // partly done (EAGAIN): go on from there
            if (e == Errors.EAGAIN) continue;
            errno = e;
            return done;
        }
        return done;
    }

    // PAGEMAP_SCAN (on /proc/PID/pagemap): the runs of pages in given categories, walked by the kernel
    public const ulong PAGE_IS_FILE = 1 << 2, PAGE_IS_PRESENT = 1 << 3, PAGE_IS_SWAPPED = 1 << 4, PAGE_IS_PFNZERO = 1 << 5, PAGE_IS_GUARD = 1 << 8;
    /// <summary>madvise: guard pages (Linux 6.13: any access faults, no memory behind them); mmap: a droppable mapping (6.11).</summary>
    public const int MADV_GUARD_INSTALL = 102, MAP_DROPPABLE = 0x08;
    public const nuint PAGEMAP_SCAN = 0xC0606610;

    /// <summary>
    /// Regions of [start, end) whose pages match (PAGEMAP_SCAN): every category of
    /// <paramref name="mask"/> (after flipping those of <paramref name="inverted"/>) and one of
    /// <paramref name="anyOf"/>. Fills <paramref name="vec"/> from the start; returns how many regions, and
    /// in <paramref name="walkEnd"/> where the walk stopped (before end when vec is full); -1 on error (errno set).
    /// </summary>
    public static long PagemapScan(int pagemapFd, ulong start, ulong end, Span<PageRegion> vec, ulong inverted, ulong mask, ulong anyOf, out ulong walkEnd, ulong alsoReturn = 0)
    {
        fixed (PageRegion* v = vec)
        {
            var a = new PmScanArg
            {
                Size = (ulong)sizeof(PmScanArg), Start = start, End = end, Vec = (ulong)v, VecLen = (ulong)vec.Length,
                CategoryInverted = inverted, CategoryMask = mask, CategoryAnyofMask = anyOf, ReturnMask = anyOf | mask | alsoReturn,
            };
            long n = EventCalls.Ioctl(pagemapFd, PAGEMAP_SCAN, &a);
            walkEnd = a.WalkEnd;
            return n;
        }
    }

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

/// <summary>struct uffdio_api (24 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct UffdioApi
{
    public ulong Api, Features, Ioctls;
}

/// <summary>struct uffdio_range (16 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct UffdioRange
{
    public ulong Start, Len;
}

/// <summary>struct uffdio_register (32 bytes): its range, the mode, the ioctls the kernel then allows.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct UffdioRegister
{
    public ulong Start, Len, Mode, Ioctls;
}

/// <summary>struct uffdio_copy (40 bytes); Copy is the bytes copied or -errno.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct UffdioCopy
{
    public ulong Dst, Src, Len, Mode;
    public long Copy;
}

/// <summary>struct pm_scan_arg (96 bytes), the argument of PAGEMAP_SCAN.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct PmScanArg
{
    public ulong Size, Flags, Start, End, WalkEnd, Vec, VecLen, MaxPages, CategoryInverted, CategoryMask, CategoryAnyofMask, ReturnMask;
}

/// <summary>struct page_region (24 bytes): [Start, End) and its categories.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct PageRegion
{
    public ulong Start, End, Categories;
}
