using System.Diagnostics;

namespace Ckpt.Cli;

/// <summary>Passes bytes through and, at most ten times a second, shows how many went by on stderr.</summary>
internal sealed class ProgressStream(Stream inner, string verb) : Stream
{
    private long _bytes, _lastShown;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private bool _shown;

    private void Count(int n) => Report(_bytes + n);

    /// <summary>The bytes gone by so far (for an image written without this stream).</summary>
    public void Report(long bytes)
    {
        _bytes = bytes;
        long now = _clock.ElapsedMilliseconds;
        if (now - _lastShown < 100) return;
        _lastShown = now;
        _shown = true;
        Console.Error.Write($"\rckpt: {verb} {_bytes / 1048576.0:F0} MiB ({_bytes / 1048576.0 / Math.Max(0.001, now / 1000.0):F0} MiB/s)   ");
    }

    /// <summary>Clears the progress line.</summary>
    public void Done()
    {
        if (_shown) Console.Error.Write("\r\x1b[K");
    }

    public override void Write(ReadOnlySpan<byte> buffer) { inner.Write(buffer); Count(buffer.Length); }
    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
    public override int Read(Span<byte> buffer) { int n = inner.Read(buffer); Count(n); return n; }
    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
    public override void Flush() => inner.Flush();
    public override bool CanRead => inner.CanRead;
    public override bool CanWrite => inner.CanWrite;
    public override bool CanSeek => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => _bytes; set => throw new NotSupportedException(); }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
}
