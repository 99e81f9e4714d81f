using Ckpt.Image;

namespace Ckpt.Engine;

/// <summary>Describes an image without restarting it (<c>ckpt info</c>): every record goes to the kind that owns it.</summary>
public static class ImageInfo
{
    public static InfoNode Describe(Stream input)
    {
        // (a 64 KiB staging buffer: records of pages are read straight into their payload buffer, and a
        // larger one is fresh memory to fault in for nothing)
        var reader = new ImageReader(input, bufferSize: 64 << 10);
        var h = ImageHeader.Read(reader);
        var info = new InfoNode();
        info.Child("header").Set("format_version", reader.FormatVersion).Set("tool_version", h.ToolVersion)
            .Set("kernel", h.KernelRelease).Set("architecture", h.Architecture).Set("page_size", h.PageSize)
            .Set("xstate_features", $"0x{h.Xcr0:x}").Set("xstate_bytes", h.XstateSize)
            .Set("time", DateTime.UnixEpoch.AddTicks(h.TimeUnixNs / 100).ToString("u")).Set("hostname", h.Hostname);
        long records = 1;
        var kinds = new Dictionary<string, long>();
        // the root process is described at the top level; the other processes of a tree in "descendants"
        var node = info;
        int processes = 0, pid = 0;
        var files = new InfoNode();
        var holders = new SortedDictionary<uint, List<string>>();
        while (reader.Next() is { } rec)
        {
            records++;
            kinds[rec.Kind.ToString()] = kinds.GetValueOrDefault(rec.Kind.ToString()) + 1;
            if (rec.Kind == RecordKind.Process)
            {
                pid = rec.Reader().I32();
                if (processes++ > 0) info.List("descendants").Add(node = new InfoNode());
                node.SharedFiles = files;
            }
            KindTable.ForRecord(rec).Describe(rec, rec.Kind == RecordKind.Tree ? info : node);
            if (node.Get("files") is InfoNode own) files.Merge(own);
            if (rec.Kind == RecordKind.FdTable)
            {
                var r = rec.Reader();
                uint n = r.U32();
                for (int i = 0; i < n; i++)
                {
                    int fd = r.I32(); r.Bool(); uint objref = r.U32();
                    if (!holders.TryGetValue(objref, out var l)) holders[objref] = l = new();
                    l.Add($"{pid}:{fd}");
                }
            }
        }
        // the tree's command column: each live process's command line (a zombie's name)
        if (info.Get("tree") is List<InfoNode> tree)
        {
            var nodes = new List<InfoNode> { info };
            if (info.Get("descendants") is List<InfoNode> d) nodes.AddRange(d);
            var cmd = new Dictionary<long, string>();
            foreach (var n in nodes)
                if (n.Get("process") is InfoNode p && p.Get("pid") is int pp && p.Get("cmdline") is string c) cmd[pp] = c;
            foreach (var t in tree)
                if (t.Get("pid") is int tp) t.Set("command", cmd.TryGetValue(tp, out var c) && c.Length > 0 ? c : $"[{t.Get("comm")}]");
        }
        if (processes > 1)
        {
            // every memory object (memfd, shared anonymous memory, SysV segment...) mapped by several
            // processes: which processes map it, where
            var nodes = new List<InfoNode> { info };
            if (info.Get("descendants") is List<InfoNode> more) nodes.AddRange(more);
            var maps = new SortedDictionary<long, List<string>>();
            var objKinds = new Dictionary<long, InfoNode>();
            foreach (var n in nodes)
            {
                int owner = n.Get("process") is InfoNode p && p.Get("pid") is int pp ? pp : 0;
                if (n.Get("memory_objects") is InfoNode objs)
                    foreach (var (k, v) in objs.Items)
                        if (long.TryParse(k, out long id) && v is InfoNode o) objKinds.TryAdd(id, o);
                if (n.Get("memory") is List<InfoNode> regions)
                    foreach (var m in regions)
                        if (m.Get("object") is { } obj && long.TryParse(obj.ToString(), out long id))
                        {
                            if (!maps.TryGetValue(id, out var l)) maps[id] = l = new();
                            l.Add($"{owner}:{m.Get("range")}");
                        }
            }
            var sharedMem = info.List("shared_memory");
            foreach (var (id, l) in maps)
            {
                if (l.Select(h => h.Split(':')[0]).Distinct().Count() < 2) continue;
                var o = objKinds.GetValueOrDefault(id);
                sharedMem.Add(new InfoNode().Set("objref", id).Set("kind", o?.Get("type") ?? "SysV segment").Set("name", o?.Get("name")).Set("holders", l));
            }
            // every description held by more than one fd: which processes hold it, under which fds
            var shared = info.List("shared_files");
            foreach (var (objref, l) in holders)
            {
                if (l.Count < 2) continue;
                var d = files.Get(objref.ToString()) as InfoNode;
                shared.Add(new InfoNode().Set("objref", objref).Set("kind", d?.Get("kind")).Set("path", d?.Get("path")).Set("holders", l));
            }
        }
        var totals = info.Child("totals");
        if (totals.Get("page_bytes") == null) totals.Set("page_bytes", 0L);
        totals.Set("records", records + 1).Set("image_bytes", reader.Position);
        var rk = totals.Child("records_by_kind");
        foreach (var (k, n) in kinds) rk.Set(k, n);
        return info;
    }
}
