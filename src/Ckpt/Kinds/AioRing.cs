using System.Buffers.Binary;
using Ckpt.Engine;
using Ckpt.Native;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>
/// Linux AIO contexts (<c>io_setup</c>): each is a ring mapped into the process (<c>/[aio] (deleted)</c>,
/// shared), whose address is the context id that the program passes to io_submit and io_getevents.
/// <para>
/// Checkpoint: the ring is a memory region like any other (<see cref="MemoryRegion"/>, backing AioRing):
/// its Vma record and the Pages of its whole extent (header and completion events). Its header is
/// checked first (magic, size, head and tail inside the ring).
/// </para>
/// <para>
/// Restart: the region is first mapped as plain anonymous memory and its pages go in like any others.
/// In Finish, <c>io_setup</c> makes a ring of the same size; the kernel keeps its own copy of the tail,
/// so requests that complete at once (1-byte writes to /dev/null) are submitted until that tail is the
/// saved one, and the head is moved along with them (the kernel takes the head from the ring). The
/// saved events are then copied in and the new ring is moved onto the saved one with <c>mremap</c>,
/// which also makes its address, the context id, the saved one.
/// </para>
/// <para>
/// Not seen: requests still in flight at the checkpoint (O_DIRECT I/O being done, IOCB_CMD_POLL waits)
/// are not in the ring and not visible from outside the kernel; their completions never come after a
/// restart. Requests on regular files complete within milliseconds, and buffered ones within io_submit.
/// </para>
/// </summary>
public static class AioRing
{
    /// <summary>How /proc/PID/maps names a ring.</summary>
    public const string MapsPath = "/[aio] (deleted)";
    public const uint Magic = 0xa10a10a1;
    /// <summary>struct aio_ring before its io_events (id, nr, head, tail, magic, compat and incompat features, header length).</summary>
    public const int HeaderSize = 32;
    public const int EventSize = 32;

    public static bool IsRing(VmaInfo v) => v.Shared && v.Path == MapsPath;

    /// <summary>The number of events a ring of <paramref name="length"/> bytes holds.</summary>
    public static uint Events(ulong length) => (uint)((length - HeaderSize) / EventSize);

    /// <summary>Checks the ring's header (checkpoint side): a ring that is not one is refused.</summary>
    public static void Check(int pid, VmaInfo v)
    {
        Span<byte> h = stackalloc byte[HeaderSize];
        MemoryCalls.ReadRemote(pid, v.Start, h);
        uint nr = U32(h, 4), head = U32(h, 8), tail = U32(h, 12), magic = U32(h, 16), length = U32(h, 28);
        if (magic != Magic || length != HeaderSize || nr != Events(v.Length) || head >= nr || tail >= nr)
            throw new NotCheckpointableException(pid, $"AIO context {v.Start:x}-{v.End:x} does not have a ring header ckpt knows (magic {magic:x}, {nr} events, head {head}, tail {tail})");
    }

    private static uint U32(ReadOnlySpan<byte> b, int at) => BinaryPrimitives.ReadUInt32LittleEndian(b[at..]);

    private const int IOCB_CMD_PWRITE = 1, IocbSize = 64;
    private const int MREMAP_MAYMOVE = 1, MREMAP_FIXED = 2;
    /// <summary>Dummy requests submitted per io_submit (their pointers fill part of the scratch area).</summary>
    private const int MaxBatch = 4096;

    /// <summary>
    /// Makes the AIO context whose saved ring is at <paramref name="start"/> (anonymous memory holding the
    /// saved pages until now) again: same size, same head and tail, same events, same address.
    /// </summary>
    public static void Restore(RestoreContext ctx, ulong start, ulong len)
    {
        var saved = new byte[len];
        MemoryCalls.ReadRemote(ctx.Pid, start, saved);
        uint nr = U32(saved, 4), head = U32(saved, 8), tail = U32(saved, 12);
        if (nr != Events(len) || head >= nr || tail >= nr || U32(saved, 16) != Magic)
            throw new Image.ImageFormatException($"the AIO ring at {start:x} of pid {ctx.Pid} has a damaged header");
        // io_setup(n) makes a ring of 2 * max(n, 4 * CPUs) + 2 events, rounded up to whole pages
        uint requests = (nr - 2) / 2;
        ulong slot = ctx.Scratch;
        MemoryCalls.WriteRemote(ctx.Pid, slot, new byte[8]);
        long got = ctx.Vessel.Inject(Nr.io_setup, requests, (long)slot);
        if (got < 0) throw new CkptException($"restart: cannot make the AIO context {start:x} of pid {ctx.Pid} again (io_setup of {requests} requests): {Errors.Describe((int)-got)}", ExitCodes.RestoreConflict);
        Span<byte> word = stackalloc byte[8];
        MemoryCalls.ReadRemote(ctx.Pid, slot, word);
        ulong ring = BinaryPrimitives.ReadUInt64LittleEndian(word);
        Span<byte> header = stackalloc byte[HeaderSize];
        MemoryCalls.ReadRemote(ctx.Pid, ring, header);
        if (U32(header, 4) != nr)
            throw new CkptException($"restart: the AIO context {start:x} of pid {ctx.Pid} held {nr} events; this machine makes rings of {U32(header, 4)} for it (io_setup rings grow with the number of CPUs)", ExitCodes.RestoreConflict);
        if (head != 0 || tail != 0) AdvanceTail(ctx, ring, nr, head, tail);
        // the saved events, then the ring onto the saved one's place (its address is the context id)
        MemoryCalls.WriteRemote(ctx.Pid, ring + HeaderSize, saved.AsSpan(HeaderSize));
        long moved = ctx.Vessel.Inject(Nr.mremap, (long)ring, (long)len, (long)len, MREMAP_FIXED | MREMAP_MAYMOVE, (long)start);
        if (moved != (long)start)
            throw new CkptException($"restart: cannot move the AIO ring of pid {ctx.Pid} to {start:x}: {(moved < 0 ? Errors.Describe((int)-moved) : "placed elsewhere")}", ExitCodes.RestoreConflict);
        ctx.Session.Log.Debug($"pid {ctx.Pid}: AIO context {start:x} ({nr} events, head {head}, tail {tail}) made again");
    }

    /// <summary>
    /// Brings the kernel's tail of a new ring to <paramref name="tail"/> with requests that complete
    /// within io_submit, moving the ring's head along (the kernel counts free slots from it) but never
    /// past the saved <paramref name="head"/>. A tail before the head takes a whole turn first.
    /// </summary>
    private static void AdvanceTail(RestoreContext ctx, ulong ring, uint nr, uint head, uint tail)
    {
        int devnull = ctx.OpenInVessel("/dev/null", FileCalls.O_WRONLY | FileCalls.O_CLOEXEC);
        try
        {
            long count = tail < head ? (long)nr + tail : tail;
            int batch = (int)Math.Min(Math.Min(count, nr - 1), MaxBatch);
            // one iocb (1 byte from the scratch area to /dev/null), then the pointers to it
            var area = new byte[IocbSize + batch * 8];
            ulong iocb = ctx.Scratch, pointers = ctx.Scratch + IocbSize;
            BinaryPrimitives.WriteUInt32LittleEndian(area.AsSpan(16), IOCB_CMD_PWRITE);   // aio_lio_opcode (u16), aio_reqprio
            BinaryPrimitives.WriteUInt32LittleEndian(area.AsSpan(20), (uint)devnull);     // aio_fildes
            BinaryPrimitives.WriteUInt64LittleEndian(area.AsSpan(24), ctx.Scratch);       // aio_buf
            BinaryPrimitives.WriteUInt64LittleEndian(area.AsSpan(32), 1);                 // aio_nbytes
            for (int i = 0; i < batch; i++) BinaryPrimitives.WriteUInt64LittleEndian(area.AsSpan(IocbSize + i * 8), iocb);
            MemoryCalls.WriteRemote(ctx.Pid, iocb, area);
            Span<byte> h = stackalloc byte[4];
            for (long done = 0; done < count;)
            {
                long n = ctx.Vessel.Inject(Nr.io_submit, (long)ring, Math.Min(count - done, batch), (long)pointers);
                if (n <= 0) throw new CkptException($"restart: cannot set the position of the AIO ring of pid {ctx.Pid} (io_submit: {(n < 0 ? Errors.Describe((int)-n) : "nothing submitted")})", ExitCodes.RestoreConflict);
                done += n;
                // the events read up to here (what io_getevents would do), up to the saved head
                BinaryPrimitives.WriteUInt32LittleEndian(h, done < head ? (uint)done : head);
                MemoryCalls.WriteRemote(ctx.Pid, ring + 8, h);
            }
        }
        finally { ctx.Vessel.Inject(Nr.close, devnull); }
    }
}
