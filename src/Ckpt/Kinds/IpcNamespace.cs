using System.Text;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// The tree's IPC namespace, when it has one of its own (<c>unshare --ipc</c>, systemd's PrivateIPC, a
/// sandbox) and it holds no object: SysV shared memory segments, semaphore sets and message queues, and
/// POSIX message queues live in the namespace, and their state is not saved here, so such a namespace is
/// refused naming what it holds. An empty one (the common case: the namespace only keeps the tree from
/// the machine's objects) is saved as such.
/// <para>
/// Checkpoint: every process of the tree must be in the root's IPC namespace; when that is not ckpt's,
/// /proc/sysvipc/{shm,sem,msg} are read in the root (injected open and read: the files show the reader's
/// namespace) and must list nothing, and no process may hold a POSIX message queue (MessageQueue refuses
/// one of another namespace). One IpcNamespace record, before the Tree record, says the tree had one.
/// Queues that exist in the namespace without any process holding them open cannot be seen from outside
/// it and are lost.
/// </para>
/// <para>
/// Restart: the root's fresh vessel makes a new, empty IPC namespace (injected <c>unshare(CLONE_NEWIPC)</c>)
/// before the other vessels are forked from it, so every process of the tree is in it.
/// </para>
/// </summary>
public sealed class IpcNamespace : ITreeNamespace
{
    public static readonly IpcNamespace Instance = new();
    public string Name => "IPC namespace";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.IpcNamespace];
    public int FinishOrder => 0;

    private const long CLONE_NEWIPC = 0x08000000;

    /// <summary>Whether process <paramref name="pid"/> is in an IPC namespace other than ckpt's.</summary>
    public static bool OutsideOwn(int pid)
    {
        string? mine = FileCalls.ReadLink("/proc/self/ns/ipc");
        return mine != null && FileCalls.ReadLink($"/proc/{pid}/ns/ipc") is { } its && its != mine;
    }

    /// <summary>
    /// Writes the IpcNamespace record (before the Tree record) when the tree is in an IPC namespace of its
    /// own, after checking that every process is in it and that it holds no SysV object.
    /// </summary>
    public void Write(CheckpointSession s)
    {
        var (root, own) = s.TreeNamespace("ipc", "IPC");
        if (!own) return;
        var r = s.Processes[0];
        foreach (var (file, what) in new[] { ("shm", "SysV shared memory segment"), ("sem", "SysV semaphore set"), ("msg", "SysV message queue") })
        {
            int n = Entries(ReadInProcess(r, "/proc/sysvipc/" + file));
            if (n > 0)
                throw new NotCheckpointableException(r.Pid, $"it is in an IPC namespace of its own ({root}) that holds {n} {what}(s) (/proc/sysvipc/{file} in the tree); the objects of a private IPC namespace are not saved, only an empty one");
        }
        s.Image.Write(RecordKind.IpcNamespace, new PayloadWriter(), RecordFlags.Optional);
        s.Log.Info($"the tree is in an IPC namespace of its own ({root}), empty: the restart makes a new one");
    }

    /// <summary>Lines after the header of a /proc/sysvipc file (one per object).</summary>
    public static int Entries(string text)
        => text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Skip(1).Count(l => l.Trim().Length > 0);

    /// <summary>The start of a file as the frozen process reads it (injected openat, read, close; at most 8 KiB).</summary>
    private static string ReadInProcess(CheckpointContext ctx, string path)
    {
        const int At = CheckpointContext.OutOffset, Data = At + 4096, Max = 8192;
        ctx.WriteScratch(At, Encoding.UTF8.GetBytes(path + "\0"));
        long fd = ctx.Inject($"open {path}", Nr.openat, FileCalls.AT_FDCWD, (long)ctx.Scratch + At, FileCalls.O_RDONLY | FileCalls.O_CLOEXEC);
        try
        {
            long n = ctx.Inject($"read {path}", Nr.read, fd, (long)ctx.Scratch + Data, Max);
            return Encoding.UTF8.GetString(ctx.ReadScratch(Data, (int)n));
        }
        finally { ctx.Task.Inject(Nr.close, fd); }
    }

    private sealed class Pending;

    /// <summary>Before the first vessel is forked: the tree had an IPC namespace of its own.</summary>
    public void Restore(RestoreSession s, Record rec)
    {
        rec.Reader().End();
        s.Set(new Pending());
    }

    /// <summary>Puts the root's fresh vessel into a new IPC namespace, before the other vessels are forked from it.</summary>
    public void Enter(RestoreContext root)
    {
        if (root.Session.Existing<Pending>() == null) return;
        long r = root.Vessel.Inject(Nr.unshare, CLONE_NEWIPC);
        if (r < 0) throw new CkptException($"restart: cannot make the tree's IPC namespace (unshare): {Errors.Describe((int)-r)}; restart as root", ExitCodes.Permission);
        root.Session.Log.Info("the tree runs in an IPC namespace of its own (empty, as it was)");
    }

    public void Checkpoint(CheckpointContext ctx) { }

    public void Restore(RestoreContext ctx, Record rec)
        => throw new ImageFormatException($"IpcNamespace record at offset {rec.Offset} after the Tree record");

    public void Finish(RestoreContext ctx) { }

    public void Describe(Record rec, InfoNode info) => info.Child("ipc_namespace").Set("own", true).Set("objects", 0);
}
