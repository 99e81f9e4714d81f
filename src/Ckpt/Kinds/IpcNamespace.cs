using System.Globalization;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// The tree's IPC namespace, when it has one of its own (<c>unshare --ipc</c>, a container, systemd's
/// PrivateIPC), with what it holds: its limits (the kernel.msg*, sem, shm* sysctls, which are per
/// namespace), its SysV message queues with their messages, its semaphore sets with their values, and
/// its shared memory segments (those the tree attaches are saved by <see cref="SysvShm"/> as anywhere
/// else; those no process attaches are saved here with their data). Every object keeps its key, id,
/// owner and mode.
/// <para>
/// Checkpoint: every process of the tree must be in the root's IPC namespace. When that is not ckpt's,
/// ckpt's tracer thread joins it (setns: an IPC namespace is per thread), so that /proc/sysvipc, the
/// SysV calls and the ipc sysctls are the tree's, for the rest of the checkpoint (the thread ends with
/// it). Messages are read without being taken (msgrcv MSG_COPY), semaphores with GETALL, unattached
/// segments through an attach of ckpt's own. Refused: a segment attached only by processes outside
/// the tree, an unattached one above 64 MiB, and POSIX message queues (MessageQueue refuses an mqueue of
/// another namespace; queues no process holds open cannot be seen from outside the namespace and are
/// lost). One IpcNamespace record, before the Tree record.
/// </para>
/// <para>
/// Restart: the root's fresh vessel makes a new IPC namespace (injected <c>unshare(CLONE_NEWIPC)</c>)
/// before the other vessels are forked from it, so every process of the tree is in it; ckpt's tracer
/// thread joins it and sets the limits, then makes every queue, set and unattached segment again with its
/// id (<c>/proc/sys/kernel/{msg,sem,shm}_next_id</c>) and key, fills it and gives it its owner and mode.
/// What cannot be kept: the pids and times of the last operations, semaphore undo values (SEM_UNDO).
/// </para>
/// </summary>
public sealed class IpcNamespace : ITreeNamespace
{
    public static readonly IpcNamespace Instance = new();
    public string Name => "IPC namespace";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.IpcNamespace];
    public int FinishOrder => 0;

    private const int CLONE_NEWIPC = 0x08000000;
    /// <summary>The namespace's limits (/proc/sys/kernel/NAME, read and written as text).</summary>
    private static readonly string[] Limits = ["msgmax", "msgmnb", "msgmni", "sem", "shmmax", "shmall", "shmmni", "shm_rmid_forced"];
    /// <summary>Largest segment saved whole in the record when no process attaches it.</summary>
    private const ulong MaxUnattached = 64 << 20;

    private sealed record Queue(int Key, int Id, uint Uid, uint Gid, uint Mode, long Qbytes, List<(long Type, byte[] Text)> Messages);
    private sealed record Semaphores(int Key, int Id, uint Uid, uint Gid, uint Mode, ushort[] Values);
    private sealed record Segment(int Key, int Id, uint Uid, uint Gid, uint Mode, byte[] Data);

    /// <summary>Whether process <paramref name="pid"/> is in an IPC namespace other than ckpt's.</summary>
    public static bool OutsideOwn(int pid)
    {
        string? mine = FileCalls.ReadLink("/proc/self/ns/ipc");
        return mine != null && FileCalls.ReadLink($"/proc/{pid}/ns/ipc") is { } its && its != mine;
    }

    /// <summary>Moves the calling thread (ckpt's tracer thread) into the IPC namespace of <paramref name="pid"/>.</summary>
    private static void Join(int pid) => ProcessCalls.JoinNamespace(pid, "ipc", CLONE_NEWIPC);

    /// <summary>The rows of a /proc/sysvipc file of the calling thread's namespace, by column name.</summary>
    private static List<Dictionary<string, string>> Table(string file)
    {
        var lines = File.ReadAllLines($"/proc/sysvipc/{file}");
        var rows = new List<Dictionary<string, string>>();
        if (lines.Length == 0) return rows;
        var head = lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        foreach (var line in lines.Skip(1))
        {
            var w = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (w.Length < head.Length) continue;
            var row = new Dictionary<string, string>();
            for (int i = 0; i < head.Length; i++) row[head[i]] = w[i];
            rows.Add(row);
        }
        return rows;
    }

    private static int Int(Dictionary<string, string> row, string col) => int.Parse(row[col], CultureInfo.InvariantCulture);
    private static uint Perms(Dictionary<string, string> row) => Convert.ToUInt32(row["perms"], 8);

    /// <summary>
    /// Writes the IpcNamespace record (before the Tree record) when the tree is in an IPC namespace of its
    /// own, with its limits and objects; the tracer thread stays in that namespace for the rest of the checkpoint.
    /// </summary>
    public void Write(CheckpointSession s)
    {
        var (root, own) = s.TreeNamespace("ipc", "IPC");
        if (!own) return;
        var r = s.Processes[0];
        Join(r.Pid);
        var p = new PayloadWriter();
        p.U32((uint)Limits.Length);
        foreach (var name in Limits) p.Str(name).Str(Native.FileCalls.ReadText($"/proc/sys/kernel/{name}").Trim());

        var queues = new List<Queue>();
        int msgmax = int.Parse(Native.FileCalls.ReadText("/proc/sys/kernel/msgmax").Trim(), CultureInfo.InvariantCulture);
        var buffer = new byte[8 + Math.Max(msgmax, 8192)];
        foreach (var row in Table("msg"))
        {
            int id = Int(row, "msqid"), count = Int(row, "qnum");
            var messages = new List<(long, byte[])>();
            for (int i = 0; i < count; i++)
                messages.Add(SysvIpcCalls.MsgPeek(id, i, buffer)
                    ?? throw new NotCheckpointableException(r.Pid, $"SysV message queue {id} of its IPC namespace: message {i} of {count} cannot be read ({Errors.Describe(SysvIpcCalls.LastError)})"));
            queues.Add(new Queue(Int(row, "key"), id, (uint)Int(row, "uid"), (uint)Int(row, "gid"), Perms(row), SysvIpcCalls.MsgQbytes(id), messages));
        }
        var sets = new List<Semaphores>();
        foreach (var row in Table("sem"))
        {
            int id = Int(row, "semid");
            var values = SysvIpcCalls.SemGetAll(id, Int(row, "nsems"))
                ?? throw new NotCheckpointableException(r.Pid, $"SysV semaphore set {id} of its IPC namespace cannot be read ({Errors.Describe(SysvIpcCalls.LastError)})");
            sets.Add(new Semaphores(Int(row, "key"), id, (uint)Int(row, "uid"), (uint)Int(row, "gid"), Perms(row), values));
        }
        var segments = new List<Segment>();
        foreach (var row in Table("shm"))
        {
            int id = Int(row, "shmid");
            ulong size = ulong.Parse(row["size"], CultureInfo.InvariantCulture);
            if (Int(row, "nattch") > 0)
            {
                // attached: saved by SysvShm when a process of the tree is met with it
                if (!s.Processes.Any(c => c.Vmas.Any(v => SysvShm.IsSysvPath(v.Path) && v.Inode == (ulong)id)))
                    throw new NotCheckpointableException(r.Pid, $"SysV shared memory segment {id} of its IPC namespace is attached only by processes outside the tree; checkpoint the tree that uses it");
                continue;
            }
            if (size > MaxUnattached)
                throw new NotCheckpointableException(r.Pid, $"SysV shared memory segment {id} of its IPC namespace ({size} bytes) is attached by no process, and only those up to {MaxUnattached >> 20} MiB are saved");
            segments.Add(new Segment(Int(row, "key"), id, (uint)Int(row, "uid"), (uint)Int(row, "gid"), Perms(row), ReadSegment(id, size, r.Pid)));
        }

        p.U32((uint)queues.Count);
        foreach (var q in queues)
        {
            p.I32(q.Key).I32(q.Id).U32(q.Uid).U32(q.Gid).U32(q.Mode).I64(q.Qbytes).U32((uint)q.Messages.Count);
            foreach (var (type, text) in q.Messages) p.I64(type).Bytes(text);
        }
        p.U32((uint)sets.Count);
        foreach (var m in sets)
        {
            p.I32(m.Key).I32(m.Id).U32(m.Uid).U32(m.Gid).U32(m.Mode).U32((uint)m.Values.Length);
            foreach (var v in m.Values) p.U32(v);
        }
        p.U32((uint)segments.Count);
        foreach (var g in segments) p.I32(g.Key).I32(g.Id).U32(g.Uid).U32(g.Gid).U32(g.Mode).Bytes(g.Data);
        s.Image.Write(RecordKind.IpcNamespace, p, RecordFlags.Optional);
        s.Log.Info($"the tree is in an IPC namespace of its own ({root}): {queues.Count} message queue(s) ({queues.Sum(q => q.Messages.Count)} message(s)), "
            + $"{sets.Count} semaphore set(s), {segments.Count} unattached segment(s) saved with it");
    }

    /// <summary>The contents of a segment no process attaches, through a read-only attach of ckpt's own.</summary>
    private static unsafe byte[] ReadSegment(int id, ulong size, int pid)
    {
        nint at = SharedMemoryCalls.Attach(id, 0, SharedMemoryCalls.SHM_RDONLY);
        if (at == -1) throw new NotCheckpointableException(pid, $"SysV shared memory segment {id} of its IPC namespace cannot be read ({Errors.Describe(SysvIpcCalls.LastError)})");
        try { return new ReadOnlySpan<byte>((void*)at, checked((int)size)).ToArray(); }
        finally { SharedMemoryCalls.Detach(at); }
    }

    /// <summary>Lines after the header of a /proc/sysvipc file (one per object).</summary>
    public static int Entries(string text)
        => text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Skip(1).Count(l => l.Trim().Length > 0);

    private sealed class Pending
    {
        public List<(string Name, string Value)> Limits = new();
        public List<Queue> Queues = new();
        public List<Semaphores> Sets = new();
        public List<Segment> Segments = new();
    }

    /// <summary>Before the first vessel is forked: the tree had an IPC namespace of its own, with what it held.</summary>
    public void Restore(RestoreSession s, Record rec)
    {
        var r = rec.Reader();
        var p = new Pending();
        // an image of the first version has an empty record: an empty namespace
        if (!r.AtEnd)
        {
            for (uint i = 0, n = r.U32(); i < n; i++) p.Limits.Add((r.Str(), r.Str()));
            for (uint i = 0, n = r.U32(); i < n; i++)
            {
                int key = r.I32(), id = r.I32(); uint uid = r.U32(), gid = r.U32(), mode = r.U32(); long qbytes = r.I64();
                var messages = new List<(long, byte[])>();
                for (uint j = 0, m = r.U32(); j < m; j++) messages.Add((r.I64(), r.Bytes().ToArray()));
                p.Queues.Add(new Queue(key, id, uid, gid, mode, qbytes, messages));
            }
            for (uint i = 0, n = r.U32(); i < n; i++)
            {
                int key = r.I32(), id = r.I32(); uint uid = r.U32(), gid = r.U32(), mode = r.U32();
                uint count = r.U32();
                if (count > 65536) throw new ImageFormatException($"IpcNamespace record at offset {rec.Offset}: a semaphore set of {count} semaphores");
                var values = new ushort[count];
                for (int j = 0; j < count; j++) values[j] = (ushort)r.U32();
                p.Sets.Add(new Semaphores(key, id, uid, gid, mode, values));
            }
            for (uint i = 0, n = r.U32(); i < n; i++)
                p.Segments.Add(new Segment(r.I32(), r.I32(), r.U32(), r.U32(), r.U32(), r.Bytes().ToArray()));
        }
        r.End();
        if (p.Limits.Any(l => !Limits.Contains(l.Name)))
            throw new ImageFormatException($"IpcNamespace record at offset {rec.Offset}: unknown limit {p.Limits.First(l => !Limits.Contains(l.Name)).Name}");
        s.Set(p);
    }

    /// <summary>
    /// Puts the root's fresh vessel into a new IPC namespace, before the other vessels are forked from it;
    /// ckpt's tracer thread joins it and makes the saved objects again.
    /// </summary>
    public void Enter(RestoreContext root)
    {
        if (root.Session.Existing<Pending>() is not { } p) return;
        long r = UserNamespace.Unshare(root, "ipc");
        if (r < 0) throw new CkptException($"restart: cannot make the tree's IPC namespace (unshare): {Errors.Describe((int)-r)}; restart as root", ExitCodes.Permission);
        Join(root.Pid);
        var log = root.Session.Log;
        foreach (var (name, value) in p.Limits)
            try
            {
                // (only what differs: in a namespace owned by the tree's user namespace these are its root's to write)
                string path = $"/proc/sys/kernel/{name}";
                if (string.Join(' ', File.ReadAllText(path).Split((char[])[' ', '\t', '\n'], StringSplitOptions.RemoveEmptyEntries))
                    != string.Join(' ', value.Split((char[])[' ', '\t', '\n'], StringSplitOptions.RemoveEmptyEntries)))
                    File.WriteAllText(path, value);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { log.Info($"IPC namespace: kernel.{name} = {value} cannot be set again ({e.Message})"); }
        foreach (var q in p.Queues)
        {
            string what = $"SysV message queue {q.Id} (key {q.Key:x8})";
            int id = CreateWithId("msg", q.Id, what, () => SysvIpcCalls.MsgGet(q.Key, SharedMemoryCalls.IPC_CREAT | SharedMemoryCalls.IPC_EXCL | 0x180), SysvIpcCalls.MsgRemove);
            // its byte limit first (the messages may need it); above msgmnb it needs CAP_SYS_RESOURCE
            if (q.Qbytes >= 0 && q.Qbytes != SysvIpcCalls.MsgQbytes(id) && !SysvIpcCalls.MsgSet(id, 0, 0, 0x180, q.Qbytes))
                log.Info($"{what}: its limit of {q.Qbytes} bytes cannot be set again ({Errors.Describe(SysvIpcCalls.LastError)})");
            foreach (var (type, text) in q.Messages)
                if (!SysvIpcCalls.MsgSend(id, type, text))
                    throw new CkptException($"restart: cannot put a message of {text.Length} bytes back in {what}: {Errors.Describe(SysvIpcCalls.LastError)}", ExitCodes.RestoreConflict);
            if (!SysvIpcCalls.MsgSet(id, q.Uid, q.Gid, q.Mode, -1)) throw SyscallException.Last("msgctl(IPC_SET)", 0, what);
        }
        foreach (var m in p.Sets)
        {
            string what = $"SysV semaphore set {m.Id} (key {m.Key:x8})";
            int id = CreateWithId("sem", m.Id, what, () => SysvIpcCalls.SemGet(m.Key, m.Values.Length, SharedMemoryCalls.IPC_CREAT | SharedMemoryCalls.IPC_EXCL | 0x180), SysvIpcCalls.SemRemove);
            if (!SysvIpcCalls.SemSetAll(id, m.Values)) throw SyscallException.Last("semctl(SETALL)", 0, what);
            if (!SysvIpcCalls.SemSet(id, m.Uid, m.Gid, m.Mode)) throw SyscallException.Last("semctl(IPC_SET)", 0, what);
        }
        foreach (var g in p.Segments)
        {
            string what = $"SysV shared memory segment {g.Id} (key {g.Key:x8})";
            int id = CreateWithId("shm", g.Id, what, () => SharedMemoryCalls.Get(g.Key, (ulong)g.Data.Length, SharedMemoryCalls.IPC_CREAT | SharedMemoryCalls.IPC_EXCL | 0x180), SharedMemoryCalls.Remove);
            WriteSegment(id, g.Data, what);
            if (!SharedMemoryCalls.SetOwner(id, g.Uid, g.Gid, g.Mode)) throw SyscallException.Last("shmctl(IPC_SET)", 0, what);
        }
        log.Info($"the tree runs in an IPC namespace of its own, as it was ({p.Queues.Count} message queue(s), {p.Sets.Count} semaphore set(s), {p.Segments.Count} unattached segment(s) made again)");
    }

    /// <summary>
    /// Makes a SysV object (<paramref name="kind"/>: msg, sem, shm) with id <paramref name="id"/> in the calling
    /// thread's IPC namespace: the namespace's next id set (/proc/sys/kernel/KIND_next_id), then
    /// <paramref name="get"/> (which creates it, IPC_EXCL); one that comes back with another id is
    /// removed with <paramref name="remove"/> and fails the restart.
    /// </summary>
    public static int CreateWithId(string kind, int id, string what, Func<int> get, Func<int, int> remove)
    {
        try { File.WriteAllText($"/proc/sys/kernel/{kind}_next_id", id.ToString(CultureInfo.InvariantCulture)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CkptException($"restart: {what} cannot be made again with its id: /proc/sys/kernel/{kind}_next_id: {e.Message}", ExitCodes.RestoreConflict);
        }
        int got = get();
        if (got < 0) throw SyscallException.Last($"{kind}get", 0, what);
        if (got != id)
        {
            remove(got);
            throw new CkptException($"restart: {what} came back with id {got}", ExitCodes.RestoreConflict);
        }
        return got;
    }

    private static unsafe void WriteSegment(int id, byte[] data, string what)
    {
        if (data.Length == 0) return;
        nint at = SharedMemoryCalls.Attach(id, 0, 0);
        if (at == -1) throw SyscallException.Last("shmat", 0, what);
        try { data.CopyTo(new Span<byte>((void*)at, data.Length)); }
        finally { SharedMemoryCalls.Detach(at); }
    }

    public void Describe(Record rec, InfoNode info)
    {
        var node = info.Child("ipc_namespace").Set("own", true);
        var r = rec.Reader();
        if (r.AtEnd) { node.Set("objects", 0); return; }
        var limits = node.Child("limits");
        for (uint i = 0, n = r.U32(); i < n; i++) limits.Set(r.Str(), r.Str());
        var list = node.List("objects");
        for (uint i = 0, n = r.U32(); i < n; i++)
        {
            int key = r.I32(), id = r.I32(); uint uid = r.U32(), gid = r.U32(), mode = r.U32(); long qbytes = r.I64();
            uint m = r.U32();
            long bytes = 0;
            for (uint j = 0; j < m; j++) { r.I64(); bytes += r.Bytes().Length; }
            list.Add(new InfoNode().Set("kind", "message queue").Set("id", id).Set("key", $"{key:x8}").Set("mode", Convert.ToString(mode & 0x1ff, 8))
                .Set("uid", uid).Set("gid", gid).Set("messages", m).Set("bytes", bytes));
        }
        for (uint i = 0, n = r.U32(); i < n; i++)
        {
            int key = r.I32(), id = r.I32(); uint uid = r.U32(), gid = r.U32(), mode = r.U32();
            uint count = r.U32();
            var values = new List<string>();
            for (uint j = 0; j < count; j++) values.Add(r.U32().ToString(CultureInfo.InvariantCulture));
            list.Add(new InfoNode().Set("kind", "semaphore set").Set("id", id).Set("key", $"{key:x8}").Set("mode", Convert.ToString(mode & 0x1ff, 8))
                .Set("uid", uid).Set("gid", gid).Set("values", string.Join(',', values)));
        }
        for (uint i = 0, n = r.U32(); i < n; i++)
        {
            int key = r.I32(), id = r.I32(); uint uid = r.U32(), gid = r.U32(), mode = r.U32();
            list.Add(new InfoNode().Set("kind", "shared memory segment (unattached)").Set("id", id).Set("key", $"{key:x8}").Set("mode", Convert.ToString(mode & 0x1ff, 8))
                .Set("uid", uid).Set("gid", gid).Set("size", r.Bytes().Length));
        }
    }
}
