using System.Globalization;
using System.Runtime.InteropServices;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>
/// SysV shared memory segments attached by the process (maps path <c>/SYSV%08x (deleted)</c>, the key;
/// the inode number is the shmid). Each segment is saved once, the first time a region attaches it:
/// a SysvShm record (key, shmid, size, mode, owner) and SysvShmData records with its data ranges; the
/// Vma records (backing SysvShm) refer to it by objref. At restart a segment that still exists with
/// the same id, key and size (a keyed segment outlives its processes) is attached as it is; otherwise it
/// is created again with the same id (<c>/proc/sys/kernel/shm_next_id</c>) — refused if the id or the key
/// cannot be had — filled through an attach of ckpt's own, given its owner and mode, and removed again
/// (IPC_RMID) once attached if it was marked for removal.
/// </summary>
public sealed unsafe class SysvShm : IStateKind
{
    public static readonly SysvShm Instance = new();
    public string Name => "SysV shared memory";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.SysvShm, RecordKind.SysvShmData];
    public int FinishOrder => 49;

    public static bool IsSysvPath(string path) => path.StartsWith("/SYSV", StringComparison.Ordinal) && path.EndsWith(" (deleted)", StringComparison.Ordinal);

    // ---------------------------------------------------------------- checkpoint

    public void Checkpoint(CheckpointContext ctx) { }

    private sealed class CheckpointState
    {
        public readonly Dictionary<int, uint> Segments = new();   // shmid → objref
    }

    /// <summary>Saves the segment attached at <paramref name="v"/> (once); returns its objref.</summary>
    public static uint SaveMapped(CheckpointContext ctx, VmaInfo v)
    {
        string where = $"mapping {v.Start:x}-{v.End:x} ({v.Path})";
        if (!int.TryParse(v.Path.AsSpan(5, 8), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out int key) || v.Inode > int.MaxValue)
            throw new NotCheckpointableException(ctx.Pid, $"{where}: not a SysV segment name");
        int shmid = (int)v.Inode;
        if (!SharedMemoryCalls.Stat(shmid, out var info) || info.Key != key)
            throw new NotCheckpointableException(ctx.Pid, $"{where}: SysV segment {shmid} cannot be read (another IPC namespace?)");
        // (a part of an attach, split by munmap or mprotect, is attached again as that part: AttachInVessel)
        var state = ctx.Session.State<CheckpointState>();
        if (state.Segments.TryGetValue(shmid, out uint known)) return known;
        // attached outside the tree too (more attaches than the tree's): refused, naming the other user
        ulong inTree = (ulong)ctx.Session.Processes.Sum(p => p.Vmas.Count(x => x.Inode == v.Inode && x.Path.StartsWith("/SYSV")));
        if (info.Nattch > inTree && FileCalls.TryStat($"/proc/{ctx.Pid}/map_files/{v.Start:x}-{v.End:x}", out var sst))
        {
            var outside = ctx.Session.State<OutsideHolders>().Find(ctx.Session, sst.Dev, sst.Ino);
            throw new NotCheckpointableException(ctx.Pid, $"{where}: SysV segment {shmid} is attached {info.Nattch} times, {inTree} of them in the tree{(outside is { } o ? $" (pid {o.Pid} outside the tree has it: {o.Where})" : "")}; the restarted tree would no longer share it");
        }
        uint objref = ctx.Files.Intern($"sysv:{shmid}").Ref;
        state.Segments[shmid] = objref;
        // a segment on huge pages (SHM_HUGETLB) is a hugetlbfs file: its block size is the page size
        int hugeShift = FileCalls.TryStat($"/proc/{ctx.Pid}/map_files/{v.Start:x}-{v.End:x}", out var fst) ? MemoryCalls.HugePageShift(fst) : 0;
        // appended field: log2 of its huge page size, 0 for ordinary pages
        var p = new PayloadWriter().U32(objref).I32(key).I32(shmid).U64(info.Size).U32(info.Mode).U32(info.Uid).U32(info.Gid).U8((byte)hugeShift);
        ctx.Image.Write(RecordKind.SysvShm, p);
        int fd = MemoryObject.OpenOrThrow($"/proc/{ctx.Pid}/map_files/{v.Start:x}-{v.End:x}", ctx.Pid);
        try { MemoryObject.SaveData(ctx, RecordKind.SysvShmData, objref, fd, (long)info.Size, v.Path, skipZeros: hugeShift != 0); }
        finally { FileCalls.Close(fd); }
        ctx.Log.Debug($"SysV segment {shmid} (key {key:x8}, {info.Size} bytes, mode {Convert.ToString(info.Mode, 8)}) saved as objref {objref}");
        return objref;
    }

    // ---------------------------------------------------------------- restart

    private sealed class Segment
    {
        public required int Shmid;
        public required ulong Size;
        public required uint Mode, Uid, Gid;
        public required bool Created;
        public nint Mine;    // our attach while it is filled, 0 after
    }

    private sealed class RestoreState
    {
        public readonly Dictionary<uint, Segment> Segments = new();
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var st = ctx.Session.State<RestoreState>();
        var r = rec.Reader();
        uint objref = r.U32();
        if (rec.Kind == RecordKind.SysvShmData)
        {
            long off = r.I64();
            var data = rec.Payload.Span[12..];
            if (!st.Segments.TryGetValue(objref, out var seg))
                throw new ImageFormatException($"SysvShmData record at offset {rec.Offset} for objref {objref}, which is no SysV segment");
            if (off < 0 || (ulong)off + (ulong)data.Length > seg.Size)
                throw new ImageFormatException($"SysvShmData record at offset {rec.Offset} lies outside its segment");
            if (seg.Mine != 0) data.CopyTo(new Span<byte>((void*)(seg.Mine + (nint)off), data.Length));
            return;
        }
        int key = r.I32(), shmid = r.I32();
        ulong size = r.U64();
        uint mode = r.U32(), uid = r.U32(), gid = r.U32();
        int hugeShift = r.AtEnd ? 0 : r.U8();
        r.End();
        if (hugeShift != 0 && hugeShift is < 13 or > 40) throw new ImageFormatException($"SysvShm record at offset {rec.Offset}: huge pages of 2^{hugeShift} bytes");
        st.Segments[objref] = Rebuild(ctx, key, shmid, size, mode, uid, gid, hugeShift);
    }

    private static Segment Rebuild(RestoreContext ctx, int key, int shmid, ulong size, uint mode, uint uid, uint gid, int hugeShift)
    {
        string what = $"SysV segment {shmid} (key {key:x8})";
        bool removed = (mode & SharedMemoryCalls.SHM_DEST) != 0;
        // a keyed segment outlives its processes: if it is still there, it is the one to attach
        if (key != 0 && !removed && SharedMemoryCalls.Stat(shmid, out var now) && now.Key == key && now.Size == size
            && (now.Mode & SharedMemoryCalls.SHM_DEST) == 0)
        {
            ctx.Log.Debug($"{what} still exists: attached as it is");
            return new Segment { Shmid = shmid, Size = size, Mode = mode, Uid = uid, Gid = gid, Created = false };
        }
        if (key != 0 && SharedMemoryCalls.Get(key, 0, 0) >= 0)
            throw new CkptException($"restart: the key {key:x8} of {what} is taken by another segment", ExitCodes.RestoreConflict);
        if (SharedMemoryCalls.Stat(shmid, out _))
            throw new CkptException($"restart: {what} cannot be recreated: id {shmid} is taken by another segment", ExitCodes.RestoreConflict);
        const int SHM_HUGETLB = 0x800, SHM_HUGE_SHIFT = 26;
        int id = IpcNamespace.CreateWithId("shm", shmid, what, () =>
        {
            int got = SharedMemoryCalls.Get(key, size, SharedMemoryCalls.IPC_CREAT | SharedMemoryCalls.IPC_EXCL | 0x180 /* 0600 until filled */
                | (hugeShift != 0 ? SHM_HUGETLB | (hugeShift << SHM_HUGE_SHIFT) : 0));
            if (got < 0 && hugeShift != 0 && Marshal.GetLastPInvokeError() == Errors.ENOMEM)
                throw new CkptException($"restart: {what}: {MemoryCalls.NoHugePages(hugeShift)}", ExitCodes.RestoreConflict);
            return got;
        }, SharedMemoryCalls.Remove);
        nint mine = SharedMemoryCalls.Attach(id, 0, 0);
        if (mine == -1) { int e = Marshal.GetLastPInvokeError(); SharedMemoryCalls.Remove(id); throw new SyscallException("shmat", e, 0, what); }
        // marked for removal in the original: removed now (Linux still attaches it by id), so that it goes
        // away with its last attach, as before, and with ckpt's own attach if the restart fails
        if (removed && SharedMemoryCalls.Remove(id) != 0) throw SyscallException.Last("shmctl(IPC_RMID)", 0, what);
        ctx.Log.Debug($"{what} recreated ({size} bytes)");
        return new Segment { Shmid = id, Size = size, Mode = mode, Uid = uid, Gid = gid, Created = true, Mine = mine };
    }

    /// <summary>Attaches segment <paramref name="obj"/> in the vessel at <paramref name="start"/> with <paramref name="prot"/>; returns what shmat returned.</summary>
    public static long AttachInVessel(RestoreContext ctx, uint obj, ulong start, ulong len, int prot, ulong offset)
    {
        if (!ctx.Session.State<RestoreState>().Segments.TryGetValue(obj, out var seg))
            throw new ImageFormatException($"mapping {start:x} refers to SysV segment {obj}, which the image never defined");
        ulong rounded = (seg.Size + MemoryRegion.PageSize - 1) / MemoryRegion.PageSize * MemoryRegion.PageSize;
        if (offset % MemoryRegion.PageSize != 0 || offset >= rounded || len > rounded - offset)
            throw new ImageFormatException($"mapping {start:x}-{start + len:x} lies outside SysV segment {obj} ({seg.Size} bytes) at offset {offset}");
        int flags = ((prot & MemoryCalls.PROT_WRITE) == 0 ? SharedMemoryCalls.SHM_RDONLY : 0) | ((prot & MemoryCalls.PROT_EXEC) != 0 ? SharedMemoryCalls.SHM_EXEC : 0);
        long got;
        if (offset == 0 && len == rounded) got = ctx.Vessel.Inject(SharedMemoryCalls.NrShmat, seg.Shmid, (long)start, flags);
        else
        {
            // a part of an attach (the rest unmapped, or another protection): the whole segment attached
            // where the kernel likes, that part moved to its place (mremap), the rest detached
            long whole = ctx.Vessel.Inject(SharedMemoryCalls.NrShmat, seg.Shmid, 0, flags);
            if (whole < 0 && whole > -4096) return whole;
            const long MREMAP_MAYMOVE = 1, MREMAP_FIXED = 2;
            got = ctx.Vessel.Inject(Nr.mremap, whole + (long)offset, (long)len, (long)len, MREMAP_MAYMOVE | MREMAP_FIXED, (long)start);
            ctx.Inject("munmap", Nr.munmap, whole, (long)rounded);
        }
        if (got != (long)start) return got;
        // shmat gives read (and write, exec); the region may have been mprotect-ed since
        int attached = MemoryCalls.PROT_READ | ((prot & MemoryCalls.PROT_WRITE) != 0 ? MemoryCalls.PROT_WRITE : 0) | ((prot & MemoryCalls.PROT_EXEC) != 0 ? MemoryCalls.PROT_EXEC : 0);
        if (attached != prot) ctx.Inject("mprotect", Nr.mprotect, (long)start, (long)len, prot);
        return got;
    }

    public void Finish(RestoreContext ctx)
    {
        foreach (var seg in ctx.Session.State<RestoreState>().Segments.Values)
        {
            if (!seg.Created) continue;
            if (seg.Mine != 0) { SharedMemoryCalls.Detach(seg.Mine); seg.Mine = 0; }
            if (!SharedMemoryCalls.SetOwner(seg.Shmid, seg.Uid, seg.Gid, seg.Mode))
                throw SyscallException.Last("shmctl(IPC_SET)", 0, $"SysV segment {seg.Shmid}");
        }
        ctx.Session.State<RestoreState>().Segments.Clear();
    }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint objref = r.U32();
        var segs = info.Child("sysv_segments");
        if (rec.Kind == RecordKind.SysvShmData)
        {
            var n = segs.Get(objref.ToString()) as InfoNode;
            n?.Set("saved_bytes", (long)(n.Get("saved_bytes") ?? 0L) + rec.Payload.Length - 12);
            return;
        }
        int key = r.I32(), shmid = r.I32();
        ulong size = r.U64();
        uint mode = r.U32(), uid = r.U32(), gid = r.U32();
        int hugeShift = r.AtEnd ? 0 : r.U8();
        segs.Set(objref.ToString(), new InfoNode().Set("key", $"{key:x8}").Set("shmid", shmid).Set("size", size).Set("huge_page_kib", hugeShift == 0 ? 0 : 1L << hugeShift >> 10)
            .Set("mode", Convert.ToString(mode & 0x1ff, 8)).Set("removed", (mode & SharedMemoryCalls.SHM_DEST) != 0)
            .Set("uid", uid).Set("gid", gid).Set("saved_bytes", 0L));
    }
}
