using System.IO.Hashing;
using System.Text;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;
using Ckpt.Tracing;

namespace Ckpt.Kinds;

/// <summary>
/// The address space as a whole: the mm fields (code/data/brk/stack/arg/env bounds), auxv, the
/// executable, and the layout of all regions. At restart this record comes before any region: it
/// places the trampoline where the image maps nothing, empties the vessel and moves the vDSO.
/// Also the address space's membarrier registrations (MEMBARRIER_CMD_REGISTER_*: a process that
/// registered for expedited barriers gets EPERM from them in an address space that did not), and
/// mlockall(MCL_FUTURE) (every region mapped later is locked; the kernel shows it nowhere: probed with a
/// page mapped by injection, counted in VmLck when it is set, left unpopulated with MCL_ONFAULT).
/// </summary>
public sealed class MmState : IStateKind
{
    public static readonly MmState Instance = new();
    public string Name => "mm";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.MmState];
    public int FinishOrder => 20;

    public const ulong TaskSize = 0x7ffffffff000, MmapMinAddr = 0x10000;
    public static readonly string[] VdsoNames = ["[vvar]", "[vvar_vclock]", "[vdso]"];

    private sealed class Saved
    {
        public ulong[] Fields = new ulong[11];
        public byte[] Auxv = [];
        public string Exe = "";
        public bool ExeInCkptNamespace;
        public long Membarrier = -1;
        public int Mlockall;
        public byte[]? Vdso;
    }

    private const int MCL_FUTURE = 2, MCL_ONFAULT = 4;

    // membarrier(2): what MEMBARRIER_CMD_GET_REGISTRATIONS (Linux 6.3) returns is the mask of the
    // REGISTER commands the address space was registered with
    private const long MembarrierGetRegistrations = 1 << 9;
    private static readonly (long Cmd, string Name)[] MembarrierRegistrations =
    [
        (1 << 2, "GLOBAL_EXPEDITED"), (1 << 4, "PRIVATE_EXPEDITED"),
        (1 << 6, "PRIVATE_EXPEDITED_SYNC_CORE"), (1 << 8, "PRIVATE_EXPEDITED_RSEQ"),
    ];

    public void Checkpoint(CheckpointContext ctx)
    {
        var f = ProcStat.Read(ctx.Pid);
        long brk = ctx.Inject("brk", Nr.brk, 0);
        var p = new PayloadWriter();
        p.U64(f.StartCode).U64(f.EndCode).U64(f.StartData).U64(f.EndData).U64(f.StartBrk).U64((ulong)brk).U64(f.StartStack)
         .U64(f.ArgStart).U64(f.ArgEnd).U64(f.EnvStart).U64(f.EnvEnd);
        p.Bytes(File.ReadAllBytes($"/proc/{ctx.Pid}/auxv"));
        string exe = ProcLink($"/proc/{ctx.Pid}/exe");
        p.Str(exe);
        // the layout: every region the image will map, and the vDSO trio
        var regions = ctx.Vmas.Where(v => v.Path != "[vsyscall]").ToList();
        p.U32((uint)regions.Count);
        foreach (var v in regions)
        {
            p.U64(v.Start).U64(v.End);
            p.U8((byte)(Array.IndexOf(VdsoNames, v.Path) + 1));
        }
        // appended field: the membarrier registrations (-errno where the kernel cannot tell them)
        long reg = ctx.Task.Inject(Nr.membarrier, MembarrierGetRegistrations, 0, 0);
        if (reg < 0) ctx.Log.Debug($"pid {ctx.Pid}: membarrier registrations unknown ({Errors.Describe((int)-reg)})");
        p.I64(reg);
        // appended field: mlockall flags for the regions mapped later (only probed where memory is locked)
        p.U8((byte)(ctx.Status.VmLckKb > 0 ? ProbeMlockall(ctx) : 0));
        // appended field: the vDSO's contents (empty if it was unmapped), so that a restart on a kernel
        // whose vDSO differs can put it back with its functions leading to the new one (VdsoProxy)
        var vdso = ctx.Vmas.FirstOrDefault(v => v.Path == "[vdso]");
        var vdsoBytes = vdso == null ? [] : new byte[vdso.Length];
        if (vdso != null) MemoryCalls.ReadRemote(ctx.Pid, vdso.Start, vdsoBytes);
        p.Bytes(vdsoBytes);
        // appended field: the executable is opened in ckpt's mount namespace at restart (a sandbox's first
        // process runs a program of the host that its namespace no longer shows)
        p.Bool(!exe.EndsWith(" (deleted)", StringComparison.Ordinal) && FileCalls.TryStat($"/proc/{ctx.Pid}/exe", out var exeSt)
               && MountNamespace.OnlyInCkptNamespace(ctx.Session, exe, exeSt.Dev, exeSt.Ino));
        ctx.Image.Write(RecordKind.MmState, p);
    }

    /// <summary>
    /// MCL_FUTURE (| MCL_ONFAULT) when the process called mlockall with it: a page mapped now (by injection,
    /// unmapped again) is locked then, so VmLck grows, and populated unless MCL_ONFAULT (mincore).
    /// </summary>
    private static int ProbeMlockall(CheckpointContext ctx)
    {
        long before = ProcStatus.Read(ctx.Pid).VmLckKb;   // read again around the page it maps
        long a = ctx.Task.Inject(Nr.mmap, 0, 4096, MemoryCalls.PROT_READ, MemoryCalls.MAP_PRIVATE | MemoryCalls.MAP_ANONYMOUS, -1, 0);
        if (a < 0 && a > -4096)
        {
            // EAGAIN: a locked page would go beyond RLIMIT_MEMLOCK, which only happens when it is locked
            ctx.Log.Debug($"pid {ctx.Pid}: mlockall probe: mmap {Errors.Describe((int)-a)}");
            return a == -Errors.EAGAIN ? MCL_FUTURE : 0;
        }
        try
        {
            if (ProcStatus.Read(ctx.Pid).VmLckKb <= before) return 0;
            long rc = ctx.Task.Inject(Nr.mincore, a, 4096, (long)ctx.Scratch);
            bool resident = rc == 0 && (ctx.ReadScratch(0, 1)[0] & 1) != 0;
            ctx.Log.Debug($"pid {ctx.Pid}: mlockall(MCL_FUTURE{(resident ? "" : " | MCL_ONFAULT")}) in force");
            return MCL_FUTURE | (resident ? 0 : MCL_ONFAULT);
        }
        finally { ctx.Task.Inject(Nr.munmap, a, 4096); }
    }

    internal static string ProcLink(string path)
    {
        var info = new FileInfo(path);
        return info.LinkTarget ?? throw new CkptException($"cannot read {path}");
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        var st = ctx.State<Saved>();
        for (int i = 0; i < 11; i++) st.Fields[i] = r.U64();
        st.Auxv = r.Bytes().ToArray();
        st.Exe = r.Str();
        uint n = r.U32();
        var ranges = new List<(ulong Start, ulong End, int Special)>();
        for (int i = 0; i < n; i++) ranges.Add((r.U64(), r.U64(), r.U8()));
        st.Membarrier = r.AtEnd ? -1 : r.I64();
        st.Mlockall = r.AtEnd ? 0 : r.U8();
        if ((st.Mlockall & ~(MCL_FUTURE | MCL_ONFAULT)) != 0) throw new ImageFormatException($"MmState record at offset {rec.Offset}: mlockall flags 0x{st.Mlockall:x}");
        st.Vdso = r.AtEnd ? null : r.Bytes().ToArray();
        st.ExeInCkptNamespace = !r.AtEnd && r.Bool();
        r.End();
        PrepareVessel(ctx, ranges, st.Vdso);
    }

    /// <summary>Trampoline outside the image's regions, then nothing else of the vessel left but the vDSO, moved.</summary>
    private static void PrepareVessel(RestoreContext ctx, List<(ulong Start, ulong End, int Special)> image, byte[]? oldVdso)
    {
        var task = ctx.Vessel;
        var vessel = ProcMaps.ReadMaps(ctx.Pid);
        var busy = image.Select(x => (x.Start, x.End)).Concat(vessel.Select(v => (v.Start, v.End))).OrderBy(x => x.Start).ToList();
        ulong t = FindGap(busy, RestoreContext.TrampolineSize, 0x1000000);
        long got = task.Inject(Nr.mmap, (long)t, RestoreContext.TrampolineSize,
            MemoryCalls.PROT_READ | MemoryCalls.PROT_WRITE | MemoryCalls.PROT_EXEC,
            MemoryCalls.MAP_PRIVATE | MemoryCalls.MAP_ANONYMOUS | MemoryCalls.MAP_FIXED_NOREPLACE, -1, 0);
        if (got != (long)t) throw new SyscallException("mmap trampoline (injected)", got < 0 ? (int)-got : Errors.EEXIST, ctx.Pid);
        // the gadget (syscall; int3), then the routine that runs batches of calls (SyscallBatch)
        var code = new byte[SyscallBatch.CodeOffset + TracedTask.BatchCode.Length];
        code.AsSpan().Fill(0xcc);
        code[0] = 0x0f; code[1] = 0x05;
        TracedTask.BatchCode.CopyTo(code.AsSpan(SyscallBatch.CodeOffset));
        MemoryCalls.WriteRemote(ctx.Pid, t, code);
        ctx.Trampoline = t;
        task.SyscallGadget = t;
        ctx.Log.Debug($"trampoline at 0x{t:x}");

        // drop every inherited fd and every mapping but the trampoline and the vDSO trio
        // an fd table shared with the parent is the parent's: its fds are placed already
        // (done once in the root of a tree, before its children were forked: FdsCleaned)
        if (!ctx.Shares.HasFlag(ShareFlags.Files) && !ctx.FdsCleaned) KeepInheritable(ctx);
        var vdso = vessel.Where(v => VdsoNames.Contains(v.Path)).ToList();
        var keep = vdso.Select(v => (v.Start, v.End)).Append((t, t + RestoreContext.TrampolineSize));
        // forked from its restored parent: what lies where its own regions go stays for now (a region its
        // image says was inherited keeps its pages; the others are mapped over)
        if (ctx.LateForked)
        {
            // (only private anonymous memory and private mappings of files can be inherited: the rest goes,
            // a SysV attach cannot be made over it, huge pages held would be missing)
            var anon = vessel.Where(v => !v.Shared && (v.Inode == 0
                ? v.Path is "" or "[heap]" or "[stack]" || v.Path.StartsWith("[anon:", StringComparison.Ordinal)
                : v.Path.StartsWith('/') && !v.IsDeleted)).ToList();
            keep = keep.Concat(image.Where(x => x.Special == 0)
                .SelectMany(x => anon.Where(v => v.Start < x.End && v.End > x.Start).Select(v => (Math.Max(v.Start, x.Start), Math.Min(v.End, x.End)))));
        }
        foreach (var (start, len) in AllBut(keep))
            ctx.Batch.AddChecked("munmap", Nr.munmap, (long)start, (long)len);

        // the unmaps and the vDSO moves run in one batch (from the trampoline, which stays)
        var want = new List<(ulong Start, ulong End, string Name)>();
        foreach (var x in image) if (x.Special > 0) want.Add((x.Start, x.End, VdsoNames[x.Special - 1]));
        if (VdsoProxy.Needed(vdso, want, oldVdso)) VdsoProxy.Build(ctx, vdso, want, image, oldVdso!);
        else MoveVdso(ctx, vdso, want, image);
        ctx.FlushBatch();
    }

    /// <summary>
    /// The vessel was forked from ckpt and holds all of ckpt's fds: the ones that may replace external
    /// fds (stdin/stdout/stderr and those named by --inherit-fd) are moved to the top of the fd range,
    /// everything else is closed.
    /// </summary>
    internal static void KeepInheritable(RestoreContext ctx)
    {
        var wanted = InheritableFds(ctx.Options);
        int limit = (int)Math.Min(ProcLimits.Read(Environment.ProcessId)[ProcLimits.RLIMIT_NOFILE].Soft, 1 << 20);
        int next = limit - wanted.Count;
        foreach (int src in wanted)
        {
            long got = ctx.Vessel.Inject(Nr.fcntl, src, 1030 /* F_DUPFD_CLOEXEC */, next);
            if (got >= 0) { ctx.Inherited[src] = (int)got; next = (int)got + 1; }
        }
        int low = ctx.Inherited.Count > 0 ? ctx.Inherited.Values.Min() : limit;
        ctx.Inject("close_range", Nr.close_range, 0, low - 1, 0);
        ctx.Inject("close_range", Nr.close_range, next, uint.MaxValue, 0);
    }

    /// <summary>ckpt's fds that may replace external fds: stdin, stdout, stderr and those named by --inherit-fd.</summary>
    internal static SortedSet<int> InheritableFds(RestoreOptions options) => new(options.InheritFds.Values) { 0, 1, 2 };

    internal static void MoveVdso(RestoreContext ctx, List<VmaInfo> here, List<(ulong Start, ulong End, string Name)> want,
        List<(ulong Start, ulong End, int Special)> image)
    {
        if (want.Count == 0)
        {
            foreach (var v in here) ctx.Batch.AddChecked("munmap vdso", Nr.munmap, (long)v.Start, (long)v.Length);
            return;
        }
        // the pieces the process had unmapped (a process may unmap [vdso] and [vvar] and keep, say,
        // [vvar_vclock]) go; the others must be the same pieces with the same sizes, in the same relative places
        var names = want.Select(w => w.Name).ToHashSet();
        foreach (var v in here.Where(v => !names.Contains(v.Path)))
            ctx.Batch.AddChecked("munmap vdso", Nr.munmap, (long)v.Start, (long)v.Length);
        var mine = here.Where(v => names.Contains(v.Path)).OrderBy(v => v.Start).ToList();
        var theirs = want.OrderBy(v => v.Start).ToList();
        if (!SameVdsoLayout(here, want))
            throw new CkptException("restart: the vDSO layout of this kernel differs from the checkpointed one; restart on a machine with the same kernel", ExitCodes.RestoreConflict);
        long delta = (long)(theirs[0].Start - mine[0].Start);
        if (delta == 0) return;
        ulong lo = mine[0].Start, hi = mine[^1].End, len = hi - lo;
        bool overlap = theirs[0].Start < hi && theirs[^1].End > lo;
        if (overlap)
        {
            var busy = image.Select(x => (Start: x.Start, End: x.End)).Append((Start: lo, End: hi)).Append((Start: ctx.Trampoline, End: ctx.Trampoline + (ulong)RestoreContext.TrampolineSize)).OrderBy(x => x.Start).ToList();
            ulong tmp = FindGap(busy, len, 0x100000000);
            Remap(ctx, mine.Select(v => (v.Start, v.Length)).ToList(), (long)(tmp - lo));
            Remap(ctx, mine.Select(v => (v.Start + (tmp - lo), v.Length)).ToList(), (long)(theirs[0].Start - tmp));
        }
        else Remap(ctx, mine.Select(v => (v.Start, v.Length)).ToList(), delta);
    }

    /// <summary>Whether the pieces of this kernel's vDSO trio that the image has are the same pieces, of the same sizes, in the same relative places.</summary>
    internal static bool SameVdsoLayout(List<VmaInfo> here, List<(ulong Start, ulong End, string Name)> want)
    {
        var names = want.Select(w => w.Name).ToHashSet();
        var mine = here.Where(v => names.Contains(v.Path)).OrderBy(v => v.Start).ToList();
        var theirs = want.OrderBy(v => v.Start).ToList();
        bool same = mine.Count == theirs.Count;
        for (int i = 0; same && i < mine.Count; i++)
            same = mine[i].Path == theirs[i].Name && mine[i].Length == theirs[i].End - theirs[i].Start
                && mine[i].Start - mine[0].Start == theirs[i].Start - theirs[0].Start;
        return same;
    }

    internal static void Remap(RestoreContext ctx, List<(ulong Start, ulong Len)> pieces, long delta)
    {
        foreach (var (s, l) in pieces)
            ctx.Batch.AddChecked("mremap vdso", Nr.mremap, (long)s, (long)l, (long)l,
                MemoryCalls.MREMAP_MAYMOVE | MemoryCalls.MREMAP_FIXED, (long)s + delta);
    }

    /// <summary>The user address ranges (start, length) outside <paramref name="keep"/>: what to unmap to keep only those.</summary>
    internal static List<(ulong Start, ulong Length)> AllBut(IEnumerable<(ulong Start, ulong End)> keep)
    {
        var gaps = new List<(ulong, ulong)>();
        ulong cur = MmapMinAddr;
        foreach (var (s, e) in keep.OrderBy(k => k.Start))
        {
            if (s > cur) gaps.Add((cur, s - cur));
            cur = Math.Max(cur, e);
        }
        if (cur < TaskSize) gaps.Add((cur, TaskSize - cur));
        return gaps;
    }

    /// <summary>Lowest page-aligned address at or above <paramref name="from"/> with <paramref name="size"/> free bytes.</summary>
    internal static ulong FindGap(List<(ulong Start, ulong End)> busySorted, ulong size, ulong from)
    {
        ulong cand = from;
        foreach (var (s, e) in busySorted)
        {
            if (e <= cand) continue;
            if (s >= cand + size) break;
            cand = (e + 0xfff) & ~0xfffUL;
        }
        if (cand + size > TaskSize) throw new CkptException("restart: no free address range for the trampoline", ExitCodes.Internal);
        return cand;
    }

    public void Finish(RestoreContext ctx)
    {
        var st = ctx.State<Saved>();
        // an executable deleted (or replaced) since it started is the deleted file rebuilt for its mappings
        string exe = st.Exe.EndsWith(" (deleted)", StringComparison.Ordinal) ? MemoryObject.DeletedFilePath(ctx, st.Exe[..^10]) ?? st.Exe : st.Exe;
        int exeFd = st.ExeInCkptNamespace ? MountNamespace.OpenInCkptNamespace(ctx, exe, FileCalls.O_RDONLY)
            : ctx.OpenInVessel(exe, FileCalls.O_RDONLY | FileCalls.O_CLOEXEC);
        // the rest in one batch (one ptrace round trip), its data in the batch's area
        var batch = ctx.Batch;
        batch.Reserve(3 + MembarrierRegistrations.Length, st.Auxv.Length + 8 + PrctlMmMap.Size);
        ulong auxv = batch.AddData(st.Auxv);
        var map = new PrctlMmMap
        {
            StartCode = st.Fields[0], EndCode = st.Fields[1], StartData = st.Fields[2], EndData = st.Fields[3],
            StartBrk = st.Fields[4], Brk = st.Fields[5], StartStack = st.Fields[6], ArgStart = st.Fields[7],
            ArgEnd = st.Fields[8], EnvStart = st.Fields[9], EnvEnd = st.Fields[10],
            Auxv = auxv, AuxvSize = (uint)st.Auxv.Length, ExeFd = (uint)exeFd,
        };
        ulong mapAddr = batch.AddData(StructBytes(ref map));
        const int PR_SET_MM = 35, PR_SET_MM_MAP = 14;
        batch.AddChecked("prctl(PR_SET_MM_MAP)", Nr.prctl, PR_SET_MM, PR_SET_MM_MAP, (long)mapAddr, PrctlMmMap.Size, 0);
        batch.AddChecked("close", Nr.close, exeFd);
        RegisterMembarrier(ctx, batch, st.Membarrier);
        // once every region is mapped (and locked or not as it was): those mapped from now on are locked
        if (st.Mlockall != 0)
            batch.Add(Nr.mlockall, st.Mlockall, stopOnError: true, check: got =>
            {
                if (got < 0) throw new CkptException($"restart: pid {ctx.Pid} had mlockall(MCL_FUTURE) in force, which cannot be set again: {Errors.Describe((int)-got)}; raise RLIMIT_MEMLOCK or restart as root", ExitCodes.RestoreConflict);
            });
        batch.Flush();
    }

    /// <summary>
    /// Registers the address space for the membarrier commands it was registered for. (The vessel,
    /// forked from ckpt, may already be registered for some: a registration cannot be undone, and an
    /// extra one changes nothing for a process that does not use those commands.)
    /// </summary>
    private static void RegisterMembarrier(RestoreContext ctx, SyscallBatch batch, long mask)
    {
        if (mask <= 0) return;
        foreach (var (cmd, name) in MembarrierRegistrations)
        {
            if ((mask & cmd) == 0) continue;
            batch.Add(Nr.membarrier, cmd, 0, 0, stopOnError: true, check: got =>
            {
                if (got < 0)
                    throw new CkptException($"restart: pid {ctx.Pid} was registered for membarrier {name}, which this kernel refuses ({Errors.Describe((int)-got)}); restart on a kernel that has it", ExitCodes.RestoreConflict);
            });
        }
        ctx.Session.Log.Debug($"pid {ctx.Pid}: membarrier registrations 0x{mask:x} made again");
    }

    internal static unsafe byte[] StructBytes<T>(ref T value) where T : unmanaged
    {
        var b = new byte[sizeof(T)];
        fixed (T* p = &value) new ReadOnlySpan<byte>(p, sizeof(T)).CopyTo(b);
        return b;
    }

    internal static unsafe T FromBytes<T>(ReadOnlySpan<byte> b) where T : unmanaged
    {
        T v = default;
        b[..sizeof(T)].CopyTo(new Span<byte>(&v, sizeof(T)));
        return v;
    }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        var mm = info.Child("mm");
        string[] names = ["start_code", "end_code", "start_data", "end_data", "start_brk", "brk", "start_stack", "arg_start", "arg_end", "env_start", "env_end"];
        foreach (var nm in names) mm.Set(nm, $"0x{r.U64():x}");
        mm.Set("auxv_bytes", r.Bytes().Length);
        mm.Set("exe", r.Str());
        for (uint i = 0, n = r.U32(); i < n; i++) { r.U64(); r.U64(); r.U8(); }
        if (!r.AtEnd && r.I64() is var reg and >= 0)
            mm.Set("membarrier", string.Join('|', MembarrierRegistrations.Where(m => (reg & m.Cmd) != 0).Select(m => m.Name.ToLowerInvariant())));
        if (!r.AtEnd && r.U8() is var mcl and not 0)
            mm.Set("mlockall", (mcl & MCL_ONFAULT) != 0 ? "future|onfault" : "future");
        if (!r.AtEnd && r.Bytes() is { Length: > 0 } vdso)
            mm.Set("vdso", $"{vdso.Length} bytes, {(XxHash3.HashToUInt64(vdso) == MemoryRegion.OwnVdsoHash() ? "this kernel's" : "not this kernel's (a restart here puts it back as a proxy)")}");
        if (!r.AtEnd && r.Bool()) mm.Set("exe_in_ckpt_namespace", true);
    }
}
