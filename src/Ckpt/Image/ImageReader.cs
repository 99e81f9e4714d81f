using System.Buffers.Binary;
using System.IO.Hashing;

namespace Ckpt.Image;

/// <summary>One record as read: its payload is valid until the next call to <see cref="ImageReader.Next"/> (see its ring).</summary>
public readonly struct Record(RecordKind kind, RecordFlags flags, ReadOnlyMemory<byte> payload, long offset, ulong? unverifiedSum = null)
{
    internal Record(RecordKind kind, RecordFlags flags, ReadOnlyMemory<byte> payload, long offset, ulong? unverifiedSum, ImageReader source, int slot)
        : this(kind, flags, payload, offset, unverifiedSum) { _source = source; _slot = slot; }

    private readonly ImageReader? _source;
    private readonly int _slot = -1;

    /// <summary>
    /// Keeps the payload valid past the reader's ring until <see cref="Release"/>, for a consumer that may
    /// be many records behind (the restart's page writer). Only a large payload can be held (false for a
    /// small one, or a record not from a reader with a ring): call while the payload is still valid.
    /// </summary>
    public bool TryHold()
    {
        if (_source == null || _slot < 0) return false;
        _source.Hold(_slot);
        return true;
    }

    /// <summary>Ends a <see cref="TryHold"/>, or the consumer's use of the record (see the reader's consumerReleases).</summary>
    public void Release() => _source?.Release(_slot);

    public RecordKind Kind { get; } = kind;
    public RecordFlags Flags { get; } = flags;
    public ReadOnlyMemory<byte> Payload { get; } = payload;
    /// <summary>Byte offset of the record in the stream (for error messages).</summary>
    public long Offset { get; } = offset;
    public PayloadReader Reader() => new(Payload.Span, Kind);

    /// <summary>
    /// The checksum the record carries, when the reader left checking it to the consumer (see
    /// <see cref="ImageReader.ConsumerVerifies"/>); null when it was checked before the record was returned.
    /// </summary>
    public ulong? UnverifiedSum { get; } = unverifiedSum;

    /// <summary>Checks the payload against its checksum if the reader did not; throws on a mismatch.</summary>
    public void Verify()
    {
        if (UnverifiedSum is not { } want) return;
        if (ImageWriter.Checksum(Kind, Payload.Span, default, Flags) != want)
            throw new ImageFormatException($"image is corrupted: checksum mismatch in record at offset {Offset}");
    }
}

/// <summary>
/// Reads the image stream front to back. Every record's checksum is verified before it is returned;
/// the trailer is checked against the count, size and running checksum of everything before it, and
/// nothing may follow it. Unknown record kinds are an error unless marked optional.
/// </summary>
public sealed unsafe class ImageReader : IDisposable
{
    public const int MaxRecordLength = 64 << 20;

    private readonly Stream _in;
    private readonly byte[] _buf;
    private int _pos, _end;
    private readonly byte[][] _smallPayloads;
    /// <summary>
    /// The large payload buffers. In a ring (<see cref="_ring"/> above 0), a buffer is reused once that
    /// many more large records were read since it was filled and nobody holds it (<see cref="Record.TryHold"/>);
    /// with the consumer releasing each record (<see cref="_ring"/> 0), once it is released and not held.
    /// The oldest such buffer is taken, a new one made when there is none.
    /// </summary>
    private readonly List<PayloadBuffer> _large = new();
    private readonly int _ring;
    private long _largeReads;
    private int _smallSlot;

    private sealed class PayloadBuffer
    {
        /// <summary>An array while small, then a buffer outside the GC heap (<see cref="Owner"/>).</summary>
        public Memory<byte> Memory = GC.AllocateUninitializedArray<byte>(4096);
        public Native.NativeBuffer? Owner;
        public long Filled = long.MinValue / 2;
        public int Holds;
    }
    private readonly XxHash3 _stream = new();
    private readonly XxHash3 _record = new();

    /// <summary>
    /// An image in a regular file, read through a read-only shared mapping of it (restart only: see the
    /// constructor): large payloads are that memory itself, handed out without a copy (a 1 GiB restart
    /// from /dev/shm spent a quarter of its CPU time copying the image into buffers), small records are
    /// copied out of it. Null for a pipe, a socket or a terminal, which are read.
    /// </summary>
    private byte* _map;
    private long _mapStart, _mapLength;
    /// <summary>Where in the mapping the pages made present (<see cref="MakePresent"/>) end.</summary>
    private long _present;
    /// <summary>How far past what is read now small reads make the mapping present: one call per this much.</summary>
    private const long PresentAhead = 1 << 20;
    /// <summary>The mapped payloads in use (slot - <see cref="MappedSlotBase"/> → range and holds): dropped from ckpt's memory (MADV_DONTNEED) when released.</summary>
    private readonly Dictionary<int, (nint Start, int Length, int Holds)> _mapped = new();
    private int _nextMapped;
    private const int MappedSlotBase = 1 << 30;
    private long _offset;   // stream offset of _buf[_pos]
    private long _records;
    private bool _trailerSeen;

    public uint FormatVersion { get; }

    /// <summary>
    /// Records of this kind are returned before their checksum is checked: the consumer calls
    /// <see cref="Record.Verify"/> before it uses the payload (the restart's page writers hash a Pages
    /// record on the thread that writes it, which takes half the reader thread's work off it).
    /// </summary>
    public RecordKind? ConsumerVerifies { get; init; }
    public long Position => _offset;
    public bool Finished => _trailerSeen;

    /// <summary>Payloads of at most this many bytes are small (see <see cref="ImageReader(Stream, int, int, int)"/>).</summary>
    public const int SmallPayload = 64 << 10;

    /// <summary>
    /// How many bytes of large payloads a consumer may keep in use ahead of (or behind) the record being
    /// restored, once <paramref name="seen"/> bytes of them went by: a quarter of that, from 512 KiB up to
    /// <paramref name="most"/>. Each payload in use is a buffer of its own, fresh memory the first time,
    /// whose page faults cost a small restart more than a long lead saves it (a 4 MiB process read 4 MiB
    /// ahead restarted in 37-42 ms instead of 29).
    /// </summary>
    public static long LeadFor(long seen, long most) => Math.Clamp(seen / 4, 512 << 10, most);

    /// <param name="payloadRing">
    /// How many payload buffers rotate: a returned record stays valid until that many more calls to
    /// <see cref="Next"/> (or, held, until it is released), so a consumer thread can use it while this
    /// reader reads ahead.
    /// </param>
    /// <param name="consumerReleases">
    /// Instead of the ring of large payloads: a large payload stays valid until the consumer calls
    /// <see cref="Record.Release"/> on its record (and any hold ends); the reader makes as many buffers
    /// as are in use (a consumer that reads ahead by bytes, not records, keeps few of the largest).
    /// </param>
    /// <param name="smallPayloadRing">
    /// When not 0, records of at most <see cref="SmallPayload"/> bytes have their own ring of that many
    /// buffers: a small record stays valid until that many more small records are read, a large one until
    /// <paramref name="payloadRing"/> more large ones are (a consumer can then be many small records behind
    /// without keeping as many large buffers).
    /// </param>
    public ImageReader(Stream input, int bufferSize = 1 << 20, int payloadRing = 1, int smallPayloadRing = 0, bool consumerReleases = false)
    {
        _in = input;
        _ring = consumerReleases ? 0 : Math.Max(1, payloadRing);
        _smallPayloads = new byte[smallPayloadRing][];
        // a page each to start with (most records are small), grown to the records that need more: every
        // buffer is fresh memory, whose page faults are a good part of a small restart's time
        for (int i = 0; i < _ring; i++) _large.Add(new PayloadBuffer());
        for (int i = 0; i < _smallPayloads.Length; i++) _smallPayloads[i] = GC.AllocateUninitializedArray<byte>(512);
        _buf = GC.AllocateUninitializedArray<byte>(bufferSize);
        if (consumerReleases) MapRegularFile(input);
        Span<byte> start = stackalloc byte[12];
        if (!TryFill(start)) throw new ImageFormatException("not a ckpt image: the input is empty or shorter than the image magic");
        if (!start[..8].SequenceEqual(ImageWriter.Magic)) throw new ImageFormatException("not a ckpt image: bad magic at offset 0");
        FormatVersion = BinaryPrimitives.ReadUInt32LittleEndian(start[8..]);
        if (FormatVersion == 0 || FormatVersion > ImageWriter.FormatVersion)
            throw new ImageFormatException($"image format version {FormatVersion} is newer than this tool understands ({ImageWriter.FormatVersion}); use a newer ckpt");
        _stream.Append(start);
    }

    /// <summary>
    /// Maps the input if it is a regular file (from where it is read now to its end). Its pages are the
    /// file's, in the page cache: a consumer that releases each record lets ckpt drop them from its own
    /// memory as it goes. (A file truncated by someone else while it is being restarted from would make
    /// ckpt fault; a checksum would catch anything written into it.)
    /// </summary>
    private void MapRegularFile(Stream input)
    {
        if (input is not FileStream fs || !fs.CanSeek) return;
        int fd = (int)fs.SafeFileHandle.DangerousGetHandle();
        Native.StatBuf st;
        try { st = Native.FileCalls.FstatOrThrow(fd); }
        catch (Native.SyscallException) { return; }
        long at = fs.Position;
        if (st.Type != Native.StatBuf.S_IFREG || st.Size <= at) return;
        nint p = Native.MemoryCalls.Mmap(0, (nuint)st.Size, Native.MemoryCalls.PROT_READ, Native.MemoryCalls.MAP_SHARED, fd, 0);
        if (p == -1) return;
        _map = (byte*)p;
        _mapStart = at;
        _mapLength = st.Size;
        _present = at & ~4095L;
    }

    /// <summary>
    /// Makes the mapping present from <paramref name="at"/> (an offset in the file) for
    /// <paramref name="length"/> bytes, and at least <paramref name="ahead"/> bytes on, before it is read:
    /// a file that shrank since it was mapped is an image cut short (MADV_POPULATE_READ fails where
    /// reading would have been a SIGBUS, which would end ckpt and the half-built tree with it). Only a
    /// truncation between this call and the read is left to the fault.
    /// </summary>
    private void MakePresent(long at, long length, long ahead)
    {
        long end = at + length;
        if (end <= _present) return;
        long from = Math.Max(_present, at & ~4095L);
        long to = Math.Min((Math.Max(end, from + ahead) + 4095) & ~4095L, (_mapLength + 4095) & ~4095L);
        const int MADV_POPULATE_READ = 22;
        if (Native.Sys.Call(Native.Nr.madvise, (long)_map + from, to - from, MADV_POPULATE_READ) == -1)
        {
            int err = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            if (err == Native.Errors.EFAULT)
                throw new ImageFormatException($"image is truncated: its file no longer reaches offset {end - _mapStart} (it shrank while it was read)");
            to = _mapLength + 4095;   // (a kernel without it: pages fault in as they are read, unguarded)
        }
        _present = to;
    }

    /// <summary>Unmaps a mapped input (the records read from it must not be used any more).</summary>
    public void Dispose()
    {
        if (_map == null) return;
        Native.MemoryCalls.Munmap((nint)_map, (nuint)_mapLength);
        _map = null;
    }

    /// <summary>A large payload in the mapped input: its memory (made present now, on the reading thread), and a slot that holds it.</summary>
    private (Memory<byte> Buffer, int Slot) MappedPayload(int length)
    {
        byte* p = _map + _mapStart + _offset;
        MakePresent(_mapStart + _offset, length, 0);
        int slot;
        lock (_mapped)
        {
            slot = MappedSlotBase + (_nextMapped++ & (MappedSlotBase - 1));
            _mapped[slot] = ((nint)p, length, 1);   // the consumer's, until it releases the record
        }
        _offset += length;
        return (new Native.NativeBuffer(p, length).Memory, slot);   // (the mapping outlives it)
    }

    /// <summary>The next record, or null after the trailer (which is verified and not returned).</summary>
    public Record? Next()
    {
        Span<byte> hdr = stackalloc byte[ImageWriter.HeaderSize];
        Span<byte> sum = stackalloc byte[ImageWriter.ChecksumSize];
        Span<byte> one = stackalloc byte[1];
        while (true)
        {
            if (_trailerSeen) return null;
            long at = _offset;
            if (!TryFill(hdr)) throw new ImageFormatException($"image is truncated: it ends at offset {at} without a trailer");
            var kind = (RecordKind)BinaryPrimitives.ReadUInt32LittleEndian(hdr);
            var flags = (RecordFlags)BinaryPrimitives.ReadUInt32LittleEndian(hdr[4..]);
            ulong len = BinaryPrimitives.ReadUInt64LittleEndian(hdr[8..]);
            if (len > MaxRecordLength)
                throw new ImageFormatException($"image is corrupted: record at offset {at} claims {len} bytes");
            bool mapped = _map != null && len > SmallPayload && _mapStart + _offset + (long)len <= _mapLength;
            var (buffer, slot) = mapped ? MappedPayload((int)len) : NextBuffer((int)len);
            var memory = buffer[..(int)len];
            var payload = memory.Span;
            if (!(mapped || TryFill(payload)) || !TryFill(sum))
                throw new ImageFormatException($"image is truncated: record at offset {at} is cut short");
            ulong want = BinaryPrimitives.ReadUInt64LittleEndian(sum);
            bool later = kind == ConsumerVerifies && kind != RecordKind.Trailer;
            if (!later)
            {
                _record.Reset();
                _record.Append(hdr);
                _record.Append(payload);
                if (_record.GetCurrentHashAsUInt64() != want)
                    throw new ImageFormatException($"image is corrupted: checksum mismatch in record at offset {at}");
            }

            if (kind == RecordKind.Trailer)
            {
                var r = new PayloadReader(payload, kind);
                ulong count = r.U64(), bytes = r.U64(), hash = r.U64();
                if (count != (ulong)_records || bytes != (ulong)at || hash != _stream.GetCurrentHashAsUInt64())
                    throw new ImageFormatException($"image is corrupted: the trailer does not match the {_records} records before it");
                _trailerSeen = true;
                if (_ring == 0) Release(slot);
                if (TryFill(one)) throw new ImageFormatException($"image is corrupted: data follows the trailer at offset {_offset - 1}");
                return null;
            }
            _stream.Append(hdr);
            _stream.Append(sum);
            _records++;
            if (!Enum.IsDefined(kind))
            {
                if ((flags & RecordFlags.Optional) != 0) { if (_ring == 0) Release(slot); continue; }   // (nobody else will)
                throw new ImageFormatException($"image holds a record of unknown kind {(uint)kind} at offset {at}; it needs a newer ckpt");
            }
            return new Record(kind, flags, memory, at, later ? want : null, this, slot);
        }
    }

    /// <summary>
    /// The buffer the next payload of <paramref name="length"/> bytes goes into, grown as needed: the next
    /// of the small ring, or a large buffer (and its slot, for <see cref="Record.TryHold"/>; -1 for a small one).
    /// </summary>
    private (Memory<byte> Buffer, int Slot) NextBuffer(int length)
    {
        if (_smallPayloads.Length > 0 && length <= SmallPayload)
        {
            _smallSlot = (_smallSlot + 1) % _smallPayloads.Length;
            ref byte[] small = ref _smallPayloads[_smallSlot];
            if (small.Length < length) small = GC.AllocateUninitializedArray<byte>(Math.Min(SmallPayload, Math.Max(length, small.Length * 2)));
            return (small, -1);
        }
        long n = ++_largeReads;
        PayloadBuffer? b = null;
        int slot = -1;
        lock (_large)
        {
            for (int i = 0; i < _large.Count; i++)
            {
                var c = _large[i];
                if (c.Holds != 0 || c.Filled > n - _ring) continue;
                // one that is large enough, else the oldest
                bool fits = c.Memory.Length >= length;
                if (b == null || (fits && b.Memory.Length < length) || (fits == b.Memory.Length >= length && c.Filled < b.Filled)) { b = c; slot = i; }
            }
            if (b == null) { b = new PayloadBuffer(); slot = _large.Count; _large.Add(b); }
            b.Filled = n;
            if (_ring == 0) b.Holds = 1;   // the consumer's, until it releases the record
        }
        if (b.Memory.Length < length)
        {
            // (the record that used this buffer last is done with: the ring came round to it, and nobody holds it)
            ((IDisposable?)b.Owner)?.Dispose();
            b.Owner = null;
            int size = Math.Max(length, b.Memory.Length * 2);
            if (size < 4 * 4096) b.Memory = GC.AllocateUninitializedArray<byte>(size);
            else
            {
                b.Owner = Populated(size);
                b.Memory = b.Owner.Memory;
            }
        }
        return (b.Memory, slot);
    }

    internal void Hold(int slot)
    {
        if (slot >= MappedSlotBase)
        {
            lock (_mapped) { var m = _mapped[slot]; _mapped[slot] = (m.Start, m.Length, m.Holds + 1); }
            return;
        }
        lock (_large) _large[slot].Holds++;
    }

    internal void Release(int slot)
    {
        if (slot < 0) return;
        if (slot >= MappedSlotBase)
        {
            lock (_mapped)
            {
                var m = _mapped[slot];
                if (m.Holds <= 0) throw new InvalidOperationException("mapped payload released more often than held");
                if (m.Holds > 1) { _mapped[slot] = (m.Start, m.Length, m.Holds - 1); return; }
                _mapped.Remove(slot);
                // out of ckpt's memory (the file keeps it): whole pages inside the payload only
                const int MADV_DONTNEED = 4;
                long from = ((long)m.Start + 4095) & ~4095L, to = ((long)m.Start + m.Length) & ~4095L;
                if (to > from && _map != null) Native.Sys.Call(Native.Nr.madvise, from, to - from, MADV_DONTNEED);
            }
            return;
        }
        lock (_large)
        {
            if (_large[slot].Holds <= 0) throw new InvalidOperationException("payload buffer released more often than held");
            _large[slot].Holds--;
        }
    }

    /// <summary>A new payload buffer (outside the GC heap) whose pages are made present at once (the read into it would fault on each).</summary>
    private static unsafe Native.NativeBuffer Populated(int length)
    {
        var b = new Native.NativeBuffer(length);
        Native.MemoryCalls.PopulateWrite(b.Pointer, length);
        return b;
    }

    /// <summary>The next record, which must be of the given kind.</summary>
    public Record Expect(RecordKind kind)
    {
        var r = Next() ?? throw new ImageFormatException($"image ends where a {kind} record was expected");
        if (r.Kind != kind) throw new ImageFormatException($"image has a {r.Kind} record at offset {r.Offset} where a {kind} record was expected");
        return r;
    }

    private bool TryFill(Span<byte> dst)
    {
        if (_map != null)
        {
            long at = _mapStart + _offset;
            if (at + dst.Length > _mapLength) return false;
            MakePresent(at, dst.Length, PresentAhead);
            new ReadOnlySpan<byte>(_map + at, dst.Length).CopyTo(dst);
            _offset += dst.Length;
            return true;
        }
        int done = 0;
        while (done < dst.Length)
        {
            if (_pos == _end)
            {
                if (dst.Length - done >= _buf.Length)
                {
                    int n = _in.Read(dst[done..]);
                    if (n <= 0) return false;
                    done += n; _offset += n;
                    continue;
                }
                _pos = 0;
                _end = _in.Read(_buf, 0, _buf.Length);
                if (_end <= 0) { _end = 0; return false; }
            }
            int take = Math.Min(_end - _pos, dst.Length - done);
            _buf.AsSpan(_pos, take).CopyTo(dst[done..]);
            _pos += take; done += take; _offset += take;
        }
        return true;
    }
}
