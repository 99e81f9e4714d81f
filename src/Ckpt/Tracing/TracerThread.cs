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

    private static Early? s_early;

    public static T Run<T>(Func<T> body)
    {
        if (t_isTracer) return body();
        if (Interlocked.Exchange(ref s_early, null) is { } early) return early.Run(body);
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

    /// <summary>
    /// Starts the tracer thread now, ahead of the operation, which <see cref="Run"/> then hands to it:
    /// making a thread costs a command ~0.7 ms, spent meanwhile on the thread that parses the command
    /// line (the machine has more than one CPU), and <paramref name="first"/> (e.g. what the command sets
    /// up for itself) runs on it first. The thread is made with the calling thread's scheduling policy
    /// and affinity, as <see cref="Run"/> would make it.
    /// </summary>
    public static void Prestart(Action? first)
    {
        var early = new Early();
        var th = new Thread(() =>
        {
            t_isTracer = true;
            try { first?.Invoke(); } catch (Exception) { /* first's work is done again where it is needed */ }
            early.Serve();
        }, 16 << 20) { Name = "ckpt-tracer", IsBackground = true };
        s_early = early;
        th.Start();
    }

    /// <summary>A tracer thread started ahead: it waits for the one operation it is given, and runs it.</summary>
    private sealed class Early
    {
        private readonly object _gate = new();
        private Func<object?>? _work;
        private object? _result;
        private ExceptionDispatchInfo? _error;
        private bool _done;

        public void Serve()
        {
            Func<object?> work;
            lock (_gate)
            {
                while (_work == null) Monitor.Wait(_gate);
                work = _work;
            }
            try { _result = work(); }
            catch (Exception e) { _error = ExceptionDispatchInfo.Capture(e); }
            lock (_gate)
            {
                _done = true;
                Monitor.PulseAll(_gate);
            }
        }

        public T Run<T>(Func<T> body)
        {
            lock (_gate)
            {
                _work = () => body();
                Monitor.PulseAll(_gate);
                while (!_done) Monitor.Wait(_gate);
            }
            _error?.Throw();
            return (T)_result!;
        }
    }

    /// <summary>
    /// Runs the calling thread as a real-time (SCHED_FIFO) thread until disposed, when it may: while the
    /// tracer lets the threads of a busy process go one by one, each one released preempts it otherwise,
    /// and on a machine with fewer CPUs than busy threads it then waits a time slice per thread
    /// (27 busy threads on 2 CPUs: ~200 ms to release them). Without the right to, nothing changes.
    /// </summary>
    public static unsafe Priority Unpreempted()
    {
        int prio = 1;
        return new Priority(Native.ProcessCalls.SchedSetScheduler(0, Native.ProcessCalls.SCHED_FIFO, &prio) == 0);
    }

    /// <summary>
    /// As <see cref="Unpreempted"/>, for a thread that may be real-time already (the command's main thread,
    /// raised as the command starts): left so when disposed. Dropped to the ordinary policy while a busy
    /// tree runs, the main thread of a checkpoint that leaves it running took up to 40 s more to exit (a
    /// time slice among its 1000 threads for each step), after a tree frozen for 0.3 s.
    /// </summary>
    /// <summary>
    /// Makes every thread of ckpt real-time, before a busy tree runs again: what ckpt has left to do then
    /// (helpers stopping, the tracer and writer ending, the process exiting: every thread must run to end)
    /// waited a time slice among the tree's threads at each step at the ordinary policy (seconds with 1000
    /// busy threads). Best effort: without the right to, nothing changes.
    /// </summary>
    public static unsafe void RaiseAll()
    {
        int prio = 1;
        foreach (var name in Native.FileCalls.ListDir("/proc/self/task") ?? [])
            if (int.TryParse(name, out int tid)) Native.ProcessCalls.SchedSetScheduler(tid, Native.ProcessCalls.SCHED_FIFO, &prio);
    }

    public static Priority UnpreemptedFromHere()
        => Native.ProcessCalls.SchedGetScheduler(0) == Native.ProcessCalls.SCHED_FIFO ? new Priority(false) : Unpreempted();

    public readonly struct Priority(bool raised) : IDisposable
    {
        public void Dispose()
        {
            if (raised) Ordinary();
        }
    }

    /// <summary>Puts the calling thread back at the ordinary scheduling policy (SCHED_OTHER).</summary>
    private static unsafe void Ordinary()
    {
        int prio = 0;
        Native.ProcessCalls.SchedSetScheduler(0, Native.ProcessCalls.SCHED_OTHER, &prio);
    }

    /// <summary>
    /// Starts a helper thread (page reading, image writing, read-ahead): it traces nothing, so it may run
    /// on any CPU the process may use, not only the one the tracer pins itself to (a thread inherits the
    /// affinity of the thread that creates it: helpers started by the tracer would share its one CPU),
    /// and at the ordinary scheduling policy whatever the tracer's (see <see cref="Unpreempted"/>).
    /// </summary>
    public static Thread StartHelper(string name, Action body)
    {
        var mask = Native.ProcessCalls.GetAffinity(Environment.ProcessId);   // the main thread's, never pinned
        var th = new Thread(() =>
        {
            Native.ProcessCalls.SetAffinity(0, mask);
            // (nor its real-time policy, while it has one: a helper works at the ordinary one)
            Ordinary();
            body();
        }) { Name = name, IsBackground = true };
        th.Start();
        return th;
    }
}
