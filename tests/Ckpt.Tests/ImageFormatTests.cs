using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using Ckpt.Image;
using Xunit;

namespace Ckpt.Tests;

public class ImageFormatTests
{
    // ---------------------------------------------------------------- helpers

    /// <summary>A forward-only stream: CanSeek is false, Position/Length throw, and Read returns at most 7 bytes.</summary>
    private sealed class TrickleStream(Stream inner, int maxRead = 7) : Stream
    {
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, Math.Min(count, maxRead));
        public override int Read(Span<byte> buffer) => inner.Read(buffer[..Math.Min(buffer.Length, maxRead)]);
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    /// <summary>A write-only, non-seekable sink, to show the writer never seeks or reads back.</summary>
    private sealed class SinkStream(MemoryStream inner) : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => inner.Write(buffer, offset, count);
        public override void Write(ReadOnlySpan<byte> buffer) => inner.Write(buffer);
    }

    private sealed record Rec(RecordKind Kind, RecordFlags Flags, byte[] Payload, long Offset = -1);

    private static byte[] Image(Action<ImageWriter> body, int bufferSize = 1 << 20)
    {
        var ms = new MemoryStream();
        var w = new ImageWriter(new SinkStream(ms), bufferSize);
        body(w);
        w.Finish();
        Assert.Equal(ms.Length, w.BytesWritten);
        return ms.ToArray();
    }

    private static List<Rec> ReadAll(Stream s, int bufferSize = 1 << 20)
    {
        var r = new ImageReader(s, bufferSize);
        Assert.Equal(ImageWriter.FormatVersion, r.FormatVersion);
        var list = new List<Rec>();
        while (r.Next() is { } rec) list.Add(new Rec(rec.Kind, rec.Flags, rec.Payload.ToArray(), rec.Offset));
        Assert.True(r.Finished);
        Assert.Null(r.Next());
        return list;
    }

    private static List<Rec> ReadAll(byte[] image, int bufferSize = 1 << 20) => ReadAll(new MemoryStream(image), bufferSize);

    private static byte[] RandomBytes(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    private static readonly RecordKind[] Kinds = Enum.GetValues<RecordKind>().Where(k => k != RecordKind.Trailer).ToArray();

    /// <summary>A small image: a header, records of several sizes (one empty), a two-part record and a skippable unknown kind.</summary>
    private static byte[] SampleImage()
        => Image(w =>
        {
            new ImageHeader
            {
                ToolVersion = "0.1.0", KernelRelease = "6.18.0", Architecture = "x86_64", PageSize = 4096,
                Xcr0 = 0x2e7, XstateSize = 2696, TimeUnixNs = 1_700_000_000_123_456_789, Hostname = "h", RootPid = 42,
            }.Write(w);
            w.Write(RecordKind.Process, new PayloadWriter().I32(42).Str("cat").U64(0xdeadbeef));
            w.Write(RecordKind.Vma, ReadOnlySpan<byte>.Empty);
            w.Write((RecordKind)777, [1, 2, 3], RecordFlags.Optional);
            w.Write(RecordKind.Pages, [1, 0, 0, 0, 0, 0, 0, 0], RandomBytes(40, 1));
            w.Write(RecordKind.FdTable, [9]);
        }, bufferSize: 64);

    private static void ReadToEnd(byte[] image, int bufferSize = 1 << 20)
    {
        var r = new ImageReader(new MemoryStream(image), bufferSize);
        while (r.Next() != null) { }
    }

    // ---------------------------------------------------------------- record round trips

    public static TheoryData<int, int, bool> BufferCombos() => new()
    {
        { 1 << 20, 1 << 20, false },
        { 1 << 20, 1 << 20, true },
        { 64, 16, false },
        { 64, 16, true },
        { 4096, 1, true },
        { 100, 1 << 16, true },
    };

    [Theory]
    [MemberData(nameof(BufferCombos))]
    public void RoundTrip_EveryKindAndPayloadSize(int writerBuffer, int readerBuffer, bool trickle)
    {
        int[] sizes = [0, 1, 7, 100, 4096, 70_000];
        var written = new List<Rec>();
        int seed = 0;
        foreach (var kind in Kinds)
            foreach (int size in sizes)
            {
                var flags = seed % 3 == 0 ? RecordFlags.Optional : RecordFlags.None;
                written.Add(new Rec(kind, flags, RandomBytes(size, ++seed)));
            }
        // A multi-megabyte two-part record: page addresses, then the pages.
        var addrs = new PayloadWriter();
        for (int i = 0; i < 1280; i++) addrs.U64(0x7f0000000000ul + (ulong)i * 4096);
        var pages = RandomBytes(1280 * 4096, 99);
        var writtenBig = addrs.ToArray().Concat(pages).ToArray();

        long expectedRecords = 0;
        var image = Image(w =>
        {
            foreach (var r in written)
            {
                if (r.Payload.Length % 2 == 0) w.Write(r.Kind, r.Payload, r.Flags);
                else w.Write(r.Kind, r.Payload.AsSpan(0, r.Payload.Length / 2), r.Payload.AsSpan(r.Payload.Length / 2), r.Flags);
            }
            w.Write(RecordKind.Pages, addrs.Span, pages);
            w.Write(RecordKind.Pipe, ReadOnlySpan<byte>.Empty);
            expectedRecords = w.RecordCount;
        }, writerBuffer);
        written.Add(new Rec(RecordKind.Pages, RecordFlags.None, writtenBig));
        written.Add(new Rec(RecordKind.Pipe, RecordFlags.None, []));
        Assert.Equal(written.Count, expectedRecords);

        var read = ReadAll(trickle ? new TrickleStream(new MemoryStream(image)) : new MemoryStream(image), readerBuffer);
        Assert.Equal(written.Count, read.Count);
        long offset = 12;
        for (int i = 0; i < written.Count; i++)
        {
            Assert.Equal(written[i].Kind, read[i].Kind);
            Assert.Equal(written[i].Flags, read[i].Flags);
            Assert.True(written[i].Payload.AsSpan().SequenceEqual(read[i].Payload), $"payload of record {i} differs");
            Assert.Equal(offset, read[i].Offset);
            offset += ImageWriter.HeaderSize + written[i].Payload.Length + ImageWriter.ChecksumSize;
        }
        // Then the trailer: header, 3 u64s, checksum.
        Assert.Equal(offset + ImageWriter.HeaderSize + 24 + ImageWriter.ChecksumSize, image.Length);
    }

    [Fact]
    public void RoundTrip_FramingIsAsDocumented()
    {
        var image = Image(w => w.Write(RecordKind.Credentials, [0xaa, 0xbb], RecordFlags.Optional));
        Assert.Equal("CKPTIMG\n"u8.ToArray(), image[..8]);
        Assert.Equal(ImageWriter.FormatVersion, BinaryPrimitives.ReadUInt32LittleEndian(image.AsSpan(8)));
        Assert.Equal((uint)RecordKind.Credentials, BinaryPrimitives.ReadUInt32LittleEndian(image.AsSpan(12)));
        Assert.Equal((uint)RecordFlags.Optional, BinaryPrimitives.ReadUInt32LittleEndian(image.AsSpan(16)));
        Assert.Equal(2ul, BinaryPrimitives.ReadUInt64LittleEndian(image.AsSpan(20)));
        Assert.Equal(new byte[] { 0xaa, 0xbb }, image[28..30]);
        var hash = new System.IO.Hashing.XxHash3();
        hash.Append(image.AsSpan(12, 18));
        Assert.Equal(hash.GetCurrentHashAsUInt64(), BinaryPrimitives.ReadUInt64LittleEndian(image.AsSpan(30)));
        int trailer = 38;
        Assert.Equal((uint)RecordKind.Trailer, BinaryPrimitives.ReadUInt32LittleEndian(image.AsSpan(trailer)));
        Assert.Equal(1ul, BinaryPrimitives.ReadUInt64LittleEndian(image.AsSpan(trailer + 16)));       // records
        Assert.Equal((ulong)trailer, BinaryPrimitives.ReadUInt64LittleEndian(image.AsSpan(trailer + 24))); // bytes before it
        Assert.Equal(image.Length, trailer + 16 + 24 + 8);
    }

    [Fact]
    public void RoundTrip_EmptyImageHasOnlyTheTrailer()
    {
        var image = Image(_ => { });
        Assert.Equal(12 + 16 + 24 + 8, image.Length);
        Assert.Empty(ReadAll(image));
        Assert.Empty(ReadAll(new TrickleStream(new MemoryStream(image)), 1));
    }

    [Fact]
    public void ConsumerVerifies_ThatKindComesUncheckedAndVerifyFindsEveryCorruptByte()
    {
        var pages = RandomBytes(3000, 5);
        var image = Image(w => { w.Write(RecordKind.Process, [1, 2, 3]); w.Write(RecordKind.Pages, pages); });
        // intact: the Pages record comes with its checksum to check, the others checked already
        var r = new ImageReader(new MemoryStream(image)) { ConsumerVerifies = RecordKind.Pages };
        var first = r.Next()!.Value;
        Assert.Null(first.UnverifiedSum);
        var rec = r.Next()!.Value;
        Assert.Equal(RecordKind.Pages, rec.Kind);
        Assert.NotNull(rec.UnverifiedSum);
        rec.Verify();
        Assert.Null(r.Next());
        // a flipped byte anywhere in the Pages payload, or in its length, is caught by Verify
        int pagesAt = 12 + ImageWriter.HeaderSize + 3 + ImageWriter.ChecksumSize;
        for (int at = pagesAt + ImageWriter.HeaderSize; at < pagesAt + ImageWriter.HeaderSize + pages.Length; at += 97)
        {
            var bad = (byte[])image.Clone();
            bad[at] ^= 0x20;
            var rd = new ImageReader(new MemoryStream(bad)) { ConsumerVerifies = RecordKind.Pages };
            rd.Next();
            var got = rd.Next()!.Value;
            Assert.Throws<ImageFormatException>(() => got.Verify());
            // the reader that checks everything refuses it at once
            Assert.Throws<ImageFormatException>(() => ReadAll(bad));
        }
    }

    /// <summary>Records of distinct large payloads (above the small ring's size), one byte pattern each.</summary>
    private static byte[] LargeRecords(int count, out byte[][] payloads)
    {
        var all = payloads = Enumerable.Range(0, count).Select(i => RandomBytes(ImageReader.SmallPayload + 1000 + i * 4096, 100 + i)).ToArray();
        return Image(w => { foreach (var p in all) w.Write(RecordKind.Pages, p); });
    }

    [Fact]
    public void PayloadRing_AHeldRecordOutlivesTheRingUntilReleased()
    {
        var image = LargeRecords(12, out var payloads);
        var r = new ImageReader(new MemoryStream(image), payloadRing: 2, smallPayloadRing: 4);
        var first = r.Next()!.Value;
        Assert.True(first.TryHold());
        var second = r.Next()!.Value;
        Assert.True(second.TryHold());
        // ten more records through a ring of two: neither held payload is written over
        for (int i = 2; i < 12; i++)
        {
            var rec = r.Next()!.Value;
            Assert.Equal(payloads[i], rec.Payload.ToArray());
            Assert.Equal(payloads[0], first.Payload.ToArray());
            Assert.Equal(payloads[1], second.Payload.ToArray());
            if (i == 6) second.Release();
        }
        first.Release();
        Assert.Null(r.Next());
        Assert.Throws<InvalidOperationException>(() => first.Release());
        // without a hold, the ring comes round to a record after two more (records of one size: the buffer is
        // reused as it is)
        var equal = Enumerable.Range(0, 3).Select(i => RandomBytes(payloads[0].Length, 200 + i)).ToArray();
        var plain = new ImageReader(new MemoryStream(Image(w => { foreach (var p in equal) w.Write(RecordKind.Pages, p); })), payloadRing: 2, smallPayloadRing: 4);
        var kept = plain.Next()!.Value;
        plain.Next(); plain.Next();
        Assert.Equal(equal[2], kept.Payload.ToArray());
    }

    [Fact]
    public void PayloadRing_ConsumerReleasesEachLargeRecordAndSmallOnesCannotBeHeld()
    {
        var image = LargeRecords(10, out var payloads);
        var r = new ImageReader(new MemoryStream(image), smallPayloadRing: 4, consumerReleases: true);
        // records not released yet stay as they were, however many follow
        var kept = new List<Ckpt.Image.Record>();
        for (int i = 0; i < 10; i++)
        {
            kept.Add(r.Next()!.Value);
            for (int k = 0; k <= i; k++) Assert.Equal(payloads[k], kept[k].Payload.ToArray());
        }
        Assert.Null(r.Next());
        foreach (var k in kept) k.Release();
        // a released one is reused: one buffer serves every record read one at a time
        var same = Image(w => { w.Write(RecordKind.Pages, payloads[0]); w.Write(RecordKind.Pages, payloads[0].Reverse().ToArray()); });
        var again = new ImageReader(new MemoryStream(same), smallPayloadRing: 4, consumerReleases: true);
        var one = again.Next()!.Value;
        var at = one.Payload;
        one.Release();
        var two = again.Next()!.Value;
        Assert.Equal(payloads[0].Reverse().ToArray(), two.Payload.ToArray());
        Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetMemoryManager(two.Payload, out System.Buffers.MemoryManager<byte>? m2)
            && System.Runtime.InteropServices.MemoryMarshal.TryGetMemoryManager(at, out System.Buffers.MemoryManager<byte>? m1) && m1 == m2);
        // small payloads rotate in their ring: not held
        var small = Image(w => w.Write(RecordKind.Pages, [1, 2, 3]));
        var rs = new ImageReader(new MemoryStream(small), smallPayloadRing: 4, consumerReleases: true);
        Assert.False(rs.Next()!.Value.TryHold());
    }

    /// <summary>
    /// An image file read through its mapping (restart) that someone shrinks meanwhile is an image cut
    /// short, not a SIGBUS ending ckpt (and the half-built tree with it): for a large record (handed out
    /// as the mapped memory) and for small ones (copied out of it).
    /// </summary>
    [Fact]
    public void MappedFileThatShrinksWhileReadIsTruncated()
    {
        var image = Image(w =>
        {
            w.Write(RecordKind.Process, [1, 2, 3]);
            w.Write(RecordKind.Pages, RandomBytes(3 << 20, 7));
            for (int i = 0; i < 2000; i++) w.Write(RecordKind.Process, RandomBytes(700, i));
        });
        string path = Path.Combine(Path.GetTempPath(), $"ckpt-shrink-{Environment.ProcessId}.img");
        try
        {
            // cut inside the large record, and inside the small ones after it (past the first MiB read ahead)
            foreach (long cut in new long[] { 1 << 20, image.Length - 4096 })
            {
                File.WriteAllBytes(path, image);
                using var input = new FileStream(path, FileMode.Open, FileAccess.Read);
                var r = new ImageReader(input, smallPayloadRing: 4, consumerReleases: true);
                Assert.Equal(RecordKind.Process, r.Next()!.Value.Kind);
                using (var shrink = new FileStream(path, FileMode.Open, FileAccess.Write)) shrink.SetLength(cut);
                var e = Assert.Throws<ImageFormatException>(() => { while (r.Next() is { } rec) if (rec.Kind == RecordKind.Pages) { rec.Verify(); rec.Release(); } });
                Assert.Contains("truncated", e.Message);
                r.Dispose();
            }
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void Writer_RefusesRecordsAfterFinish()
    {
        var w = new ImageWriter(new MemoryStream());
        w.Finish();
        Assert.Throws<InvalidOperationException>(() => w.Write(RecordKind.Process, [1]));
    }

    [Fact]
    public void Reader_ExpectChecksTheKind()
    {
        var image = Image(w => { w.Write(RecordKind.Process, [1]); w.Write(RecordKind.Thread, [2]); });
        var r = new ImageReader(new MemoryStream(image));
        Assert.Equal(new byte[] { 1 }, r.Expect(RecordKind.Process).Payload.ToArray());
        var e = Assert.Throws<ImageFormatException>(() => r.Expect(RecordKind.Vma));
        Assert.Contains("Thread", e.Message);
        Assert.Throws<ImageFormatException>(() => r.Expect(RecordKind.Vma)); // past the trailer
        Assert.True(r.Finished);
    }

    /// <summary>
    /// ImageReader rejects records longer than <see cref="ImageReader.MaxRecordLength"/>, but ImageWriter writes
    /// them without complaint: a dump can produce an image its own restore refuses. The writer should refuse.
    /// </summary>
    [Fact]
    public void Writer_RecordAboveReaderLimit_IsRefusedAtWriteTimeOrReadable()
    {
        var big = new byte[ImageReader.MaxRecordLength + 1];
        var ms = new MemoryStream();
        var w = new ImageWriter(ms);
        bool refused = false;
        try { w.Write(RecordKind.Pages, new byte[8], big.AsSpan(8)); }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or ImageFormatException) { refused = true; }
        if (refused) return;
        w.Finish();
        ms.Position = 0;
        var r = new ImageReader(ms);
        var rec = r.Next();
        Assert.NotNull(rec);
        Assert.Equal(big.Length, rec.Value.Payload.Length);
    }

    // ---------------------------------------------------------------- payloads

    private delegate void ReadOp(ref PayloadReader r);

    private static readonly Dictionary<string, (Action<PayloadWriter> Write, ReadOp Read)> Fields = new()
    {
        ["U8"] = (w => w.U8(0xfe), (ref PayloadReader r) => Assert.Equal(0xfe, r.U8())),
        ["BoolTrue"] = (w => w.Bool(true), (ref PayloadReader r) => Assert.True(r.Bool())),
        ["BoolFalse"] = (w => w.Bool(false), (ref PayloadReader r) => Assert.False(r.Bool())),
        ["U32"] = (w => w.U32(0xfedcba98), (ref PayloadReader r) => Assert.Equal(0xfedcba98u, r.U32())),
        ["U32Max"] = (w => w.U32(uint.MaxValue), (ref PayloadReader r) => Assert.Equal(uint.MaxValue, r.U32())),
        ["I32"] = (w => w.I32(-123456789), (ref PayloadReader r) => Assert.Equal(-123456789, r.I32())),
        ["I32Min"] = (w => w.I32(int.MinValue), (ref PayloadReader r) => Assert.Equal(int.MinValue, r.I32())),
        ["U64"] = (w => w.U64(0xfedcba9876543210), (ref PayloadReader r) => Assert.Equal(0xfedcba9876543210ul, r.U64())),
        ["I64"] = (w => w.I64(long.MinValue + 5), (ref PayloadReader r) => Assert.Equal(long.MinValue + 5, r.I64())),
        ["Raw"] = (w => w.Raw([1, 2, 3]), (ref PayloadReader r) => Assert.Equal(new byte[] { 1, 2, 3 }, r.Raw(3).ToArray())),
        ["Bytes"] = (w => w.Bytes([9, 8, 7, 6, 5]), (ref PayloadReader r) => Assert.Equal(new byte[] { 9, 8, 7, 6, 5 }, r.Bytes().ToArray())),
        ["BytesEmpty"] = (w => w.Bytes([]), (ref PayloadReader r) => Assert.Equal(0, r.Bytes().Length)),
        ["Str"] = (w => w.Str("héllo ✓ 𝄞"), (ref PayloadReader r) => Assert.Equal("héllo ✓ 𝄞", r.Str())),
        ["StrEmpty"] = (w => w.Str(""), (ref PayloadReader r) => Assert.Equal("", r.Str())),
        ["Strs"] = (w => w.Strs(["a b", "", "/x/y"]), (ref PayloadReader r) => Assert.Equal(["a b", "", "/x/y"], r.Strs())),
        ["StrsEmpty"] = (w => w.Strs([]), (ref PayloadReader r) => Assert.Empty(r.Strs())),
        ["U64OrDefaultPresent"] = (w => w.U64(77), (ref PayloadReader r) => Assert.Equal(77ul, r.U64OrDefault(5))),
    };

    public static TheoryData<string> FieldNames() => new(Fields.Keys);

    [Fact]
    public void Payload_RoundTripOfEveryFieldInOnePayload()
    {
        var w = new PayloadWriter();
        foreach (var f in Fields.Values) f.Write(w);
        var bytes = w.ToArray();
        Assert.Equal(bytes.Length, w.Length);
        var r = new PayloadReader(bytes, RecordKind.Process);
        foreach (var f in Fields.Values) f.Read(ref r);
        Assert.True(r.AtEnd);
        Assert.Equal(0, r.Remaining);
        r.End();
        Assert.Equal(5ul, r.U64OrDefault(5)); // absent trailing field
    }

    [Fact]
    public void Payload_RoundTripThroughARecord()
    {
        var w = new PayloadWriter();
        foreach (var f in Fields.Values) f.Write(w);
        w.Bytes(RandomBytes(300_000, 3)); // grows the writer's buffer many times
        var image = Image(iw => iw.Write(RecordKind.Credentials, w));
        var r = new ImageReader(new MemoryStream(image));
        var rec = r.Expect(RecordKind.Credentials);
        var p = rec.Reader();
        foreach (var f in Fields.Values) f.Read(ref p);
        Assert.Equal(RandomBytes(300_000, 3), p.Bytes().ToArray());
        p.End();
        Assert.Null(r.Next());
    }

    [Fact]
    public void Payload_WriterClear()
    {
        var w = new PayloadWriter().U64(1).Str("abc");
        Assert.Equal(15, w.Length);
        w.Clear();
        Assert.Equal(0, w.Length);
        w.U8(3);
        Assert.Equal(new byte[] { 3 }, w.ToArray());
    }

    [Theory]
    [MemberData(nameof(FieldNames))]
    public void Payload_EveryShortPrefixOfAFieldIsAFormatError(string name)
    {
        var (write, read) = Fields[name];
        var w = new PayloadWriter();
        write(w);
        var full = w.ToArray();
        var ok = new PayloadReader(full, RecordKind.Thread);
        read(ref ok);
        ok.End();
        for (int n = 0; n < full.Length; n++)
        {
            var prefix = full[..n];
            if (name == "U64OrDefaultPresent" && n == 0) continue; // absent: the default, by design
            var e = Assert.Throws<ImageFormatException>(() =>
            {
                var r = new PayloadReader(prefix, RecordKind.Thread);
                read(ref r);
                r.End();
            });
            Assert.Contains("Thread", e.Message);
        }
    }

    [Fact]
    public void Payload_TrailingBytesAreAnErrorAtEnd()
    {
        var bytes = new PayloadWriter().U32(1).U8(0).ToArray();
        Assert.Throws<ImageFormatException>(() =>
        {
            var r = new PayloadReader(bytes, RecordKind.Vma);
            r.U32();
            r.End();
        });
    }

    [Fact]
    public void Payload_NegativeRawLengthIsAFormatError()
    {
        Assert.Throws<ImageFormatException>(() =>
        {
            var r = new PayloadReader(new byte[16], RecordKind.Vma);
            r.Raw(-1);
        });
    }

    [Fact]
    public void Payload_ImpossibleStringListCountIsAFormatError()
    {
        var bytes = new PayloadWriter().U32(1000).Str("x").ToArray();
        Assert.Throws<ImageFormatException>(() =>
        {
            var r = new PayloadReader(bytes, RecordKind.Vma);
            r.Strs();
        });
    }

    /// <summary>
    /// A length prefix larger than the payload must be a format error whatever its value. Today a prefix of
    /// 0x7fffffff - pos or more makes Take's "_pos + n" overflow (ArgumentOutOfRangeException from Slice), and
    /// one of 0x80000000 or more makes Bytes' checked((int)U32()) throw OverflowException.
    /// </summary>
    [Theory]
    [InlineData(100u)]
    [InlineData(0x7ffffffbu)]
    [InlineData(0x7fffffffu)]
    [InlineData(0x80000000u)]
    [InlineData(0xffffffffu)]
    public void Payload_HugeLengthPrefixIsAFormatError(uint length)
    {
        var bytes = new PayloadWriter().U32(length).Raw([1, 2, 3]).ToArray();
        Assert.Throws<ImageFormatException>(() =>
        {
            var r = new PayloadReader(bytes, RecordKind.Vma);
            r.Bytes();
        });
        var strs = new PayloadWriter().U32(1).U32(length).Raw([1, 2, 3]).ToArray();
        Assert.Throws<ImageFormatException>(() =>
        {
            var r = new PayloadReader(strs, RecordKind.Vma);
            r.Strs();
        });
    }

    // ---------------------------------------------------------------- header record

    [Fact]
    public void Header_RoundTrip()
    {
        var h = new ImageHeader
        {
            ToolVersion = ToolInfo.Version, KernelRelease = "6.18.44-fc-v782", Architecture = "x86_64", PageSize = 4096,
            Xcr0 = 0x602e7, XstateSize = 2696, TimeUnixNs = -5, Hostname = "hôte ✓", RootPid = int.MaxValue,
        };
        var image = Image(w => { h.Write(w); w.Write(RecordKind.Process, [7]); });
        var r = new ImageReader(new TrickleStream(new MemoryStream(image)), 5);
        var g = ImageHeader.Read(r);
        Assert.Equal(h.ToolVersion, g.ToolVersion);
        Assert.Equal(h.KernelRelease, g.KernelRelease);
        Assert.Equal(h.Architecture, g.Architecture);
        Assert.Equal(h.PageSize, g.PageSize);
        Assert.Equal(h.Xcr0, g.Xcr0);
        Assert.Equal(h.XstateSize, g.XstateSize);
        Assert.Equal(h.TimeUnixNs, g.TimeUnixNs);
        Assert.Equal(h.Hostname, g.Hostname);
        Assert.Equal(h.RootPid, g.RootPid);
        Assert.Equal(RecordKind.Process, r.Next()!.Value.Kind);
        Assert.Null(r.Next());
    }

    [Fact]
    public void Header_WrongFirstRecordShortOrLongPayloadAreErrors()
    {
        var notFirst = Image(w => w.Write(RecordKind.Process, [7]));
        Assert.Throws<ImageFormatException>(() => ImageHeader.Read(new ImageReader(new MemoryStream(notFirst))));

        var pw = new PayloadWriter().Str("v").Str("k").Str("a").U32(4096).U64(1).U32(2).I64(3).Str("h");
        var shortOne = Image(w => w.Write(RecordKind.Header, pw)); // RootPid missing
        Assert.Throws<ImageFormatException>(() => ImageHeader.Read(new ImageReader(new MemoryStream(shortOne))));

        pw.I32(1).U8(0);
        var longOne = Image(w => w.Write(RecordKind.Header, pw));  // one byte too many
        Assert.Throws<ImageFormatException>(() => ImageHeader.Read(new ImageReader(new MemoryStream(longOne))));

        var empty = Image(_ => { });
        Assert.Throws<ImageFormatException>(() => ImageHeader.Read(new ImageReader(new MemoryStream(empty))));
    }

    // ---------------------------------------------------------------- damage detection

    [Fact]
    public void Sample_ReadsBackWithTheOptionalUnknownRecordSkipped()
    {
        var image = SampleImage();
        var recs = ReadAll(image);
        Assert.Equal([RecordKind.Header, RecordKind.Process, RecordKind.Vma, RecordKind.Pages, RecordKind.FdTable],
            recs.Select(r => r.Kind).ToArray());
        Assert.InRange(image.Length, 100, 400); // small, so the exhaustive tests stay fast
    }

    [Theory]
    [InlineData(1 << 20, false)]
    [InlineData(16, false)]
    [InlineData(16, true)]
    public void Truncation_AtEveryOffsetIsDetected(int readerBuffer, bool trickle)
    {
        var image = SampleImage();
        for (int n = 0; n < image.Length; n++)
        {
            var prefix = image[..n];
            Stream s = trickle ? new TrickleStream(new MemoryStream(prefix)) : new MemoryStream(prefix);
            try
            {
                var r = new ImageReader(s, readerBuffer);
                while (r.Next() != null) { }
                Assert.Fail($"a prefix of {n} of {image.Length} bytes was read without error");
            }
            catch (ImageFormatException) { }
            catch (Exception e) when (e is not Xunit.Sdk.XunitException)
            {
                Assert.Fail($"a prefix of {n} bytes threw {e.GetType().Name} instead of ImageFormatException: {e.Message}");
            }
        }
        ReadToEnd(image, readerBuffer);
    }

    [Fact]
    public void BitFlip_AtEveryBitIsDetected()
    {
        var image = SampleImage();
        var failures = new List<string>();
        for (int i = 0; i < image.Length; i++)
            for (int bit = 0; bit < 8; bit++)
            {
                var damaged = (byte[])image.Clone();
                damaged[i] ^= (byte)(1 << bit);
                try
                {
                    ReadToEnd(damaged, 32);
                    failures.Add($"offset {i} bit {bit}: read without error");
                }
                catch (ImageFormatException) { }
                catch (Exception e)
                {
                    failures.Add($"offset {i} bit {bit}: {e.GetType().Name}: {e.Message}");
                }
            }
        Assert.True(failures.Count == 0, string.Join("\n", failures.Take(20)));
    }

    [Theory]
    [InlineData(new byte[] { 0 })]
    [InlineData(new byte[] { 0x43, 0x4b, 0x50, 0x54 })]
    public void DataAfterTheTrailerIsAnError(byte[] extra)
    {
        var image = SampleImage();
        var e = Assert.Throws<ImageFormatException>(() => ReadToEnd([.. image, .. extra]));
        Assert.Contains("follows the trailer", e.Message);
        Assert.Throws<ImageFormatException>(() => ReadAll(new TrickleStream(new MemoryStream([.. image, .. extra]))));
    }

    [Fact]
    public void AWholeSecondImageAfterTheTrailerIsAnError()
    {
        var image = SampleImage();
        Assert.Throws<ImageFormatException>(() => ReadToEnd([.. image, .. image]));
    }

    /// <summary>Record boundaries in the sample image (start offset of each record, trailer included).</summary>
    private static List<(int Start, int End)> Records(byte[] image)
    {
        var list = new List<(int, int)>();
        int pos = 12;
        while (pos < image.Length)
        {
            int len = (int)BinaryPrimitives.ReadUInt64LittleEndian(image.AsSpan(pos + 8));
            int end = pos + ImageWriter.HeaderSize + len + ImageWriter.ChecksumSize;
            list.Add((pos, end));
            pos = end;
        }
        Assert.Equal(image.Length, pos);
        return list;
    }

    [Fact]
    public void RemovedDuplicatedOrSwappedWholeRecordsAreDetected()
    {
        var image = SampleImage();
        var recs = Records(image);
        Assert.Equal(7, recs.Count); // 6 records and the trailer
        byte[] Part(int i) => image[recs[i].Start..recs[i].End];
        byte[] Build(IEnumerable<int> order) => [.. image[..12], .. order.SelectMany(Part)];

        Assert.Equal(image, Build(Enumerable.Range(0, 7)));
        for (int i = 0; i < 6; i++)
        {
            int skip = i;
            Assert.Throws<ImageFormatException>(() => ReadToEnd(Build(Enumerable.Range(0, 7).Where(j => j != skip))));
            Assert.Throws<ImageFormatException>(() => ReadToEnd(Build(Enumerable.Range(0, 7).SelectMany(j => j == skip ? new[] { j, j } : [j]))));
        }
        for (int i = 0; i < 5; i++)
        {
            var order = Enumerable.Range(0, 7).ToArray();
            (order[i], order[i + 1]) = (order[i + 1], order[i]);
            Assert.Throws<ImageFormatException>(() => ReadToEnd(Build(order)));
        }
        // Without its trailer the image is truncated.
        Assert.Throws<ImageFormatException>(() => ReadToEnd(Build(Enumerable.Range(0, 6))));
    }

    // ---------------------------------------------------------------- unknown kinds and versions

    [Fact]
    public void UnknownKind_IsAnError()
    {
        var image = Image(w =>
        {
            w.Write(RecordKind.Process, [1]);
            w.Write((RecordKind)999, [1, 2, 3]);
            w.Write(RecordKind.Pipe, [2]);
        });
        var r = new ImageReader(new MemoryStream(image));
        Assert.Equal(RecordKind.Process, r.Next()!.Value.Kind);
        var e = Assert.Throws<ImageFormatException>(() => r.Next());
        Assert.Contains("999", e.Message);
    }

    [Fact]
    public void UnknownKind_MarkedOptional_IsSkipped()
    {
        var image = Image(w =>
        {
            w.Write(RecordKind.Process, [1]);
            w.Write((RecordKind)999, [1, 2, 3], RecordFlags.Optional);
            w.Write((RecordKind)1000, [], RecordFlags.Optional);
            w.Write((RecordKind)uint.MaxValue, RandomBytes(5000, 5), RecordFlags.Optional | (RecordFlags)6);
            w.Write(RecordKind.Pipe, [2], RecordFlags.Optional);
            w.Write((RecordKind)3, [4], RecordFlags.Optional);
        });
        var recs = ReadAll(new TrickleStream(new MemoryStream(image)), 3);
        Assert.Equal(2, recs.Count);
        Assert.Equal(RecordKind.Process, recs[0].Kind);
        Assert.Equal(RecordFlags.None, recs[0].Flags);
        // A known kind marked optional is still returned, flags and all.
        Assert.Equal(RecordKind.Pipe, recs[1].Kind);
        Assert.Equal(RecordFlags.Optional, recs[1].Flags);
        Assert.Equal(new byte[] { 2 }, recs[1].Payload);
    }

    [Fact]
    public void NewerFormatVersion_IsAnError()
    {
        var image = SampleImage();
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(8), ImageWriter.FormatVersion + 1);
        var e = Assert.Throws<ImageFormatException>(() => new ImageReader(new MemoryStream(image)));
        Assert.Contains("newer", e.Message);
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(8), uint.MaxValue);
        Assert.Throws<ImageFormatException>(() => new ImageReader(new MemoryStream(image)));
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(8), 0);
        Assert.Throws<ImageFormatException>(() => new ImageReader(new MemoryStream(image)));
    }

    [Fact]
    public void ForeignOrEmptyInput_IsAnError()
    {
        Assert.Throws<ImageFormatException>(() => new ImageReader(new MemoryStream()));
        Assert.Throws<ImageFormatException>(() => new ImageReader(new MemoryStream(Encoding.ASCII.GetBytes("\x7f" + "ELF\x02\x01\x01\0\0\0\0\0\0\0\0\0"))));
        var image = SampleImage();
        image[0] = (byte)'c';
        Assert.Throws<ImageFormatException>(() => new ImageReader(new MemoryStream(image)));
    }

    [Fact]
    public void ClaimedLengthAboveTheLimitIsAnErrorBeforeAllocating()
    {
        var image = SampleImage();
        BinaryPrimitives.WriteUInt64LittleEndian(image.AsSpan(12 + 8), ulong.MaxValue);
        var e = Assert.Throws<ImageFormatException>(() => ReadToEnd(image));
        Assert.Contains("claims", e.Message);
        BinaryPrimitives.WriteUInt64LittleEndian(image.AsSpan(12 + 8), (ulong)ImageReader.MaxRecordLength + 1);
        Assert.Throws<ImageFormatException>(() => ReadToEnd(image));
    }

    // ---------------------------------------------------------------- many skipped records

    private const string ChildEnv = "CKPT_TESTS_CHILD";
    private const int ManyOptionalRecords = 200_000;

    /// <summary>
    /// Runs <see cref="ManyConsecutiveOptionalRecords_Child"/> in a child process: ImageReader.Next loops over
    /// skipped records with stackalloc inside the loop, so the stack grows with every skipped record and a long
    /// enough run of them kills the process with a stack overflow (which no test can catch in-process).
    /// </summary>
    [Fact]
    public async Task ManyConsecutiveOptionalRecords_DoNotExhaustTheStack()
    {
        var ct = TestContext.Current.CancellationToken;
        string assembly = typeof(ImageFormatTests).Assembly.Location;
        // The test host normally runs under the dotnet muxer; use the same one for the child.
        string dotnet = Path.GetFileName(Environment.ProcessPath) == "dotnet" ? Environment.ProcessPath! : "dotnet";
        var psi = new ProcessStartInfo(dotnet) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "exec", assembly, "-method", $"{typeof(ImageFormatTests).FullName}.{nameof(ManyConsecutiveOptionalRecords_Child)}", "-explicit", "only", "-noLogo", "-noColor" })
            psi.ArgumentList.Add(a);
        psi.Environment[ChildEnv] = "1";
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync(ct);
        string output = await p.StandardOutput.ReadToEndAsync(ct);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(TimeSpan.FromMinutes(2));
        await p.WaitForExitAsync(timeout.Token);
        string errors = await err;
        Assert.True(p.ExitCode == 0, $"reading {ManyOptionalRecords} consecutive optional records on a 1 MiB stack failed, child exit code {p.ExitCode}:\n{output}\n{errors}");
        Assert.Matches(@"Total:\s*1,\s*Errors:\s*0,\s*Failed:\s*0,", output); // the child test ran, and passed
    }

    [Fact(Explicit = true)]
    public void ManyConsecutiveOptionalRecords_Child()
    {
        Assert.Equal("1", Environment.GetEnvironmentVariable(ChildEnv));
        var image = Image(w =>
        {
            for (int i = 0; i < ManyOptionalRecords; i++) w.Write((RecordKind)999, [], RecordFlags.Optional);
            w.Write(RecordKind.Process, [1]);
        });
        List<Rec>? recs = null;
        var t = new Thread(() => recs = ReadAll(image), 1 << 20);
        t.Start();
        t.Join();
        Assert.NotNull(recs);
        Assert.Equal(RecordKind.Process, Assert.Single(recs).Kind);
    }
}
