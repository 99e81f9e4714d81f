using System.Diagnostics;

namespace Ckpt.Engine;

/// <summary>The engine's log (the original design's logfd): errors and debug detail, with phase timings.</summary>
public sealed class Log
{
    private readonly TextWriter? _out;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly object _lock = new();
    public int Verbosity { get; }

    public static readonly Log None = new(null, 0);

    public Log(TextWriter? output, int verbosity) { _out = output; Verbosity = verbosity; }

    public bool Enabled(int level) => _out != null && level <= Verbosity;

    public void Write(int level, string message)
    {
        if (!Enabled(level)) return;
        lock (_lock)
        {
            string line = $"[{_clock.Elapsed.TotalMilliseconds,10:F3} ms] {message}";
            if (_held > 0) { _pending.AppendLine(line); return; }
            _out!.WriteLine(line);
            _out.Flush();
        }
    }

    private int _held;
    private readonly System.Text.StringBuilder _pending = new();

    /// <summary>
    /// Keeps lines in memory until the returned scope ends (then writes them): a log file in a directory
    /// the tree watches with inotify would otherwise queue an event per line while ckpt waits for the
    /// tree's inotify queues to be empty.
    /// </summary>
    public HeldScope Hold()
    {
        lock (_lock) _held++;
        return new HeldScope(this);
    }

    public readonly struct HeldScope(Log log) : IDisposable
    {
        public void Dispose()
        {
            lock (log._lock)
            {
                if (--log._held > 0 || log._out == null || log._pending.Length == 0) return;
                log._out.Write(log._pending);
                log._out.Flush();
                log._pending.Clear();
            }
        }
    }

    public void Info(string m) => Write(1, m);
    public void Debug(string m) => Write(2, m);

    /// <summary>ckpt's own garbage collections so far (a debug line): allocation the engine could spare shows here.</summary>
    public void GcSummary()
    {
        if (Enabled(2))
            Debug($"ckpt's garbage collections: {GC.CollectionCount(0)} gen0, {GC.CollectionCount(1)} gen1, {GC.CollectionCount(2)} gen2; paused {GC.GetTotalPauseDuration().TotalMilliseconds:F3} ms, {GC.GetTotalAllocatedBytes() / 1048576.0:F1} MiB allocated");
    }
    public void Error(string m) => Write(0, "error: " + m);

    /// <summary>Times a phase: <c>using (log.Phase("memory")) {...}</c>.</summary>
    public PhaseTimer Phase(string name) => new(this, name);

    public readonly struct PhaseTimer(Log log, string name) : IDisposable
    {
        private readonly long _start = Stopwatch.GetTimestamp(), _allocated = GC.GetAllocatedBytesForCurrentThread();
        public void Dispose() => log.Info($"phase {name}: {Stopwatch.GetElapsedTime(_start).TotalMilliseconds:F3} ms"
            + (log.Enabled(2) ? $", {(GC.GetAllocatedBytesForCurrentThread() - _allocated) >> 10} KiB allocated" : ""));
    }
}
