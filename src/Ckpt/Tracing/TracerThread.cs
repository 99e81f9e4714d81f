using System.Runtime.ExceptionServices;

namespace Ckpt.Tracing;

/// <summary>
/// ptrace is per thread: every ptrace and waitpid call for a trace must come from the thread that
/// attached. The engine therefore runs whole operations (a checkpoint, a restart) on one dedicated OS
/// thread created here; nothing in the engine awaits or hops threads.
/// </summary>
public static class TracerThread
{
    [ThreadStatic] private static bool t_isTracer;

    public static bool IsCurrent => t_isTracer;

    public static T Run<T>(Func<T> body)
    {
        if (t_isTracer) return body();
        T? result = default;
        ExceptionDispatchInfo? error = null;
        var th = new Thread(() =>
        {
            t_isTracer = true;
            try { result = body(); }
            catch (Exception e) { error = ExceptionDispatchInfo.Capture(e); }
        }, 16 << 20) { Name = "ckpt-tracer", IsBackground = true };
        th.Start();
        th.Join();
        error?.Throw();
        return result!;
    }
}
