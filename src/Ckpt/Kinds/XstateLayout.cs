using System.Runtime.Intrinsics.X86;
using Ckpt.Engine;
using Ckpt.Image;

namespace Ckpt.Kinds;

/// <summary>
/// The layout of an NT_X86_XSTATE buffer (XSAVE's standard format): the legacy region (x87 and SSE, 512
/// bytes, with the features in use at 464), the XSAVE header (64 bytes, XSTATE_BV first), then each
/// extended component at the offset CPUID leaf 0xD gives for it on this CPU. The offsets differ between
/// CPU models (a CPU without MPX may pack AVX-512 lower) and the size grows with the features (AMX), so a
/// thread saved on one CPU is laid out again for another one that has every feature it used: each
/// component copied to its offset here, the legacy region and header as they were (a component the image
/// does not have stays in its initial state).
/// </summary>
public static class XstateLayout
{
    /// <summary>Bit, offset and size of each extended component of <paramref name="xcr0"/> on this CPU (CPUID 0xD).</summary>
    public static (int Bit, uint Offset, uint Size)[] Of(ulong xcr0)
    {
        if (!X86Base.IsSupported) return [];
        var list = new List<(int, uint, uint)>();
        for (int bit = 2; bit < 63; bit++)
            if ((xcr0 & (1UL << bit)) != 0)
            {
                var (eax, ebx, _, _) = X86Base.CpuId(0xD, bit);
                list.Add((bit, (uint)ebx, (uint)eax));
            }
        return list.ToArray();
    }

    /// <summary>Where each saved component goes in a buffer of <paramref name="Size"/> bytes of this CPU.</summary>
    public sealed record Plan(int Size, ulong Features, (uint From, uint To, uint Length)[] Moves);

    /// <summary>
    /// How the image's buffers go into this CPU's (features <paramref name="localXcr0"/>, buffers of
    /// <paramref name="localSize"/> bytes, components at <paramref name="local"/>): null when as they are,
    /// else the plan; a CPU that lacks a feature the image uses, a component of another size, or a
    /// different buffer in an image that does not say where its components lie, is refused.
    /// </summary>
    public static Plan? PlanFor(ImageHeader h, ulong localXcr0, int localSize, (int Bit, uint Offset, uint Size)[] local)
    {
        string Refused(string why) => $"restart: the image uses CPU state features 0x{h.Xcr0:x} ({h.XstateSize} bytes); this CPU has 0x{localXcr0:x} ({localSize} bytes){why}";
        if ((h.Xcr0 & ~localXcr0) != 0) throw new CkptException(Refused(""), ExitCodes.BadImage);
        bool sameLayout = h.XstateLayout.All(c => local.Any(l => l == c));
        if (h.XstateSize == localSize && sameLayout) return null;
        if (h.XstateLayout.Length == 0) throw new CkptException(Refused(" (the image does not say where its components lie: made by an older ckpt)"), ExitCodes.BadImage);
        var moves = new List<(uint, uint, uint)>();
        foreach (var (bit, off, size) in h.XstateLayout)
        {
            var here = local.FirstOrDefault(l => l.Bit == bit);
            if (here.Bit != bit || here.Size != size || here.Offset + size > localSize)
                throw new CkptException(Refused($" (component {bit}: {size} bytes there, {here.Size} here)"), ExitCodes.BadImage);
            moves.Add((off, here.Offset, size));
        }
        return new Plan(localSize, localXcr0, moves.ToArray());
    }

    /// <summary>A saved buffer laid out for this CPU by <paramref name="plan"/>.</summary>
    public static byte[] Relayout(byte[] saved, Plan plan)
    {
        var b = new byte[plan.Size];
        saved.AsSpan(0, 576).CopyTo(b);   // legacy region and XSAVE header (XSTATE_BV: the saved components only)
        BitConverter.TryWriteBytes(b.AsSpan(464), plan.Features);
        foreach (var (from, to, len) in plan.Moves) saved.AsSpan((int)from, (int)len).CopyTo(b.AsSpan((int)to));
        return b;
    }
}
