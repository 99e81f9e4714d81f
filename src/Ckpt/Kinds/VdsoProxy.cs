using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;

namespace Ckpt.Kinds;

/// <summary>
/// A restart on a kernel whose vDSO is not the checkpointed one (another kernel build: a process
/// migrated to another machine). The program holds addresses in the old vDSO (glibc looks its functions
/// up once, at start; a thread may be stopped in one), so the old vDSO comes back where it was, from the
/// contents the MmState record saved, with the first bytes of each of its functions replaced by a jump to
/// the function of the same name in this kernel's vDSO. This kernel's vDSO moves, with its data pages,
/// to a free place within a 32-bit jump of the old one where there is one (else each jump is a 12-byte
/// absolute one, where the function is that long). The old data pages ([vvar], [vvar_vclock]) come
/// back as read-only zero pages: only code of the old vDSO that a thread was stopped in reads them.
/// What /proc/PID/maps names [vdso] is then this kernel's, at its new place; the auxiliary vector still
/// points at the old one, whose symbols lead to the new. (CRIU does the same, its "vDSO proxy".)
/// <c>CKPT_VDSO_PROXY=1</c> in the environment of <c>ckpt restart</c> builds it on the same kernel too,
/// so that it can be tested.
/// </summary>
internal static class VdsoProxy
{
    /// <summary>Set on a process whose old vDSO was put back this way.</summary>
    internal sealed class Built { }

    private const int STT_FUNC = 2, SHT_DYNSYM = 11;

    /// <summary>Whether the process's vDSO must be put back as a proxy: the image has its contents and this kernel's differs (or the test switch is on).</summary>
    public static bool Needed(List<VmaInfo> here, List<(ulong Start, ulong End, string Name)> want, byte[]? oldVdso)
    {
        if (oldVdso is not { Length: > 0 } || !want.Any(w => w.Name == "[vdso]") || !here.Any(v => v.Path == "[vdso]")) return false;
        if (Environment.GetEnvironmentVariable("CKPT_VDSO_PROXY") == "1") return true;
        return XxHash3.HashToUInt64(oldVdso) != MemoryRegion.OwnVdsoHash() || !MmState.SameVdsoLayout(here, want);
    }

    public static void Build(RestoreContext ctx, List<VmaInfo> here, List<(ulong Start, ulong End, string Name)> want,
        List<(ulong Start, ulong End, int Special)> image, byte[] oldVdso)
    {
        var old = want.First(w => w.Name == "[vdso]");
        if (old.End - old.Start != (ulong)oldVdso.Length)
            throw new ImageFormatException($"MmState record of pid {ctx.Pid}: the vDSO saved is {oldVdso.Length} bytes, its region {old.End - old.Start}");
        var oldSyms = Symbols(oldVdso) ?? throw Refused("the checkpointed vDSO has no symbol table that can be read");
        var newSyms = Symbols(MemoryRegion.OwnVdso()) ?? throw Refused("this kernel's vDSO has no symbol table that can be read");

        // this kernel's trio, whole (its code reads its data pages), to a free place near the old vDSO
        var trio = here.OrderBy(v => v.Start).ToList();
        ulong lo = trio[0].Start, hi = trio[^1].End;
        var busy = image.Select(x => (Start: x.Start, End: x.End)).Append((Start: lo, End: hi))
            .Append((Start: ctx.Trampoline, End: ctx.Trampoline + (ulong)RestoreContext.TrampolineSize)).OrderBy(x => x.Start).ToList();
        ulong at = MmState.FindGap(busy, hi - lo, old.Start > (1UL << 30) ? old.Start - (1UL << 30) : MmState.MmapMinAddr);
        if (at + (hi - lo) > MmState.TaskSize) at = MmState.FindGap(busy, hi - lo, MmState.MmapMinAddr);
        MmState.Remap(ctx, trio.Select(v => (v.Start, v.Length)).ToList(), (long)(at - lo));
        ulong newBase = trio.First(v => v.Path == "[vdso]").Start - lo + at;

        // the old trio's places: private pages, the old vDSO's patched with jumps to the new one's functions
        foreach (var w in want)
            ctx.Batch.AddChecked("mmap (old vDSO)", Nr.mmap, (long)w.Start, (long)(w.End - w.Start), MemoryCalls.PROT_READ | MemoryCalls.PROT_WRITE,
                MemoryCalls.MAP_PRIVATE | MemoryCalls.MAP_ANONYMOUS | MemoryCalls.MAP_FIXED, -1, 0);
        ctx.FlushBatch();
        var code = (byte[])oldVdso.Clone();
        var missing = new List<string>();
        foreach (var (name, (off, size)) in oldSyms.OrderBy(x => x.Value.Off))
        {
            if (!newSyms.TryGetValue(name, out var n)) { missing.Add(name); continue; }
            Patch(code, off, size, old.Start, newBase + (ulong)n.Off, name);
        }
        MemoryCalls.WriteRemote(ctx.Pid, old.Start, code);
        foreach (var w in want)
            ctx.Batch.AddChecked("mprotect (old vDSO)", Nr.mprotect, (long)w.Start, (long)(w.End - w.Start),
                w.Name == "[vdso]" ? MemoryCalls.PROT_READ | MemoryCalls.PROT_EXEC : MemoryCalls.PROT_READ);
        ctx.State<Built>();
        ctx.Log.Info($"pid {ctx.Pid}: the checkpointed vDSO put back at 0x{old.Start:x} with its {oldSyms.Count - missing.Count} function(s) leading to this kernel's, moved to 0x{newBase:x}"
            + (missing.Count > 0 ? $"; not in this kernel's: {string.Join(", ", missing)}" : ""));
    }

    private static CkptException Refused(string why)
        => new($"restart: this kernel's vDSO differs from the checkpointed one and {why}; restart on a machine with the same kernel", ExitCodes.RestoreConflict);

    /// <summary>Replaces the start of the function at <paramref name="off"/> with a jump to <paramref name="target"/>.</summary>
    private static void Patch(byte[] code, int off, int size, ulong oldBase, ulong target, string name)
    {
        long rel = (long)target - (long)(oldBase + (ulong)off + 5);
        if (rel == (int)rel && off + 5 <= code.Length)
        {
            code[off] = 0xe9;   // jmp rel32
            BinaryPrimitives.WriteInt32LittleEndian(code.AsSpan(off + 1), (int)rel);
        }
        else if (size >= 12 && off + 12 <= code.Length)
        {
            code[off] = 0x48; code[off + 1] = 0xb8;   // movabs rax, target (rax holds no argument)
            BinaryPrimitives.WriteUInt64LittleEndian(code.AsSpan(off + 2), target);
            code[off + 10] = 0xff; code[off + 11] = 0xe0;   // jmp rax
        }
        else throw Refused($"its function {name} is too short for a jump to this kernel's");
    }

    /// <summary>
    /// The functions a vDSO exports (its dynamic symbol table: name, offset from its start, size), or
    /// null if <paramref name="elf"/> is no 64-bit ELF image with one. Both vDSOs are read from memory,
    /// where offsets in the image are offsets from its start (it is linked at 0).
    /// </summary>
    internal static Dictionary<string, (int Off, int Size)>? Symbols(ReadOnlySpan<byte> elf)
    {
        if (elf.Length < 64 || !elf[..4].SequenceEqual(ElfMagic) || elf[4] != 2 /* ELFCLASS64 */) return null;
        ulong len = (ulong)elf.Length, shoff = U64(elf, 0x28);
        int shentsize = U16(elf, 0x3a), shnum = U16(elf, 0x3c);
        if (shentsize != 64 || shoff == 0 || shoff + (ulong)shnum * 64 > len) return null;
        for (int i = 0; i < shnum; i++)
        {
            var sh = elf.Slice((int)shoff + i * 64, 64);
            if (U32(sh, 4) != SHT_DYNSYM) continue;
            ulong symOff = U64(sh, 24), symSize = U64(sh, 32);
            uint link = U32(sh, 40);
            if (link >= shnum) return null;
            var strh = elf.Slice((int)shoff + (int)link * 64, 64);
            ulong strOff = U64(strh, 24), strSize = U64(strh, 32);
            if (symOff + symSize > len || strOff + strSize > len) return null;
            var result = new Dictionary<string, (int, int)>();
            for (ulong s = symOff; s + 24 <= symOff + symSize; s += 24)
            {
                var sym = elf.Slice((int)s, 24);
                uint name = U32(sym, 0);
                ulong value = U64(sym, 8), size = U64(sym, 16);
                if ((sym[4] & 0xf) != STT_FUNC || U16(sym, 6) == 0 || name >= strSize || value == 0 || value >= len) continue;
                var str = elf.Slice((int)(strOff + name), (int)(strSize - name));
                int z = str.IndexOf((byte)0);
                if (z <= 0) continue;
                result[Encoding.ASCII.GetString(str[..z])] = ((int)value, (int)Math.Min(size, len));
            }
            return result;
        }
        return null;
    }

    private static ReadOnlySpan<byte> ElfMagic => [0x7f, (byte)'E', (byte)'L', (byte)'F'];
    private static ushort U16(ReadOnlySpan<byte> b, int at) => BinaryPrimitives.ReadUInt16LittleEndian(b[at..]);
    private static uint U32(ReadOnlySpan<byte> b, int at) => BinaryPrimitives.ReadUInt32LittleEndian(b[at..]);
    private static ulong U64(ReadOnlySpan<byte> b, int at) => BinaryPrimitives.ReadUInt64LittleEndian(b[at..]);
}
