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
    private readonly byte[] _buf;
    private int _used;
    private readonly XxHash3 _stream = new();
    private readonly XxHash3 _record = new();
    private bool _finished;

    public long RecordCount { get; private set; }
    public long BytesWritten { get; private set; }

    public ImageWriter(Stream output, int bufferSize = 1 << 20)
    {
        _out = output;
        _buf = new byte[bufferSize];
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
        if (data.Length >= _buf.Length / 2)
        {
            Flush();
            _out.Write(data);
            BytesWritten += data.Length;
            return;
        }
        if (_used + data.Length > _buf.Length) Flush();
        data.CopyTo(_buf.AsSpan(_used));
        _used += data.Length;
    }

    public void Flush()
    {
        if (_used > 0)
        {
            _out.Write(_buf, 0, _used);
            BytesWritten += _used;
            _used = 0;
        }
        _out.Flush();
    }

    /// <summary>Flushes what is buffered; an image without <see cref="Finish"/> stays incomplete (no trailer).</summary>
    public void Dispose() => Flush();
}
