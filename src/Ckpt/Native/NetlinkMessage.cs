using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Ckpt.Native;

/// <summary>
/// A netlink message being built: the nlmsghdr, the family's fixed header, then attributes (nested ones
/// between <see cref="Begin"/> and <see cref="End"/>). Used for nf_tables and rtnetlink requests.
/// </summary>
public sealed class NetlinkMessage
{
    public const ushort NLA_F_NESTED = 0x8000;
    private readonly List<byte> _b = new();
    private readonly Stack<int> _open = new();

    public NetlinkMessage(ushort type, ushort flags, uint seq, ReadOnlySpan<byte> header)
    {
        _b.AddRange(new byte[16]);   // nlmsghdr, its length filled in Bytes()
        BinaryPrimitives.WriteUInt16LittleEndian(Span(4, 2), type);
        BinaryPrimitives.WriteUInt16LittleEndian(Span(6, 2), flags);
        BinaryPrimitives.WriteUInt32LittleEndian(Span(8, 4), seq);
        Raw(header);
    }

    private Span<byte> Span(int at, int n) => CollectionsMarshal.AsSpan(_b).Slice(at, n);
    private void Pad() { while (_b.Count % 4 != 0) _b.Add(0); }

    /// <summary>Bytes as they are (a nested fixed header, such as a veth peer's ifinfomsg), padded to 4.</summary>
    public NetlinkMessage Raw(ReadOnlySpan<byte> data)
    {
        _b.AddRange(data.ToArray());
        Pad();
        return this;
    }

    public NetlinkMessage Attr(ushort type, ReadOnlySpan<byte> data)
    {
        int at = _b.Count;
        _b.AddRange(new byte[4]);
        BinaryPrimitives.WriteUInt16LittleEndian(Span(at, 2), (ushort)(4 + data.Length));
        BinaryPrimitives.WriteUInt16LittleEndian(Span(at + 2, 2), type);
        return Raw(data);
    }

    public NetlinkMessage Str(ushort type, string s) => Attr(type, [.. System.Text.Encoding.UTF8.GetBytes(s), 0]);

    public NetlinkMessage U32(ushort type, uint v)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, v);
        return Attr(type, b);
    }

    public NetlinkMessage Be32(ushort type, int v)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteInt32BigEndian(b, v);
        return Attr(type, b);
    }

    public NetlinkMessage Begin(ushort type)
    {
        _open.Push(_b.Count);
        _b.AddRange(new byte[4]);
        BinaryPrimitives.WriteUInt16LittleEndian(Span(_open.Peek() + 2, 2), (ushort)(type | NLA_F_NESTED));
        return this;
    }

    public NetlinkMessage End()
    {
        int at = _open.Pop();
        BinaryPrimitives.WriteUInt16LittleEndian(Span(at, 2), (ushort)(_b.Count - at));
        return this;
    }

    public byte[] Bytes()
    {
        BinaryPrimitives.WriteUInt32LittleEndian(Span(0, 4), (uint)_b.Count);
        return _b.ToArray();
    }

    /// <summary>The attributes of <paramref name="m"/> from <paramref name="from"/> on: type (nested and byte-order bits cleared), where its value starts, its length.</summary>
    public static List<(ushort Type, int At, int Length)> Attributes(ReadOnlySpan<byte> m, int from)
    {
        var list = new List<(ushort, int, int)>();
        for (int off = from; off + 4 <= m.Length;)
        {
            int len = BinaryPrimitives.ReadUInt16LittleEndian(m[off..]);
            ushort type = (ushort)(BinaryPrimitives.ReadUInt16LittleEndian(m[(off + 2)..]) & 0x3fff);
            if (len < 4 || off + len > m.Length) break;
            list.Add((type, off + 4, len - 4));
            off += (len + 3) & ~3;
        }
        return list;
    }
}
