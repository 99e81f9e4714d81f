using Ckpt.Engine;
using Xunit;

namespace Ckpt.Tests;

public class HandoffQueueTests
{
    [Fact]
    public void ItemsComeOutInOrderAcrossThreads()
    {
        var q = new HandoffQueue<int>(capacity: 2);
        var producer = new Thread(() => { for (int i = 0; i < 10_000; i++) q.Add(i, TestContext.Current.CancellationToken); q.CompleteAdding(); });
        producer.Start();
        int expected = 0;
        while (q.TryTake(out int v, TestContext.Current.CancellationToken)) Assert.Equal(expected++, v);
        producer.Join();
        Assert.Equal(10_000, expected);
    }

    [Fact]
    public void AddWaitsForRoomAndCancellationEndsTheWait()
    {
        var q = new HandoffQueue<int>(capacity: 1);
        q.Add(1, TestContext.Current.CancellationToken);
        using var cts = new CancellationTokenSource();
        Exception? caught = null;
        var t = new Thread(() => { try { q.Add(2, cts.Token); } catch (Exception e) { caught = e; } });
        t.Start();
        Blocked(t);
        Assert.False(t.Join(100));   // full: the second Add waits
        cts.Cancel();
        Assert.True(t.Join(5000));
        Assert.IsType<OperationCanceledException>(caught);
        Assert.True(q.TryTakeNow(out int v));
        Assert.Equal(1, v);
        Assert.False(q.TryTakeNow(out _));
    }

    /// <summary>Waits until the thread blocks (in the queue's wait): a thread started on a busy machine may not have run yet.</summary>
    private static void Blocked(Thread t)
    {
        var until = DateTime.UtcNow.AddSeconds(10);
        while ((t.ThreadState & ThreadState.WaitSleepJoin) == 0 && t.IsAlive && DateTime.UtcNow < until) Thread.Sleep(1);
    }

    [Fact]
    public void WeightsCountAgainstTheCapacityAndAFullQueueDrainsToHalfBeforeTheAdderGoesOn()
    {
        // capacity 8: a "large" item (negative) weighs 4, a small one 1
        var q = new HandoffQueue<int>(capacity: 8, weight: x => x < 0 ? 4 : 1);
        var ct = TestContext.Current.CancellationToken;
        q.Add(-1, ct);
        q.Add(-2, ct);   // 8 of 8
        var added = new List<int>();
        var t = new Thread(() => { q.Add(3, ct); lock (added) added.Add(3); });
        t.Start();
        Blocked(t);
        Assert.False(t.Join(100));                  // full: waits
        Assert.Equal(-1, q.Take(ct));               // 4 of 8: room for it, and down to half
        Assert.True(t.Join(5000));
        Assert.Equal(-2, q.Take(ct));
        Assert.Equal(3, q.Take(ct));
        // eight small ones fill it; the ninth waits until it is down to four, not only until one left
        for (int i = 0; i < 8; i++) q.Add(i, ct);
        var ninth = new Thread(() => q.Add(8, ct));
        ninth.Start();
        Blocked(ninth);   // (an adder that comes once one item left finds room: only one that found it full waits for half)
        for (int i = 0; i < 3; i++) { Assert.Equal(i, q.Take(ct)); Assert.False(ninth.Join(50)); }
        Assert.Equal(3, q.Take(ct));                // 4 of 8
        Assert.True(ninth.Join(5000));
        for (int i = 4; i <= 8; i++) Assert.Equal(i, q.Take(ct));
        Assert.False(q.TryTakeNow(out _));
    }

    [Fact]
    public void ManyItemsOfMixedWeightsComeOutInOrderAcrossThreads()
    {
        var q = new HandoffQueue<int>(capacity: 64, weight: x => x % 10 == 0 ? 32 : 1);
        var producer = new Thread(() => { for (int i = 0; i < 20_000; i++) q.Add(i, TestContext.Current.CancellationToken); q.CompleteAdding(); });
        producer.Start();
        int expected = 0;
        while (q.TryTake(out int v, TestContext.Current.CancellationToken)) Assert.Equal(expected++, v);
        producer.Join();
        Assert.Equal(20_000, expected);
    }

    [Fact]
    public void TakeOnACompletedEmptyQueueFails()
    {
        var q = new HandoffQueue<string>();
        q.Add("a", TestContext.Current.CancellationToken);
        q.CompleteAdding();
        Assert.Equal("a", q.Take(TestContext.Current.CancellationToken));
        Assert.Throws<InvalidOperationException>(() => q.Take(TestContext.Current.CancellationToken));
        Assert.Throws<InvalidOperationException>(() => q.Add("b", TestContext.Current.CancellationToken));
    }

    [Fact]
    public void GateReleasesEveryWaiter()
    {
        var g = new Gate();
        int passed = 0;
        var ts = Enumerable.Range(0, 3).Select(_ => new Thread(() => { g.Wait(); Interlocked.Increment(ref passed); })).ToList();
        ts.ForEach(t => t.Start());
        Thread.Sleep(50);
        Assert.Equal(0, Volatile.Read(ref passed));
        g.Open();
        ts.ForEach(t => Assert.True(t.Join(5000)));
        Assert.Equal(3, passed);
    }
}
