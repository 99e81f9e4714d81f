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
        Assert.False(t.Join(100));   // full: the second Add waits
        cts.Cancel();
        Assert.True(t.Join(5000));
        Assert.IsType<OperationCanceledException>(caught);
        Assert.True(q.TryTakeNow(out int v));
        Assert.Equal(1, v);
        Assert.False(q.TryTakeNow(out _));
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
