using Ckpt.Image;
using Ckpt.Native;
using Ckpt.Proc;
using Ckpt.Tracing;

namespace Ckpt.Engine;

/// <summary>Everything a kind needs to checkpoint one stopped process.</summary>
public sealed class CheckpointContext : TargetContext
{
    public override int TargetPid => Pid;

    public required int Pid { get; init; }
    public required TracedTask Task { get; init; }
    public required ImageWriter Image { get; init; }
    public required Log Log { get; init; }
    /// <summary>Mappings read before anything was injected (the injection scratch page is not among them).</summary>
    public required List<VmaInfo> Vmas { get; init; }
    /// <summary>Registers at the stop, before any injection.</summary>
    public required UserRegs Regs { get; init; }
    /// <summary>The blocked signal mask at the stop (all signals are blocked while the checkpoint runs).</summary>
    public required ulong SigMask { get; init; }
    /// <summary>Every thread, the leader (<see cref="Task"/>) first, with its registers and blocked mask at the stop.</summary>
    public List<(TracedTask Task, UserRegs Regs, ulong SigMask)> Threads { get; } = new();
    /// <summary>A page-aligned scratch area in the target for injected calls' arguments and results.</summary>
    public ulong Scratch { get; set; }
    public const int ScratchSize = 16 * 4096;
    public Func<bool> Cancelled { get; init; } = () => false;
    /// <summary>Save objects shared with processes outside as external instead of refusing (--external).</summary>
    public bool External { get; init; }

    /// <summary>Open file descriptions met so far (key: "pid:fd" of the first holder) → objref.</summary>
    public ObjectTable<string, int> Files { get; } = new();
    /// <summary>Every open fd of the target, filled by the fd table before the file kinds run.</summary>
    public List<OpenFile> OpenFiles { get; } = new();

    public void ThrowIfCancelled()
    {
        if (Cancelled()) throw new CkptException("checkpoint interrupted; the target was left running", ExitCodes.Interrupted);
    }

    public long Inject(string name, long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0)
        => Task.InjectChecked(name, nr, a1, a2, a3, a4, a5, a6);

    public byte[] ReadScratch(int offset, int length)
    {
        var b = new byte[length];
        MemoryCalls.ReadRemote(Pid, Scratch + (ulong)offset, b);
        return b;
    }

    public void WriteScratch(int offset, ReadOnlySpan<byte> data) => MemoryCalls.WriteRemote(Pid, Scratch + (ulong)offset, data);
}
