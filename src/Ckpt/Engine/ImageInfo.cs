using Ckpt.Image;

namespace Ckpt.Engine;

/// <summary>Describes an image without restarting it (<c>ckpt info</c>): every record goes to the kind that owns it.</summary>
public static class ImageInfo
{
    public static InfoNode Describe(Stream input)
    {
        var reader = new ImageReader(input);
        var h = ImageHeader.Read(reader);
        var info = new InfoNode();
        info.Child("header").Set("format_version", reader.FormatVersion).Set("tool_version", h.ToolVersion)
            .Set("kernel", h.KernelRelease).Set("architecture", h.Architecture).Set("page_size", h.PageSize)
            .Set("xstate_features", $"0x{h.Xcr0:x}").Set("xstate_bytes", h.XstateSize)
            .Set("time", DateTime.UnixEpoch.AddTicks(h.TimeUnixNs / 100).ToString("u")).Set("hostname", h.Hostname);
        long records = 1;
        var kinds = new Dictionary<string, long>();
        while (reader.Next() is { } rec)
        {
            records++;
            kinds[rec.Kind.ToString()] = kinds.GetValueOrDefault(rec.Kind.ToString()) + 1;
            KindTable.ForRecord(rec).Describe(rec, info);
        }
        var totals = info.Child("totals");
        if (totals.Get("page_bytes") == null) totals.Set("page_bytes", 0L);
        totals.Set("records", records + 1).Set("image_bytes", reader.Position);
        var rk = totals.Child("records_by_kind");
        foreach (var (k, n) in kinds) rk.Set(k, n);
        return info;
    }
}
