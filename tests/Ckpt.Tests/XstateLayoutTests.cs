using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Kinds;
using Xunit;

namespace Ckpt.Tests;

/// <summary>How a saved xstate buffer is laid out for a CPU whose layout differs (XstateLayout), on made-up layouts.</summary>
public class XstateLayoutTests
{
    // AVX, opmask, ZMM_Hi256, Hi16_ZMM as an Intel CPU with MPX lays them out, and packed as one without
    private static readonly (int, uint, uint)[] Intel = [(2, 576, 256), (5, 1088, 64), (6, 1152, 512), (7, 1664, 1024)];
    private static readonly (int, uint, uint)[] Packed = [(2, 576, 256), (5, 832, 64), (6, 896, 512), (7, 1408, 1024)];

    private static ImageHeader Header((int, uint, uint)[] layout, uint size, ulong xcr0 = 0xe7)
        => new() { Xcr0 = xcr0, XstateSize = size, XstateLayout = layout };

    [Fact]
    public void SameLayoutNeedsNothing() => Assert.Null(XstateLayout.PlanFor(Header(Packed, 2432), 0xe7, 2432, Packed));

    [Fact]
    public void ComponentsMoveToTheirPlacesHere()
    {
        var plan = XstateLayout.PlanFor(Header(Intel, 2688), 0x2e7, 2696, [.. Packed, (9, 2432, 8)]);
        Assert.NotNull(plan);
        var saved = new byte[2688];
        for (int i = 0; i < saved.Length; i++) saved[i] = (byte)(i * 7 + 3);
        BitConverter.TryWriteBytes(saved.AsSpan(512), 0xe7UL);   // XSTATE_BV
        var here = XstateLayout.Relayout(saved, plan!);
        Assert.Equal(2696, here.Length);
        Assert.Equal(saved.AsSpan(0, 464).ToArray(), here.AsSpan(0, 464).ToArray());
        Assert.Equal(0x2e7UL, BitConverter.ToUInt64(here, 464));
        Assert.Equal(0xe7UL, BitConverter.ToUInt64(here, 512));
        foreach (var ((_, from, n), (_, to, _)) in Intel.Zip(Packed))
            Assert.Equal(saved.AsSpan((int)from, (int)n).ToArray(), here.AsSpan((int)to, (int)n).ToArray());
        Assert.All(here.AsSpan(2432, 8).ToArray(), b => Assert.Equal(0, b));   // PKRU: not saved, initial
    }

    [Fact]
    public void AFeatureMissingHereIsRefused()
    {
        var e = Assert.Throws<CkptException>(() => XstateLayout.PlanFor(Header(Intel, 2688), 0x7, 832, [(2, 576, 256)]));
        Assert.Contains("0xe7", e.Message);
    }

    [Fact]
    public void AnOlderImageOfAnotherSizeIsRefused()
        => Assert.Throws<CkptException>(() => XstateLayout.PlanFor(Header([], 2688), 0xe7, 2432, Packed));
}
