using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// Signal-driven I/O settings of open file descriptions: the owner that gets SIGIO (and SIGURG on a
/// socket) set with fcntl F_SETOWN / F_SETOWN_EX (a thread, a process or a process group), the signal
/// set with F_SETSIG, and the O_ASYNC flag that turns the signals on. They belong to the description,
/// not the fd, and no /proc file shows them: each description with O_ASYNC set, and each socket (whose
/// owner gets SIGURG even without O_ASYNC), is taken into ckpt with pidfd_getfd and asked with
/// F_GETOWN_EX and F_GETSIG. A description held by several fds or processes is saved once, by the
/// first holder. Restart, once the credentials and threads are in place: F_SETOWN_EX, F_SETSIG and
/// F_SETFL(| O_ASYNC) injected in the process on the fd it was seen on, so the owner's permission to be
/// signalled is checked against the process's own credentials, as when it set them.
/// </summary>
public sealed unsafe class FileOwner : IStateKind
{
    public static readonly FileOwner Instance = new();
    public string Name => "file owners";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.FileOwners];
    /// <summary>After the credentials (70) and after POSIX timers (95), which may already have created the threads.</summary>
    public int FinishOrder => 96;

    private const int F_SETSIG = 10, F_GETSIG = 11, F_SETOWN_EX = 15, F_GETOWN_EX = 16;
    private const int F_OWNER_TID = 0, F_OWNER_PID = 1, F_OWNER_PGRP = 2;
    public const int O_ASYNC = 0x2000;

    /// <summary>The flags F_SETFL sets (O_APPEND, O_NONBLOCK, O_DIRECT, O_NOATIME, O_ASYNC): with O_ASYNC, all are set again at once.</summary>
    private const int SetflMask = 0x400 | 0x800 | 0x4000 | 0x40000 | O_ASYNC;

    /// <summary><paramref name="Setfl"/>: the description's F_SETFL flags when O_ASYNC is among them, else 0.</summary>
    private readonly record struct Owned(int Fd, int OwnerType, int Owner, int Signal, int Setfl)
    {
        public bool Async => (Setfl & O_ASYNC) != 0;
    }

    /// <summary>Descriptions whose owner is written already (by an earlier fd or process).</summary>
    private sealed class Done { public readonly HashSet<uint> Descriptions = new(); }

    /// <summary>What the process's Restore read, set in Finish.</summary>
    private sealed class Pending { public readonly List<Owned> List = new(); }

    public void Checkpoint(CheckpointContext ctx)
    {
        var done = ctx.Session.State<Done>();
        var refs = ctx.State<FdTable.Refs>().ByFd;
        var owned = new List<Owned>();
        var ex = stackalloc int[2];
        foreach (var f in ctx.OpenFiles)
        {
            bool async = (f.Flags & O_ASYNC) != 0;
            if (f.InFlight)
            {
                // the settings are made on an fd of the process at restart, and a file in flight has none
                if (async) throw new NotCheckpointableException(ctx.Pid, $"{f} has O_ASYNC set, which is not supported for a file in flight");
                continue;
            }
            if (!async && f.Stat.Type != StatBuf.S_IFSOCK) continue;
            if (!done.Descriptions.Add(refs.GetValueOrDefault(f.Fd))) continue;
            int mine = ctx.GrabFd(f.Fd);
            int type, owner, sig;
            try
            {
                if (FileCalls.Fcntl(mine, F_GETOWN_EX, (nint)ex) != 0) throw SyscallException.Last("fcntl(F_GETOWN_EX)", ctx.Pid, f.ToString());
                type = ex[0]; owner = ex[1];
                sig = FileCalls.Fcntl(mine, F_GETSIG, 0);
                if (sig < 0) throw SyscallException.Last("fcntl(F_GETSIG)", ctx.Pid, f.ToString());
            }
            finally { FileCalls.Close(mine); }
            if (!async && owner == 0 && sig == 0) continue;
            owned.Add(new Owned(f.Fd, type, owner, sig, async ? f.Flags & SetflMask : 0));
            if (owner != 0 && type != F_OWNER_TID && !ctx.Session.Tree.Any(e => owner == (type == F_OWNER_PGRP ? e.Pgid : e.Pid)))
                ctx.Log.Info($"pid {ctx.Pid}: {f}: its signal owner {Describe(type, owner)} is outside the tree; restart sets it again if it exists then");
        }
        if (owned.Count == 0) return;
        var p = new PayloadWriter().U32((uint)owned.Count);
        foreach (var o in owned) p.I32(o.Fd).U8((byte)o.OwnerType).I32(o.Owner).I32(o.Signal).I32(o.Setfl);
        ctx.Image.Write(RecordKind.FileOwners, p);
        ctx.Log.Debug($"pid {ctx.Pid}: {owned.Count} description(s) with a signal owner or O_ASYNC");
    }

    private static string Describe(int type, int owner) => type switch
    {
        F_OWNER_TID => $"thread {owner}",
        F_OWNER_PGRP => $"process group {owner}",
        _ => $"process {owner}",
    };

    private static List<Owned> Read(Record rec)
    {
        var r = rec.Reader();
        uint n = r.U32();
        var list = new List<Owned>();
        for (uint i = 0; i < n; i++)
        {
            var o = new Owned(r.I32(), r.U8(), r.I32(), r.I32(), r.I32());
            if (o.Fd < 0 || o.OwnerType is not (F_OWNER_TID or F_OWNER_PID or F_OWNER_PGRP) || o.Owner < 0 || o.Signal is < 0 or > 64 || (o.Setfl & ~SetflMask) != 0)
                throw new ImageFormatException($"FileOwners record at offset {rec.Offset}: entry {i} is impossible");
            list.Add(o);
        }
        r.End();
        return list;
    }

    public void Restore(RestoreContext ctx, Record rec) => ctx.State<Pending>().List.AddRange(Read(rec));

    public void Finish(RestoreContext ctx)
    {
        var list = ctx.State<Pending>().List;
        if (list.Count == 0) return;
        // an owner that is a thread of this process: its threads are created now (they would be anyway)
        if (list.Any(o => o.OwnerType == F_OWNER_TID && o.Owner != ctx.Pid && CpuState.SavedTids(ctx).Contains(o.Owner)))
            CpuState.CreateThreads(ctx);
        var batch = ctx.Batch;
        foreach (var o in list)
        {
            string what = $"fd {o.Fd}";
            if (o.Owner != 0)
            {
                var ex = new byte[8];
                BitConverter.TryWriteBytes(ex, o.OwnerType);
                // (the owner as the process's pid namespace sees it: none it cannot see, as for one that is gone)
                BitConverter.TryWriteBytes(ex.AsSpan(4), PidNamespace.Seen(ctx.Vessel.Tid, o.Owner) is int seen and > 0 ? seen : int.MaxValue);
                batch.Reserve(1, ex.Length);
                var owner = o;
                batch.Add(Nr.fcntl, o.Fd, F_SETOWN_EX, (long)batch.AddData(ex), check: got =>
                {
                    // an owner outside the tree that is gone: the signals have no one to go to, as if it had exited
                    if (got == -Errors.ESRCH) ctx.Session.Log.Write(0, $"warning: pid {ctx.Pid}: {what}: its signal owner {Describe(owner.OwnerType, owner.Owner)} does not exist here; left without owner");
                    else if (got < 0) throw new SyscallException("fcntl(F_SETOWN_EX) (injected)", (int)-got, ctx.Pid, what);
                });
            }
            if (o.Signal != 0) batch.AddChecked("fcntl(F_SETSIG)", Nr.fcntl, o.Fd, F_SETSIG, o.Signal);
            if (o.Async) batch.AddChecked("fcntl(F_SETFL)", Nr.fcntl, o.Fd, FileCalls.F_SETFL, o.Setfl);
        }
        batch.Flush();
    }

    public void Describe(Record rec, InfoNode info)
    {
        var list = info.List("file_owners");
        foreach (var o in Read(rec))
        {
            var n = new InfoNode().Set("fd", o.Fd).Set("async", o.Async);
            if (o.Owner != 0) n.Set("owner", Describe(o.OwnerType, o.Owner));
            if (o.Signal != 0) n.Set("signal", o.Signal);
            list.Add(n);
        }
    }
}
