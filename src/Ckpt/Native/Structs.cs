using System.Runtime.InteropServices;

namespace Ckpt.Native;

/// <summary>struct user_regs_struct (x86-64, 216 bytes), as PTRACE_GETREGSET NT_PRSTATUS returns it.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct UserRegs
{
    public ulong R15, R14, R13, R12, Rbp, Rbx, R11, R10, R9, R8, Rax, Rcx, Rdx, Rsi, Rdi, OrigRax, Rip, Cs, Eflags,
        Rsp, Ss, FsBase, GsBase, Ds, Es, Fs, Gs;
    public const int Size = 216;
}

/// <summary>struct clone_args (clone3), version with set_tid and cgroup (88 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct CloneArgs
{
    public ulong Flags, Pidfd, ChildTid, ParentTid, ExitSignal, Stack, StackSize, Tls, SetTid, SetTidSize, Cgroup;
    public const int Size = 88;
}

/// <summary>struct ptrace_rseq_configuration (32 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct RseqConfiguration
{
    public ulong RseqAbiPointer;
    public uint RseqAbiSize;
    public uint Signature;
    public uint Flags;
    public uint Pad;
    public const int Size = 24;
}

/// <summary>The kernel's struct sigaction for rt_sigaction (32 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct KernelSigaction
{
    public ulong Handler;
    public ulong Flags;
    public ulong Restorer;
    public ulong Mask;
    public const int Size = 32;
}

/// <summary>stack_t for sigaltstack (24 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct StackT
{
    public ulong Sp;
    public int Flags;
    public int Pad;
    public ulong Size;
    public const int SizeOf = 24;
}

/// <summary>struct prctl_mm_map for PR_SET_MM_MAP (104 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct PrctlMmMap
{
    public ulong StartCode, EndCode, StartData, EndData, StartBrk, Brk, StartStack, ArgStart, ArgEnd, EnvStart, EnvEnd;
    public ulong Auxv;
    public uint AuxvSize;
    public uint ExeFd;
    public const int Size = 104;
}

/// <summary>struct itimerval (32 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct ItimerVal
{
    public long IntervalSec, IntervalUsec, ValueSec, ValueUsec;
    public const int Size = 32;
}

/// <summary>struct ptrace_peeksiginfo_args (16 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct PeekSiginfoArgs
{
    public ulong Off;
    public uint Flags;
    public int Nr;
}
