using Ckpt.Native;

namespace Ckpt.Engine;

/// <summary>
/// Creates the process that a restart rebuilds, with a chosen pid (clone3 set_tid). The clone3 call is
/// made from a few bytes of machine code so that no managed code ever runs in the child: the child is a
/// copy of this process parked in a pause() loop, which the restorer seizes and empties by injection.
/// </summary>
public static unsafe class Vessel
{
    //  0: b8 b3 01 00 00   mov eax, 435 (clone3); rdi = args, rsi = size from the caller
    //  5: 0f 05            syscall
    //  7: 48 85 c0         test rax, rax
    //  a: 74 01            je child
    //  c: c3               ret                      (parent: rax = pid or -errno)
    //  d: b8 22 00 00 00   child: mov eax, 34 (pause)
    // 12: 0f 05            syscall
    // 14: eb f7            jmp child
    // 16: 0f 05            gadget: syscall (used for the first injections into the child)
    // 18: cc               int3
    private static ReadOnlySpan<byte> Code =>
    [
        0xb8, 0xb3, 0x01, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x85, 0xc0, 0x74, 0x01, 0xc3,
        0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7, 0x0f, 0x05, 0xcc,
    ];
    public const int GadgetOffset = 0x16;

    private static nint s_blob;

    /// <summary>The address of the blob page, identical in this process and in every vessel.</summary>
    public static nint Blob
    {
        get
        {
            if (s_blob != 0) return s_blob;
            nint p = MemoryCalls.Mmap(0, 4096, MemoryCalls.PROT_READ | MemoryCalls.PROT_WRITE,
                MemoryCalls.MAP_PRIVATE | MemoryCalls.MAP_ANONYMOUS, -1, 0);
            if (p == -1) throw SyscallException.Last("mmap (vessel code)");
            Code.CopyTo(new Span<byte>((void*)p, 4096));
            if (Sys.Call(Nr.mprotect, p, 4096, MemoryCalls.PROT_READ | MemoryCalls.PROT_EXEC) != 0)
                throw SyscallException.Last("mprotect (vessel code)");
            s_blob = p;
            return p;
        }
    }

    public static ulong Gadget => (ulong)(Blob + GadgetOffset);

    /// <summary>Forks a vessel whose pid is <paramref name="pid"/>; it is our child, parked in pause().</summary>
    public static int Create(int pid)
    {
        int want = pid;
        var args = new CloneArgs { ExitSignal = 17 /* SIGCHLD */, SetTid = (ulong)&want, SetTidSize = 1 };
        var fn = (delegate* unmanaged<CloneArgs*, ulong, long>)Blob;
        long r = fn(&args, (ulong)sizeof(CloneArgs));
        if (r == -Errors.EEXIST)
            throw new CkptException($"restart: pid {pid} is already in use; stop the process that holds it (or restart in a new pid namespace)", ExitCodes.RestoreConflict);
        if (r < 0) throw new SyscallException("clone3 (set_tid)", (int)-r, pid);
        return (int)r;
    }
}
