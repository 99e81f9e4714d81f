using System.Text;
using System.Text.Json;

namespace Ckpt.Engine;

/// <summary>An ordered tree describing an image, rendered as text or JSON by <c>ckpt info</c>.</summary>
public sealed class InfoNode
{
    private readonly List<(string Key, object? Value)> _items = new();

    public InfoNode Set(string key, object? value)
    {
        int i = _items.FindIndex(x => x.Key == key);
        if (i >= 0) _items[i] = (key, value); else _items.Add((key, value));
        return this;
    }

    public InfoNode Child(string key)
    {
        foreach (var (k, v) in _items) if (k == key && v is InfoNode n) return n;
        var c = new InfoNode();
        _items.Add((key, c));
        return c;
    }

    public List<InfoNode> List(string key)
    {
        foreach (var (k, v) in _items) if (k == key && v is List<InfoNode> l) return l;
        var c = new List<InfoNode>();
        _items.Add((key, c));
        return c;
    }

    public object? Get(string key) => _items.Find(x => x.Key == key).Value;

    /// <summary>The entries, in order.</summary>
    public IEnumerable<(string Key, object? Value)> Items => _items;

    /// <summary>File descriptions of the whole image (not printed): where an fd of this process finds one defined by another.</summary>
    public InfoNode? SharedFiles { get; set; }

    /// <summary>Adds the entries of <paramref name="other"/> that this node does not have yet.</summary>
    public void Merge(InfoNode other)
    {
        foreach (var (k, v) in other._items)
            if (!_items.Exists(x => x.Key == k)) _items.Add((k, v));
    }

    public void WriteJson(Utf8JsonWriter w)
    {
        w.WriteStartObject();
        foreach (var (k, v) in _items) { w.WritePropertyName(k); WriteValue(w, v); }
        w.WriteEndObject();
    }

    private static void WriteValue(Utf8JsonWriter w, object? v)
    {
        switch (v)
        {
            case null: w.WriteNullValue(); break;
            case InfoNode n: n.WriteJson(w); break;
            case List<InfoNode> l: w.WriteStartArray(); foreach (var n in l) n.WriteJson(w); w.WriteEndArray(); break;
            case string s: w.WriteStringValue(s); break;
            case bool b: w.WriteBooleanValue(b); break;
            case int i: w.WriteNumberValue(i); break;
            case uint u: w.WriteNumberValue(u); break;
            case long l: w.WriteNumberValue(l); break;
            case ulong u: w.WriteNumberValue(u); break;
            case double d: w.WriteNumberValue(d); break;
            case IEnumerable<string> ss: w.WriteStartArray(); foreach (var s in ss) w.WriteStringValue(s); w.WriteEndArray(); break;
            case IEnumerable<long> ls: w.WriteStartArray(); foreach (var x in ls) w.WriteNumberValue(x); w.WriteEndArray(); break;
            default: w.WriteStringValue(v.ToString()); break;
        }
    }

    public string ToJson()
    {
        var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true })) WriteJson(w);
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    /// <summary>Human rendering: nested keys indented, lists of nodes as one line per element.</summary>
    public void WriteText(StringBuilder sb, int indent = 0)
    {
        string pad = new(' ', indent);
        foreach (var (k, v) in _items)
        {
            switch (v)
            {
                case InfoNode n:
                    sb.Append(pad).Append(k).Append(":\n");
                    n.WriteText(sb, indent + 2);
                    break;
                case List<InfoNode> l when l.Any(n => n._items.Exists(x => x.Value is InfoNode or List<InfoNode>)):
                    // whole nodes (the processes of a tree): one block each
                    sb.Append(pad).Append(k).Append($" ({l.Count}):\n");
                    foreach (var n in l) { sb.Append(pad).Append("  -\n"); n.WriteText(sb, indent + 4); }
                    break;
                case List<InfoNode> l:
                    sb.Append(pad).Append(k).Append($" ({l.Count}):\n");
                    foreach (var n in l) sb.Append(pad).Append("  ").Append(n.OneLine()).Append('\n');
                    break;
                default:
                    sb.Append(pad).Append(k).Append(": ").Append(Format(v)).Append('\n');
                    break;
            }
        }
    }

    private string OneLine() => string.Join("  ", _items.Select(x => x.Value is InfoNode or List<InfoNode> ? $"{x.Key}=..." : $"{x.Key}={Format(x.Value)}"));

    private static string Format(object? v) => v switch
    {
        null => "-",
        IEnumerable<string> ss when v is not string => string.Join(" ", ss),
        IEnumerable<long> ls => string.Join(" ", ls),
        _ => v.ToString() ?? "",
    };
}
