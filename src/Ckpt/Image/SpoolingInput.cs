using Ckpt.Native;
using Microsoft.Win32.SafeHandles;

namespace Ckpt.Image;

/// <summary>
/// An image read from a pipe (standard input, a FIFO) that can be drained into an unnamed temporary file
/// on demand. <c>ckpt checkpoint PID --kill | ... | ckpt restart</c> on one machine needs it: the
/// restart needs the tree's pids as soon as it reads the Tree record, but the checkpoint frees them only
/// once the whole image is written, and it cannot write it while nobody reads the pipe. When a pid is
/// taken, <see cref="StartSpooling"/> has a thread copy the rest of the pipe into the file, so that the
/// checkpoint completes (and kills its tree); the reader goes on reading the same bytes, in order, from
/// the file. Reads never seek: the stream stays a stream.
/// </summary>
public sealed class SpoolingInput : Stream
{
    private readonly Stream _in;
    private readonly object _inLock = new(), _lock = new();
    private SafeFileHandle? _spool;
    private long _written, _read;
    private bool _atEnd;
    private Exception? _error;
    private Thread? _drainer;

    public SpoolingInput(Stream input) => _in = input;

    /// <summary>The rest of the input is being copied into the spool file.</summary>
    public bool Spooling => _spool != null;

    /// <summary>The whole input has been copied into the spool file (the writer closed the pipe).</summary>
    public bool AtEnd { get { lock (_lock) return _atEnd; } }

    /// <summary>Starts draining the rest of the input into an unnamed file in <paramref name="dir"/> (once).</summary>
    public void StartSpooling(string dir)
    {
        lock (_lock)
        {
            if (_spool != null) return;
            int fd = FileCalls.Open(dir, FileCalls.O_TMPFILE | FileCalls.O_RDWR | FileCalls.O_CLOEXEC, 0x180);
            if (fd < 0) throw SyscallException.Last($"open O_TMPFILE in {dir}", 0);
            _spool = new SafeFileHandle(fd, ownsHandle: true);
        }
        _drainer = new Thread(Drain) { Name = "ckpt-spool", IsBackground = true };
        _drainer.Start();
    }

    private void Drain()
    {
        var buf = GC.AllocateUninitializedArray<byte>(1 << 20);
        try
        {
            while (true)
            {
                int n;
                lock (_inLock) n = _in.Read(buf, 0, buf.Length);
                if (n <= 0) break;
                RandomAccess.Write(_spool!, buf.AsSpan(0, n), _written);   // (only this thread writes _written)
                lock (_lock) { _written += n; Monitor.PulseAll(_lock); }
            }
        }
        catch (Exception e) { lock (_lock) _error = e; }
        lock (_lock) { _atEnd = true; Monitor.PulseAll(_lock); }
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        if (buffer.IsEmpty) return 0;
        if (!Spooling)
            lock (_inLock)
                // spooling may have started while this thread waited for the lock: then the drainer reads
                if (!Spooling) return _in.Read(buffer);
        long at;
        int n;
        lock (_lock)
        {
            while (_read == _written && !_atEnd) Monitor.Wait(_lock);
            if (_read == _written)
            {
                if (_error != null) throw new IOException($"reading the image into a spool file failed: {_error.Message}", _error);
                return 0;
            }
            at = _read;
            n = (int)Math.Min(buffer.Length, _written - _read);
        }
        for (int off = 0; off < n;)
        {
            int r = RandomAccess.Read(_spool!, buffer[off..n], at + off);
            if (r <= 0) throw new IOException($"the spool file ended at {at + off} bytes; {_written} were written");
            off += r;
        }
        lock (_lock) _read += n;
        return n;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) { _spool?.Dispose(); _in.Dispose(); }
        base.Dispose(disposing);
    }

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
