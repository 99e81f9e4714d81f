using System.Buffers.Binary;
using System.IO.Hashing;

namespace Ckpt.Image;

/// <summary>
/// Writes the image stream front to back, never seeking: the magic, then records framed as
/// [u32 kind][u32 flags][u64 length][payload][u64 XxHash3 of header and payload], then the trailer.
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

    public long RecordCount { get; private set; }
    public long BytesWritten { get; private set; }

    /// <param name="background">
    /// Write on a thread of its own: records are staged in buffers (page chunks handed over by
    /// <see cref="WriteOwned"/> without a copy) and written in order while the caller goes on;
    /// <see cref="Flush"/> waits until everything is out, and a write error surfaces at the next call.
    /// </param>
    public ImageWriter(Stream output, int bufferSize = 1 << 20, bool background = false)
    {
        _out = output;
        _buf = GC.AllocateUninitializedArray<byte>(bufferSize);
        if (background) _bg = new BackgroundSink(output);
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
    /// A record whose payload is <paramref name="part1"/> and the first <paramref name="length"/> bytes of
    /// <paramref name="data"/>, with its checksum computed by the caller. <paramref name="data"/> is handed
    /// over until <paramref name="done"/> is called (at once without a background writer, else from the
    /// writer thread once it is written, or given up after a write error).
    /// </summary>
    public void WriteOwned(RecordKind kind, ReadOnlySpan<byte> part1, byte[] data, int length, ulong checksum, Action done)
    {
        if (_bg == null)
        {
            try { WriteChecksummed(kind, part1, data.AsSpan(0, length), checksum); }
            finally { done(); }
            return;
        }
        CheckLength(kind, part1, data.AsSpan(0, length));
        Span<byte> hdr = stackalloc byte[HeaderSize];
        Header(hdr, kind, RecordFlags.None, part1.Length + length);
        Span<byte> sum = stackalloc byte[ChecksumSize];
        BinaryPrimitives.WriteUInt64LittleEndian(sum, checksum);
        Put(hdr); Put(part1);
        FlushBuffer();
        _bg.Enqueue(data, length, done);
        BytesWritten += length;
        Put(sum);
        _stream.Append(hdr);
        _stream.Append(sum);
        RecordCount++;
    }

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
        _stream.Append(hdr);
        _stream.Append(sum);
        RecordCount++;
    }

    /// <summary>Writes the trailer (record count, byte count, stream checksum) and flushes.</summary>
    public void Finish()
    {
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
            _out.Write(data);
            BytesWritten += data.Length;
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
            _bg.Enqueue(b, _used, () => _spare.Add(b));
            _buf = _spare.TryTake(out var next) ? next : GC.AllocateUninitializedArray<byte>(b.Length);
        }
        else _out.Write(_buf, 0, _used);
        BytesWritten += _used;
        _used = 0;
    }

    /// <summary>Everything so far is written to the output (waits for the writer thread).</summary>
    public void Flush()
    {
        FlushBuffer();
        if (_bg != null) _bg.Drain();
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
        private readonly Engine.HandoffQueue<(byte[]? Buf, int Len, Action? Done, Engine.Gate? Drained)> _queue = new(capacity: 8);
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
                var (buf, len, done, drained) = item;
                if (drained != null) { drained.Open(); continue; }
                if (_error == null)
                {
                    try { _out.Write(buf!, 0, len); }
                    catch (Exception e) { _error = System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e); }
                }
                done?.Invoke();
            }
        }

        private void ThrowIfFailed() => _error?.Throw();

        public void Enqueue(byte[] buf, int len, Action? done)
        {
            ThrowIfFailed();
            _queue.Add((buf, len, done, null));
        }

        public void Drain()
        {
            var ev = new Engine.Gate();
            _queue.Add((null, 0, null, ev));
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
