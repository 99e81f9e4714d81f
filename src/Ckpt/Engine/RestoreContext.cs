using System.Text;
using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Tracing;

namespace Ckpt.Engine;

public sealed class RestoreOptions
{
    public bool Detach { get; init; }
    public bool Frozen { get; init; }
    public Func<bool> Cancelled { get; init; } = () => false;
    /// <summary>Replacements for external fds: image fd → fd of ckpt (--inherit-fd); default: the same number.</summary>
    public Dictionary<int, int> InheritFds { get; init; } = new();
}

/// <summary>Everything a kind needs to rebuild one process inside its vessel.</summary>
public sealed class RestoreContext : TargetContext
{
    public override int TargetPid => Pid;

    public required ImageHeader Header { get; init; }
    public required Log Log { get; init; }
    public required RestoreOptions Options { get; init; }

    /// <summary>The vessel (set once the Process record created it).</summary>
    public TracedTask? Task { get; set; }
    /// <summary>Threads other than the leader, created by the restore; released with it.</summary>
    public List<TracedTask> OtherThreads { get; } = new();
    public int Pid { get; set; }
    /// <summary>fds of ckpt kept in the vessel as candidates for external fds: ckpt fd → vessel fd.</summary>
    public Dictionary<int, int> Inherited { get; } = new();
    /// <summary>The affinity the vessel had before it was pinned to the tracer's CPU, given back on release.</summary>
    public ulong[]? VesselAffinity { get; set; }
    /// <summary>Base of the trampoline area in the vessel: page 0 holds the syscall gadget, the rest is scratch.</summary>
    public ulong Trampoline { get; set; }
    public const int TrampolineSize = 16 * 4096;
    public ulong Scratch => Trampoline + 4096;
    public const int ScratchSize = TrampolineSize - 4096;

    /// <summary>Restored file descriptions: objref → fd number in the vessel (temporary until placed).</summary>
    public ObjectTable<string, int> Files { get; } = new();

    public TracedTask Vessel => Task ?? throw new ImageFormatException("image has process state before its Process record");

    public long Inject(string name, long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0)
        => Vessel.InjectChecked(name, nr, a1, a2, a3, a4, a5, a6);

    /// <summary>Copies bytes into the scratch area at <paramref name="offset"/>; returns their address in the vessel.</summary>
    public ulong PutScratch(int offset, ReadOnlySpan<byte> data)
    {
        if (offset + data.Length > ScratchSize) throw new CkptException($"restart: {data.Length} bytes do not fit the scratch area", ExitCodes.Internal);
        MemoryCalls.WriteRemote(Pid, Scratch + (ulong)offset, data);
        return Scratch + (ulong)offset;
    }

    public byte[] GetScratch(int offset, int length)
    {
        var b = new byte[length];
        MemoryCalls.ReadRemote(Pid, Scratch + (ulong)offset, b);
        return b;
    }

    /// <summary>Opens a path inside the vessel; returns the fd or throws naming the path.</summary>
    public int OpenInVessel(string path, int flags, int mode = 0)
    {
        var bytes = Encoding.UTF8.GetBytes(path + "\0");
        ulong p = PutScratch(ScratchSize - 4096, bytes);
        long fd = Vessel.Inject(Nr.openat, FileCalls.AT_FDCWD, (long)p, flags, mode);
        if (fd < 0) throw new CkptException($"restart: cannot open {path}: {Errors.Describe((int)-fd)}", ExitCodes.RestoreConflict);
        return (int)fd;
    }

    public void ThrowIfCancelled()
    {
        if (Options.Cancelled()) throw new CkptException("restart interrupted; nothing was left running", ExitCodes.Interrupted);
    }
}
