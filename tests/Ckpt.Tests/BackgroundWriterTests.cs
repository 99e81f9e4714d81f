using Ckpt.Image;
using Xunit;

namespace Ckpt.Tests;

/// <summary>The image writer's background mode (checkpoint writes on a thread of its own).</summary>
public class BackgroundWriterTests
{
    private static byte[] Sample(bool background, List<int>? returned = null)
    {
        var ms = new MemoryStream();
        var w = new ImageWriter(ms, bufferSize: 4096, background: background);
        var rnd = new Random(7);
        for (int i = 0; i < 200; i++)
        {
            var small = new byte[rnd.Next(0, 3000)];
            rnd.NextBytes(small);
            w.Write(RecordKind.Vma, small);
            var big = new byte[rnd.Next(1, 20000)];
            rnd.NextBytes(big);
            var head = new byte[] { 1, 2, 3, (byte)i };
            int n = i;
            // the caller's buffer is reused right after the call unless handed over (WriteOwned)
            w.WriteOwned(RecordKind.Pages, head, big, big.Length, ImageWriter.Checksum(RecordKind.Pages, head, big), () => returned?.Add(n));
            Array.Clear(small);
        }
        w.Finish();
        w.Dispose();
        return ms.ToArray();
    }

    [Fact]
    public void BackgroundStreamIsTheSameAsADirectOne()
    {
        var returned = new List<int>();
        var direct = Sample(background: false);
        var background = Sample(background: true, returned);
        Assert.Equal(direct, background);
        Assert.Equal(200, returned.Count);   // every handed-over buffer came back
        // and it reads back
        var r = new ImageReader(new MemoryStream(background));
        int records = 0;
        while (r.Next() != null) records++;
        Assert.Equal(400, records);
    }

    private sealed class FailingStream(int after) : Stream
    {
        private int _written;
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count)
        {
            _written += count;
            if (_written > after) throw new IOException("Broken pipe", 32);
        }
    }

    [Fact]
    public void AWriteErrorSurfacesOnTheCallersThread()
    {
        using var w = new ImageWriter(new FailingStream(10000), bufferSize: 4096, background: true);
        var e = Assert.Throws<IOException>(() =>
        {
            for (int i = 0; i < 1000; i++) w.Write(RecordKind.Vma, new byte[1000]);
            w.Flush();
        });
        Assert.Contains("Broken pipe", e.Message);
    }
}
