namespace Ckpt.Engine;

/// <summary>
/// A first-in first-out queue between the engine's threads (image reader, page copier, image writer,
/// tracer) whose waits block at once instead of spinning. BlockingCollection, SemaphoreSlim and
/// ManualResetEventSlim spin (sched_yield) before they block: on a machine with as many busy threads
/// as CPUs, the spinning thread takes the CPU from the thread it waits for (measured: ~5% of a 1 GiB
/// restart's CPU time went to spinning). A wait spins only a few microseconds first, without yielding:
/// enough for a stream of small items (a process of 40000 small regions is 60000 records, and a sleep
/// and wake-up per record cost ~16 us each), too short to take the CPU from anyone.
/// </summary>
public sealed class HandoffQueue<T>
{
    private readonly Queue<T> _items = new();
    private readonly int _capacity;
    private volatile bool _completed;
    private volatile int _count;   // _items.Count, for the spin before the lock
    private const int SpinRounds = 20;

    /// <param name="capacity">Items queued at most; <see cref="Add"/> waits for room beyond that.</param>
    public HandoffQueue(int capacity = int.MaxValue)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _capacity = capacity;
    }

    /// <summary>Queues an item, waiting for room; throws <see cref="OperationCanceledException"/> when cancelled first.</summary>
    public void Add(T item, CancellationToken token = default)
    {
        for (int i = 0; i < SpinRounds && _count >= _capacity; i++) Thread.SpinWait(16);
        lock (_items)
        {
            if (_completed) throw new InvalidOperationException("the queue was completed");
            if (_items.Count >= _capacity) WaitUntil(() => _items.Count < _capacity, token);
            _items.Enqueue(item);
            _count = _items.Count;
            Monitor.PulseAll(_items);
        }
    }

    /// <summary>The next item, waiting for one; throws <see cref="InvalidOperationException"/> when the queue is completed and empty.</summary>
    public T Take(CancellationToken token = default)
        => TryTake(out var item, token) ? item : throw new InvalidOperationException("the queue was completed");

    /// <summary>The next item, waiting for one; false when the queue is completed and empty.</summary>
    public bool TryTake(out T item, CancellationToken token = default)
    {
        for (int i = 0; i < SpinRounds && _count == 0 && !_completed; i++) Thread.SpinWait(16);
        lock (_items)
        {
            if (_items.Count == 0 && !_completed) WaitUntil(() => _items.Count > 0 || _completed, token);
            return DequeueLocked(out item);
        }
    }

    /// <summary>The next item if one is queued, without waiting.</summary>
    public bool TryTakeNow(out T item)
    {
        lock (_items) return DequeueLocked(out item);
    }

    /// <summary>Takes the first item, if any, and wakes whoever waits for room (the lock is held).</summary>
    private bool DequeueLocked(out T item)
    {
        if (_items.Count == 0) { item = default!; return false; }
        item = _items.Dequeue();
        _count = _items.Count;
        Monitor.PulseAll(_items);
        return true;
    }

    /// <summary>No more items will come: takers get what is queued, then false.</summary>
    public void CompleteAdding()
    {
        lock (_items)
        {
            _completed = true;
            Monitor.PulseAll(_items);
        }
    }

    /// <summary>Waits (holding the lock on entry and exit) until <paramref name="ready"/> or cancellation.</summary>
    private void WaitUntil(Func<bool> ready, CancellationToken token)
    {
        // Unregister, not Dispose: Dispose waits for a callback running on another thread, which
        // waits for the lock held here
        var wake = token.CanBeCanceled ? token.Register(() => { lock (_items) Monitor.PulseAll(_items); }) : default;
        try
        {
            while (!ready())
            {
                token.ThrowIfCancellationRequested();
                Monitor.Wait(_items);
            }
        }
        finally { wake.Unregister(); }
    }
}

/// <summary>A one-way flag a thread waits on without spinning (see <see cref="HandoffQueue{T}"/>).</summary>
public sealed class Gate
{
    private readonly object _lock = new();
    private bool _open;

    public Gate(bool open = false) => _open = open;

    public void Open() { lock (_lock) { _open = true; Monitor.PulseAll(_lock); } }

    public void Close() { lock (_lock) _open = false; }

    public void Wait() { lock (_lock) while (!_open) Monitor.Wait(_lock); }
}
