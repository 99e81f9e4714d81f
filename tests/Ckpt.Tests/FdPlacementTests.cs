using Ckpt.Kinds;
using Ckpt.Native;
using Xunit;

namespace Ckpt.Tests;

/// <summary>
/// FdTable.Placements, run against a model of a process's fd table with an fd limit: every final number
/// ends up holding its description with its close-on-exec flag, nothing else stays open, and the table
/// never holds more fds than the limit allows (a process near its limit, every fd its own description,
/// failed at restart with EMFILE when the temporaries were first moved above the final numbers).
/// </summary>
public sealed class FdPlacementTests
{
    /// <summary>Applies the calls to a table (number -> description, close-on-exec) and checks each against the limit.</summary>
    private static Dictionary<int, (int Desc, bool Cloexec)> Apply(Dictionary<int, int> table, List<(int Fd, int Temp, int Flags)> calls, int limit)
    {
        var t = table.ToDictionary(kv => kv.Key, kv => (kv.Value, false));
        foreach (var (fd, temp, flags) in calls)
        {
            Assert.True(t.ContainsKey(temp), $"call on fd {temp}, which is not open");
            if (flags < 0) { t.Remove(temp); continue; }
            Assert.InRange(fd, 0, limit - 1);
            if (fd == temp) { t[fd] = (t[fd].Item1, flags == FileCalls.O_CLOEXEC); continue; }
            t[fd] = (t[temp].Item1, flags == FileCalls.O_CLOEXEC);
            Assert.True(t.Count <= limit, $"{t.Count} fds open, above the limit of {limit}");
        }
        return t;
    }

    /// <summary>
    /// Temporaries one per description at the lowest numbers (as the kernel gives them, beside the other
    /// fds), finals drawn at random, some descriptions at several numbers, some at none, ckpt's spare fds.
    /// </summary>
    [Theory]
    [InlineData(1, 50, 0)]
    [InlineData(2, 500, 1)]
    [InlineData(3, 2000, 3)]
    [InlineData(4, 11005, 0)]
    public void EveryFinalNumberHoldsItsDescription(int seed, int descriptions, int spares)
    {
        var rng = new Random(seed);
        var temps = Enumerable.Range(0, descriptions).ToHashSet();
        var others = Enumerable.Range(descriptions, spares).ToList();
        var entries = new List<(int Fd, bool Cloexec, int Temp)>();
        var finals = new HashSet<int>();
        static int Copies(int d) => d % 17 == 5 ? 0 : d % 11 == 0 ? 3 : 1;   // none (closed), dup'd, or one
        // dense finals (a process near its limit) for the large case, scattered ones otherwise
        int total = temps.Sum(Copies);
        int range = descriptions > 5000 ? total + 5 : total * 3;
        foreach (int d in temps)
        {
            for (int c = 0; c < Copies(d); c++)
            {
                int fd;
                do fd = rng.Next(range); while (!finals.Add(fd));
                entries.Add((fd, rng.Next(2) == 0, d));
            }
        }
        int limit = Math.Max(finals.Max(), descriptions + spares) + 3;
        var table = temps.Concat(others).ToDictionary(n => n, n => n);
        var calls = FdTable.Placements(entries, temps, others);
        var end = Apply(table, calls, limit);
        Assert.Equal(finals.Count, end.Count);
        foreach (var (fd, cloexec, d) in entries)
        {
            Assert.True(end.TryGetValue(fd, out var got), $"fd {fd} is not open");
            Assert.Equal(d, got.Desc);
            Assert.Equal(cloexec, got.Cloexec);
        }
    }

    /// <summary>Temporaries that sit on each other's final numbers (a cycle): resolved through one free number.</summary>
    [Fact]
    public void TemporariesOnEachOthersNumbers()
    {
        var temps = new HashSet<int> { 0, 1, 2 };
        var entries = new List<(int Fd, bool Cloexec, int Temp)> { (0, false, 1), (1, true, 2), (2, false, 0) };
        var calls = FdTable.Placements(entries, temps, []);
        var end = Apply(temps.ToDictionary(n => n, n => n), calls, limit: 4);
        Assert.Equal((1, false), end[0]);
        Assert.Equal((2, true), end[1]);
        Assert.Equal((0, false), end[2]);
        Assert.Equal(3, end.Count);
    }
}
