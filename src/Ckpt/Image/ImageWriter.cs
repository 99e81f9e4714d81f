using System.Buffers.Binary;
using System.IO.Hashing;

namespace Ckpt.Image;

/// <summary>
/// Writes the image stream front to back, never seeking: the magic, then records framed as
/// [u32 kind][u32 flags][u64 length][payload][u64 XxHash3 of header and payload], then the trailer.
/// Into a regular file it may write by position instead (<see cref="Positional"/>): the bytes and their
/// order in the file are the same, but a large record's place can be reserved and filled by another
/// thread (<see cref="Reserve"/>), so that several threads write pages at once.
/// </summary>
public sealed class ImageWriter : IDisposable
{
    public static ReadOnlySpan<byte> Magic => "CKPTIMG\n"u8;
    public const uint FormatVersion = 2;
    public const int HeaderSize = 16, ChecksumSize = 8;

    private readonly Stream _out;
    private byte[] _buf;
    /// <summary>With a background writer: the output is written by its own thread, overlapping the work that produces it.</summary>
    private readonly BackgroundSink? _bg;
    private readonly System.Collections.Concurrent.ConcurrentBag<byte[]> _spare = new();
    private int _used;
    private readonly XxHash3 _stream = new();
    private readonly XxHash3 _record = new();
    private bool _finished;
    /// <summary>Positional mode: the file written with pwrite, and the offset of the stream's first byte in it.</summary>
    private readonly int _fd = -1;
    private readonly long _base;
    private readonly Action<long>? _progress;

    public long RecordCount { get; private set; }
    public long BytesWritten { get; private set; }

    /// <param name="background">
    /// Write on a thread of its own: records are staged in buffers (page chunks handed over by
    /// <see cref="WriteOwned"/> without a copy) and written in order while the caller goes on;
    /// <see cref="Flush"/> waits until everything is out, and a write error surfaces at the next call.
    /// </param>
    public ImageWriter(Stream output, int bufferSize = 1 << 20, bool background = false)
        : this(output, -1, bufferSize, background, null) { }

    /// <summary>
    /// A writer into the regular file <paramref name="fd"/> (not O_APPEND), by position from its current
    /// offset (left after the image once it is finished). <paramref name="progress"/> is told the bytes
    /// written or reserved so far, from the caller's thread.
    /// </summary>
    public static ImageWriter Positional(int fd, int bufferSize, Action<long>? progress)
        => new(Stream.Null, fd, bufferSize, false, progress);

    private ImageWriter(Stream output, int fd, int bufferSize, bool background, Action<long>? progress)
    {
        _out = output;
        _buf = GC.AllocateUninitializedArray<byte>(bufferSize);
        if (fd >= 0)
        {
            _fd = fd;
            _base = Native.FileCalls.Lseek(fd, 0, 1 /* SEEK_CUR */);
            if (_base < 0) throw Native.SyscallException.Last("lseek of the image file");
            _progress = progress;
        }
        else if (background) _bg = new BackgroundSink(output);
        Span<byte> start = stackalloc byte[12];
        Magic.CopyTo(start);
        BinaryPrimitives.WriteUInt32LittleEndian(start[8..], FormatVersion);
        Put(start);
        _stream.Append(start);
    }

    public void Write(RecordKind kind, ReadOnlySpan<byte> payload, RecordFlags flags = RecordFlags.None)
        => Write(kind, payload, default, flags);

    public void Write(RecordKind kind, PayloadWriter payload, RecordFlags flags = RecordFlags.None)
        => Write(kind, payload.Span, default, flags);

    /// <summary>Writes one record whose payload is the concatenation of two parts (e.g. page addresses, then pages).</summary>
    public void Write(RecordKind kind, ReadOnlySpan<byte> part1, ReadOnlySpan<byte> part2, RecordFlags flags = RecordFlags.None)
    {
        CheckLength(kind, part1, part2);
        Span<byte> hdr = stackalloc byte[HeaderSize];
        Header(hdr, kind, flags, part1.Length + part2.Length);
        _record.Reset();
        _record.Append(hdr);
        _record.Append(part1);
        _record.Append(part2);
        Emit(hdr, part1, part2, _record.GetCurrentHashAsUInt64());
    }

    /// <summary>
    /// The checksum a record will carry; lets a producer thread hash a large record while the writer
    /// thread writes the previous one (see <see cref="WriteChecksummed"/>).
    /// </summary>
    public static ulong Checksum(RecordKind kind, ReadOnlySpan<byte> part1, ReadOnlySpan<byte> part2, RecordFlags flags = RecordFlags.None)
    {
        Span<byte> hdr = stackalloc byte[HeaderSize];
        Header(hdr, kind, flags, part1.Length + part2.Length);
        var h = new XxHash3();
        h.Append(hdr);
        h.Append(part1);
        h.Append(part2);
        return h.GetCurrentHashAsUInt64();
    }

    /// <summary>Writes a record whose checksum was computed with <see cref="Checksum"/>.</summary>
    public void WriteChecksummed(RecordKind kind, ReadOnlySpan<byte> part1, ReadOnlySpan<byte> part2, ulong checksum, RecordFlags flags = RecordFlags.None)
    {
        CheckLength(kind, part1, part2);
        Span<byte> hdr = stackalloc byte[HeaderSize];
        Header(hdr, kind, flags, part1.Length + part2.Length);
        Emit(hdr, part1, part2, checksum);
    }

    /// <summary>
    /// A record whose payload is <paramref name="part1"/> and <paramref name="data"/>, with its checksum
    /// computed by the caller. <paramref name="data"/> is handed over until <paramref name="done"/> is
    /// called (at once without a background writer, else from the writer thread once it is written, or
    /// given up after a write error).
    /// </summary>
    public void WriteOwned(RecordKind kind, ReadOnlySpan<byte> part1, ReadOnlyMemory<byte> data, ulong checksum, Action done)
    {
        int length = data.Length;
        if (_bg == null)
        {
            try { WriteChecksummed(kind, part1, data.Span, checksum); }
            finally { done(); }
            return;
        }
        CheckLength(kind, part1, data.Span);
        Span<byte> hdr = stackalloc byte[HeaderSize];
        Header(hdr, kind, RecordFlags.None, part1.Length + length);
        Span<byte> sum = stackalloc byte[ChecksumSize];
        BinaryPrimitives.WriteUInt64LittleEndian(sum, checksum);
        Put(hdr); Put(part1);
        FlushBuffer();
        _bg.Enqueue(data, done);
        BytesWritten += length;
        Put(sum);
        HashRecord(hdr, sum);
        RecordCount++;
    }

    /// <summary>Whether records can be placed by <see cref="Reserve"/> (positional mode).</summary>
    public bool CanReserve => _fd >= 0;

    /// <summary>The file positional mode writes (-1 otherwise).</summary>
    public int PositionalFile => _fd;

    /// <summary>
    /// Positional mode: takes the place of a record of <paramref name="kind"/> whose payload is
    /// <paramref name="part1Length"/> + <paramref name="dataLength"/> bytes, and returns its file offset;
    /// the caller writes it there whole (<see cref="Frame"/> gives its header) and gives its checksum
    /// with <see cref="Settle"/> (<paramref name="ticket"/>) before the image is finished.
    /// </summary>
    public long Reserve(RecordKind kind, int part1Length, int dataLength, out int ticket)
    {
        if (_fd < 0) throw new InvalidOperationException("Reserve needs a positional writer");
        if (_finished) throw new InvalidOperationException("image already finished");
        if ((long)part1Length + dataLength > ImageReader.MaxRecordLength)
            throw new ArgumentException($"a {kind} record of {(long)part1Length + dataLength} bytes exceeds the {ImageReader.MaxRecordLength}-byte record limit");
        FlushBuffer();
        var hdr = new byte[HeaderSize];
        Header(hdr, kind, RecordFlags.None, part1Length + dataLength);
        ticket = _later.Count;
        _later.Add((hdr, null));
        RecordCount++;
        long at = _base + BytesWritten;
        BytesWritten += HeaderSize + part1Length + dataLength + ChecksumSize;
        _progress?.Invoke(BytesWritten);
        return at;
    }

    /// <summary>The checksum of a record placed by <see cref="Reserve"/>.</summary>
    public void Settle(int ticket, ulong checksum)
    {
        var (hdr, sum) = _later[ticket];
        if (sum != null) throw new InvalidOperationException($"record {ticket} settled twice");
        _later[ticket] = (hdr, checksum);
        // the stream checksum takes the records in order: as far as they are known
        Span<byte> s = stackalloc byte[ChecksumSize];
        while (_hashed < _later.Count && _later[_hashed].Sum is ulong known)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(s, known);
            _stream.Append(_later[_hashed].Hdr);
            _stream.Append(s);
            _hashed++;
        }
        if (_hashed == _later.Count) { _later.Clear(); _hashed = 0; }
    }

    /// <summary>
    /// Records whose checksum was not known when they were placed, and those after them, in order (their
    /// header, and checksum once known): the stream checksum takes them as they are settled.
    /// <see cref="_hashed"/> of them are in it.
    /// </summary>
    private readonly List<(byte[] Hdr, ulong? Sum)> _later = new();
    private int _hashed;

    /// <summary>Adds a record's header and checksum to the stream checksum, or to the records waiting for an earlier one's.</summary>
    private void HashRecord(ReadOnlySpan<byte> hdr, ReadOnlySpan<byte> sum)
    {
        if (_later.Count > 0) { _later.Add((hdr.ToArray(), BinaryPrimitives.ReadUInt64LittleEndian(sum))); return; }
        _stream.Append(hdr);
        _stream.Append(sum);
    }

    /// <summary>The 16-byte header of a record of <paramref name="kind"/> with a payload of <paramref name="length"/> bytes (no flags).</summary>
    public static void Frame(Span<byte> hdr, RecordKind kind, int length) => Header(hdr, kind, RecordFlags.None, length);

    private void CheckLength(RecordKind kind, ReadOnlySpan<byte> part1, ReadOnlySpan<byte> part2)
    {
        if (_finished) throw new InvalidOperationException("image already finished");
        if ((long)part1.Length + part2.Length > ImageReader.MaxRecordLength)
            throw new ArgumentException($"a {kind} record of {(long)part1.Length + part2.Length} bytes exceeds the {ImageReader.MaxRecordLength}-byte record limit");
    }

    private static void Header(Span<byte> hdr, RecordKind kind, RecordFlags flags, int length)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(hdr, (uint)kind);
        BinaryPrimitives.WriteUInt32LittleEndian(hdr[4..], (uint)flags);
        BinaryPrimitives.WriteUInt64LittleEndian(hdr[8..], (ulong)length);
    }

    private void Emit(ReadOnlySpan<byte> hdr, ReadOnlySpan<byte> part1, ReadOnlySpan<byte> part2, ulong checksum)
    {
        Span<byte> sum = stackalloc byte[ChecksumSize];
        BinaryPrimitives.WriteUInt64LittleEndian(sum, checksum);
        Put(hdr); Put(part1); Put(part2); Put(sum);
        HashRecord(hdr, sum);
        RecordCount++;
    }

    /// <summary>Writes the trailer (record count, byte count, stream checksum) and flushes.</summary>
    public void Finish()
    {
        if (_later.Count > 0) throw new InvalidOperationException($"record {_hashed} of those placed has no checksum");
        var p = new PayloadWriter().U64((ulong)RecordCount).U64((ulong)(BytesWritten + _used)).U64(_stream.GetCurrentHashAsUInt64());
        Write(RecordKind.Trailer, p.Span);
        _finished = true;
        Flush();
    }

    private void Put(ReadOnlySpan<byte> data)
    {
        if (_bg == null && data.Length >= _buf.Length / 2)
        {
            FlushBuffer();
            if (_fd >= 0) Native.FileCalls.PwriteAll(_fd, data, _base + BytesWritten, "write of the image");
            else _out.Write(data);
            BytesWritten += data.Length;
            _progress?.Invoke(BytesWritten);
            return;
        }
        // (with a background writer, everything not handed over is staged: the caller reuses its buffers)
        while (data.Length > 0)
        {
            if (_used == _buf.Length) FlushBuffer();
            int n = Math.Min(data.Length, _buf.Length - _used);
            data[..n].CopyTo(_buf.AsSpan(_used));
            _used += n;
            data = data[n..];
        }
    }

    /// <summary>Hands the staged bytes to the output (to the writer thread, with a fresh staging buffer).</summary>
    private void FlushBuffer()
    {
        if (_used == 0) return;
        if (_bg != null)
        {
            var b = _buf;
            _bg.Enqueue(b.AsMemory(0, _used), () => _spare.Add(b));
            _buf = _spare.TryTake(out var next) ? next : GC.AllocateUninitializedArray<byte>(b.Length);
        }
        else if (_fd >= 0) Native.FileCalls.PwriteAll(_fd, _buf.AsSpan(0, _used), _base + BytesWritten, "write of the image");
        else _out.Write(_buf, 0, _used);
        BytesWritten += _used;
        _used = 0;
        _progress?.Invoke(BytesWritten);
    }

    /// <summary>Everything so far is written to the output (waits for the writer thread).</summary>
    public void Flush()
    {
        FlushBuffer();
        if (_bg != null) _bg.Drain();
        else if (_fd >= 0)
        {
            // the file's offset after the image, as if it had been written front to back
            if (Native.FileCalls.Lseek(_fd, _base + BytesWritten, 0 /* SEEK_SET */) < 0) throw Native.SyscallException.Last("lseek of the image file");
        }
        else _out.Flush();
    }

    /// <summary>
    /// Flushes what is buffered (without a background writer); an image without <see cref="Finish"/>
    /// stays incomplete (no trailer). A background writer is stopped, whatever it had left unwritten.
    /// </summary>
    public void Dispose()
    {
        if (_bg != null) _bg.Dispose();
        else Flush();
    }

    /// <summary>The writer thread of a background <see cref="ImageWriter"/>: writes queued buffers in order.</summary>
    private sealed class BackgroundSink : IDisposable
    {
        private readonly Stream _out;
        private readonly Engine.HandoffQueue<(ReadOnlyMemory<byte> Buf, Action? Done, Engine.Gate? Drained)> _queue = new(capacity: 8);
        private readonly Thread _thread;
        private volatile System.Runtime.ExceptionServices.ExceptionDispatchInfo? _error;

        public BackgroundSink(Stream output)
        {
            _out = output;
            _thread = Tracing.TracerThread.StartHelper("ckpt-write", Run);
        }

        private void Run()
        {
            while (_queue.TryTake(out var item))
            {
                var (buf, done, drained) = item;
                if (drained != null) { drained.Open(); continue; }
                if (_error == null)
                {
                    try { _out.Write(buf.Span); }
                    catch (Exception e) { _error = System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e); }
                }
                done?.Invoke();
            }
        }

        private void ThrowIfFailed() => _error?.Throw();

        public void Enqueue(ReadOnlyMemory<byte> buf, Action? done)
        {
            ThrowIfFailed();
            _queue.Add((buf, done, null));
        }

        public void Drain()
        {
            var ev = new Engine.Gate();
            _queue.Add((default, null, ev));
            ev.Wait();
            ThrowIfFailed();
            _out.Flush();
        }

        public void Dispose()
        {
            _queue.CompleteAdding();
            // a writer stuck on an output nobody reads is a background thread: leave it
            _thread.Join(2000);
        }
    }
}
