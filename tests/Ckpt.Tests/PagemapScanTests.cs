using Ckpt.Kinds;
using Ckpt.Native;
using Ckpt.Proc;
using Xunit;

namespace Ckpt.Tests;

/// <summary>
/// The runs of pages a checkpoint saves, found by the kernel (PAGEMAP_SCAN) and by reading the pagemap
/// entry by entry, on memory of this process laid out for the purpose: they agree, except that pages
/// mapped to the shared zero page are not saved by the scan. (A kernel may have no shared zero page, as a
/// PVM guest booted with pvm_no_zero_page=1: a read of untouched memory then gets a page of its own, which
/// both save.)
/// </summary>
public unsafe class PagemapScanTests
{
    private const int Page = 4096;

    private static (List<(ulong, int)> Scanned, List<(ulong, int)> Read) Both(ulong start, ulong end, MemoryRegion.Backing b)
    {
        var v = ProcMaps.ReadSmaps(Environment.ProcessId).Single(x => x.Start <= start && end <= x.End);
        v = new VmaInfo { Start = start, End = end, Path = v.Path, Inode = v.Inode, RssKb = v.RssKb, SwapKb = v.SwapKb };
        using var pagemap = File.OpenHandle($"/proc/{Environment.ProcessId}/pagemap", FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        var scanned = new List<(ulong, int)>();
        Assert.True(MemoryRegion.ScannedRuns(pagemap, v, b, scanned), "PAGEMAP_SCAN is missing on this kernel");
        return (scanned, MemoryRegion.ReadRuns(pagemap, v, b, new byte[8192 * 8]));
    }

    /// <summary>Whether the present page at addr is the shared zero page: present but not mapped exclusively
    /// (pagemap bit 56), which a page of this process's own always is.</summary>
    private static bool SharedZeroPage(ulong addr)
    {
        using var pagemap = new FileStream("/proc/self/pagemap", FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 0);
        var entry = new byte[8];
        pagemap.Position = (long)(addr / Page * 8);
        pagemap.ReadExactly(entry);
        ulong e = BitConverter.ToUInt64(entry);
        Assert.True((e & (1UL << 63)) != 0, "the page read is not present");
        return (e & (1UL << 56)) == 0;
    }

    [Fact]
    public void AnonymousRunsAgreeAndZeroPagesAreLeftOut()
    {
        const int n = 700;
        nint p = MemoryCalls.Mmap(0, n * Page, MemoryCalls.PROT_READ | MemoryCalls.PROT_WRITE, MemoryCalls.MAP_PRIVATE | MemoryCalls.MAP_ANONYMOUS, -1, 0);
        Assert.NotEqual(-1, p);
        try
        {
            byte* b = (byte*)p;
            foreach (int i in Enumerable.Range(0, 10).Concat([20]).Concat(Enumerable.Range(30, 300))) b[i * Page] = 1;
            int sum = 0;
            for (int i = 400; i < 406; i++) sum += b[i * Page];   // read only: the zero page
            Assert.Equal(0, sum);
            ulong a = (ulong)p;
            var (scanned, read) = Both(a, a + n * Page, MemoryRegion.Backing.AnonPrivate);
            var expected = new List<(ulong, int)> { (a, 10), (a + 20 * Page, 1), (a + 30 * Page, 256), (a + 286 * Page, 44) };
            Assert.Equal(SharedZeroPage(a + 400 * Page) ? expected : expected.Append((a + 400 * Page, 6)).ToList(), scanned);
            Assert.Equal(expected.Append((a + 400 * Page, 6)).ToList(), read);
        }
        finally { MemoryCalls.Munmap(p, n * Page); }
    }

    [Fact]
    public void PrivateFileMappingsSaveOnlyWrittenPages()
    {
        string path = Path.Combine(Path.GetTempPath(), $"ckpt-pagemap-{Environment.ProcessId}");
        File.WriteAllBytes(path, new byte[16 * Page]);
        try
        {
            using var f = File.OpenHandle(path);
            nint p = MemoryCalls.Mmap(0, 16 * Page, MemoryCalls.PROT_READ | MemoryCalls.PROT_WRITE, MemoryCalls.MAP_PRIVATE, (int)f.DangerousGetHandle(), 0);
            Assert.NotEqual(-1, p);
            try
            {
                byte* b = (byte*)p;
                int sum = 0;
                for (int i = 0; i < 16; i++) sum += b[i * Page];   // every page of the file mapped
                b[3 * Page] = 1; b[7 * Page] = 2; b[8 * Page] = 3;  // copies of three
                ulong a = (ulong)p;
                var (scanned, read) = Both(a, a + 16 * Page, MemoryRegion.Backing.FilePrivate);
                var expected = new List<(ulong, int)> { (a + 3 * Page, 1), (a + 7 * Page, 2) };
                Assert.Equal(expected, scanned);
                Assert.Equal(expected, read);
            }
            finally { MemoryCalls.Munmap(p, 16 * Page); }
        }
        finally { File.Delete(path); }
    }
}

/// <summary>How the runs of a region are cut into Pages records.</summary>
public class PageChunkTests
{
    private const ulong Page = 4096;

    [Fact]
    public void RunsAreSplitToFillEachChunkAndNoChunkIsLarger()
    {
        var runs = new List<(ulong, int)> { (0x10000, 100), (0x100000, 30), (0x200000, 3) };
        var chunks = new List<List<(ulong Addr, int Pages)>>();
        MemoryRegion.CutChunks(runs, chunks, 64);
        Assert.Equal([64, 64, 5], chunks.Select(c => c.Sum(r => r.Pages)));
        Assert.Equal([(0x10000UL, 64)], chunks[0]);
        Assert.Equal([(0x10000 + 64 * Page, 36), (0x100000UL, 28)], chunks[1]);
        Assert.Equal([(0x100000 + 28 * Page, 2), (0x200000UL, 3)], chunks[2]);
        // every page once, in order
        var pages = chunks.SelectMany(c => c).SelectMany(r => Enumerable.Range(0, r.Pages).Select(i => r.Addr + (ulong)i * Page)).ToList();
        var want = runs.SelectMany(r => Enumerable.Range(0, r.Item2).Select(i => r.Item1 + (ulong)i * Page)).ToList();
        Assert.Equal(want, pages);
    }

    [Fact]
    public void AChunkHoldsAtMostIovMaxRuns()
    {
        var runs = Enumerable.Range(0, 2500).Select(i => (0x10000UL + (ulong)i * 2 * Page, 1)).ToList();
        var chunks = new List<List<(ulong Addr, int Pages)>>();
        MemoryRegion.CutChunks(runs, chunks, 256);
        Assert.All(chunks, c => Assert.True(c.Count <= MemoryRegion.MaxRunsPerChunk && c.Sum(r => r.Pages) <= 256));
        Assert.Equal(2500, chunks.Sum(c => c.Count));
    }
}
