using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Ckpt.Native;

/// <summary>
/// SysV message queues and semaphore sets on ckpt's own side (raw system calls: the kernel's
/// msqid64_ds / semid64_ds layouts, not glibc's), in the IPC namespace of the calling thread
/// (<see cref="ProcessCalls.Setns"/>). SysV shared memory is in <see cref="SharedMemoryCalls"/>.
/// </summary>
public static unsafe class SysvIpcCalls
{
    public const long NrSemget = 64, NrSemctl = 66, NrMsgget = 68, NrMsgsnd = 69, NrMsgrcv = 70, NrMsgctl = 71;
    public const int IPC_NOWAIT = 0x800, MSG_NOERROR = 0x1000, MSG_COPY = 0x4000;
    public const int GETALL = 13, SETALL = 17;
    private const int IPC_SET = 1, IPC_STAT = 2;

    /// <summary>struct msqid64_ds (120 bytes) and semid64_ds (104 bytes) on x86-64; both begin with ipc64_perm (uid at 4, gid at 8, mode at 20).</summary>
    private const int MsqDsSize = 120, SemDsSize = 104, MsgQbytesOffset = 88;

    public static int MsgGet(int key, int flags) => (int)Sys.Call(NrMsgget, key, flags);
    public static int SemGet(int key, int nsems, int flags) => (int)Sys.Call(NrSemget, key, nsems, flags);

    /// <summary>msg_qbytes of queue <paramref name="id"/>; -1 (errno set) if it cannot be read.</summary>
    public static long MsgQbytes(int id)
    {
        byte* b = stackalloc byte[MsqDsSize];
        if (Sys.Call(NrMsgctl, id, IPC_STAT, (long)b) != 0) return -1;
        return (long)BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(b + MsgQbytesOffset, 8));
    }

    /// <summary>IPC_SET of a queue: owner, permission bits and (when not negative) the queue's byte limit.</summary>
    public static bool MsgSet(int id, uint uid, uint gid, uint mode, long qbytes)
    {
        byte* b = stackalloc byte[MsqDsSize];
        if (Sys.Call(NrMsgctl, id, IPC_STAT, (long)b) != 0) return false;
        var s = new Span<byte>(b, MsqDsSize);
        SetPerm(s, uid, gid, mode);
        if (qbytes >= 0) BinaryPrimitives.WriteUInt64LittleEndian(s[MsgQbytesOffset..], (ulong)qbytes);
        return Sys.Call(NrMsgctl, id, IPC_SET, (long)b) == 0;
    }

    /// <summary>IPC_SET of a semaphore set: owner and permission bits.</summary>
    public static bool SemSet(int id, uint uid, uint gid, uint mode)
    {
        byte* b = stackalloc byte[SemDsSize];
        if (Sys.Call(NrSemctl, id, 0, IPC_STAT, (long)b) != 0) return false;
        SetPerm(new Span<byte>(b, SemDsSize), uid, gid, mode);
        return Sys.Call(NrSemctl, id, 0, IPC_SET, (long)b) == 0;
    }

    /// <summary>Owner and permission bits in the ipc64_perm that begins every SysV *_ds (uid at 4, gid at 8, mode at 20).</summary>
    internal static void SetPerm(Span<byte> ds, uint uid, uint gid, uint mode)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(ds[4..], uid);
        BinaryPrimitives.WriteUInt32LittleEndian(ds[8..], gid);
        BinaryPrimitives.WriteUInt32LittleEndian(ds[20..], mode & 0x1ff);
    }

    /// <summary>
    /// A copy of the message at position <paramref name="index"/> of queue <paramref name="id"/>, left in
    /// the queue (MSG_COPY); null when there is none. <paramref name="buffer"/>: 8 bytes of type, then the text.
    /// </summary>
    public static (long Type, byte[] Text)? MsgPeek(int id, int index, byte[] buffer)
    {
        long n;
        fixed (byte* b = buffer) n = Sys.Call(NrMsgrcv, id, (long)b, buffer.Length - 8, index, IPC_NOWAIT | MSG_COPY);
        if (n < 0) return null;
        return (BinaryPrimitives.ReadInt64LittleEndian(buffer), buffer.AsSpan(8, (int)n).ToArray());
    }

    /// <summary>msgsnd of one message without waiting; false (errno set) on failure.</summary>
    public static bool MsgSend(int id, long type, ReadOnlySpan<byte> text)
    {
        var m = new byte[8 + text.Length];
        BinaryPrimitives.WriteInt64LittleEndian(m, type);
        text.CopyTo(m.AsSpan(8));
        fixed (byte* b = m) return Sys.Call(NrMsgsnd, id, (long)b, text.Length, IPC_NOWAIT) == 0;
    }

    /// <summary>The values of every semaphore of set <paramref name="id"/> (GETALL); null on failure.</summary>
    public static ushort[]? SemGetAll(int id, int nsems)
    {
        var v = new ushort[nsems];
        fixed (ushort* p = v) return Sys.Call(NrSemctl, id, 0, GETALL, (long)p) == 0 ? v : null;
    }

    public static bool SemSetAll(int id, ushort[] values)
    {
        fixed (ushort* p = values) return Sys.Call(NrSemctl, id, 0, SETALL, (long)p) == 0;
    }

    public static int MsgRemove(int id) => (int)Sys.Call(NrMsgctl, id, 0 /* IPC_RMID */, 0);
    public static int SemRemove(int id) => (int)Sys.Call(NrSemctl, id, 0, 0 /* IPC_RMID */, 0);

    public static int LastError => Marshal.GetLastPInvokeError();
}
