using System.Buffers.Binary;
using System.Text;

namespace Ckpt.Image;

/// <summary>Builds a record payload: little-endian fixed-width integers, length-prefixed bytes and strings.</summary>
public sealed class PayloadWriter
{
    private byte[] _buf = new byte[256];
    private int _len;

    public int Length => _len;
    public ReadOnlySpan<byte> Span => _buf.AsSpan(0, _len);
    public void Clear() => _len = 0;

    private Span<byte> Grow(int n)
    {
        if (_len + n > _buf.Length) Array.Resize(ref _buf, Math.Max(_buf.Length * 2, _len + n));
        var s = _buf.AsSpan(_len, n);
        _len += n;
        return s;
    }

    public PayloadWriter U8(byte v) { Grow(1)[0] = v; return this; }
    public PayloadWriter Bool(bool v) => U8(v ? (byte)1 : (byte)0);
    public PayloadWriter U32(uint v) { BinaryPrimitives.WriteUInt32LittleEndian(Grow(4), v); return this; }
    public PayloadWriter I32(int v) { BinaryPrimitives.WriteInt32LittleEndian(Grow(4), v); return this; }
    public PayloadWriter U64(ulong v) { BinaryPrimitives.WriteUInt64LittleEndian(Grow(8), v); return this; }
    public PayloadWriter I64(long v) { BinaryPrimitives.WriteInt64LittleEndian(Grow(8), v); return this; }
    public PayloadWriter Raw(ReadOnlySpan<byte> b) { b.CopyTo(Grow(b.Length)); return this; }
    public PayloadWriter Bytes(ReadOnlySpan<byte> b) { U32((uint)b.Length); return Raw(b); }
    public PayloadWriter Str(string s) => Bytes(Encoding.UTF8.GetBytes(s));

    public PayloadWriter Strs(IReadOnlyList<string> list)
    {
        U32((uint)list.Count);
        foreach (var s in list) Str(s);
        return this;
    }

    public byte[] ToArray() => Span.ToArray();
}

/// <summary>Reads a payload written by <see cref="PayloadWriter"/>; running past the end is a format error.</summary>
public ref struct PayloadReader
{
    private readonly ReadOnlySpan<byte> _data;
    private int _pos;
    private readonly RecordKind _kind;

    public PayloadReader(ReadOnlySpan<byte> data, RecordKind kind) { _data = data; _pos = 0; _kind = kind; }

    public readonly int Remaining => _data.Length - _pos;
    public readonly bool AtEnd => _pos >= _data.Length;

    private ReadOnlySpan<byte> Take(int n)
    {
        if (n < 0 || (long)_pos + n > _data.Length)
            throw new ImageFormatException($"{_kind} record is shorter than its fields (need {n} bytes at offset {_pos} of {_data.Length})");
        var s = _data.Slice(_pos, n);
        _pos += n;
        return s;
    }

    public byte U8() => Take(1)[0];
    public bool Bool() => U8() != 0;
    public uint U32() => BinaryPrimitives.ReadUInt32LittleEndian(Take(4));
    public int I32() => BinaryPrimitives.ReadInt32LittleEndian(Take(4));
    public ulong U64() => BinaryPrimitives.ReadUInt64LittleEndian(Take(8));
    public long I64() => BinaryPrimitives.ReadInt64LittleEndian(Take(8));
    public ReadOnlySpan<byte> Raw(int n) => Take(n);
    public ReadOnlySpan<byte> Bytes()
    {
        uint n = U32();
        if (n > (uint)Remaining) throw new ImageFormatException($"{_kind} record: a field claims {n} bytes, only {Remaining} remain");
        return Take((int)n);
    }
    public string Str() => Encoding.UTF8.GetString(Bytes());

    public string[] Strs()
    {
        uint n = U32();
        if (n > Remaining) throw new ImageFormatException($"{_kind} record: string list count {n} is impossible");
        var a = new string[n];
        for (int i = 0; i < n; i++) a[i] = Str();
        return a;
    }

    /// <summary>Optional trailing field added by a later format revision: default when absent.</summary>
    public ulong U64OrDefault(ulong dflt) => AtEnd ? dflt : U64();

    /// <summary>Asserts every byte was consumed (catches a writer/reader mismatch).</summary>
    public readonly void End()
    {
        if (_pos != _data.Length)
            throw new ImageFormatException($"{_kind} record has {_data.Length - _pos} unexpected trailing bytes");
    }
}
