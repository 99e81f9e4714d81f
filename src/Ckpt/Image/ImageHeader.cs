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

    public void Write(ImageWriter w)
    {
        var p = new PayloadWriter().Str(ToolVersion).Str(KernelRelease).Str(Architecture).U32(PageSize)
            .U64(Xcr0).U32(XstateSize).I64(TimeUnixNs).Str(Hostname).I32(RootPid);
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
        p.End();
        return h;
    }
}
