using System.Globalization;

namespace Ckpt.Proc;

/// <summary>
/// The fields of /proc/PID/stat that checkpointing needs. Field numbers are those of proc(5)
/// (1 = pid, 2 = comm, 3 = state, ...). The memory-layout addresses (start_code, arg_start, ...) read
/// as 0 when the reader may not ptrace the task, and for kernel threads.
/// </summary>
public sealed class ProcStat
{
    public const uint PF_KTHREAD = 0x00200000;
    /// <summary>The last field this parser needs (exit_code, since Linux 3.5).</summary>
    public const int MinFields = 52;

    private readonly string[] _fields; // _fields[0] is field 1

    public int Pid { get; }
    /// <summary>Field 2, without the parentheses; it may hold spaces, parentheses and newlines.</summary>
    public string Comm { get; }
    public char State { get; }
    public int PPid { get; }
    public int Pgrp { get; }
    public int Session { get; }
    public int TtyNr { get; }
    public int Tpgid { get; }
    /// <summary>Field 9: PF_* flags.</summary>
    public uint Flags { get; }
    public long Priority { get; }
    /// <summary>Field 19: nice value, -20..19.</summary>
    public int Nice { get; }
    public int NumThreads { get; }
    /// <summary>Field 22: start time after boot, in clock ticks.</summary>
    public ulong StartTime { get; }
    public ulong StartCode { get; }
    public ulong EndCode { get; }
    public ulong StartStack { get; }
    public int ExitSignal { get; }
    public uint RtPriority { get; }
    public uint Policy { get; }
    public ulong StartData { get; }
    public ulong EndData { get; }
    public ulong StartBrk { get; }
    public ulong ArgStart { get; }
    public ulong ArgEnd { get; }
    public ulong EnvStart { get; }
    public ulong EnvEnd { get; }
    public int ExitCode { get; }

    public bool IsKernelThread => (Flags & PF_KTHREAD) != 0;
    /// <summary>Number of fields, comm included.</summary>
    public int FieldCount => _fields.Length;

    /// <summary>Field <paramref name="n"/> (1-based, as in proc(5)) as text.</summary>
    public string Field(int n) => n >= 1 && n <= _fields.Length ? _fields[n - 1]
        : throw new ArgumentOutOfRangeException(nameof(n), $"stat has {_fields.Length} fields");

    public static ProcStat Read(int pid) => Parse(Native.FileCalls.ReadText($"/proc/{pid}/stat"));
    public static ProcStat Read(int pid, int tid) => Parse(Native.FileCalls.ReadText($"/proc/{pid}/task/{tid}/stat"));

    public static ProcStat Parse(string text) => new(text);

    private ProcStat(string text)
    {
        // "pid (comm) state ppid ...": comm may contain ") ", so it ends at the LAST ')'.
        int open = text.IndexOf(" (", StringComparison.Ordinal);
        int close = text.LastIndexOf(')');
        if (open <= 0 || close < open + 2) throw new FormatException("bad stat: no \"pid (comm)\"");
        var rest = text[(close + 1)..].Split([' ', '\n'], StringSplitOptions.RemoveEmptyEntries);
        _fields = new string[2 + rest.Length];
        _fields[0] = text[..open];
        _fields[1] = text[(open + 2)..close];
        rest.CopyTo(_fields, 2);
        if (_fields.Length < MinFields) throw new FormatException($"stat has {_fields.Length} fields, expected at least {MinFields}");
        if (_fields[2].Length != 1) throw new FormatException($"bad stat state field: {_fields[2]}");

        Pid = I32(1);
        Comm = _fields[1];
        State = _fields[2][0];
        PPid = I32(4);
        Pgrp = I32(5);
        Session = I32(6);
        TtyNr = I32(7);
        Tpgid = I32(8);
        Flags = (uint)U64(9);
        Priority = I64(18);
        Nice = I32(19);
        NumThreads = I32(20);
        StartTime = U64(22);
        StartCode = U64(26);
        EndCode = U64(27);
        StartStack = U64(28);
        ExitSignal = I32(38);
        RtPriority = (uint)U64(40);
        Policy = (uint)U64(41);
        StartData = U64(45);
        EndData = U64(46);
        StartBrk = U64(47);
        ArgStart = U64(48);
        ArgEnd = U64(49);
        EnvStart = U64(50);
        EnvEnd = U64(51);
        ExitCode = I32(52);
    }

    private ulong U64(int n) => ulong.TryParse(_fields[n - 1], NumberStyles.None, CultureInfo.InvariantCulture, out ulong v) ? v
        : throw new FormatException($"bad stat field {n}: {_fields[n - 1]}");

    private long I64(int n) => long.TryParse(_fields[n - 1], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long v) ? v
        : throw new FormatException($"bad stat field {n}: {_fields[n - 1]}");

    private int I32(int n) => int.TryParse(_fields[n - 1], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int v) ? v
        : throw new FormatException($"bad stat field {n}: {_fields[n - 1]}");
}
