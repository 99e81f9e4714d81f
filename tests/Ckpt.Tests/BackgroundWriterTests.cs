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
            w.WriteOwned(RecordKind.Pages, head, big, ImageWriter.Checksum(RecordKind.Pages, head, big), () => returned?.Add(n));
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

    /// <summary>
    /// The same records into a file by position (after 100 bytes already there): each Pages record is
    /// placed, then written whole by another thread and settled, several at a time in reverse order.
    /// </summary>
    private static byte[] SamplePositional(out long offsetAfter)
    {
        string path = Path.Combine(Path.GetTempPath(), $"ckpt-positional-{Environment.ProcessId}");
        int fd = Ckpt.Native.FileCalls.Open(path, Ckpt.Native.FileCalls.O_RDWR | Ckpt.Native.FileCalls.O_CREAT | Ckpt.Native.FileCalls.O_TRUNC, 0x180);
        Assert.True(fd >= 0);
        try
        {
            Ckpt.Native.FileCalls.PwriteAll(fd, new byte[100], 0);
            Assert.Equal(100, Ckpt.Native.FileCalls.Lseek(fd, 100, 0));
            long reported = 0;
            var w = ImageWriter.Positional(fd, 4096, b => reported = b);
            var rnd = new Random(7);
            var pending = new List<(int Ticket, long At, byte[] Head, byte[] Data)>();
            void SettleAll()
            {
                // written by another thread, settled last first
                var t = new Thread(() =>
                {
                    foreach (var (_, at, head, data) in pending)
                    {
                        var hdr = new byte[ImageWriter.HeaderSize];
                        ImageWriter.Frame(hdr, RecordKind.Pages, head.Length + data.Length);
                        var sum = BitConverter.GetBytes(ImageWriter.Checksum(RecordKind.Pages, head, data));
                        Ckpt.Native.FileCalls.PwriteAll(fd, [.. hdr, .. head, .. data, .. sum], at);
                    }
                });
                t.Start();
                t.Join();
                for (int k = pending.Count - 1; k >= 0; k--)
                    w.Settle(pending[k].Ticket, ImageWriter.Checksum(RecordKind.Pages, pending[k].Head, pending[k].Data));
                pending.Clear();
            }
            for (int i = 0; i < 200; i++)
            {
                var small = new byte[rnd.Next(0, 3000)];
                rnd.NextBytes(small);
                w.Write(RecordKind.Vma, small);
                var big = new byte[rnd.Next(1, 20000)];
                rnd.NextBytes(big);
                var head = new byte[] { 1, 2, 3, (byte)i };
                long at = w.Reserve(RecordKind.Pages, head.Length, big.Length, out int ticket);
                pending.Add((ticket, at, head, big));
                if (i % 7 == 6) SettleAll();
            }
            SettleAll();
            w.Finish();
            Assert.Equal(w.BytesWritten, reported);
            w.Dispose();
            offsetAfter = Ckpt.Native.FileCalls.Lseek(fd, 0, 1);
            var all = File.ReadAllBytes(path);
            Assert.Equal(new byte[100], all[..100]);
            return all[100..];
        }
        finally
        {
            Ckpt.Native.FileCalls.Close(fd);
            File.Delete(path);
        }
    }

    [Fact]
    public void PositionalImageIsTheSameAsAStreamedOne()
    {
        var streamed = Sample(background: false);
        var positional = SamplePositional(out long offsetAfter);
        Assert.Equal(streamed, positional);
        Assert.Equal(100 + streamed.Length, offsetAfter);   // the file's offset is left after the image
    }

    [Fact]
    public void APositionalImageCannotFinishWithARecordUnsettled()
    {
        string path = Path.Combine(Path.GetTempPath(), $"ckpt-unsettled-{Environment.ProcessId}");
        int fd = Ckpt.Native.FileCalls.Open(path, Ckpt.Native.FileCalls.O_RDWR | Ckpt.Native.FileCalls.O_CREAT | Ckpt.Native.FileCalls.O_TRUNC, 0x180);
        try
        {
            var w = ImageWriter.Positional(fd, 4096, null);
            w.Reserve(RecordKind.Pages, 4, 4096, out _);
            w.Write(RecordKind.Vma, new byte[10]);
            Assert.Throws<InvalidOperationException>(w.Finish);
        }
        finally
        {
            Ckpt.Native.FileCalls.Close(fd);
            File.Delete(path);
        }
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
