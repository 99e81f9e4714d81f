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
        lock (_lock) { _out!.WriteLine($"[{_clock.Elapsed.TotalMilliseconds,10:F3} ms] {message}"); _out.Flush(); }
    }

    public void Info(string m) => Write(1, m);
    public void Debug(string m) => Write(2, m);
    public void Error(string m) => Write(0, "error: " + m);

    /// <summary>Times a phase: <c>using (log.Phase("memory")) {...}</c>.</summary>
    public PhaseTimer Phase(string name) => new(this, name);

    public readonly struct PhaseTimer(Log log, string name) : IDisposable
    {
        private readonly long _start = Stopwatch.GetTimestamp();
        public void Dispose() => log.Info($"phase {name}: {Stopwatch.GetElapsedTime(_start).TotalMilliseconds:F3} ms");
    }
}
