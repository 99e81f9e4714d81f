using Ckpt.Native;

namespace Ckpt.Tracing;

/// <summary>
/// System calls queued for one task and run together, with one ptrace round trip
/// (<see cref="TracedTask.InjectBatch"/>), when <see cref="Flush"/> is called. The batch owns an area of
/// the task's memory (<c>area</c>, <c>areaSize</c> bytes): data the calls point to (<see cref="AddData"/>)
/// is kept in ckpt and written at its start when the batch is flushed, the descriptors right after it.
/// Nothing else may rely on that area across a flush. Each call may carry a check that gets its result
/// after the flush, in order (it throws to fail); a call added with <see cref="AddChecked"/> stops the
/// batch at an error and throws a <see cref="SyscallException"/> naming it, like
/// <see cref="TracedTask.InjectChecked"/>. Calls are only run when flushed: whoever needs their effect
/// (or the results) flushes first.
/// </summary>
public sealed class SyscallBatch
{
    /// <summary>Where the routine sits in a trampoline page, after its <c>syscall; int3</c> gadget.</summary>
    public const int CodeOffset = 0x10;

    private readonly ulong _code, _area;
    private readonly int _areaSize;
    private readonly List<TracedTask.BatchCall> _calls = new();
    private readonly List<(string? Name, Action<long>? Check)> _checks = new();
    private byte[] _data = new byte[512];
    private int _dataLength;

    public TracedTask Task { get; }
    /// <summary>Calls waiting for the next flush.</summary>
    public int Count => _calls.Count;
    /// <summary>Flushes that ran calls, and the calls they ran (for the log).</summary>
    public int Flushes { get; private set; }
    public int CallsRun { get; private set; }

    /// <param name="code">Address of <see cref="TracedTask.BatchCode"/> in the task.</param>
    /// <param name="area">Writable memory of the task the batch may use whole when it is flushed.</param>
    public SyscallBatch(TracedTask task, ulong code, ulong area, int areaSize)
    {
        Task = task;
        _code = code;
        _area = area;
        _areaSize = areaSize;
    }

    /// <summary>The routine, written at <paramref name="codeAddr"/> of process <paramref name="pid"/> (executable memory).</summary>
    public static void Install(int pid, ulong codeAddr) => MemoryCalls.WriteRemote(pid, codeAddr, TracedTask.BatchCode);

    private static int Align(int n) => (n + 63) & ~63;

    private bool Fits(int calls, int dataBytes)
        => Align(_dataLength + dataBytes) + (_calls.Count + calls + 1) * TracedTask.BatchDescriptorSize <= _areaSize;

    /// <summary>Makes room for <paramref name="calls"/> more calls and <paramref name="dataBytes"/> of data (flushing if needed).</summary>
    public void Reserve(int calls, int dataBytes)
    {
        if (Fits(calls, dataBytes)) return;
        Flush();
        if (!Fits(calls, dataBytes)) throw new ArgumentException($"{calls} calls with {dataBytes} bytes of data do not fit a batch area of {_areaSize} bytes");
    }

    /// <summary>Bytes a queued call points to; returns their address in the task (valid once flushed). Reserve room first.</summary>
    public ulong AddData(ReadOnlySpan<byte> bytes)
    {
        if (!Fits(1, bytes.Length)) throw new InvalidOperationException("batch area full: Reserve before AddData");
        int at = (_dataLength + 7) & ~7;
        if (at + bytes.Length > _data.Length) Array.Resize(ref _data, Math.Max(_data.Length * 2, at + bytes.Length));
        bytes.CopyTo(_data.AsSpan(at));
        _dataLength = at + bytes.Length;
        return _area + (ulong)at;
    }

    /// <summary>
    /// Queues a call. <paramref name="stopOnError"/>: an error result ends the batch (later calls do not
    /// run). <paramref name="check"/> gets the result after the flush. A call without data flushes the
    /// batch first when it is full; one with data must have been given room by <see cref="Reserve"/>.
    /// </summary>
    public void Add(long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0,
        bool stopOnError = false, Action<long>? check = null, string? name = null)
    {
        if (!Fits(1, 0))
        {
            if (_dataLength > 0) throw new InvalidOperationException("batch area full: Reserve room for calls that point to data");
            Flush();
        }
        _calls.Add(new TracedTask.BatchCall(nr, a1, a2, a3, a4, a5, a6, stopOnError));
        _checks.Add((name, check));
    }

    /// <summary>Queues a call that stops the batch at an error and fails the flush with a <see cref="SyscallException"/> naming it.</summary>
    public void AddChecked(string name, long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0)
        => Add(nr, a1, a2, a3, a4, a5, a6, stopOnError: true, name: name);

    /// <summary>Runs the queued calls (nothing when none is queued), then their checks in order.</summary>
    public void Flush()
    {
        int n = _calls.Count;
        if (n == 0) return;
        var calls = _calls.ToArray();
        var checks = _checks.ToArray();
        ulong desc = _area + (ulong)Align(_dataLength);
        int dataLength = _dataLength;
        _calls.Clear();
        _checks.Clear();
        _dataLength = 0;
        if (dataLength > 0) MemoryCalls.WriteRemote(Task.Tid, _area, _data.AsSpan(0, dataLength));
        var results = new long[n];
        int done = Task.InjectBatch(_code, desc, calls, results);
        Flushes++;
        CallsRun += done;
        for (int i = 0; i < done; i++)
        {
            var (name, check) = checks[i];
            check?.Invoke(results[i]);
            if (calls[i].StopOnError && TracedTask.IsError(results[i]))
                throw new SyscallException($"{name ?? $"syscall {calls[i].Nr}"} (injected)", (int)-results[i], Task.Tid);
        }
    }

    /// <summary>Forgets the queued calls without running them.</summary>
    public void Clear()
    {
        _calls.Clear();
        _checks.Clear();
        _dataLength = 0;
    }
}
