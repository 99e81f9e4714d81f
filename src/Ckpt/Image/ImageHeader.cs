using Ckpt.Image;

namespace Ckpt.Image;

/// <summary>The Header record: what produced the image and on what machine.</summary>
public sealed class ImageHeader
{
    public string ToolVersion = "";
    public string KernelRelease = "";
    public string Architecture = "";
    public uint PageSize;
    public ulong Xcr0;          // xstate features the saved xstate buffers use
    public uint XstateSize;     // bytes of one NT_X86_XSTATE buffer
    public long TimeUnixNs;
    public string Hostname = "";
    public int RootPid;
    /// <summary>
    /// Where each extended component of the xstate buffers lies (bit of XCR0, offset, size: CPUID leaf 0xD
    /// of the CPU that saved them), so that they can be laid out again for a CPU whose layout differs. Empty
    /// in older images.
    /// </summary>
    public (int Bit, uint Offset, uint Size)[] XstateLayout = [];

    public void Write(ImageWriter w)
    {
        var p = new PayloadWriter().Str(ToolVersion).Str(KernelRelease).Str(Architecture).U32(PageSize)
            .U64(Xcr0).U32(XstateSize).I64(TimeUnixNs).Str(Hostname).I32(RootPid);
        // appended field: the xstate layout
        p.U32((uint)XstateLayout.Length);
        foreach (var (bit, off, size) in XstateLayout) p.U8((byte)bit).U32(off).U32(size);
        w.Write(RecordKind.Header, p);
    }

    public static ImageHeader Read(ImageReader r)
    {
        var rec = r.Expect(RecordKind.Header);
        var p = rec.Reader();
        var h = new ImageHeader
        {
            ToolVersion = p.Str(), KernelRelease = p.Str(), Architecture = p.Str(), PageSize = p.U32(),
            Xcr0 = p.U64(), XstateSize = p.U32(), TimeUnixNs = p.I64(), Hostname = p.Str(), RootPid = p.I32(),
        };
        uint n = p.AtEnd ? 0 : p.U32();
        if (n > 64) throw new ImageFormatException($"Header record: {n} xstate components");
        h.XstateLayout = new (int, uint, uint)[n];
        for (int i = 0; i < n; i++)
        {
            h.XstateLayout[i] = (p.U8(), p.U32(), p.U32());
            var (bit, off, size) = h.XstateLayout[i];
            if (bit is < 2 or > 63 || (h.Xcr0 & (1UL << bit)) == 0 || off < 576 || off + size > h.XstateSize)
                throw new ImageFormatException($"Header record: xstate component {bit} at {off} ({size} bytes) outside a {h.XstateSize}-byte buffer of features 0x{h.Xcr0:x}");
        }
        p.End();
        return h;
    }
}
