using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// Classic BPF socket filters (setsockopt SO_ATTACH_FILTER: tcpdump-style programs that decide which
/// packets a socket receives) and the SO_LOCK_FILTER flag that forbids changing them. They belong to the
/// socket, and only the socket shows them: each socket description is taken into ckpt with pidfd_getfd
/// and asked with getsockopt(SO_GET_FILTER), which returns the program as it was attached. An eBPF
/// program (SO_ATTACH_BPF) cannot be read back and is refused. A socket held by several fds or
/// processes is saved once, by its first holder. Restart, once the sockets are rebuilt: SO_ATTACH_FILTER
/// with the same instructions, then SO_LOCK_FILTER, injected in the process on the fd it was seen on.
/// </summary>
public sealed unsafe class SocketFilter : IStateKind
{
    public static readonly SocketFilter Instance = new();
    public string Name => "socket filters";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.SocketFilters];
    /// <summary>After the sockets' own Finish (75-77: connections leave repair mode).</summary>
    public int FinishOrder => 80;

    private const int SO_ATTACH_FILTER = 26, SO_GET_FILTER = SO_ATTACH_FILTER, SO_LOCK_FILTER = 44;
    /// <summary>BPF_MAXINSNS: the longest classic program the kernel accepts.</summary>
    private const int MaxInstructions = 4096;
    private const int InstructionSize = 8;   // struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }

    private readonly record struct Filter(int Fd, byte[] Program, bool Locked);

    /// <summary>Sockets whose filter is written already (by an earlier fd or process).</summary>
    private sealed class Done { public readonly HashSet<uint> Descriptions = new(); }

    /// <summary>What the process's Restore read, attached in Finish.</summary>
    private sealed class Pending { public readonly List<Filter> List = new(); }

    public void Checkpoint(CheckpointContext ctx)
    {
        var done = ctx.Session.State<Done>();
        var refs = ctx.State<FdTable.Refs>().ByFd;
        var filters = new List<Filter>();
        foreach (var f in ctx.OpenFiles)
        {
            if (f.Stat.Type != StatBuf.S_IFSOCK || !done.Descriptions.Add(refs.GetValueOrDefault(f.Fd))) continue;
            int mine = ctx.GrabFd(f.Fd);
            try
            {
                int count = 0;   // asked with a length of 0, the kernel gives the number of instructions
                if (SocketCalls.GetSockOpt(mine, SocketCalls.SOL_SOCKET, SO_GET_FILTER, null, &count) != 0)
                {
                    if (System.Runtime.InteropServices.Marshal.GetLastPInvokeError() == Errors.EACCES)
                        throw new NotCheckpointableException(ctx.Pid, $"{f} has an eBPF socket filter (SO_ATTACH_BPF), which cannot be read back; only classic filters (SO_ATTACH_FILTER) are saved");
                    throw SyscallException.Last("getsockopt(SO_GET_FILTER)", ctx.Pid, f.ToString());
                }
                if (count == 0) continue;
                // attached on an fd of the process at restart, and a socket in flight has none
                if (f.InFlight) throw new NotCheckpointableException(ctx.Pid, $"{f} has a socket filter, which is not supported for a socket in flight");
                if (count > MaxInstructions) throw new CkptException($"pid {ctx.Pid} {f}: getsockopt(SO_GET_FILTER) says {count} instructions", ExitCodes.Internal);
                var program = new byte[count * InstructionSize];
                int len = count;   // in instructions, not bytes
                fixed (byte* b = program)
                    if (SocketCalls.GetSockOpt(mine, SocketCalls.SOL_SOCKET, SO_GET_FILTER, b, &len) != 0 || len != count)
                        throw SyscallException.Last("getsockopt(SO_GET_FILTER)", ctx.Pid, f.ToString());
                int locked = 0, ll = 4;
                SocketCalls.GetSockOpt(mine, SocketCalls.SOL_SOCKET, SO_LOCK_FILTER, &locked, &ll);
                filters.Add(new Filter(f.Fd, program, locked != 0));
            }
            finally { FileCalls.Close(mine); }
        }
        if (filters.Count == 0) return;
        var p = new PayloadWriter().U32((uint)filters.Count);
        foreach (var x in filters) p.I32(x.Fd).Bool(x.Locked).Bytes(x.Program);
        ctx.Image.Write(RecordKind.SocketFilters, p);
        ctx.Log.Debug($"pid {ctx.Pid}: {filters.Count} socket filter(s)");
    }

    private static List<Filter> Read(Record rec)
    {
        var r = rec.Reader();
        uint n = r.U32();
        var list = new List<Filter>();
        for (uint i = 0; i < n; i++)
        {
            var x = new Filter(r.I32(), Locked: r.Bool(), Program: r.Bytes().ToArray());
            if (x.Fd < 0 || x.Program.Length == 0 || x.Program.Length % InstructionSize != 0 || x.Program.Length > MaxInstructions * InstructionSize)
                throw new ImageFormatException($"SocketFilters record at offset {rec.Offset}: filter {i} is impossible");
            list.Add(x);
        }
        r.End();
        return list;
    }

    public void Restore(RestoreContext ctx, Record rec) => ctx.State<Pending>().List.AddRange(Read(rec));

    public void Finish(RestoreContext ctx)
    {
        foreach (var x in ctx.State<Pending>().List)
        {
            // struct sock_fprog { u16 len; (pad) struct sock_filter *filter; }, the instructions after it
            var batch = ctx.Batch;
            batch.Reserve(2, 16 + x.Program.Length + 4);
            ulong code = batch.AddData(x.Program);
            var prog = new byte[16];
            BitConverter.TryWriteBytes(prog, (ushort)(x.Program.Length / InstructionSize));
            BitConverter.TryWriteBytes(prog.AsSpan(8), code);
            batch.AddChecked($"setsockopt(SO_ATTACH_FILTER) of fd {x.Fd}", Nr.setsockopt, x.Fd, SocketCalls.SOL_SOCKET, SO_ATTACH_FILTER, (long)batch.AddData(prog), prog.Length);
            if (x.Locked)
                batch.AddChecked($"setsockopt(SO_LOCK_FILTER) of fd {x.Fd}", Nr.setsockopt, x.Fd, SocketCalls.SOL_SOCKET, SO_LOCK_FILTER, (long)batch.AddData(BitConverter.GetBytes(1)), 4);
            batch.Flush();
        }
    }

    public void Describe(Record rec, InfoNode info)
    {
        var list = info.List("socket_filters");
        foreach (var x in Read(rec))
            list.Add(new InfoNode().Set("fd", x.Fd).Set("instructions", x.Program.Length / InstructionSize).Set("locked", x.Locked));
    }
}
