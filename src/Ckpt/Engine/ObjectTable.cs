namespace Ckpt.Engine;

/// <summary>
/// Object references: every shared kernel object gets an objref the first time it is met and is written
/// once; later holders store only the objref. At checkpoint the key identifies the object (for example
/// an open file description found equal by kcmp); at restart the objref maps to what was rebuilt.
/// </summary>
public sealed class ObjectTable<TKey, TValue> where TKey : notnull
{
    private readonly Dictionary<TKey, uint> _refs = new();
    private readonly Dictionary<uint, TValue> _restored = new();
    private uint _next = 1;

    /// <summary>Returns the objref for the key, and whether it was newly assigned (so the object must be written).</summary>
    public (uint Ref, bool IsNew) Intern(TKey key)
    {
        if (_refs.TryGetValue(key, out var r)) return (r, false);
        r = _next++;
        _refs[key] = r;
        return (r, true);
    }

    public void SetRestored(uint objref, TValue value) => _restored[objref] = value;

    public bool TryGetRestored(uint objref, out TValue value) => _restored.TryGetValue(objref, out value!);

    public TValue GetRestored(uint objref, string what)
        => _restored.TryGetValue(objref, out var v) ? v
            : throw new Image.ImageFormatException($"{what} refers to objref {objref}, which the image never defined");

    public IEnumerable<KeyValuePair<uint, TValue>> Restored => _restored;
}
