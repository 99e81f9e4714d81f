using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>
/// Memory regions (VMAs) and their pages. A Vma record describes one region (range, protection, backing,
/// file identity, madvise flags, how many pages follow); Pages records that follow it carry the pages
/// that hold data, in chunks: a run count, the runs (address, page count), then the page contents.
/// Anonymous regions save their present pages; private file regions only the pages that were written
/// (copy-on-write, no longer file pages); shared file regions none (the data is in the file).
/// </summary>
public sealed unsafe class MemoryRegion : IStateKind
{
    public static readonly MemoryRegion Instance = new();
    public string Name => "memory";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.Vma, RecordKind.Pages];
    public int FinishOrder => 10;

    public const int PageSize = 4096;
    public const int ChunkPages = 256;            // 1 MiB of pages per Pages record at most (the buffers of both sides are fresh memory: small ones are ready sooner)
    public const int MaxRunsPerChunk = 1024;      // IOV_MAX

    /// <summary>
    /// How a region is mapped. ObjectShared / ObjectPrivate: a mapping of a memory object (memfd, shared
    /// anonymous memory, deleted file; <see cref="MemoryObject"/>), named by the Vma's object field.
    /// AnonShared is only read from older images (shared anonymous memory is now a memory object).
    /// SysvShm: an attach of the SysV segment (<see cref="Kinds.SysvShm"/>) named by the object field.
    /// </summary>
    public enum Backing : byte { AnonPrivate = 1, AnonShared = 2, FilePrivate = 3, FileShared = 4, Vdso = 5, ObjectShared = 6, ObjectPrivate = 7, SysvShm = 8, AioRing = 9, HugetlbPrivate = 10 }

    /// <summary>The maps path of anonymous memory on huge pages (MAP_HUGETLB): a file of the kernel's internal hugetlbfs.</summary>
    public const string HugetlbAnonPath = "/anon_hugepage (deleted)";

    [Flags]
    public enum Advice : uint { None = 0, DontDump = 1, DontFork = 2, WipeOnFork = 4, HugePage = 8, NoHugePage = 16, Mergeable = 32, Locked = 64, LockOnFault = 128, Sequential = 256, Random = 512, Droppable = 1024 }

    /// <summary>VmFlags restored by madvise (Madv), or by mlock2 in Finish (Madv -1: lo, lf).</summary>
    private static readonly (string Flag, Advice Advice, int Madv)[] AdviceMap =
    [
        ("dd", Advice.DontDump, 16), ("dc", Advice.DontFork, 10), ("wf", Advice.WipeOnFork, 18),
        ("hg", Advice.HugePage, 14), ("nh", Advice.NoHugePage, 15), ("mg", Advice.Mergeable, 12),
        ("lo", Advice.Locked, -1), ("lf", Advice.LockOnFault, -1), ("sr", Advice.Sequential, 2), ("rr", Advice.Random, 1),
        // MAP_DROPPABLE (glibc's getrandom state): a kind of mapping, made so; its pages may be dropped
        // at any time, and are not saved when the flags are known before the pages are planned
        ("dp", Advice.Droppable, -1),
    ];

    // ---------------------------------------------------------------- checkpoint

    public void Checkpoint(CheckpointContext ctx)
    {
        // (written by position, chunks wait for their turn in their reading thread: more of them keep both threads busy)
        var prep = ctx.Existing<Prepared>() ?? Prepare(ctx, ctx.Image.CanReserve ? PageCopier.PositionalBuffers : PageCopier.Buffers);
        try
        {
            // the regions' flags come from smaps, whose read walks every page (~20 ms per GiB): read here,
            // while the copier threads already read the pages
            if (!ctx.VmFlagsKnown) ReadVmFlags(ctx);
            // the pages: a reader thread pulls chunks out of the target and checksums them while this
            // thread writes the records, in order
            var copier = prep.Copier;
            var tickets = ctx.Image.CanReserve ? new int[copier.Count] : [];
            foreach (var (v, backing, pages, huge, first, n, inherited) in prep.Plan)
            {
                ctx.ThrowIfCancelled();
                // a memory object is written (once) before the first region that maps it
                uint obj = backing switch
                {
                    Backing.ObjectShared or Backing.ObjectPrivate => MemoryObject.SaveMapped(ctx, v),
                    Backing.SysvShm => SysvShm.SaveMapped(ctx, v),
                    _ => 0,
                };
                WriteVma(ctx, v, backing, pages, obj, huge, prep.Guards.GetValueOrDefault(v.Start), inherited);
                if (ctx.Image.CanReserve)
                {
                    // into a file, each chunk's record is written by the thread that reads it, at the place
                    // taken for it here (its checksum goes into the stream's once known: Complete)
                    for (int i = first; i < first + n; i++)
                        copier.Place(i, ctx.Image.Reserve(RecordKind.Pages, copier.HeadLength(i), copier.DataLength(i), out tickets[i]));
                    continue;
                }
                for (int i = 0; i < n; i++)
                {
                    // the chunk's pages go to the output without a copy; the chunk comes back once written
                    var c = copier.Take(first + i);
                    ctx.Image.WriteOwned(RecordKind.Pages, c.Head.AsSpan(0, c.HeadLength), c.Data.Memory[..c.DataLength], c.Checksum, () => copier.Return(c));
                }
            }
            copier.Complete(ctx.Image, tickets);
        }
        finally { prep.Dispose(); }
        // the next process's pages are read meanwhile: while this thread saves the rest of this process
        // and the first kinds of the next one (a tree of small processes left a CPU idle a third of the time)
        var all = ctx.Session.Processes;
        int at = all.IndexOf(ctx);
        if (at >= 0 && at + 1 < all.Count && all[at + 1].Existing<Prepared>() == null) Prepare(all[at + 1], PrefetchBuffers);
    }

    /// <summary>
    /// The regions of a large process are read from /proc/PID/maps at the freeze, without their flags,
    /// when PAGEMAP_SCAN finds the pages to save (smaps' resident sizes are then not needed): smaps, whose
    /// read walks every page (~20 ms per GiB), is read later, while the page readers run
    /// (<see cref="ReadVmFlags"/>). A small process's smaps is read at once: there is nothing to overlap
    /// it with, and a tree of small processes would read each twice.
    /// </summary>
    public static List<VmaInfo> ReadRegions(CheckpointContext ctx)
    {
        ctx.VmFlagsKnown = !PagemapScanWorks || ResidentPages(ctx.Pid) < LateSmapsPages;
        return ctx.VmFlagsKnown ? ProcMaps.ReadSmaps(ctx.Pid) : ProcMaps.ReadMaps(ctx.Pid);
    }

    /// <summary>Processes with fewer resident pages than this have their smaps read at the freeze.</summary>
    private const long LateSmapsPages = 16384;   // 64 MiB

    /// <summary>Resident pages (field 24 of /proc/PID/stat, rss); 0 when it cannot be read.</summary>
    private static long ResidentPages(int pid)
    {
        try { return long.TryParse(ProcStat.Read(pid).Field(24), out long n) ? n : 0; }
        catch (IOException) { return 0; }
    }

    /// <summary>Fills the regions' VmFlags from /proc/PID/smaps (the tree is frozen: only ckpt's own scratch mapping is new).</summary>
    internal static void ReadVmFlags(CheckpointContext ctx)
    {
        var bad = TakeVmFlags(ctx.Vmas, ProcMaps.ReadSmaps(ctx.Pid));
        if (bad != null) throw new InvalidOperationException($"pid {ctx.Pid}: region {bad} changed while the process was frozen (not found in smaps)");
        ctx.VmFlagsKnown = true;
    }

    /// <summary>
    /// Gives each region of <paramref name="maps"/> the VmFlags of the <paramref name="smaps"/> region holding
    /// it: the same regions in the same order, except that one may have merged with ckpt's scratch mapping
    /// next to it (same flags, or it would not have merged). Returns the first region not found, else null.
    /// </summary>
    internal static VmaInfo? TakeVmFlags(List<VmaInfo> maps, List<VmaInfo> smaps)
    {
        int j = 0;
        foreach (var v in maps)
        {
            while (j < smaps.Count && smaps[j].End <= v.Start) j++;
            if (j == smaps.Count || smaps[j].Start > v.Start || smaps[j].End < v.End) return v;
            v.VmFlags = smaps[j].VmFlags;
        }
        return null;
    }

    /// <summary>PAGEMAP_SCAN works here (kernel 6.7 and later); else the pagemap is read entry by entry. Null: not tried yet.</summary>
    private static bool? s_scanWorks;
    /// <summary>PAGEMAP_SCAN knows the guard category (Linux 6.14); cleared at the first EINVAL.</summary>
    private static bool s_scanGuards = true;

    /// <summary>Whether this kernel has PAGEMAP_SCAN (6.7 and later), tried once on ckpt's own pagemap.</summary>
    private static bool PagemapScanWorks
    {
        get
        {
            if (s_scanWorks is bool known) return known;
            using var pagemap = new FileStream("/proc/self/pagemap", FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 0);
            Span<PageRegion> one = stackalloc PageRegion[1];
            ulong page;
            fixed (PageRegion* at = one) page = (ulong)at & ~(ulong)(PageSize - 1);
            long n = MemoryCalls.PagemapScan((int)pagemap.SafeFileHandle.DangerousGetHandle(), page, page + PageSize, one, 0, 0,
                MemoryCalls.PAGE_IS_PRESENT, out _);
            s_scanWorks = n >= 0;
            return n >= 0;
        }
    }

    /// <summary>Page buffers of a copier started ahead of its process's turn.</summary>
    private const int PrefetchBuffers = 6;

    /// <summary>A process's plan (its regions with the runs of pages saved, cut into chunks) and the copier reading them.</summary>
    private sealed class Prepared : IDisposable
    {
        public required List<(VmaInfo Vma, Backing Backing, long Pages, List<(ulong Addr, uint Blocks)> Huge, int FirstChunk, int Chunks, List<(ulong Addr, int Pages)> Inherited)> Plan { get; init; }
        public required PageCopier Copier { get; init; }
        public required CheckpointContext Owner { get; init; }
        /// <summary>Guard pages (MADV_GUARD_INSTALL) of each region, by its start: installed again at restart.</summary>
        public required Dictionary<ulong, List<(ulong Addr, int Pages)>> Guards { get; init; }
        public void Dispose() { Copier.Dispose(); Owner.Forget<Prepared>(); }
    }

    /// <summary>Stops a copier started ahead for a process whose turn did not come (the checkpoint failed).</summary>
    public static void EndCheckpoint(CheckpointSession s)
    {
        foreach (var ctx in s.Processes) ctx.Existing<Prepared>()?.Dispose();
    }

    [ThreadStatic] private static byte[]? t_pagemapBuffer;

    /// <summary>Plans the pages of a process and starts reading them.</summary>
    private static Prepared Prepare(CheckpointContext ctx, int buffers)
    {
        var plan = new List<(VmaInfo Vma, Backing Backing, long Pages, List<(ulong Addr, uint Blocks)> Huge, int FirstChunk, int Chunks, List<(ulong Addr, int Pages)> Inherited)>();
        var chunks = new List<List<(ulong Addr, int Pages)>>();
        long tPlan = System.Diagnostics.Stopwatch.GetTimestamp();
        var pagemapBuffer = t_pagemapBuffer ??= new byte[PagemapBatch * 8];   // one buffer for every region (and process)
        var found = new List<(VmaInfo Vma, Backing Backing, List<(ulong Addr, int Pages)> Runs, List<(ulong Addr, int Pages)> Inherited)>();
        var guards = new Dictionary<ulong, List<(ulong Addr, int Pages)>>();
        long total = 0, shared = 0;
        // forked late at restart (ProcessTree.LateForkable): pages still shared with the parent are inherited from it
        var parent = ctx.Session.Existing<ProcessTree.LateForks>()?.Pids.Contains(ctx.ProcessId) == true
            ? ctx.Session.Find(ctx.Session.Tree.First(e => e.Pid == ctx.ProcessId).PPid) : null;
        Dictionary<(ulong, ulong), VmaInfo>? theirs = null;
        // (handles, not FileStreams: a FileStream's handle, asked for, costs an lseek to agree with its position)
        SafeFileHandle? theirPagemap = null;
        // pages shared copy on write: in a tree, or with the parent of a lone process that runs the same
        // program (a worker checkpointed without its master)
        bool multi = ctx.Session.Tree.Count > 1 || ctx.Session.State<ParentSharing>().SameProgram(ctx.Session.Tree[0]);
        var sharedRanges = new List<(ulong Start, ulong End)>();
        if (parent != null)
        {
            if (!ctx.VmFlagsKnown) ReadVmFlags(ctx);
            if (!parent.VmFlagsKnown) ReadVmFlags(parent);
            theirs = parent.Vmas.ToDictionary(v => (v.Start, v.End));
            theirPagemap = File.OpenHandle($"/proc/{parent.Pid}/pagemap", FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        }
        using (theirPagemap)
        using (var pagemap = File.OpenHandle($"/proc/{ctx.Pid}/pagemap", FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
        {
            var allGuards = GuardsOfEmptyRegions(pagemap, ctx.Vmas);
            int nextGuard = 0;
            foreach (var v in ctx.Vmas)
            {
                if (v.Path == "[vsyscall]") continue;
                var backing = Classify(ctx.Pid, v, ctx.Log);
                var g = new List<(ulong Addr, int Pages)>();
                var runs = backing is Backing.FileShared or Backing.ObjectShared or Backing.SysvShm or Backing.Vdso ? [] : PresentRuns(pagemap, v, backing, pagemapBuffer, g, allGuards != null);
                if (allGuards != null && IsEmpty(v, backing))
                {
                    // its guard pages, from the scan of every empty region at once
                    // (the scan joins the guard pages of adjoining regions into one run: cut at the region's ends)
                    static ulong GuardEnd((ulong Addr, int Pages) x) => x.Addr + (ulong)x.Pages * PageSize;
                    while (nextGuard < allGuards.Count && GuardEnd(allGuards[nextGuard]) <= v.Start) nextGuard++;
                    for (int k = nextGuard; k < allGuards.Count && allGuards[k].Addr < v.End; k++)
                    {
                        ulong ga = Math.Max(allGuards[k].Addr, v.Start), ge = Math.Min(GuardEnd(allGuards[k]), v.End);
                        g.Add((ga, (int)((ge - ga) / PageSize)));
                    }
                }
                if (g.Count > 0) guards[v.Start] = g;
                if (ctx.VmFlagsKnown && v.VmFlags.Contains("dp")) runs = [];   // droppable: the pages may go
                List<(ulong Addr, int Pages)> inherited = [];
                // in a tree, anonymous pages may be shared (copy on write) between processes: a late fork
                // inherits those its parent has at the same place, the others are read without unsharing
                // (smaps, when read at the freeze, tells regions whose pages are all the process's own)
                if (multi && runs.Count > 0 && v.SharedKb != 0 && backing is Backing.AnonPrivate or Backing.FilePrivate or Backing.ObjectPrivate)
                {
                    bool fromParent = theirs != null && backing is (Backing.AnonPrivate or Backing.FilePrivate) && g.Count == 0
                        && theirs.TryGetValue((v.Start, v.End), out var tv) && Inheritable(v, tv);
                    inherited = ExamineSharing(pagemap, fromParent ? theirPagemap : null, runs, pagemapBuffer, sharedRanges);
                }
                found.Add((v, backing, runs, inherited));
                total += runs.Sum(r => (long)r.Pages);
                shared += inherited.Sum(r => (long)r.Pages);
            }
        }
        if (parent != null) ctx.Session.Log.Debug($"pid {ctx.Pid}: {shared} page(s) shared with its parent {parent.Pid}, inherited at restart");
        if (sharedRanges.Count > 0) ctx.Session.Log.Debug($"pid {ctx.Pid}: {sharedRanges.Sum(r => (long)(r.End - r.Start)) / PageSize} page(s) shared with other processes, read through /proc/PID/mem");
        // a small process gets small Pages records: the page buffers of both sides are fresh memory,
        // faulted in page by page the first time they are used (3 MiB of them cost ~2 ms here)
        int limit = total < SmallProcessPages ? SmallChunkPages : ChunkPages;
        foreach (var (v, backing, runs, inherited) in found)
        {
            int first = chunks.Count;
            CutChunks(runs, chunks, limit);
            // (huge pages would be copies of the inherited ones)
            plan.Add((v, backing, runs.Sum(r => (long)r.Pages), backing == Backing.AnonPrivate && inherited.Count == 0 ? DenseBlocks(runs) : [], first, chunks.Count - first, inherited));
        }
        ctx.Session.Log.Debug($"pid {ctx.Pid}: plan of {plan.Count} region(s), {chunks.Count} chunk(s) in {System.Diagnostics.Stopwatch.GetElapsedTime(tPlan).TotalMilliseconds:F1} ms");
        // chunks with pages shared with other processes: process_vm_readv pins what it reads, which
        // makes a page shared copy-on-write the process's own copy (FOLL_PIN unshares); /proc/PID/mem does not
        var viaMem = new bool[chunks.Count];
        if (sharedRanges.Count > 0)
            for (int i = 0; i < chunks.Count; i++)
                viaMem[i] = chunks[i].Any(r => Overlaps(sharedRanges, r.Addr, r.Addr + (ulong)r.Pages * PageSize));
        // a small process: its pages are read by the tracer thread as they are written (PageCopier's
        // inline; in a tree of small processes too: the threads' starts cost more than the overlap gains)
        bool inline = total < InlinePages;
        var prep = new Prepared { Plan = plan, Copier = new PageCopier(ctx.Pid, chunks, ctx.Session.State<ChunkPool>(), buffers, ctx.Image.PositionalFile, viaMem, inline), Owner = ctx, Guards = guards };
        ctx.Set(prep);
        return prep;
    }

    public const ulong HugeBlock = 2 << 20;

    /// <summary>Whether the root of the tree runs the program its parent (outside the tree) runs: it may have been forked without exec, and share pages with it.</summary>
    private sealed class ParentSharing
    {
        private bool? _same;
        public bool SameProgram(TreeEntry root) => _same ??= root.PPid > 1
            && FileCalls.ReadLink($"/proc/{root.Pid}/exe") is { } exe && exe == FileCalls.ReadLink($"/proc/{root.PPid}/exe");
    }

    /// <summary>
    /// Whether a region of a process forked late can be its parent's region at the same addresses,
    /// inherited by the fork: private anonymous memory in both, or a private mapping of the same file at
    /// the same offset, with the same name and flags, that the parent neither keeps from its children
    /// (MADV_DONTFORK) nor gives them wiped (MADV_WIPEONFORK).
    /// </summary>
    private static bool Inheritable(VmaInfo mine, VmaInfo theirs)
    {
        if (theirs.Shared || theirs.Path != mine.Path || theirs.Inode != mine.Inode || theirs.Offset != mine.Offset
            || theirs.DevMajor != mine.DevMajor || theirs.DevMinor != mine.DevMinor) return false;
        if (theirs.VmFlags.Contains("dc") || theirs.VmFlags.Contains("wf") || mine.VmFlags.Contains("dp") || theirs.VmFlags.Contains("dp")) return false;
        foreach (string f in (string[])["gd", "nr"]) if (mine.VmFlags.Contains(f) != theirs.VmFlags.Contains(f)) return false;
        foreach (var (f, _, _) in AdviceMap) if (mine.VmFlags.Contains(f) != theirs.VmFlags.Contains(f)) return false;
        return true;
    }

    private const ulong PagemapPresent = 1UL << 63, PagemapSwapped = 1UL << 62, PagemapExclusive = 1UL << 56, PagemapPfn = (1UL << 55) - 1;

    /// <summary>
    /// Looks at the pagemap entries of <paramref name="runs"/>: pages mapped by other processes too (not
    /// exclusive: shared copy on write since a fork) are added to <paramref name="shared"/> (sorted ranges;
    /// they are read without being unshared), and with <paramref name="parents"/> (a process forked late,
    /// the parent's pagemap) the very pages of the parent at the same addresses (the same page frame: not
    /// written by either since the fork) are taken out of <paramref name="runs"/> and returned as runs:
    /// the restart inherits them by the fork. Page frames are shown to root only (elsewhere they read 0,
    /// and nothing is taken).
    /// </summary>
    private static List<(ulong Addr, int Pages)> ExamineSharing(SafeFileHandle mine, SafeFileHandle? parents, List<(ulong Addr, int Pages)> runs, byte[] buf,
        List<(ulong Start, ulong End)> shared)
    {
        var inherited = new List<(ulong Addr, int Pages)>();
        var own = new List<(ulong Addr, int Pages)>();
        var theirs = parents != null ? new byte[ChunkPages * 8] : [];
        foreach (var (addr, pages) in runs)
        {
            // (runs are at most a chunk long)
            long off = (long)(addr / PageSize * 8);
            int len = pages * 8;
            if (RandomAccess.Read(mine, buf.AsSpan(0, len), off) != len
                || (parents != null && RandomAccess.Read(parents, theirs.AsSpan(0, len), off) != len))
                throw new IOException($"short read of a pagemap at 0x{addr:x}");
            int k = 0;
            while (k < pages)
            {
                int kind = Kind(k), j = k + 1;
                while (j < pages && Kind(j) == kind) j++;
                ulong a = addr + (ulong)k * PageSize;
                if (kind == 2)
                {
                    if (inherited.Count > 0 && inherited[^1].Addr + (ulong)inherited[^1].Pages * PageSize == a) inherited[^1] = (inherited[^1].Addr, inherited[^1].Pages + j - k);
                    else inherited.Add((a, j - k));
                }
                else
                {
                    // own runs stay within their run (a chunk at most)
                    if (k > 0 && own.Count > 0 && own[^1].Addr + (ulong)own[^1].Pages * PageSize == a) own[^1] = (own[^1].Addr, own[^1].Pages + j - k);
                    else own.Add((a, j - k));
                    if (kind == 1)
                    {
                        ulong e = a + (ulong)(j - k) * PageSize;
                        if (shared.Count > 0 && shared[^1].End == a) shared[^1] = (shared[^1].Start, e);
                        else shared.Add((a, e));
                    }
                }
                k = j;
            }
        }
        runs.Clear();
        runs.AddRange(own);
        return inherited;

        // 0: its own, 1: shared with some process, 2: the parent's very page
        int Kind(int k)
        {
            ulong a = BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(k * 8));
            if ((a & PagemapPresent) == 0 || (a & PagemapExclusive) != 0) return 0;
            if (parents == null) return 1;
            ulong b = BinaryPrimitives.ReadUInt64LittleEndian(theirs.AsSpan(k * 8));
            bool same = (b & PagemapPresent) != 0 && (a & PagemapSwapped) == 0 && (b & PagemapSwapped) == 0
                && (a & PagemapPfn) != 0 && (a & PagemapPfn) == (b & PagemapPfn);
            return same ? 2 : 1;
        }
    }

    /// <summary>Whether [start, end) meets one of the sorted, disjoint <paramref name="ranges"/>.</summary>
    private static bool Overlaps(List<(ulong Start, ulong End)> ranges, ulong start, ulong end)
    {
        int lo = 0, hi = ranges.Count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) / 2;
            if (ranges[mid].End <= start) lo = mid + 1;
            else if (ranges[mid].Start >= end) hi = mid - 1;
            else return true;
        }
        return false;
    }

    /// <summary>
    /// The 2 MiB-aligned blocks whose every page is saved (runs of blocks): the restart may rebuild them
    /// as transparent huge pages, which changes neither the contents nor the memory used.
    /// </summary>
    private static List<(ulong Addr, uint Blocks)> DenseBlocks(List<(ulong Addr, int Pages)> runs)
    {
        var dense = new List<(ulong, uint)>();
        int i = 0;
        while (i < runs.Count)
        {
            // an extent of adjoining runs
            ulong start = runs[i].Addr, end = start + (ulong)runs[i].Pages * PageSize;
            for (i++; i < runs.Count && runs[i].Addr == end; i++) end += (ulong)runs[i].Pages * PageSize;
            ulong first = (start + HugeBlock - 1) & ~(HugeBlock - 1), last = end & ~(HugeBlock - 1);
            if (last > first) dense.Add((first, (uint)((last - first) / HugeBlock)));
        }
        return dense;
    }

    /// <summary>Processes saving fewer pages than this are cut into Pages records of <see cref="SmallChunkPages"/>.</summary>
    private const long SmallProcessPages = 8192;   // 32 MiB
    private const int SmallChunkPages = 64;
    /// <summary>A process saving fewer pages than this has them read by the tracer thread itself (no page thread).</summary>
    private const long InlinePages = 4096;   // 16 MiB

    /// <summary>Cuts runs into chunks (one Pages record each) of at most <paramref name="limit"/> pages, splitting longer runs.</summary>
    internal static void CutChunks(List<(ulong Addr, int Pages)> runs, List<List<(ulong Addr, int Pages)>> chunks, int limit)
    {
        var chunk = new List<(ulong, int)>();
        int pages = 0;
        foreach (var (addr, n) in runs)
        {
            for (int done = 0; done < n;)
            {
                if (pages == limit || chunk.Count == MaxRunsPerChunk) { chunks.Add(chunk); chunk = new(); pages = 0; }
                int take = Math.Min(n - done, limit - pages);
                chunk.Add((addr + (ulong)done * PageSize, take));
                pages += take;
                done += take;
            }
        }
        if (chunk.Count > 0) chunks.Add(chunk);
    }

    /// <summary>Another name, in the same directory, of a mapped regular file removed under its name but still linked; else null.</summary>
    private static string? OtherNameOfMapped(int pid, VmaInfo v)
    {
        if (!FileCalls.TryStat($"/proc/{pid}/map_files/{v.Start:x}-{v.End:x}", out var st) || st.Type != StatBuf.S_IFREG || st.Nlink == 0 || st.Ino != v.Inode)
            return null;
        return RegularFile.OtherName(v.Path[..^10], st);
    }

    private static Backing Classify(int pid, VmaInfo v, Log log)
    {
        if (MmState.VdsoNames.Contains(v.Path)) return Backing.Vdso;
        if (v.Path.StartsWith('[') && v.Path != "[heap]" && v.Path != "[stack]" && !v.Path.StartsWith("[anon:"))
            throw new NotCheckpointableException(pid, $"mapping {v.Start:x}-{v.End:x} is {v.Path}, which is not supported");
        if (SysvShm.IsSysvPath(v.Path)) return Backing.SysvShm;
        if (AioRing.IsRing(v)) { AioRing.Check(pid, v); return Backing.AioRing; }
        // private anonymous memory on huge pages (MAP_HUGETLB | MAP_PRIVATE); shared, it is a memory object
        if (v.Path == HugetlbAnonPath && !v.Shared) return Backing.HugetlbPrivate;
        if (v.Path == "anon_inode:[io_uring]")
            throw new NotCheckpointableException(pid, $"mapping {v.Start:x}-{v.End:x} is the ring of an io_uring instance, which cannot be saved (its kernel-side positions cannot be set again); configure the program not to use io_uring");
        if (v.Inode == 0) return v.Shared ? Backing.AnonShared : Backing.AnonPrivate;
        // a file removed under the name it is mapped by that has another name in that directory (glibc's
        // sem_open maps a temporary name it links to the semaphore's, then removes; Python's multiprocessing
        // keeps such semaphores): mapped again by that other name
        if (MemoryObject.IsObjectPath(v.Path) && OtherNameOfMapped(pid, v) is { } other)
        {
            log.Info($"pid {pid}: mapping {v.Start:x}-{v.End:x}: {v.Path[..^10]} was removed; the file is mapped again by another of its names, {other}");
            v.Path = other;
            return v.Shared ? Backing.FileShared : Backing.FilePrivate;
        }
        // memfd, shared anonymous memory ("/dev/zero (deleted)"), deleted files: saved once as memory objects
        if (MemoryObject.IsObjectPath(v.Path)) return v.Shared ? Backing.ObjectShared : Backing.ObjectPrivate;
        if (v.IsDeleted || !v.Path.StartsWith('/'))
            throw new NotCheckpointableException(pid, $"mapping {v.Start:x}-{v.End:x} is backed by {v.Path}, which is not supported yet");
        return v.Shared ? Backing.FileShared : Backing.FilePrivate;
    }

    /// <summary>Runs of pages to save, from /proc/PID/pagemap.</summary>
    private const int PagemapBatch = 8192;

    private static List<(ulong Addr, int Pages)> PresentRuns(SafeFileHandle pagemap, VmaInfo v, Backing b, byte[] buf, List<(ulong Addr, int Pages)> guards, bool guardsKnown)
    {
        var runs = new List<(ulong, int)>();
        // an AIO ring: all of it (header and events; the kernel made every page)
        if (b == Backing.AioRing) { runs.Add((v.Start, (int)(v.Length / PageSize))); return runs; }
        // nothing resident or swapped (smaps): no page to look for; spares reading the pagemap of huge
        // reservations (the .NET GC reserves tens of GiB PROT_NONE: ~100 ms of pagemap per 48 GiB)
        // (huge pages of hugetlbfs, VmFlags ht, are not counted in Rss); guard pages are looked for by
        // the kernel's scan, which skips what has no page table (all regions' at once when they are many)
        if (IsEmpty(v, b))
        {
            if (!guardsKnown && PagemapScanWorks && s_scanGuards) ScannedRuns(pagemap, v, b, runs, guards, guardsOnly: true);
            return runs;
        }
        if (PagemapScanWorks && ScannedRuns(pagemap, v, b, runs, guards)) return runs;
        return ReadRuns(pagemap, v, b, buf, guards);
    }

    /// <summary>A region with nothing resident or swapped (smaps; not known from maps): only its guard pages are looked for.</summary>
    private static bool IsEmpty(VmaInfo v, Backing b)
        => v.RssKb == 0 && v.SwapKb == 0 && b is not (Backing.HugetlbPrivate or Backing.AioRing) && !v.VmFlags.Contains("ht");

    /// <summary>Empty regions above which their guard pages are found by one scan of the address space, not one per region.</summary>
    private const int GuardScanRegions = 256;

    /// <summary>
    /// The guard pages of a process with many empty regions (a thread's stack guard, the PROT_NONE pages
    /// between allocations...), found by one PAGEMAP_SCAN of its address space, in address order: a scan
    /// per region cost ~5 us each (40000 regions: 200 ms). Null when its empty regions are few, or the
    /// kernel cannot tell guard pages: each region is then scanned itself.
    /// </summary>
    private static List<(ulong Addr, int Pages)>? GuardsOfEmptyRegions(SafeFileHandle pagemap, List<VmaInfo> vmas)
    {
        if (!PagemapScanWorks || !s_scanGuards) return null;
        int empty = 0;
        ulong start = ulong.MaxValue, end = 0;
        foreach (var v in vmas)
        {
            if (v.Path == "[vsyscall]") continue;
            start = Math.Min(start, v.Start);
            end = Math.Max(end, v.End);
            if (v.RssKb == 0 && v.SwapKb == 0) empty++;
        }
        if (empty < GuardScanRegions) return null;
        var guards = new List<(ulong Addr, int Pages)>();
        // (a region that is not empty has its guard pages found with its pages: both scans may find them)
        var whole = new VmaInfo { Start = start, End = end };
        if (!ScannedRuns(pagemap, whole, Backing.AnonPrivate, [], guards, guardsOnly: true) || !s_scanGuards) return null;
        return guards;
    }

    /// <summary>The runs to save, from the pagemap read entry by entry (kernels without PAGEMAP_SCAN).</summary>
    internal static List<(ulong Addr, int Pages)> ReadRuns(SafeFileHandle pagemap, VmaInfo v, Backing b, byte[] buf, List<(ulong Addr, int Pages)>? guards = null)
    {
        var runs = new List<(ulong, int)>();
        const int Batch = PagemapBatch;
        ulong npages = v.Length / PageSize;
        ulong runStart = 0; int runLen = 0;
        for (ulong i = 0; i < npages; i += Batch)
        {
            int n = (int)Math.Min(Batch, npages - i);
            ulong first = v.Start / PageSize + i;
            if (RandomAccess.Read(pagemap, buf.AsSpan(0, n * 8), (long)(first * 8)) != n * 8)
                throw new IOException($"short read of a pagemap at 0x{first * PageSize:x}");
            for (int k = 0; k < n; k++)
            {
                ulong e = BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(k * 8));
                if ((e & (1UL << 58)) != 0)
                {
                    // a guard page (PM_GUARD_REGION): no data, installed again at restart
                    ulong ga = (first + (ulong)k) * PageSize;
                    if (guards != null && guards.Count > 0 && guards[^1].Addr + (ulong)guards[^1].Pages * PageSize == ga) guards[^1] = (guards[^1].Addr, guards[^1].Pages + 1);
                    else guards?.Add((ga, 1));
                    continue;
                }
                bool present = (e & (1UL << 63)) != 0 || (e & (1UL << 62)) != 0;
                bool filePage = (e & (1UL << 61)) != 0;
                bool save = present && (b is not (Backing.FilePrivate or Backing.ObjectPrivate) || !filePage);
                ulong addr = (first + (ulong)k) * PageSize;
                if (save)
                {
                    if (runLen > 0 && runStart + (ulong)runLen * PageSize == addr && runLen < ChunkPages) runLen++;
                    else { if (runLen > 0) runs.Add((runStart, runLen)); runStart = addr; runLen = 1; }
                }
            }
        }
        if (runLen > 0) runs.Add((runStart, runLen));
        return runs;
    }

    [ThreadStatic] private static PageRegion[]? t_regions;

    /// <summary>
    /// The runs to save, found by the kernel (PAGEMAP_SCAN): present or swapped pages, not the shared
    /// zero page (it holds zeros, as an absent page reads), and in private file mappings only the pages
    /// written (anonymous copies), not the file's own. Much quicker than reading 8 bytes of pagemap per
    /// page (a 1 GiB region: ~1 ms instead of ~9). False when the kernel does not have it.
    /// </summary>
    internal static bool ScannedRuns(SafeFileHandle pagemap, VmaInfo v, Backing b, List<(ulong Addr, int Pages)> runs,
        List<(ulong Addr, int Pages)>? guards = null, bool guardsOnly = false)
    {
        var regions = t_regions ??= new PageRegion[1024];
        ulong inverted = MemoryCalls.PAGE_IS_PFNZERO, mask = MemoryCalls.PAGE_IS_PFNZERO;
        if (b is Backing.FilePrivate or Backing.ObjectPrivate) { inverted |= MemoryCalls.PAGE_IS_FILE; mask |= MemoryCalls.PAGE_IS_FILE; }
        ulong anyOf = MemoryCalls.PAGE_IS_PRESENT | MemoryCalls.PAGE_IS_SWAPPED;
        if (guardsOnly) { inverted = mask = 0; anyOf = MemoryCalls.PAGE_IS_GUARD; }
        int fd = (int)pagemap.DangerousGetHandle();
        ulong at = v.Start;
        while (at < v.End)
        {
            // guard pages (swapped in the kernel's eyes) are told apart by their category
            ulong guard = s_scanGuards ? MemoryCalls.PAGE_IS_GUARD : 0;
            long n = MemoryCalls.PagemapScan(fd, at, v.End, regions, inverted, mask, anyOf, out ulong walkEnd, guard);
            if (n < 0)
            {
                int e = Marshal.GetLastPInvokeError();
                // a kernel without the guard category (before 6.14) refuses it: without it, then
                if (e == Errors.EINVAL && s_scanGuards) { s_scanGuards = false; if (guardsOnly) return true; continue; }
                if (runs.Count == 0 && at == v.Start && e is 25 /* ENOTTY */ or Errors.EINVAL) { s_scanWorks = false; return false; }
                throw new SyscallException("ioctl(PAGEMAP_SCAN)", e, 0, $"{v.Start:x}-{v.End:x}");
            }
            for (int i = 0; i < n; i++)
            {
                if ((regions[i].Categories & MemoryCalls.PAGE_IS_GUARD) != 0)
                {
                    guards?.Add((regions[i].Start, (int)((regions[i].End - regions[i].Start) / PageSize)));
                    continue;
                }
                for (ulong a = regions[i].Start; a < regions[i].End;)
                {
                    // adjoining runs join, up to a chunk
                    int pages = (int)Math.Min((regions[i].End - a) / PageSize, (ulong)ChunkPages);
                    if (runs.Count > 0 && runs[^1].Addr + (ulong)runs[^1].Pages * PageSize == a && runs[^1].Pages < ChunkPages)
                    {
                        pages = Math.Min(pages, ChunkPages - runs[^1].Pages);
                        runs[^1] = (runs[^1].Addr, runs[^1].Pages + pages);
                    }
                    else runs.Add((a, pages));
                    a += (ulong)pages * PageSize;
                }
            }
            if (walkEnd <= at) throw new SyscallException("ioctl(PAGEMAP_SCAN)", Errors.EIO, 0, $"no progress at {at:x}");
            at = walkEnd;
        }
        return true;
    }

    [ThreadStatic] private static PayloadWriter? t_vmaPayload;

    private static void WriteVma(CheckpointContext ctx, VmaInfo v, Backing b, long pages, uint obj, List<(ulong Addr, uint Blocks)> huge,
        List<(ulong Addr, int Pages)>? guards, List<(ulong Addr, int Pages)> inherited)
    {
        // (one writer for every region: its record is copied out by Write)
        var p = t_vmaPayload ??= new PayloadWriter();
        p.Clear();
        p.U64(v.Start).U64(v.End);
        p.U32((uint)((v.Read ? 1 : 0) | (v.Write ? 2 : 0) | (v.Exec ? 4 : 0)));
        p.U8((byte)b);
        p.Bool(v.VmFlags.Contains("gd"));
        p.Bool(v.VmFlags.Contains("nr"));
        uint adv = 0;
        foreach (var (flag, a, _) in AdviceMap) if (v.VmFlags.Contains(flag)) adv |= (uint)a;
        p.U32(adv);
        p.U64(v.Offset);
        p.Str(v.Path);
        long size = 0, mtime = 0;
        bool inCkptNamespace = false;
        if (b is Backing.FilePrivate or Backing.FileShared)
        {
            bool found = FileCalls.TryStat(MountNamespace.Reach(ctx.Session, v.Path), out var st) && st.Ino == v.Inode;
            // else a file of the host the tree's namespace no longer shows (a sandbox's first process)
            if (!found && MountNamespace.OnlyInCkptNamespace(ctx.Session, v.Path, FileCalls.MakeDev((int)v.DevMajor, (int)v.DevMinor), v.Inode))
                found = inCkptNamespace = FileCalls.TryStat(v.Path, out st);
            if (!found)
                throw new NotCheckpointableException(ctx.Pid, $"mapping {v.Start:x}-{v.End:x}: {v.Path} is not the file that is mapped (replaced or moved)");
            size = st.Size; mtime = st.MtimeSec * 1_000_000_000 + st.MtimeNsec;
        }
        p.I64(size).I64(mtime);
        p.U64((ulong)pages);
        ulong vdsoHash = 0;
        if (v.Path == "[vdso]")
        {
            var bytes = new byte[v.Length];
            MemoryCalls.ReadRemote(ctx.Pid, v.Start, bytes);
            vdsoHash = XxHash3.HashToUInt64(bytes);
        }
        p.U64(vdsoHash);
        // appended fields: the memory object mapped (0: none), and whether the region may be made writable
        // (VmFlags mw: a shared mapping of an object opened for writing)
        p.U32(obj).Bool(v.VmFlags.Contains("mw"));
        // appended field: the runs of 2 MiB blocks whose every page follows
        p.U32((uint)huge.Count);
        foreach (var (a, n) in huge) p.U64(a).U32(n);
        // appended field: log2 of the page size of a region on huge pages (MAP_HUGETLB), else 0
        p.U8(b == Backing.HugetlbPrivate ? HugetlbShift(ctx.Pid, v) : (byte)0);
        // appended field: the runs of guard pages (MADV_GUARD_INSTALL)
        p.U32((uint)(guards?.Count ?? 0));
        foreach (var (a, n) in guards ?? []) p.U64(a).U32((uint)n);
        // appended field: the runs of pages the restart inherits from the parent (a process forked late)
        p.U32((uint)inherited.Count);
        foreach (var (a, n) in inherited) p.U64(a).U32((uint)n);
        // appended field: the file is opened in ckpt's mount namespace at restart (the tree's does not show it)
        p.Bool(inCkptNamespace);
        ctx.Image.Write(RecordKind.Vma, p);
    }

    /// <summary>log2 of the huge page size of a MAP_HUGETLB region: the block size of its hugetlbfs file.</summary>
    private static byte HugetlbShift(int pid, VmaInfo v)
    {
        int shift = FileCalls.TryStat($"/proc/{pid}/map_files/{v.Start:x}-{v.End:x}", out var st) ? MemoryCalls.HugePageShift(st) : 0;
        return shift != 0 ? (byte)shift
            : throw new NotCheckpointableException(pid, $"mapping {v.Start:x}-{v.End:x} ({v.Path}): the size of its huge pages cannot be read");
    }

    /// <summary>One chunk read out of the target: the Pages record's two parts and its checksum.</summary>
    /// <summary>Page buffers kept for the next process of the tree (fresh 4 MiB buffers cost their page faults each time).</summary>
    private sealed class ChunkPool { public readonly System.Collections.Concurrent.ConcurrentBag<Chunk> Free = new(); }

    private sealed class Chunk
    {
        /// <summary>The pages (outside the GC heap: see <see cref="NativeBuffer"/>).</summary>
        public readonly NativeBuffer Data = new(ChunkPages * PageSize);
        public readonly byte[] Head = new byte[4 + MaxRunsPerChunk * 12];
        /// <summary>Written by position: the record's header and checksum.</summary>
        public readonly byte[] Frame = new byte[ImageWriter.HeaderSize], Sum = new byte[ImageWriter.ChecksumSize];
        public int Index, HeadLength, DataLength, Worker;
        public ulong Checksum;
        public Exception? Error;
        private int _populated;

        /// <summary>
        /// Makes the first <paramref name="length"/> bytes of the (fresh) buffer present before the read
        /// fills them (<see cref="MemoryCalls.PopulateWrite"/>): only what chunks use, as they come (a small
        /// process's are smaller).
        /// </summary>
        public void Populate(int length) => PopulateUpTo(Data, ref _populated, length);
    }

    /// <summary>
    /// Makes a fresh buffer present up to <paramref name="length"/> bytes, from where it already is
    /// (<paramref name="populated"/>, moved on) by one madvise (<see cref="MemoryCalls.PopulateWrite"/>)
    /// instead of a fault per page as it is filled.
    /// </summary>
    private static void PopulateUpTo(NativeBuffer data, ref int populated, int length)
    {
        if (length <= populated) return;
        MemoryCalls.PopulateWrite(data.Pointer + populated, length - populated);
        populated = length;
    }

    /// <summary>
    /// Reads chunks of pages out of the target and checksums them on threads of its own (process_vm_readv
    /// needs no ptrace stop ownership), a few buffers ahead of the writer: one thread per CPU for a large
    /// process (chunk i is read by thread i mod N, each with its own buffers), so that reading and
    /// checksumming, the costliest part of a checkpoint, use every CPU. Falls back to /proc/PID/mem for
    /// pages the target cannot read itself (PROT_NONE). Into an image file written by position, each
    /// thread also writes the records of the chunks it read, at the places the writer took for them
    /// (<see cref="Place"/>), and their checksums join the stream's at the end (<see cref="Complete"/>):
    /// the copies into the file are shared by the CPUs too, and a thread waits for nobody but the
    /// placing, so one buffer or two, still in its CPU's cache, are enough.
    /// </summary>
    private sealed class PageCopier : IDisposable
    {
        public const int Buffers = 3, PositionalBuffers = 2;
        /// <summary>Processes with fewer chunks than this get one reading thread (a thread costs ~0.1 ms to start).</summary>
        private const int ParallelChunks = 32;
        private const int MaxWorkers = 4;
        private readonly int _pid;
        private readonly List<List<(ulong Addr, int Pages)>> _chunks;
        private readonly Worker[] _workers;
        private readonly CancellationTokenSource _stop = new();

        private readonly ChunkPool _pool;
        private readonly List<Chunk> _own = new();
        /// <summary>The image file written by position, or -1.</summary>
        private readonly int _file;
        /// <summary>Written by position: each chunk's offset in the file (known for the first <see cref="_placed"/>), and its checksum once read.</summary>
        private readonly long[] _offsets = [];
        private readonly ulong[] _sums = [];
        private int _placed;
        private readonly object _placing = new();

        private sealed class Worker
        {
            public readonly HandoffQueue<Chunk> Free = new();
            public readonly HandoffQueue<Chunk> Full = new();
            public Thread? Thread;
            public int Mem = -1;
            /// <summary>Written by position: what made the thread stop.</summary>
            public Exception? Error;
        }

        public int Count => _chunks.Count;
        /// <summary>The sizes of chunk <paramref name="index"/>'s Pages record: the run count and runs, then the pages.</summary>
        public int HeadLength(int index) => 4 + _chunks[index].Count * 12;
        public int DataLength(int index) => _chunks[index].Sum(r => r.Pages) * PageSize;

        /// <summary>Chunks read through /proc/PID/mem (pages shared copy on write, which process_vm_readv would unshare).</summary>
        private readonly bool[] _viaMem;

        /// <summary>
        /// No thread: the caller reads each chunk when it takes it (or, into a file, places it), with buffers
        /// of its own. For a small process, whose few chunks leave nothing to overlap: a thread costs its start
        /// and a hand-over per chunk, and each buffer page its first touch (~10 us on this kind of VM).
        /// </summary>
        private readonly bool _inline;

        public PageCopier(int pid, List<List<(ulong Addr, int Pages)>> chunks, ChunkPool pool, int buffers, int file = -1, bool[]? viaMem = null, bool inline = false)
        {
            _pid = pid;
            _file = file;
            _viaMem = viaMem ?? new bool[chunks.Count];
            _chunks = chunks;
            _pool = pool;
            _inline = inline;
            if (file >= 0) { _offsets = new long[chunks.Count]; _sums = new ulong[chunks.Count]; }
            int n = chunks.Count < ParallelChunks || inline ? 1 : Math.Clamp(Environment.ProcessorCount, 1, MaxWorkers);
            _workers = new Worker[n];
            for (int w = 0; w < n; w++) _workers[w] = new Worker();
            if (chunks.Count == 0) return;
            // (inline into a file: each chunk is written out before the next is read)
            int each = inline && file >= 0 ? 1 : Math.Max(2, buffers / n);
            for (int w = 0; w < n; w++)
            {
                for (int i = 0; i < Math.Min(each, (chunks.Count - w + n - 1) / n); i++)
                {
                    var c = pool.Free.TryTake(out var reused) ? reused : new Chunk();
                    c.Error = null;
                    c.Worker = w;
                    _own.Add(c);
                    _workers[w].Free.Add(c);
                }
                if (inline) continue;
                int worker = w;
                _workers[w].Thread = Tracing.TracerThread.StartHelper("ckpt-pages", () => Run(worker));
            }
        }

        public Chunk Take(int index)
        {
            if (_inline)
            {
                // (a buffer comes back once the writer wrote it out)
                var free = _workers[0].Free.Take();
                Fill(_workers[0], free, index);
                return free;
            }
            var c = _workers[index % _workers.Length].Full.Take();
            if (c.Error != null) throw new AggregateException("reading pages failed", c.Error).InnerException!;
            if (c.Index != index) throw new InvalidOperationException($"page chunk {c.Index} arrived for {index}");
            return c;
        }

        private bool _disposed;

        /// <summary>A chunk written out: to its thread while this copier runs, else to the pool of the next process's.</summary>
        public void Return(Chunk c)
        {
            lock (_own)
            {
                if (!_disposed) { _workers[c.Worker].Free.Add(c); return; }
            }
            _pool.Free.Add(c);
        }

        /// <summary>Written by position: chunk <paramref name="index"/> (the next one) goes at <paramref name="offset"/> of the file.</summary>
        public void Place(int index, long offset)
        {
            if (index != _placed) throw new InvalidOperationException($"page chunk {index} placed after {_placed - 1}");
            _offsets[index] = offset;
            if (_inline)
            {
                var me = _workers[0];
                var c = me.Free.Take();
                Fill(me, c, index);
                _sums[index] = c.Checksum;
                _placed = index + 1;
                WriteOut(me, c);
                return;
            }
            lock (_placing) { _placed = index + 1; Monitor.PulseAll(_placing); }
        }

        /// <summary>
        /// Written by position: waits until the threads wrote every chunk (all were placed), then gives the
        /// image each chunk's checksum for its place (<paramref name="tickets"/>); a thread's error is thrown.
        /// </summary>
        public void Complete(ImageWriter image, int[] tickets)
        {
            if (_file < 0) return;
            foreach (var w in _workers) w.Thread?.Join();
            foreach (var w in _workers) if (w.Error is { } e) throw new AggregateException("saving pages failed", e).InnerException!;
            for (int i = 0; i < _chunks.Count; i++) image.Settle(tickets[i], _sums[i]);
        }

        private void Run(int w)
        {
            if (_file >= 0) { RunPositional(w); return; }
            var me = _workers[w];
            try
            {
                for (int i = w; i < _chunks.Count; i += _workers.Length)
                {
                    var c = me.Free.Take(_stop.Token);
                    try { Fill(me, c, i); }
                    catch (Exception e) { c.Error = e; me.Full.Add(c); return; }
                    me.Full.Add(c);
                }
            }
            catch (OperationCanceledException) { }
        }

        /// <summary>
        /// Written by position: reads its chunks, each into a free buffer, and writes each once placed (in
        /// order, waiting for the placing only when no buffer is free).
        /// </summary>
        private void RunPositional(int w)
        {
            var me = _workers[w];
            var filled = new Queue<Chunk>();
            try
            {
                for (int i = w; i < _chunks.Count; i += _workers.Length)
                {
                    while (filled.Count > 0 && IsPlaced(filled.Peek().Index, wait: false)) WriteOut(me, filled.Dequeue());
                    Chunk? c;
                    while (!me.Free.TryTakeNow(out c))
                    {
                        if (!IsPlaced(filled.Peek().Index, wait: true)) return;
                        WriteOut(me, filled.Dequeue());
                    }
                    Fill(me, c, i);
                    _sums[i] = c.Checksum;
                    filled.Enqueue(c);
                }
                while (filled.Count > 0)
                {
                    if (!IsPlaced(filled.Peek().Index, wait: true)) return;
                    WriteOut(me, filled.Dequeue());
                }
            }
            catch (Exception e) { me.Error = e; }
        }

        /// <summary>Whether chunk <paramref name="index"/> has its place; with <paramref name="wait"/>, waits for it (false: the copier was stopped).</summary>
        private bool IsPlaced(int index, bool wait)
        {
            if (Volatile.Read(ref _placed) > index) return true;
            if (!wait) return false;
            lock (_placing)
                while (_placed <= index)
                {
                    if (_stop.IsCancellationRequested) return false;
                    Monitor.Wait(_placing, 100);
                }
            return true;
        }

        /// <summary>Writes a chunk's whole record (header, runs, pages, checksum) at its place in the file; the chunk is free again.</summary>
        private void WriteOut(Worker me, Chunk c)
        {
            ImageWriter.Frame(c.Frame, RecordKind.Pages, c.HeadLength + c.DataLength);
            BinaryPrimitives.WriteUInt64LittleEndian(c.Sum, c.Checksum);
            byte* d = c.Data.Pointer;
            fixed (byte* f = c.Frame)
            fixed (byte* h = c.Head)
            fixed (byte* z = c.Sum)
            {
                Span<Iovec> iov =
                [
                    new Iovec { Base = (nint)f, Len = (nuint)c.Frame.Length },
                    new Iovec { Base = (nint)h, Len = (nuint)c.HeadLength },
                    new Iovec { Base = (nint)d, Len = (nuint)c.DataLength },
                    new Iovec { Base = (nint)z, Len = (nuint)c.Sum.Length },
                ];
                FileCalls.PwritevAll(_file, iov, _offsets[c.Index], "write of the image");
            }
            me.Free.Add(c);
        }

        private void Fill(Worker me, Chunk c, int index)
        {
            var runs = _chunks[index];
            c.Index = index;
            BinaryPrimitives.WriteUInt32LittleEndian(c.Head, (uint)runs.Count);
            for (int k = 0; k < runs.Count; k++)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(c.Head.AsSpan(4 + k * 12), runs[k].Addr);
                BinaryPrimitives.WriteUInt32LittleEndian(c.Head.AsSpan(12 + k * 12), (uint)runs[k].Pages);
            }
            // (the sizes a positional writer took the record's place with)
            c.HeadLength = HeadLength(index);
            c.DataLength = DataLength(index);
            c.Populate(c.DataLength);
            Read(me, runs, c.Data, _viaMem[index]);
            c.Checksum = ImageWriter.Checksum(RecordKind.Pages, c.Head.AsSpan(0, c.HeadLength), c.Data.Span[..c.DataLength]);
        }

        private void Read(Worker me, List<(ulong Addr, int Pages)> runs, NativeBuffer data, bool viaMem)
        {
            int n = runs.Count;
            var local = new Iovec[n];
            var remote = new Iovec[n];
            byte* d = data.Pointer;
            fixed (Iovec* l = local)
            fixed (Iovec* r = remote)
            {
                long off = 0;
                for (int k = 0; k < n; k++)
                {
                    long len = (long)runs[k].Pages * PageSize;
                    l[k] = new Iovec { Base = (nint)(d + off), Len = (nuint)len };
                    r[k] = new Iovec { Base = (nint)runs[k].Addr, Len = (nuint)len };
                    off += len;
                }
                nint got = viaMem ? -1 : MemoryCalls.ProcessVmReadv(_pid, l, (ulong)n, r, (ulong)n, 0);
                if (got == off) return;
                // partial: a protected region (PROT_NONE, or unreadable); /proc/PID/mem reads regardless
                // (and, not pinning what it reads, leaves pages shared copy on write shared: viaMem)
                if (me.Mem < 0)
                {
                    me.Mem = FileCalls.Open($"/proc/{_pid}/mem", FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0);
                    if (me.Mem < 0) throw SyscallException.Last("open /proc/PID/mem", _pid);
                }
                long done = 0;
                for (int k = 0; k < n; k++)
                {
                    long len = (long)r[k].Len, pos = 0;
                    while (pos < len)
                    {
                        nint m = FileCalls.Pread(me.Mem, d + done + pos, (nuint)(len - pos), (long)r[k].Base + pos);
                        if (m <= 0) throw SyscallException.Last("pread /proc/PID/mem", _pid, $"at 0x{(ulong)r[k].Base + (ulong)pos:x}");
                        pos += m;
                    }
                    done += len;
                }
            }
        }

        public void Dispose()
        {
            _stop.Cancel();
            lock (_placing) Monitor.PulseAll(_placing);
            foreach (var w in _workers) w.Thread?.Join();
            foreach (var w in _workers) if (w.Mem >= 0) FileCalls.Close(w.Mem);
            // chunks still being written out go to the pool when they come back (Return)
            lock (_own) _disposed = true;
            foreach (var w in _workers)
            {
                while (w.Free.TryTakeNow(out var c)) _pool.Free.Add(c);
                while (w.Full.TryTakeNow(out var c)) _pool.Free.Add(c);
            }
        }
    }

    // ---------------------------------------------------------------- restart

    [ThreadStatic] private static Iovec[]? t_local, t_remote;

    private sealed class RestoreState
    {
        public readonly List<(ulong Start, ulong Len, int Prot)> Reprotect = new();
        /// <summary>Regions that were mlock'ed (VmFlags lo; lf: MLOCK_ONFAULT).</summary>
        public readonly List<(ulong Start, ulong Len, bool OnFault)> Lock = new();
        /// <summary>AIO rings, in anonymous memory until they are made again in Finish.</summary>
        public readonly List<(ulong Start, ulong Len)> AioRings = new();
        /// <summary>Runs of the record being written (used from parsing to writing, never across records): one pair for every process restored by this thread.</summary>
        public readonly Iovec[] Local = t_local ??= new Iovec[MaxRunsPerChunk], Remote = t_remote ??= new Iovec[MaxRunsPerChunk];
        public ulong CurStart, CurEnd;
        /// <summary>The current region's blocks to rebuild as huge pages before its first Pages record is written.</summary>
        public readonly List<Iovec> Huge = new();
        /// <summary>The file of the last file mapping, still open in the vessel for the next region of the same file.</summary>
        public string? OpenPath;
        public bool OpenRw;
        public int OpenFd = -1;
        /// <summary>
        /// The memory objects mapped so far, each still open in the vessel for its next region (a runtime
        /// that maps one memfd many times over, as .NET's double mapping does: 110 regions, one open each),
        /// closed with the last mapped file.
        /// </summary>
        public readonly Dictionary<(uint Obj, bool Write, string? Name), int> ObjectFds = new();
        /// <summary>fds opened in the vessel whose close is queued in the batch, not run yet.</summary>
        public int ClosesQueued;
        /// <summary>The current region's pages go in with UFFDIO_COPY (see <see cref="Uffd"/>).</summary>
        public bool CurUffd;
        /// <summary>ckpt's copy of a userfaultfd made in the vessel (its mm), or -1; <see cref="UffdTried"/>: made or failed.</summary>
        public int Uffd = -1;
        public bool UffdTried;
        /// <summary>The range registered on <see cref="Uffd"/> (the current region), unregistered after its last page.</summary>
        public ulong RegStart, RegLen;
        /// <summary>
        /// Small Pages records kept until the mappings queued in the batch are made: their runs, and their
        /// pages back to back in the session's <see cref="DeferBuffer"/>.
        /// </summary>
        public readonly List<Iovec> DeferredRuns = new();
        public int DeferredBytes;
    }

    /// <summary>
    /// The pages of the small Pages records kept (<see cref="Defer"/>): one buffer for the whole restart,
    /// held by one process at a time (a buffer per process was 1 MiB of fresh memory each: page faults,
    /// and a full garbage collection every few processes of a large tree).
    /// </summary>
    private sealed class DeferBuffer
    {
        public readonly NativeBuffer Data = new(DeferBytes);
        public RestoreContext? Owner;
        private int _populated;

        /// <summary>Makes the buffer present up to <paramref name="length"/> (64 KiB steps) before pages are copied in: one call, not a fault per page.</summary>
        public void Populate(int length) => PopulateUpTo(Data, ref _populated, Math.Min(DeferBytes, (length + 0xffff) & ~0xffff));
    }

    /// <summary>Pages records up to this size wait in ckpt for the mappings of the regions queued with theirs.</summary>
    private const int DeferMaxRecord = 64 << 10, DeferBytes = 1 << 20;

    /// <summary>
    /// Runs the calls queued by Vma records (the mappings), then writes the small Pages records that
    /// waited for them: a process of many small regions costs a ptrace round trip per few hundred
    /// regions, not one per region. Before any record that is neither a Vma nor a Pages record, and
    /// before a Pages record that needs its mapping at once.
    /// </summary>
    public static void RunMappingsAndDeferredPages(RestoreContext ctx)
    {
        ctx.FlushBatch();
        if (ctx.Existing<RestoreState>() is not { DeferredRuns.Count: > 0 } st) return;
        var runs = CollectionsMarshal.AsSpan(st.DeferredRuns);
        var buffer = ctx.Session.State<DeferBuffer>();
        byte* data = buffer.Data.Pointer;
        long at = 0;
        for (int i = 0; i < runs.Length; i += MaxRunsPerChunk)
        {
            int n = Math.Min(MaxRunsPerChunk, runs.Length - i);
            runs.Slice(i, n).CopyTo(st.Remote);
            WriteRuns(ctx.Pid, -1, data + at, st.Local, st.Remote, n);
            foreach (var r in runs.Slice(i, n)) at += (long)r.Len;
        }
        st.DeferredRuns.Clear();
        st.DeferredBytes = 0;
        buffer.Owner = null;
    }

    /// <summary>Closes the vessel's fd of the last mapped file (before the fds are placed), after the queued calls.</summary>
    public static void CloseMappedFile(RestoreContext ctx)
    {
        var st = ctx.State<RestoreState>();
        QueueCloseMappedFile(ctx, st);
        QueueCloseObjects(ctx, st);
        ctx.FlushBatch();
    }

    /// <summary>Queues the close of the last mapped file's fd behind the mmaps queued with it.</summary>
    private static void QueueCloseMappedFile(RestoreContext ctx, RestoreState st)
    {
        if (st.OpenFd >= 0) { ctx.Batch.AddChecked("close", Nr.close, st.OpenFd); st.ClosesQueued++; }
        st.OpenFd = -1;
        st.OpenPath = null;
    }

    /// <summary>Closes the vessel's fds of every memory object mapped (before the fds are placed), after the queued calls.</summary>
    private static void QueueCloseObjects(RestoreContext ctx, RestoreState st)
    {
        foreach (int fd in st.ObjectFds.Values) ctx.Batch.AddChecked("close", Nr.close, fd);
        st.ObjectFds.Clear();
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var st = ctx.State<RestoreState>();
        if (rec.Kind == RecordKind.Vma) RestoreVma(ctx, st, rec);
        else RestorePages(ctx, st, rec);
    }

    private static void RestoreVma(RestoreContext ctx, RestoreState st, Record rec)
    {
        var r = rec.Reader();
        ulong start = r.U64(), end = r.U64();
        int prot = (int)r.U32();
        var b = (Backing)r.U8();
        bool growsDown = r.Bool(), noReserve = r.Bool();
        var adv = (Advice)r.U32();
        ulong pgoff = r.U64();
        string path = r.Str();
        long size = r.I64(), mtime = r.I64();
        ulong pages = r.U64();
        ulong vdsoHash = r.U64();
        uint obj = r.AtEnd ? 0 : r.U32();
        bool mayWrite = !r.AtEnd && r.Bool();
        st.Huge.Clear();
        uint nhuge = r.AtEnd ? 0 : r.U32();
        for (uint i = 0; i < nhuge; i++)
        {
            ulong a = r.U64(), n = r.U32();
            if (a % HugeBlock != 0 || a < start || n == 0 || a + n * HugeBlock > end)
                throw new ImageFormatException($"Vma record at offset {rec.Offset} has a huge-page block outside its region");
            st.Huge.Add(new Iovec { Base = (nint)a, Len = (nuint)(n * HugeBlock) });
        }
        int hugetlbShift = r.AtEnd ? 0 : r.U8();
        var guards = new List<(ulong Addr, ulong Len)>();
        uint nguards = r.AtEnd ? 0 : r.U32();
        for (uint i = 0; i < nguards; i++)
        {
            ulong a = r.U64(), n = r.U32();
            if (a % PageSize != 0 || a < start || n == 0 || a + n * PageSize > end)
                throw new ImageFormatException($"Vma record at offset {rec.Offset} has guard pages outside its region");
            guards.Add((a, n * PageSize));
        }
        var inherited = new List<(ulong Addr, ulong Len)>();
        uint ninherited = r.AtEnd ? 0 : r.U32();
        for (uint i = 0; i < ninherited; i++)
        {
            ulong a = r.U64(), n = r.U32();
            if (a % PageSize != 0 || a < start || n == 0 || a + n * PageSize > end || (inherited.Count > 0 && a < inherited[^1].Addr + inherited[^1].Len))
                throw new ImageFormatException($"Vma record at offset {rec.Offset} has inherited pages outside its region or out of order");
            inherited.Add((a, n * PageSize));
        }
        bool inCkptNamespace = !r.AtEnd && r.Bool();
        r.End();
        if (inherited.Count > 0 && (!ctx.LateForked || b is not (Backing.AnonPrivate or Backing.FilePrivate)))
            throw new ImageFormatException($"Vma record at offset {rec.Offset}: pages inherited from the parent in a region of a process not forked from it at restart");
        if (inherited.Count > 0) st.Huge.Clear();
        if (b == Backing.HugetlbPrivate && hugetlbShift is < 13 or > 40)
            throw new ImageFormatException($"Vma record at offset {rec.Offset}: huge pages of 2^{hugetlbShift} bytes");
        if (b != Backing.AnonPrivate || growsDown || (adv & Advice.NoHugePage) != 0 || !ctx.Session.Options.HugePages || !SystemAllowsThp()) st.Huge.Clear();
        // UFFDIO_COPY makes 4 KiB pages: not for regions whose faults would have made huge pages
        st.CurUffd = b == Backing.AnonPrivate && pages >= UffdMinPages && st.Huge.Count == 0
            && (adv & Advice.HugePage) == 0 && ((adv & Advice.NoHugePage) != 0 || !ThpAlways());
        st.CurStart = start; st.CurEnd = end;
        ulong len = end - start;
        if (b == Backing.Vdso)
        {
            // (a vDSO put back as a proxy is the checkpointed one: VdsoProxy)
            if (path == "[vdso]" && vdsoHash != OwnVdsoHash() && ctx.Existing<VdsoProxy.Built>() == null)
                throw new CkptException("restart: this kernel's vDSO differs from the checkpointed one; restart on a machine with the same kernel", ExitCodes.RestoreConflict);
            return; // moved into place with the layout (MmState)
        }
        int mapProt = pages > 0 ? prot | MemoryCalls.PROT_READ | MemoryCalls.PROT_WRITE : prot;
        int flags = MemoryCalls.MAP_FIXED | (growsDown ? MemoryCalls.MAP_GROWSDOWN : 0) | (noReserve ? MemoryCalls.MAP_NORESERVE : 0);
        int fd = -1;
        bool keep = false;   // fd stays open for the next regions (a memory object's)
        // fds whose close is queued stay open until the flush: keep them few
        if (ctx.PendingBatchCalls == 0) st.ClosesQueued = 0;
        else if (st.ClosesQueued >= 64) { ctx.FlushBatch(); st.ClosesQueued = 0; }
        // (a region inherited from the parent is there already: nothing to open or map)
        if (inherited.Count == 0) switch (b)
        {
            case Backing.AnonPrivate:
                flags |= ((adv & Advice.Droppable) != 0 ? MemoryCalls.MAP_DROPPABLE : MemoryCalls.MAP_PRIVATE) | MemoryCalls.MAP_ANONYMOUS;
                break;
            case Backing.AnonShared: flags |= MemoryCalls.MAP_SHARED | MemoryCalls.MAP_ANONYMOUS; break;
            case Backing.HugetlbPrivate:
                // from the machine's pool of huge pages of that size (the pages are written with
                // process_vm_writev: UFFDIO_COPY would want whole huge pages)
                flags |= MemoryCalls.MAP_PRIVATE | MemoryCalls.MAP_ANONYMOUS | MemoryCalls.HugePageFlags(hugetlbShift);
                break;
            case Backing.AioRing:
                // anonymous memory receives the saved ring; the context is made in Finish (AioRing)
                flags |= MemoryCalls.MAP_PRIVATE | MemoryCalls.MAP_ANONYMOUS;
                st.AioRings.Add((start, len));
                break;
            case Backing.FilePrivate:
            case Backing.FileShared:
                // opened for writing when the region may be made writable (VmFlags mw), not only when it is now
                bool rw = b == Backing.FileShared && ((prot & MemoryCalls.PROT_WRITE) != 0 || mayWrite);
                // the regions of one file (a library's text, data, relro...) come one after another: one open
                if (st.OpenPath != path || st.OpenRw != rw)
                {
                    QueueCloseMappedFile(ctx, st);
                    int openFlags = (rw ? FileCalls.O_RDWR : FileCalls.O_RDONLY) | FileCalls.O_CLOEXEC;
                    if (inCkptNamespace)
                    {
                        // a file of ckpt's namespace the tree's does not show: opened by ckpt, installed in the vessel
                        CheckFile(MountNamespace.InCkptNamespace(ctx.Session, path), size, mtime, path);
                        st.OpenFd = MountNamespace.OpenInCkptNamespace(ctx, path, openFlags);
                    }
                    else
                    {
                        CheckFile(path, size, mtime);
                        st.OpenFd = ctx.OpenInVessel(path, openFlags);
                    }
                    st.OpenPath = path;
                    st.OpenRw = rw;
                }
                fd = st.OpenFd;
                flags |= b == Backing.FileShared ? MemoryCalls.MAP_SHARED : MemoryCalls.MAP_PRIVATE;
                break;
            case Backing.ObjectShared:
            case Backing.ObjectPrivate:
                bool shared = b == Backing.ObjectShared;
                bool write = shared && ((prot & MemoryCalls.PROT_WRITE) != 0 || mayWrite);
                // a deleted file by the name this region showed (it may have been deleted under several)
                string? name = MemoryObject.DeletedName(path);
                if (!st.ObjectFds.TryGetValue((obj, write, name), out fd))
                    st.ObjectFds[(obj, write, name)] = fd = MemoryObject.OpenInVessel(ctx, obj,
                        (write ? FileCalls.O_RDWR : FileCalls.O_RDONLY) | FileCalls.O_CLOEXEC, $"mapping {start:x}-{end:x}", name);
                keep = true;
                flags |= shared ? MemoryCalls.MAP_SHARED : MemoryCalls.MAP_PRIVATE;
                break;
            case Backing.SysvShm: break;
            default: throw new ImageFormatException($"Vma record at offset {rec.Offset} has unknown backing {(int)b}");
        }
        // the calls of consecutive regions are queued in the vessel's batch and run together (one ptrace
        // round trip) before the next record that is not a Vma (its Pages need the mapping), or when the
        // batch is full; opens are injected at once (their fds are arguments of the queued calls)
        void Failed(long got) => throw new CkptException($"restart: cannot map {start:x}-{end:x} {path}: {(got < 0 ? Errors.Describe((int)-got) : "placed elsewhere")}"
            + (b == Backing.HugetlbPrivate && got == -Errors.ENOMEM ? $" ({MemoryCalls.NoHugePages(hugetlbShift)})" : ""), ExitCodes.RestoreConflict);
        var batch = ctx.Batch;
        byte[]? anonName = path.StartsWith("[anon:") && path.Length > 7 ? System.Text.Encoding.UTF8.GetBytes(path[6..^1] + "\0") : null;
        batch.Reserve(2 + AdviceMap.Length + 1 + guards.Count, anonName?.Length ?? 0);
        if (inherited.Count > 0)
        {
            // the parent's region, inherited by the fork: the pages of the parent that were not shared
            // any more go (this process's own follow in Pages records), the protection is this region's
            batch.AddChecked("mprotect", Nr.mprotect, (long)start, (long)len, mapProt);
            ulong at = start;
            foreach (var (a, l) in inherited.Append((end, 0UL)))
            {
                if (a > at)
                {
                    batch.Reserve(1, 0);
                    batch.AddChecked("madvise(MADV_DONTNEED)", Nr.madvise, (long)at, (long)(a - at), 4 /* MADV_DONTNEED */);
                }
                at = a + l;
            }
            batch.Reserve(2 + AdviceMap.Length + 1 + guards.Count, anonName?.Length ?? 0);
        }
        else if (b == Backing.SysvShm)
        {
            batch.Flush();   // attached at once, in order
            long got = SysvShm.AttachInVessel(ctx, obj, start, len, prot, pgoff);
            if (got != (long)start) Failed(got);
        }
        else batch.Add(Nr.mmap, (long)start, (long)len, mapProt, flags, fd, (long)pgoff, stopOnError: true,
            check: got => { if (got != (long)start) Failed(got); });
        // the fd is closed at once (a mapped file's at the next file, or before the fds are placed):
        // fd numbers are placed later and must not meet leftovers
        if (fd >= 0 && fd != st.OpenFd && !keep) { batch.AddChecked("close", Nr.close, fd); st.ClosesQueued++; }
        if (mapProt != prot) st.Reprotect.Add((start, len, prot));
        foreach (var (_, a, madv) in AdviceMap)
            if ((adv & a) != 0 && madv >= 0) batch.Add(Nr.madvise, (long)start, (long)len, madv);
        foreach (var (ga, gl) in guards)
            batch.AddChecked("madvise(MADV_GUARD_INSTALL)", Nr.madvise, (long)ga, (long)gl, MemoryCalls.MADV_GUARD_INSTALL);
        // locked regions are locked once their pages are in and their protection is final
        if ((adv & Advice.Locked) != 0) st.Lock.Add((start, len, (adv & Advice.LockOnFault) != 0));
        if (anonName != null)
            batch.Add(Nr.prctl, 0x53564d41 /* PR_SET_VMA */, 0 /* ANON_NAME */, (long)start, (long)len, (long)batch.AddData(anonName));
    }

    /// <summary>Refuses a mapped file that is gone or changed since the checkpoint; <paramref name="name"/>: how to call it (its path in the tree's view).</summary>
    private static void CheckFile(string path, long size, long mtime, string? name = null)
    {
        name ??= path;
        if (!FileCalls.TryStat(path, out var s))
            throw new CkptException($"restart: mapped file {name} no longer exists", ExitCodes.RestoreConflict);
        long m = s.MtimeSec * 1_000_000_000 + s.MtimeNsec;
        if (s.Size != size || m != mtime)
            throw new CkptException($"restart: mapped file {name} changed since the checkpoint (size {size} -> {s.Size})", ExitCodes.RestoreConflict);
    }

    private static ulong s_ownVdsoHash;
    internal static ulong OwnVdsoHash() => s_ownVdsoHash != 0 ? s_ownVdsoHash : s_ownVdsoHash = XxHash3.HashToUInt64(OwnVdso());

    private static byte[]? s_ownVdso;
    /// <summary>The contents of this kernel's vDSO (ckpt's own, read once), empty if ckpt has none mapped.</summary>
    internal static byte[] OwnVdso()
    {
        if (s_ownVdso != null) return s_ownVdso;
        var v = ProcMaps.ReadMaps(Environment.ProcessId).FirstOrDefault(x => x.Path == "[vdso]");
        return s_ownVdso = v == null ? [] : new ReadOnlySpan<byte>((void*)v.Start, (int)v.Length).ToArray();
    }

    /// <summary>Whether transparent huge pages are not turned off for the whole machine ("never").</summary>
    private static bool SystemAllowsThp() => ThpMode() != "never";

    /// <summary>Whether transparent huge pages are made on faults in every region ("always").</summary>
    private static bool ThpAlways() => ThpMode() == "always";

    /// <summary>The machine's THP mode (the bracketed word of .../transparent_hugepage/enabled), read once; "never" if unreadable.</summary>
    private static string ThpMode()
    {
        if (s_thpMode != null) return s_thpMode;
        try
        {
            string text = Native.FileCalls.ReadText("/sys/kernel/mm/transparent_hugepage/enabled");
            int open = text.IndexOf('['), close = text.IndexOf(']');
            s_thpMode = open >= 0 && close > open ? text[(open + 1)..close] : "never";
        }
        catch (IOException) { s_thpMode = "never"; }
        catch (UnauthorizedAccessException) { s_thpMode = "never"; }
        return s_thpMode;
    }
    private static string? s_thpMode;

    /// <summary>Regions with fewer pages saved are filled with process_vm_writev (registering costs two ioctls).</summary>
    private const ulong UffdMinPages = 64;

    /// <summary>
    /// ckpt's fd of a userfaultfd for the vessel's memory, made on first use: created inside the vessel
    /// (a userfaultfd belongs to the mm of its creator; UFFD_USER_MODE_ONLY needs no privilege) and taken
    /// with pidfd_getfd. -1 when the kernel refuses it: the pages then go in with process_vm_writev.
    /// </summary>
    private static int UffdFor(RestoreContext ctx, RestoreState st)
    {
        if (st.UffdTried) return st.Uffd;
        st.UffdTried = true;
        long v = ctx.Vessel.Inject(Nr.userfaultfd, FileCalls.O_CLOEXEC | MemoryCalls.UFFD_USER_MODE_ONLY);
        if (v < 0) { ctx.Session.Log.Debug($"pid {ctx.Pid}: no userfaultfd ({Errors.Describe((int)-v)}): pages go in with process_vm_writev"); return -1; }
        int fd = -1;
        try { fd = ctx.GrabFd((int)v); }
        finally { ctx.Batch.AddChecked("close", Nr.close, v); }
        if (!MemoryCalls.UffdHandshake(fd))
        {
            ctx.Session.Log.Debug($"pid {ctx.Pid}: userfaultfd handshake failed ({Errors.Describe(Marshal.GetLastPInvokeError())})");
            FileCalls.Close(fd);
            return -1;
        }
        return st.Uffd = fd;
    }

    /// <summary>
    /// Registers the current region on the userfaultfd at its first Pages record; returns the fd to copy
    /// with, or -1 (no userfaultfd, or the region cannot be registered: its pages go in with process_vm_writev).
    /// </summary>
    private static int RegisterRegion(RestoreContext ctx, RestoreState st)
    {
        if (st.RegLen != 0) return st.Uffd;
        int uffd = UffdFor(ctx, st);
        if (uffd >= 0 && MemoryCalls.UffdRegister(uffd, st.CurStart, st.CurEnd - st.CurStart))
        {
            st.RegStart = st.CurStart; st.RegLen = st.CurEnd - st.CurStart;
            return uffd;
        }
        if (uffd >= 0) ctx.Session.Log.Debug($"pid {ctx.Pid}: {st.CurStart:x}-{st.CurEnd:x} not registered on the userfaultfd ({Errors.Describe(Marshal.GetLastPInvokeError())})");
        st.CurUffd = false;
        return -1;
    }

    private static readonly byte[] s_zeroPage = GC.AllocateArray<byte>(PageSize, pinned: true);

    /// <summary>
    /// Rebuilds the blocks of the region that were fully present as transparent huge pages
    /// (MADV_COLLAPSE, which leaves the region's flags alone): populating 2 MiB at a time is several
    /// times faster than page by page, and the pages written next land in memory that is already there.
    /// A collapse needs a page in each block first. Failures (no huge page free, THP disabled for the
    /// process) leave the blocks to be filled page by page.
    /// </summary>
    private static void CollapseDense(RestoreContext ctx, RestoreState st)
    {
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        var blocks = new List<Iovec>();
        foreach (var h in st.Huge)
            for (ulong a = (ulong)h.Base; a < (ulong)h.Base + (ulong)h.Len; a += HugeBlock)
                blocks.Add(new Iovec { Base = (nint)a, Len = PageSize });
        fixed (byte* z = s_zeroPage)
        {
            var local = new Iovec { Base = (nint)z, Len = PageSize };
            var locals = new Iovec[Math.Min(blocks.Count, MaxRunsPerChunk)];
            Array.Fill(locals, local);
            fixed (Iovec* l = locals)
            fixed (Iovec* r = CollectionsMarshal.AsSpan(blocks))
                for (int i = 0; i < blocks.Count; i += MaxRunsPerChunk)
                {
                    int n = Math.Min(MaxRunsPerChunk, blocks.Count - i);
                    if (MemoryCalls.ProcessVmWritev(ctx.Pid, l, (ulong)n, r + i, (ulong)n, 0) != n * PageSize)
                        throw SyscallException.Last("process_vm_writev", ctx.Pid, $"pages at 0x{(ulong)r[i].Base:x}");
                }
        }
        fixed (Iovec* h = CollectionsMarshal.AsSpan(st.Huge))
            for (int i = 0; i < st.Huge.Count; i += MaxRunsPerChunk)
            {
                int n = Math.Min(MaxRunsPerChunk, st.Huge.Count - i);
                if (MemoryCalls.ProcessMadvise(ctx.Pidfd, h + i, (ulong)n, MemoryCalls.MADV_COLLAPSE, 0) < 0)
                {
                    ctx.Session.Log.Debug($"pid {ctx.Pid}: no huge pages at 0x{(ulong)h[i].Base:x}: {Errors.Describe(Marshal.GetLastPInvokeError())}");
                    break;
                }
            }
        st.Huge.Clear();
        ctx.Session.Log.Debug($"pid {ctx.Pid}: {blocks.Count} huge page(s) in {System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalMilliseconds:F1} ms");
    }

    private static void RestorePages(RestoreContext ctx, RestoreState st, Record rec)
    {
        if (!st.CurUffd && st.Huge.Count == 0 && rec.Payload.Length <= DeferMaxRecord + 4 + 12)
        {
            Defer(ctx, st, rec);
            return;
        }
        // this record needs its mapping now
        if (ctx.PendingBatchCalls > 0 || st.DeferredRuns.Count > 0) RunMappingsAndDeferredPages(ctx);
        if (st.Huge.Count > 0) CollapseDense(ctx, st);
        var writer = ctx.Session.State<PageWriter>();
        int uffd = st.CurUffd ? RegisterRegion(ctx, st) : -1;
        var (nruns, head) = ParseRuns(rec, st, st.Remote);
        // to the helper while it has room; else written here (both threads then write pages)
        if (writer.TryStart(ctx.Pid, uffd, rec, head, st.Remote, nruns)) return;
        rec.Verify();
        fixed (byte* d = rec.Payload.Span)
            WriteRuns(ctx.Pid, uffd, d + head, st.Local, st.Remote, nruns);
    }

    /// <summary>
    /// The runs of a Pages record, checked against the current region, into <paramref name="into"/>;
    /// returns how many, and the length of the header before the pages (the run count and the runs).
    /// </summary>
    private static (int Runs, int Head) ParseRuns(Record rec, RestoreState st, Iovec[] into)
    {
        var span = rec.Payload.Span;
        if (span.Length < 4) throw new ImageFormatException($"Pages record at offset {rec.Offset} is too short");
        int nruns = (int)BinaryPrimitives.ReadUInt32LittleEndian(span);
        if (nruns <= 0 || nruns > MaxRunsPerChunk || span.Length < 4 + nruns * 12)
            throw new ImageFormatException($"Pages record at offset {rec.Offset} has an impossible run count {nruns}");
        long total = 0;
        for (int k = 0; k < nruns; k++)
        {
            ulong a = BinaryPrimitives.ReadUInt64LittleEndian(span[(4 + k * 12)..]);
            uint n = BinaryPrimitives.ReadUInt32LittleEndian(span[(12 + k * 12)..]);
            if (a < st.CurStart || a + (ulong)n * PageSize > st.CurEnd || a % PageSize != 0)
                throw new ImageFormatException($"Pages record at offset {rec.Offset} has pages outside its region");
            into[k] = new Iovec { Base = (nint)a, Len = (nuint)(n * PageSize) };
            total += n * PageSize;
        }
        int head = 4 + nruns * 12;
        if (span.Length - head != total) throw new ImageFormatException($"Pages record at offset {rec.Offset} holds {span.Length - head} bytes for {total} bytes of pages");
        return (nruns, head);
    }

    /// <summary>
    /// Keeps a small Pages record (checked, and its runs against its region) to write once the mappings
    /// queued with it exist (<see cref="RunMappingsAndDeferredPages"/>, also when there is no room left).
    /// </summary>
    private static void Defer(RestoreContext ctx, RestoreState st, Record rec)
    {
        rec.Verify();
        var buffer = ctx.Session.State<DeferBuffer>();
        // (the records of one process come together: another's pages kept are written first all the same)
        if (buffer.Owner is { } other && other != ctx) RunMappingsAndDeferredPages(other);
        // (its pages are the payload but for the header: a little less than the payload)
        if (st.DeferredBytes + rec.Payload.Length > DeferBytes) RunMappingsAndDeferredPages(ctx);
        var (nruns, head) = ParseRuns(rec, st, st.Remote);
        st.DeferredRuns.AddRange(st.Remote.AsSpan(0, nruns));
        var pages = rec.Payload.Span[head..];
        buffer.Populate(st.DeferredBytes + pages.Length);
        pages.CopyTo(buffer.Data.Span[st.DeferredBytes..]);
        st.DeferredBytes += pages.Length;
        buffer.Owner = ctx;
    }

    /// <summary>
    /// Writes the pages at <paramref name="data"/> to the runs <paramref name="remote"/> of the process:
    /// with UFFDIO_COPY when the region is registered on <paramref name="uffd"/>, else process_vm_writev.
    /// </summary>
    private static void WriteRuns(int pid, int uffd, byte* data, Iovec[] local, Iovec[] remote, int nruns)
    {
        if (uffd >= 0)
        {
            long at = 0;
            for (int k = 0; k < nruns; k++)
            {
                CopyRun(pid, uffd, (ulong)remote[k].Base, data + at, (long)remote[k].Len);
                at += (long)remote[k].Len;
            }
            return;
        }
        fixed (Iovec* l = local)
        fixed (Iovec* r = remote)
        {
            long off = 0;
            for (int k = 0; k < nruns; k++) { l[k] = new Iovec { Base = (nint)(data + off), Len = r[k].Len }; off += (long)r[k].Len; }
            nint put = MemoryCalls.ProcessVmWritev(pid, l, (ulong)nruns, r, (ulong)nruns, 0);
            if (put != off) throw SyscallException.Last("process_vm_writev", pid, $"pages at 0x{(ulong)r[0].Base:x}");
        }
    }

    /// <summary>
    /// Copies one run into a registered region. A page already there (EEXIST: nothing in a fresh
    /// region should have made one, but a page is never lost for it) is written over with
    /// process_vm_writev, the rest still with UFFDIO_COPY.
    /// </summary>
    private static void CopyRun(int pid, int uffd, ulong dst, byte* src, long len)
    {
        long done = 0;
        while (done < len)
        {
            done += MemoryCalls.UffdCopy(uffd, dst + (ulong)done, src + done, len - done, out int errno);
            if (errno == 0) return;
            if (errno != Errors.EEXIST) throw new SyscallException("ioctl(UFFDIO_COPY)", errno, pid, $"pages at 0x{dst + (ulong)done:x}");
            MemoryCalls.WriteRemote(pid, dst + (ulong)done, new ReadOnlySpan<byte>(src + done, PageSize));
            done += PageSize;
        }
    }

    /// <summary>
    /// At every record but a Pages record: the registered region's pages are all handed out, so it is
    /// unregistered from the userfaultfd once they are in (by the helper, after the pages it still has to
    /// write, or here). <paramref name="processDone"/>: the next record belongs to another process (or
    /// there is none): waits until every page handed to the helper is in its process, and closes the
    /// userfaultfd. The helper may be behind by a region or two until then: the records of the rest of a
    /// process (its fds, signals...) do not touch the pages of its regions, and its threads run only
    /// after every process's records.
    /// </summary>
    public static void WaitForPages(RestoreSession s, bool processDone)
    {
        var writer = s.Existing<PageWriter>();
        if (s.Current is { } cur && cur.Existing<RestoreState>() is { } st)
        {
            if (st.RegLen != 0)
            {
                var (start, len) = (st.RegStart, st.RegLen);
                st.RegLen = 0;
                if (writer == null || !writer.QueueUnregister(st.Uffd, start, len, cur.Pid)) MemoryCalls.UffdUnregister(st.Uffd, start, len, cur.Pid);
            }
            if (processDone)
            {
                writer?.Wait();
                if (st.Uffd >= 0) { FileCalls.Close(st.Uffd); st.Uffd = -1; }
            }
        }
        else if (processDone) writer?.Wait();
    }

    /// <summary>Stops the helper that writes pages (at the end of a restart, whether it worked or not).</summary>
    public static void StopPageWriter(RestoreSession s) => s.Existing<PageWriter>()?.Dispose();

    /// <summary>
    /// A helper thread that writes Pages records into their processes while the tracer thread goes on with
    /// the next records: filling new memory is mostly the kernel allocating and clearing pages, and two CPUs
    /// do that about twice as fast as one (measured: 1 GiB in 390 ms with one thread, 205 ms with two); in a
    /// tree of small processes, the tracer thread rebuilds the rest of a process (fds, signals, the next
    /// process's creation) while the helper writes its pages. It takes a record while it has fewer than
    /// <see cref="MaxRecords"/> and <see cref="MaxBytes"/> (at first less) to write, the record's payload held
    /// (<see cref="Record.TryHold"/>: the image reader's ring goes round it); the tracer thread writes the
    /// others itself. Only large payloads can be held: small records are written by the tracer thread.
    /// </summary>
    private sealed class PageWriter : IDisposable
    {
        private const int MaxRecords = 32;
        /// <summary>Payload bytes it takes at most, once enough was offered (<see cref="ImageReader.LeadFor"/>: each payload held is a buffer of the image reader's).</summary>
        private const long MaxBytes = 4 << 20;
        private long _offered;

        private struct Item
        {
            public int Pid, Uffd, Nruns, DataOffset;
            public Record Rec;
            public System.Buffers.MemoryHandle Pin;
            /// <summary>The runs (null: unregister <see cref="Start"/>..+<see cref="Len"/> from <see cref="Uffd"/>).</summary>
            public Iovec[]? Remote;
            public ulong Start, Len;
        }

        private readonly Queue<Item> _queue = new();
        private readonly Stack<Iovec[]> _runArrays = new();
        private readonly Iovec[] _local = new Iovec[MaxRunsPerChunk];
        private Thread? _thread;
        private bool _stop;
        private int _records;
        private long _bytes;
        private Exception? _error;

        /// <summary>
        /// Hands over a Pages record whose runs are <paramref name="remote"/>[..<paramref name="nruns"/>]
        /// (copied), to write after the ones before it; false when the helper has enough to do or the
        /// payload cannot be held (the caller writes it).
        /// </summary>
        public bool TryStart(int pid, int uffd, Record rec, int dataOffset, Iovec[] remote, int nruns)
        {
            lock (_queue)
            {
                _offered += rec.Payload.Length;
                long limit = ImageReader.LeadFor(_offered, MaxBytes);
                if (_error != null || _records >= MaxRecords || (_records > 0 && _bytes + rec.Payload.Length > limit)) return false;
                if (!rec.TryHold()) return false;
                var runs = _runArrays.Count > 0 ? _runArrays.Pop() : new Iovec[MaxRunsPerChunk];
                remote.AsSpan(0, nruns).CopyTo(runs);
                _queue.Enqueue(new Item { Pid = pid, Uffd = uffd, Nruns = nruns, DataOffset = dataOffset, Rec = rec, Pin = rec.Payload.Pin(), Remote = runs });
                _records++;
                _bytes += rec.Payload.Length;
                Monitor.PulseAll(_queue);
            }
            _thread ??= Tracing.TracerThread.StartHelper("ckpt-pagewrite", Run);
            return true;
        }

        /// <summary>Queues the unregistration of a region behind the pages still to write; false when there are none (the caller does it now).</summary>
        public bool QueueUnregister(int uffd, ulong start, ulong len, int pid)
        {
            lock (_queue)
            {
                if (_records == 0) return false;
                _queue.Enqueue(new Item { Pid = pid, Uffd = uffd, Start = start, Len = len });
                Monitor.PulseAll(_queue);
                return true;
            }
        }

        private void Run()
        {
            while (true)
            {
                Item it;
                lock (_queue)
                {
                    while (_queue.Count == 0 && !_stop) Monitor.Wait(_queue);
                    if (_queue.Count == 0) return;
                    it = _queue.Peek();
                }
                try
                {
                    // checked here, on this thread, before any of it is written; after a failure, the rest is only let go
                    if (_error == null)
                    {
                        if (it.Remote == null) MemoryCalls.UffdUnregister(it.Uffd, it.Start, it.Len, it.Pid);
                        else { it.Rec.Verify(); WriteRuns(it.Pid, it.Uffd, (byte*)it.Pin.Pointer + it.DataOffset, _local, it.Remote, it.Nruns); }
                    }
                }
                catch (Exception e) { lock (_queue) _error ??= e; }
                lock (_queue)
                {
                    _queue.Dequeue();
                    if (it.Remote != null) Done(it);
                    Monitor.PulseAll(_queue);
                }
            }
        }

        /// <summary>Lets go of a record's payload (under the lock).</summary>
        private void Done(Item it)
        {
            it.Pin.Dispose();
            it.Rec.Release();
            _runArrays.Push(it.Remote!);
            _records--;
            _bytes -= it.Rec.Payload.Length;
        }

        /// <summary>Waits until every record and unregistration handed over is done; a failure to write one is thrown here.</summary>
        public void Wait()
        {
            lock (_queue)
            {
                while (_queue.Count > 0) Monitor.Wait(_queue);
                if (_error is { } e) { _error = null; System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e); }
            }
        }

        public void Dispose()
        {
            lock (_queue) { _stop = true; _error ??= new OperationCanceledException(); Monitor.PulseAll(_queue); }
            _thread?.Join();
            _thread = null;
            // (nothing is left when the thread was never started)
            lock (_queue) while (_queue.Count > 0) { var it = _queue.Dequeue(); if (it.Remote != null) Done(it); }
        }
    }

    public void Finish(RestoreContext ctx)
    {
        var st = ctx.State<RestoreState>();
        var batch = ctx.Batch;
        batch.Flush();
        foreach (var (s, l) in st.AioRings) AioRing.Restore(ctx, s, l);
        foreach (var (s, l, p) in st.Reprotect) batch.AddChecked("mprotect", Nr.mprotect, (long)s, (long)l, p);
        foreach (var (s, l, onFault) in st.Lock)
            batch.Add(Nr.mlock2, (long)s, (long)l, onFault ? 1 /* MLOCK_ONFAULT */ : 0, check: got =>
            {
                if (got < 0) throw new CkptException($"restart: cannot lock {s:x}-{s + l:x} in memory again (mlock): {Errors.Describe((int)-got)}; raise RLIMIT_MEMLOCK or restart as root", ExitCodes.RestoreConflict);
            });
        batch.Flush();
    }

    public void Describe(Record rec, InfoNode info)
    {
        var map = info.List("memory");
        if (rec.Kind == RecordKind.Pages)
        {
            long bytes = rec.Payload.Length - 4 - BinaryPrimitives.ReadUInt32LittleEndian(rec.Payload.Span) * 12;
            var totals = info.Child("totals");
            totals.Set("page_bytes", (long)(totals.Get("page_bytes") ?? 0L) + bytes);
            return;
        }
        var r = rec.Reader();
        ulong start = r.U64(), end = r.U64();
        uint prot = r.U32();
        var b = (Backing)r.U8();
        bool gd = r.Bool(), nr = r.Bool();
        var adv = (Advice)r.U32(); ulong off = r.U64(); string path = r.Str(); r.I64(); r.I64(); ulong pages = r.U64();
        r.U64(); uint obj = r.AtEnd ? 0 : r.U32();
        if (!r.AtEnd) r.Bool();
        long blocks = 0;
        for (uint i = 0, n = r.AtEnd ? 0 : r.U32(); i < n; i++) { r.U64(); blocks += r.U32(); }
        int hugetlbShift = r.AtEnd ? 0 : r.U8();
        long guardPages = 0;
        for (uint i = 0, n = r.AtEnd ? 0 : r.U32(); i < n; i++) { r.U64(); guardPages += r.U32(); }
        long inheritedPages = 0;
        for (uint i = 0, n = r.AtEnd ? 0 : r.U32(); i < n; i++) { r.U64(); inheritedPages += r.U32(); }
        string perms = $"{((prot & 1) != 0 ? 'r' : '-')}{((prot & 2) != 0 ? 'w' : '-')}{((prot & 4) != 0 ? 'x' : '-')}{(b is Backing.AnonShared or Backing.FileShared or Backing.ObjectShared or Backing.SysvShm or Backing.AioRing ? 's' : 'p')}";
        var node = new InfoNode().Set("range", $"{start:x}-{end:x}").Set("prot", perms).Set("backing", b.ToString())
            .Set("offset", off).Set("path", path).Set("pages_saved", pages).Set("flags", (gd ? "growsdown " : "") + (nr ? "noreserve" : ""));
        if (obj != 0) node.Set("object", obj);
        if (blocks > 0) node.Set("full_2m_blocks", blocks);
        if (hugetlbShift > 0) node.Set("huge_page_kib", 1L << hugetlbShift >> 10);
        if (guardPages > 0) node.Set("guard_pages", guardPages);
        if (inheritedPages > 0) node.Set("pages_inherited", inheritedPages);
        if ((adv & Advice.Droppable) != 0) node.Set("droppable", true);
        map.Add(node);
    }
}
