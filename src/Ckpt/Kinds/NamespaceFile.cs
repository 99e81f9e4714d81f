using System.Text.RegularExpressions;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;

namespace Ckpt.Kinds;

/// <summary>
/// Namespace files held open (<c>/proc/PID/ns/KIND</c>, whose fd link reads <c>KIND:[INO]</c>: a program
/// keeping a namespace to setns into, a tool like <c>ip netns</c>). Saved: the kind, and which namespace:
/// ckpt's own of that kind (the tree runs in it, and is rebuilt in the namespaces of `ckpt restart`), or
/// the holder's own (a UTS, IPC, time, pid, mount, network or user namespace the tree has and that is rebuilt with it). Restart:
/// ckpt opens <c>/proc/self/ns/KIND</c> or the rebuilt process's <c>/proc/PID/ns/KIND</c> and installs it.
/// Any other namespace (one ckpt does not rebuild) is refused.
/// </summary>
public sealed partial class NamespaceFile : IFileKind
{
    public static readonly NamespaceFile Instance = new();
    public string Name => "namespace file";
    public IReadOnlyList<RecordKind> Records { get; } = [RecordKind.NamespaceFile];
    public int FinishOrder => 42;

    private enum Whose : byte { Ckpt = 0, Holder = 1 }

    [GeneratedRegex(@"^(net|uts|ipc|mnt|pid|user|cgroup|time):\[(\d+)\]$")]
    private static partial Regex LinkPattern();

    public bool Handles(in OpenFile f) => LinkPattern().IsMatch(f.Link);

    public void Checkpoint(CheckpointContext ctx) { }

    public void CheckpointFile(CheckpointContext ctx, in OpenFile f, uint objref)
    {
        string kind = LinkPattern().Match(f.Link).Groups[1].Value;
        Whose whose;
        if (FileCalls.ReadLink($"/proc/self/ns/{kind}") == f.Link) whose = Whose.Ckpt;
        // (a pid, mount or network namespace other than ckpt's is one of the tree's: PidNamespace, MountNamespace
        // and NetNamespace save it, or refuse the tree)
        else if (FileCalls.ReadLink($"/proc/{ctx.Pid}/ns/{kind}") == f.Link && kind is "uts" or "ipc" or "time" or "pid" or "mnt" or "net" or "user") whose = Whose.Holder;
        else
            throw new NotCheckpointableException(ctx.Pid, $"fd {f.Fd} is the {kind} namespace {f.Link}, which is neither ckpt's nor one the tree has of its own and that is rebuilt with it; not supported");
        ctx.Image.Write(RecordKind.NamespaceFile, new PayloadWriter().U32(objref).Str(kind).U8((byte)whose).I32(f.Flags & ~FileCalls.O_CLOEXEC));
    }

    public void Restore(RestoreContext ctx, Record rec)
    {
        var r = rec.Reader();
        uint objref = r.U32(); string kind = r.Str(); var whose = (Whose)r.U8(); int flags = r.I32();
        r.End();
        if (!LinkPattern().IsMatch($"{kind}:[0]") || whose > Whose.Holder)
            throw new ImageFormatException($"NamespaceFile record at offset {rec.Offset}: namespace kind '{kind}', holder {(int)whose}");
        // (the holder enters its user namespace only at the end: ckpt's fd of it, UserNamespace)
        string path = whose == Whose.Ckpt ? $"/proc/self/ns/{kind}"
            : kind == "user" ? $"/proc/self/fd/{(UserNamespace.Current ?? throw new ImageFormatException($"NamespaceFile record at offset {rec.Offset}: the holder's own user namespace, in an image without one")).Fd}"
            : $"/proc/{ctx.Pid}/ns/{kind}";
        int mine = FileCalls.Open(path, FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0);
        if (mine < 0) throw SyscallException.Last("open", ctx.Pid, path);
        ctx.Session.Own(mine);
        ctx.Files.SetRestored(objref, ctx.Install(mine));
    }

    public void Finish(RestoreContext ctx) { }

    public void Describe(Record rec, InfoNode info)
    {
        var r = rec.Reader();
        uint objref = r.U32(); string kind = r.Str(); var whose = (Whose)r.U8(); int flags = r.I32();
        info.Child("files").Set(objref.ToString(), new InfoNode().Set("kind", "namespace").Set("path", $"{kind} namespace ({(whose == Whose.Ckpt ? "the restart's" : "its own")})")
            .Set("flags", RegularFile.OpenFlags(flags)));
    }
}
