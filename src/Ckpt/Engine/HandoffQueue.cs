namespace Ckpt.Engine;

/// <summary>
/// A first-in first-out queue between the engine's threads (image reader, page copier, image writer,
/// tracer) whose waits block at once instead of spinning, and wake a waiter only when it can go on.
/// BlockingCollection, SemaphoreSlim and ManualResetEventSlim spin (sched_yield) before they block: on a
/// machine with as many busy threads as CPUs, the spinning thread takes the CPU from the thread it waits
/// for. Waking is what costs most here (a sleep and a wake-up, ~15-30 us on a virtual machine): an adder
/// that found the queue full sleeps until it is down to half its capacity (<see cref="LowWater"/>), not
/// until the first item leaves, so that a producer faster than its consumer fills it in bursts, and
/// nobody is signalled who is not waiting. Items may weigh more than one (<c>weight</c>): the capacity
/// is in weight, so that a queue can hold many small items or a few large ones.
/// </summary>
public sealed class HandoffQueue<T>
{
    private readonly Queue<T> _items = new();
    private readonly int _capacity;
    private readonly Func<T, int>? _weight;
    private int _queued;            // the weight of the items queued
    private int _addersWaiting, _takersWaiting;
    private bool _completed;

    /// <param name="capacity">Weight queued at most; <see cref="Add"/> waits for room beyond that.</param>
    /// <param name="weight">An item's weight (1 to <paramref name="capacity"/>); 1 each when null.</param>
    public HandoffQueue(int capacity = int.MaxValue, Func<T, int>? weight = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _capacity = capacity;
        _weight = weight;
    }

    /// <summary>The weight an adder that found the queue full waits for it to come down to.</summary>
    private int LowWater => _capacity / 2;

    private int WeightOf(T item) => _weight == null ? 1 : Math.Clamp(_weight(item), 1, _capacity);

    /// <summary>Queues an item, waiting for room; throws <see cref="OperationCanceledException"/> when cancelled first.</summary>
    public void Add(T item, CancellationToken token = default)
    {
        int w = WeightOf(item);
        lock (_items)
        {
            if (_completed) throw new InvalidOperationException("the queue was completed");
            if (_queued + w > _capacity)
            {
                _addersWaiting++;
                try { WaitUntil(() => _queued + w <= _capacity && _queued <= LowWater, token); }
                finally { _addersWaiting--; }
            }
            _items.Enqueue(item);
            _queued += w;
            if (_takersWaiting > 0) Monitor.PulseAll(_items);
        }
    }

    /// <summary>The next item, waiting for one; throws <see cref="InvalidOperationException"/> when the queue is completed and empty.</summary>
    public T Take(CancellationToken token = default)
        => TryTake(out var item, token) ? item : throw new InvalidOperationException("the queue was completed");

    /// <summary>The next item, waiting for one; false when the queue is completed and empty.</summary>
    public bool TryTake(out T item, CancellationToken token = default)
    {
        lock (_items)
        {
            if (_items.Count == 0 && !_completed)
            {
                _takersWaiting++;
                try { WaitUntil(() => _items.Count > 0 || _completed, token); }
                finally { _takersWaiting--; }
            }
            return DequeueLocked(out item);
        }
    }

    /// <summary>The next item if one is queued, without waiting.</summary>
    public bool TryTakeNow(out T item)
    {
        lock (_items) return DequeueLocked(out item);
    }

    /// <summary>Takes the first item, if any, and wakes an adder waiting for room once there is (the lock is held).</summary>
    private bool DequeueLocked(out T item)
    {
        if (_items.Count == 0) { item = default!; return false; }
        item = _items.Dequeue();
        _queued -= WeightOf(item);
        if (_addersWaiting > 0 && _queued <= LowWater) Monitor.PulseAll(_items);
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
