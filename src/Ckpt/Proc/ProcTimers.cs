using System.Globalization;

namespace Ckpt.Proc;

/// <summary>
/// Parses /proc/PID/timers (CONFIG_CHECKPOINT_RESTORE): one block of four lines per POSIX timer
/// (timer_create) of the process, as <c>show_timer</c> in kernel/time/posix-timers.c prints them:
/// <code>
/// ID: 12
/// signal: 35/000000000000002a        signal number / sigev_value in hex (%px)
/// notify: signal/pid.4242           signal|none|thread / pid.TGID or tid.TID (SIGEV_THREAD_ID)
/// ClockID: 1                        the timer's clock (CPU-time clocks are negative: pid and type encoded)
/// </code>
/// The kernel lists the timers newest first; <see cref="Parse"/> returns them by ascending ID.
/// </summary>
public static class ProcTimers
{
    public const int SIGEV_SIGNAL = 0, SIGEV_NONE = 1, SIGEV_THREAD = 2, SIGEV_THREAD_ID = 4;

    /// <summary>One timer. <paramref name="Notify"/> is the kernel's sigev_notify (SIGEV_THREAD_ID included);
    /// <paramref name="NotifyPid"/> the tgid it signals, or the tid for SIGEV_THREAD_ID.</summary>
    public readonly record struct Timer(int Id, int Signal, ulong Value, int Notify, int NotifyPid, int ClockId)
    {
        public bool ToThread => (Notify & SIGEV_THREAD_ID) != 0;
    }

    public static List<Timer> Read(int pid)
    {
        string text;
        try { text = Native.FileCalls.ReadText($"/proc/{pid}/timers"); }
        catch (FileNotFoundException) { return []; }   // a kernel without CONFIG_CHECKPOINT_RESTORE: the caller checks
        return Parse(text);
    }

    /// <summary>True if this kernel shows /proc/PID/timers (CONFIG_CHECKPOINT_RESTORE).</summary>
    public static bool Available(int pid) => File.Exists($"/proc/{pid}/timers");

    /// <summary>
    /// Parses the text of /proc/PID/timers. A block must have its four lines in the kernel's order;
    /// anything else (a missing or unknown line, a malformed value, an ID twice) is a <see cref="FormatException"/>.
    /// </summary>
    public static List<Timer> Parse(string text)
    {
        var result = new List<Timer>();
        var lines = text.Split('\n');
        int i = 0;
        static string Field(string[] lines, ref int i, string key)
        {
            while (i < lines.Length && lines[i].Length == 0) i++;
            if (i >= lines.Length) throw new FormatException($"timers: a block ends before its \"{key}\" line");
            var line = lines[i++];
            if (!line.StartsWith(key + ": ", StringComparison.Ordinal)) throw new FormatException($"timers: expected \"{key}: ...\", found \"{line}\"");
            return line[(key.Length + 2)..].Trim();
        }
        while (true)
        {
            while (i < lines.Length && lines[i].Length == 0) i++;
            if (i >= lines.Length) break;
            int id = Int(Field(lines, ref i, "ID"), "ID");
            var sig = Field(lines, ref i, "signal");
            int slash = sig.IndexOf('/');
            if (slash < 0) throw new FormatException($"timers: bad signal line \"{sig}\"");
            int signo = Int(sig[..slash], "signal");
            var hex = sig[(slash + 1)..];
            if (hex.StartsWith("0x", StringComparison.OrdinalIgnoreCase)) hex = hex[2..];
            if (!ulong.TryParse(hex, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong value))
                throw new FormatException($"timers: bad sigev_value in \"{sig}\"");
            var n = Field(lines, ref i, "notify");
            slash = n.IndexOf('/');
            int dot = n.IndexOf('.', Math.Max(slash, 0));
            if (slash < 0 || dot < 0) throw new FormatException($"timers: bad notify line \"{n}\"");
            int notify = n[..slash] switch
            {
                "signal" => SIGEV_SIGNAL, "none" => SIGEV_NONE, "thread" => SIGEV_THREAD,
                _ => throw new FormatException($"timers: unknown notification \"{n}\""),
            };
            notify |= n[(slash + 1)..dot] switch
            {
                "pid" => 0, "tid" => SIGEV_THREAD_ID,
                _ => throw new FormatException($"timers: unknown notification target \"{n}\""),
            };
            int target = Int(n[(dot + 1)..], "notify");
            int clock = Int(Field(lines, ref i, "ClockID"), "ClockID");
            if (result.Exists(t => t.Id == id)) throw new FormatException($"timers: ID {id} appears twice");
            result.Add(new Timer(id, signo, value, notify, target, clock));
        }
        result.Sort((a, b) => a.Id.CompareTo(b.Id));
        return result;
    }

    private static int Int(string s, string what)
        => int.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int v) ? v
            : throw new FormatException($"timers: bad {what} value \"{s}\"");

    // CPU-time clocks (include/linux/posix-timers_types.h): clockid = (~pid << 3) | perthread(4) | type
    // (0 PROF, 1 VIRT, 2 SCHED; 3 is CLOCKFD, a dynamic clock). pid 0 = the calling process/thread.
    public const int CPUCLOCK_PERTHREAD_MASK = 4, CPUCLOCK_CLOCK_MASK = 3, CLOCKFD = 3;

    /// <summary>Decodes a negative (CPU-time or fd) clock id: the pid/tid it names (0: the caller) and whether it is per thread.</summary>
    public static (int Pid, bool PerThread, int Type) DecodeCpuClock(int clock)
        => (~(clock >> 3), (clock & CPUCLOCK_PERTHREAD_MASK) != 0, clock & CPUCLOCK_CLOCK_MASK);

    public static int MakeCpuClock(int pid, bool perThread, int type) => (~pid << 3) | (perThread ? CPUCLOCK_PERTHREAD_MASK : 0) | type;
}
