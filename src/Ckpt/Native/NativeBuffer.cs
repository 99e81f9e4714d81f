using System.Buffers;

namespace Ckpt.Native;

/// <summary>
/// A buffer of anonymous memory (mmap) outside the GC heap, for the large buffers kept for a whole
/// checkpoint or restart (page chunks, payloads of large records): allocated on the GC heap they counted
/// toward its budget for large objects, whose first few MiB set off a full collection (a .NET app's
/// checkpoint now has one gen0 collection instead of a gen2 one; its time did not change, fresh memory
/// costs what the pause did). Its memory is made present as it is first used, like a fresh array's.
/// Unmapped when disposed, else when ckpt exits (they are pooled for the session: no finalizer, which
/// could unmap one while a span still points into it).
/// </summary>
public sealed unsafe class NativeBuffer : MemoryManager<byte>
{
    private byte* _p;

    private readonly bool _owned = true;

    /// <summary>Memory someone else maps and unmaps (a slice of a mapped file): Dispose leaves it.</summary>
    public NativeBuffer(byte* p, int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        _p = p;
        Length = length;
        _owned = false;
    }

    public NativeBuffer(int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        nint p = MemoryCalls.Mmap(0, (nuint)length, MemoryCalls.PROT_READ | MemoryCalls.PROT_WRITE,
            MemoryCalls.MAP_PRIVATE | MemoryCalls.MAP_ANONYMOUS, -1, 0);
        if (p == -1) throw SyscallException.Last($"mmap of a {length}-byte buffer");
        _p = (byte*)p;
        Length = length;
    }

    public byte* Pointer => _p != null ? _p : throw new ObjectDisposedException(nameof(NativeBuffer));
    public int Length { get; }
    public Span<byte> Span => new(Pointer, Length);

    public override Span<byte> GetSpan() => Span;
    public override MemoryHandle Pin(int elementIndex = 0) => new(Pointer + elementIndex);
    public override void Unpin() { }

    protected override void Dispose(bool disposing)
    {
        if (_p == null) return;
        if (_owned) MemoryCalls.Munmap((nint)_p, (nuint)Length);
        _p = null;
    }
}
