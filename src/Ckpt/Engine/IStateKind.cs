using Ckpt.Image;

namespace Ckpt.Engine;

/// <summary>
/// One kind of kernel state (memory region, regular file, pipe, signal state...). Each kind lives in
/// one file under Kinds/ holding both its checkpoint and its restart side, and is registered in
/// <see cref="KindTable"/>. Kinds are stateless; per-operation state lives in the context.
/// </summary>
public interface IStateKind
{
    string Name { get; }
    /// <summary>The record kinds this kind writes and reads.</summary>
    IReadOnlyList<RecordKind> Records { get; }
    /// <summary>Reads this kind's state of the stopped process and writes its records.</summary>
    void Checkpoint(CheckpointContext ctx);
    /// <summary>Rebuilds from one of its records, as the stream is read.</summary>
    void Restore(RestoreContext ctx, Record rec);
    /// <summary>Work after the whole image was read and verified, in ascending <see cref="FinishOrder"/>.</summary>
    int FinishOrder { get; }
    void Finish(RestoreContext ctx);
    /// <summary>Adds what the record holds to the description printed by <c>ckpt info</c>.</summary>
    void Describe(Record rec, InfoNode info);
}

/// <summary>
/// A namespace the whole tree shares (time, UTS, IPC): its record is written once, before the Tree
/// record, because the restart acts on it before the first process exists: the root's fresh vessel
/// makes the namespace, and the other vessels are forked from it, inside.
/// </summary>
public interface ITreeNamespace : IStateKind
{
    /// <summary>Writes the record (or none, for a tree in ckpt's namespace); the tree is frozen.</summary>
    void Write(CheckpointSession s);
    /// <summary>Takes the record, read before the Tree record.</summary>
    void Restore(RestoreSession s, Record rec);
    /// <summary>Puts the root's fresh vessel in the namespace the record asked for, before any other vessel is forked.</summary>
    void Enter(RestoreContext root);

    /// <summary>Nothing per process: the record is written once for the tree (<see cref="Write"/>).</summary>
    void IStateKind.Checkpoint(CheckpointContext ctx) { }
    /// <summary>Its record comes before the Tree record, and only there (<see cref="Restore(RestoreSession, Record)"/>).</summary>
    void IStateKind.Restore(RestoreContext ctx, Record rec)
        => throw new ImageFormatException($"{rec.Kind} record at offset {rec.Offset} after the Tree record");
    /// <summary>Nothing to finish per process unless the kind says so.</summary>
    void IStateKind.Finish(RestoreContext ctx) { }
}

/// <summary>A file description kind (regular file, pipe, device...): handles fds of one kind.</summary>
public interface IFileKind : IStateKind
{
    /// <summary>Does this kind handle this open file?</summary>
    bool Handles(in OpenFile file);
    /// <summary>Writes the description (first time it is met) under <paramref name="objref"/>.</summary>
    void CheckpointFile(CheckpointContext ctx, in OpenFile file, uint objref);
}

/// <summary>What the checkpoint knows of one fd of the target before a kind looks at it.</summary>
public readonly record struct OpenFile(int Fd, string Link, Native.StatBuf Stat, int Flags, long Pos, int MntId)
{
    /// <summary>The "lock:" lines of its fdinfo (file locks set through this description), or null.</summary>
    public List<string>? Locks { get; init; }
    /// <summary>
    /// Not an fd of the process: a file in flight (SCM_RIGHTS) in a unix socket's receive queue, installed
    /// in the process by ckpt for the checkpoint (<see cref="Kinds.UnixSocket.InstallInFlight"/>) so that it
    /// is saved as any description; left out of the fd table, closed again when the process is released.
    /// </summary>
    public bool InFlight { get; init; }
    public int AccessMode => Flags & Native.FileCalls.O_ACCMODE;
    public override string ToString() => InFlight ? $"a file in flight in a unix socket's queue ({Link})" : $"fd {Fd} ({Link})";
}
