using Ckpt.Kinds;
using Ckpt.Native;
using Ckpt.Proc;
using Xunit;

namespace Ckpt.Tests;

public unsafe class ProcParserTests
{
    // ---------------------------------------------------------------- /proc/PID/status

    private const string StatusSample =
        "Name:\tmy\\\\prog\\nx\ty\n" +
        "Umask:\t0027\n" +
        "State:\tt (tracing stop)\n" +
        "Tgid:\t4242\n" +
        "Ngid:\t0\n" +
        "Pid:\t4243\n" +
        "PPid:\t1\n" +
        "TracerPid:\t999\n" +
        "Uid:\t1000\t1001\t1002\t1003\n" +
        "Gid:\t100\t101\t102\t4294967294\n" +
        "FDSize:\t64\n" +
        "Groups:\t4 24 27 100 \n" +
        "NStgid:\t4242\n" +
        "NSpid:\t4243\n" +
        "VmPeak:\t    3060 kB\n" +
        "untag_mask:\t0xffffffffffffffff\n" +
        "Threads:\t3\n" +
        "SigQ:\t2/96364\n" +
        "SigPnd:\t0000000000000100\n" +
        "ShdPnd:\t8000000000000001\n" +
        "SigBlk:\t0000000000010000\n" +
        "SigIgn:\t0000000000001000\n" +
        "SigCgt:\t00000001c0014a02\n" +
        "CapInh:\t0000000000000000\n" +
        "CapPrm:\t000001ffffffffff\n" +
        "CapEff:\t000001fffeffffff\n" +
        "CapBnd:\t000001ffffffffff\n" +
        "CapAmb:\t0000000000000400\n" +
        "NoNewPrivs:\t1\n" +
        "Seccomp:\t2\n" +
        "Seccomp_filters:\t1\n" +
        "Speculation_Store_Bypass:\tthread vulnerable\n" +
        "Cpus_allowed_list:\t0-1\n";

    [Fact]
    public void Status_ParsesEveryFieldOfSample()
    {
        var s = ProcStatus.Parse(StatusSample);
        Assert.Equal("my\\prog\nx\ty", s.Name);
        Assert.Equal(0x17, s.Umask);
        Assert.Equal('t', s.State);
        Assert.Equal("tracing stop", s.StateName);
        Assert.Equal(4242, s.Tgid);
        Assert.Equal(4243, s.Pid);
        Assert.Equal(1, s.PPid);
        Assert.Equal(999, s.TracerPid);
        Assert.Equal([1000u, 1001u, 1002u, 1003u], s.Uid);
        Assert.Equal(1001u, s.EffectiveUid);
        Assert.Equal(1003u, s.FsUid);
        Assert.Equal([100u, 101u, 102u, 4294967294u], s.Gid);
        Assert.Equal(102u, s.SavedGid);
        Assert.Equal([4u, 24u, 27u, 100u], s.Groups);
        Assert.Equal(3, s.Threads);
        Assert.Equal(2ul, s.SigQueued);
        Assert.Equal(96364ul, s.SigQueueLimit);
        Assert.Equal(0x100ul, s.SigPnd);
        Assert.Equal(0x8000000000000001ul, s.ShdPnd);
        Assert.Equal(0x10000ul, s.SigBlk);
        Assert.Equal(0x1000ul, s.SigIgn);
        Assert.Equal(0x1c0014a02ul, s.SigCgt);
        Assert.Equal(0ul, s.CapInh);
        Assert.Equal(0x000001ffffffffffUL, s.CapPrm);
        Assert.Equal(0x000001fffeffffffUL, s.CapEff);
        Assert.Equal(0x000001ffffffffffUL, s.CapBnd);
        Assert.Equal(0x400ul, s.CapAmb);
        Assert.True(s.NoNewPrivs);
        Assert.Equal(2, s.Seccomp);
    }

    [Fact]
    public void Status_EmptyGroupsAndNoUmask()
    {
        var text = StatusSample.Replace("Groups:\t4 24 27 100 \n", "Groups:\t \n").Replace("Umask:\t0027\n", "")
            .Replace("State:\tt (tracing stop)", "State:\tZ (zombie)");
        var s = ProcStatus.Parse(text);
        Assert.Empty(s.Groups);
        Assert.Null(s.Umask);
        Assert.Equal('Z', s.State);
        Assert.Equal("zombie", s.StateName);
    }

    [Theory]
    [InlineData("SigBlk:\t0000000000010000\n", "")]                                  // missing mask
    [InlineData("CapAmb:\t0000000000000400\n", "")]                                  // missing capability set
    [InlineData("Threads:\t3\n", "")]                                                // missing count
    [InlineData("SigBlk:\t0000000000010000\n", "SigBlk:\t00000000000g0000\n")]       // not hex
    [InlineData("SigBlk:\t0000000000010000\n", "SigBlk:\t10000000000000000\n")]      // 17 digits
    [InlineData("Uid:\t1000\t1001\t1002\t1003\n", "Uid:\t1000\t1001\t1002\n")]       // three UIDs
    [InlineData("Uid:\t1000\t1001\t1002\t1003\n", "Uid:\t1000\t-1\t1002\t1003\n")]   // negative UID
    [InlineData("SigQ:\t2/96364\n", "SigQ:\t2\n")]                                   // no slash
    [InlineData("Tgid:\t4242\n", "Tgid:\tx\n")]
    [InlineData("Umask:\t0027\n", "Umask:\t0089\n")]                                 // not octal
    public void Status_RejectsBadText(string from, string to)
    {
        var text = StatusSample.Replace(from, to);
        Assert.NotEqual(StatusSample, text);
        Assert.Throws<FormatException>(() => ProcStatus.Parse(text));
    }

    [Fact]
    public void Status_LiveSelf()
    {
        var s = ProcStatus.Read(Environment.ProcessId);
        Assert.Equal(Environment.ProcessId, s.Tgid);
        Assert.Equal(Environment.ProcessId, s.Pid);
        Assert.Equal((int)Sys.Call(NrGetppid), s.PPid);
        Assert.Equal(ProcessCalls.GetEuid(), s.EffectiveUid);
        Assert.Equal(4, s.Uid.Length);
        Assert.Equal(4, s.Gid.Length);
        Assert.Equal(File.ReadAllText("/proc/self/comm").TrimEnd('\n'), s.Name);
        Assert.True(s.Threads >= 1);
        Assert.NotNull(s.Umask);
        Assert.InRange(s.Umask!.Value, 0, 0x1ff);
        Assert.True(s.SigQueueLimit > 0);
        Assert.Equal(0ul, s.CapEff & ~s.CapPrm);
        Assert.NotEqual(0ul, s.CapBnd);
        Assert.Equal(ProcessCalls.Prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 0, s.NoNewPrivs);
        Assert.Equal(ProcessCalls.Prctl(PR_GET_SECCOMP, 0, 0, 0, 0), s.Seccomp);
    }

    [Fact]
    public void Status_LiveThreadSignalMasksMatchTheKernel()
    {
        // /proc/thread-self is this very thread: its SigBlk is our mask, its SigIgn/SigCgt our dispositions.
        ProcStatus? s = null;
        ulong blocked = 0, ignored = 0, caught = 0;
        for (int attempt = 0; attempt < 3; attempt++)
        {
            ulong mask;
            Assert.Equal(0, Sys.Call(Nr.rt_sigprocmask, 0 /* SIG_BLOCK */, 0, (long)&mask, 8));
            blocked = mask;
            ignored = caught = 0;
            for (int sig = 1; sig <= 64; sig++)
            {
                KernelSigaction act;
                if (Sys.Call(Nr.rt_sigaction, sig, 0, (long)&act, 8) != 0) continue;
                if (act.Handler == 1) ignored |= 1ul << (sig - 1);
                else if (act.Handler != 0) caught |= 1ul << (sig - 1);
            }
            s = ProcStatus.Parse(File.ReadAllText("/proc/thread-self/status"));
            if (s.SigBlk == blocked && s.SigIgn == ignored && s.SigCgt == caught) break;
        }
        Assert.NotNull(s);
        Assert.Equal(ProcessCalls.GetTid(), s.Pid);
        Assert.Equal(Environment.ProcessId, s.Tgid);
        Assert.Equal(blocked, s.SigBlk);
        Assert.Equal(ignored, s.SigIgn);
        Assert.Equal(caught, s.SigCgt);
        Assert.NotEqual(0ul, s.SigCgt); // the runtime catches SIGSEGV and friends
    }

    private const long NrGetppid = 110;
    private const int PR_GET_SECCOMP = 21, PR_GET_NO_NEW_PRIVS = 39;

    // ---------------------------------------------------------------- /proc/PID/limits

    private const string LimitsSample = """
        Limit                     Soft Limit           Hard Limit           Units     
        Max cpu time              10                   unlimited            seconds   
        Max file size             unlimited            unlimited            bytes     
        Max data size             123456789            unlimited            bytes     
        Max stack size            8388608              unlimited            bytes     
        Max core file size        0                    unlimited            bytes     
        Max resident set          unlimited            unlimited            bytes     
        Max processes             96364                96365                processes 
        Max open files            1024                 524288               files     
        Max locked memory         8388608              8388608              bytes     
        Max address space         unlimited            unlimited            bytes     
        Max file locks            unlimited            unlimited            locks     
        Max pending signals       96366                96367                signals   
        Max msgqueue size         819200               819200               bytes     
        Max nice priority         5                    20                   
        Max realtime priority     1                    99                   
        Max realtime timeout      200000               18446744073709551614 us        

        """;

    [Fact]
    public void Limits_ParsesSampleInRlimitOrder()
    {
        const ulong U = ulong.MaxValue;
        var l = ProcLimits.Parse(LimitsSample);
        Assert.Equal(16, l.Length);
        (ulong, ulong)[] expected =
        [
            (10, U), (U, U), (123456789, U), (8388608, U), (0, U), (U, U), (96364, 96365), (1024, 524288),
            (8388608, 8388608), (U, U), (U, U), (96366, 96367), (819200, 819200), (5, 20), (1, 99),
            (200000, 18446744073709551614),
        ];
        Assert.Equal(expected, l.Select(x => (x.Soft, x.Hard)).ToArray());
        Assert.Equal((10ul, U), l[ProcLimits.RLIMIT_CPU]);
        Assert.Equal((1024ul, 524288ul), l[ProcLimits.RLIMIT_NOFILE]);
        Assert.Equal((5ul, 20ul), l[ProcLimits.RLIMIT_NICE]);
        Assert.Equal((200000ul, 18446744073709551614ul), l[ProcLimits.RLIMIT_RTTIME]);
    }

    [Fact]
    public void Limits_RowsAreFoundByNameNotPosition()
    {
        var lines = LimitsSample.Split('\n');
        var shuffled = string.Join('\n', new[] { lines[0] }.Concat(lines.Skip(1).Reverse())) + "\nMax future thing  1  2  widgets\n";
        Assert.Equal(ProcLimits.Parse(LimitsSample), ProcLimits.Parse(shuffled));
    }

    [Theory]
    [InlineData("Max open files            1024                 524288               files     \n", "")]
    [InlineData("seconds   \n", "minutes   \n")]                        // the units must be the rlimit's own
    [InlineData("200000               18446744073709551614 us", "200000               18446744073709551614 ms")]
    [InlineData("Max nice priority         5                    20                   \n",
                "Max nice priority         5                    20                   prio\n")]
    [InlineData("123456789", "12345678x")]
    [InlineData("Max core file size        0                    unlimited", "Max core file size        0                    infinite")]
    [InlineData("Max processes             96364                96365                processes",
                "Max processes             96364                processes")]
    [InlineData("Max processes             96364                96365                processes",
                "Max processes             -1                   96365                processes")]
    public void Limits_RejectsBadText(string from, string to)
    {
        var text = LimitsSample.Replace(from, to);
        Assert.NotEqual(LimitsSample, text);
        Assert.Throws<FormatException>(() => ProcLimits.Parse(text));
    }

    [Fact]
    public void Limits_LiveSelfMatchesPrlimit()
    {
        var l = ProcLimits.Read(Environment.ProcessId);
        for (int i = 0; i < ProcLimits.Count; i++)
        {
            RLimit r;
            Assert.Equal(0, ProcessCalls.Prlimit(0, i, null, &r));
            Assert.True((r.Cur, r.Max) == l[i], $"{ProcLimits.Names[i]}: prlimit ({r.Cur}, {r.Max}), /proc ({l[i].Soft}, {l[i].Hard})");
        }
    }

    // ---------------------------------------------------------------- /proc/PID/stat

    private static string StatLine(int pid, string comm, string state, uint flags, int nice, ulong baseAddr)
    {
        // Fields 1..52 with recognisable values: field n holds n unless set below.
        var f = new string[53];
        for (int n = 1; n <= 52; n++) f[n] = n.ToString();
        f[1] = pid.ToString(); f[2] = $"({comm})"; f[3] = state; f[9] = flags.ToString(); f[19] = nice.ToString();
        f[18] = "-51";
        foreach (int n in new[] { 26, 27, 28, 45, 46, 47, 48, 49, 50, 51 }) f[n] = baseAddr == 0 ? "0" : (baseAddr + (ulong)n * 0x1000).ToString();
        f[52] = "256";
        return string.Join(' ', f.Skip(1)) + "\n";
    }

    [Theory]
    [InlineData("cat")]
    [InlineData("a b")]
    [InlineData("x) R 1 2 (y")]
    [InlineData(") )")]
    [InlineData("((")]
    [InlineData("")]
    [InlineData("tab\tnew\nline")]
    public void Stat_CommWithSpacesAndParentheses(string comm)
    {
        const ulong b = 0x7f0000000000;
        var s = ProcStat.Parse(StatLine(1234, comm, "S", 0x400140, -5, b));
        Assert.Equal(1234, s.Pid);
        Assert.Equal(comm, s.Comm);
        Assert.Equal('S', s.State);
        Assert.Equal(4, s.PPid);
        Assert.Equal(5, s.Pgrp);
        Assert.Equal(6, s.Session);
        Assert.Equal(7, s.TtyNr);
        Assert.Equal(8, s.Tpgid);
        Assert.Equal(0x400140u, s.Flags);
        Assert.False(s.IsKernelThread);
        Assert.Equal(-51, s.Priority);
        Assert.Equal(-5, s.Nice);
        Assert.Equal(20, s.NumThreads);
        Assert.Equal(22ul, s.StartTime);
        Assert.Equal(b + 26 * 0x1000, s.StartCode);
        Assert.Equal(b + 27 * 0x1000, s.EndCode);
        Assert.Equal(b + 28 * 0x1000, s.StartStack);
        Assert.Equal(38, s.ExitSignal);
        Assert.Equal(40u, s.RtPriority);
        Assert.Equal(41u, s.Policy);
        Assert.Equal(b + 45 * 0x1000, s.StartData);
        Assert.Equal(b + 46 * 0x1000, s.EndData);
        Assert.Equal(b + 47 * 0x1000, s.StartBrk);
        Assert.Equal(b + 48 * 0x1000, s.ArgStart);
        Assert.Equal(b + 49 * 0x1000, s.ArgEnd);
        Assert.Equal(b + 50 * 0x1000, s.EnvStart);
        Assert.Equal(b + 51 * 0x1000, s.EnvEnd);
        Assert.Equal(256, s.ExitCode);
        Assert.Equal(52, s.FieldCount);
        Assert.Equal("10", s.Field(10));
    }

    [Fact]
    public void Stat_KernelThread()
    {
        var s = ProcStat.Parse(StatLine(2, "kthreadd", "S", 0x208040, 0, 0));
        Assert.True(s.IsKernelThread);
        Assert.Equal("kthreadd", s.Comm);
        Assert.Equal(0ul, s.StartCode);
    }

    [Fact]
    public void Stat_ExtraTrailingFieldsAreAccepted()
    {
        var s = ProcStat.Parse(StatLine(9, "x", "R", 0, 0, 0).TrimEnd('\n') + " 53 54\n");
        Assert.Equal(54, s.FieldCount);
        Assert.Equal(256, s.ExitCode);
        Assert.Equal("54", s.Field(54));
        Assert.Throws<ArgumentOutOfRangeException>(() => s.Field(55));
        Assert.Throws<ArgumentOutOfRangeException>(() => s.Field(0));
    }

    [Fact]
    public void Stat_RejectsBadText()
    {
        var good = StatLine(9, "x", "R", 0, 0, 0);
        Assert.Throws<FormatException>(() => ProcStat.Parse(""));
        Assert.Throws<FormatException>(() => ProcStat.Parse("9 x R 1 2"));
        Assert.Throws<FormatException>(() => ProcStat.Parse(string.Join(' ', good.Split(' ').Take(51))));     // 51 fields
        Assert.Throws<FormatException>(() => ProcStat.Parse(good.Replace("(x) R", "(x) RR")));
        Assert.Throws<FormatException>(() => ProcStat.Parse(good.Replace(" 20 ", " twenty ")));
        Assert.Throws<FormatException>(() => ProcStat.Parse(good.Replace(" 41 ", " -41 ")));                  // policy is unsigned
        Assert.Throws<FormatException>(() => ProcStat.Parse("x" + good));
    }

    [Fact]
    public void Stat_LiveSelf()
    {
        var s = ProcStat.Read(Environment.ProcessId);
        var st = ProcStatus.Read(Environment.ProcessId);
        Assert.Equal(Environment.ProcessId, s.Pid);
        Assert.Equal(File.ReadAllText("/proc/self/comm").TrimEnd('\n'), s.Comm);
        Assert.Equal(st.PPid, s.PPid);
        Assert.False(s.IsKernelThread);
        Assert.True(s.NumThreads >= 1);
        Assert.Equal(0, s.ExitCode);
        Assert.True(s.StartCode != 0 && s.StartCode < s.EndCode);
        Assert.True(s.StartData <= s.EndData);
        Assert.True(s.ArgStart < s.ArgEnd && s.EnvStart <= s.EnvEnd);
        // The kernel reads /proc/PID/cmdline and environ from exactly these ranges.
        Assert.Equal((long)(s.ArgEnd - s.ArgStart), File.ReadAllBytes("/proc/self/cmdline").LongLength);
        Assert.Equal((long)(s.EnvEnd - s.EnvStart), File.ReadAllBytes("/proc/self/environ").LongLength);

        var maps = ProcMaps.ReadMaps(Environment.ProcessId);
        var code = maps.Single(v => v.Start <= s.StartCode && s.StartCode < v.End);
        Assert.True(code.Exec, $"start_code {s.StartCode:x} is in {code}");
        var stack = maps.Single(v => v.Start <= s.StartStack && s.StartStack < v.End);
        Assert.Equal("[stack]", stack.Path);
        var args = maps.Single(v => v.Start <= s.ArgStart && s.ArgStart < v.End);
        Assert.Equal("[stack]", args.Path);
    }

    [Fact]
    public void Stat_LiveThreadSelf()
    {
        var s = ProcStat.Parse(File.ReadAllText("/proc/thread-self/stat"));
        Assert.Equal(ProcessCalls.GetTid(), s.Pid);
        Assert.Equal('R', s.State);
        Assert.Equal(ProcessCalls.GetPriority(0 /* PRIO_PROCESS */, 0), s.Nice);
        Assert.Equal(ProcStat.Read(Environment.ProcessId, ProcessCalls.GetTid()).Pid, s.Pid);
    }

    // ---------------------------------------------------------------- /proc/PID/maps and smaps

    private const string MapsSample =
        "55d0c8a00000-55d0c8a02000 r--p 00000000 08:01 1234                       /usr/bin/my prog\n" +
        "55d0c8a02000-55d0c8a05000 r-xp 00002000 08:01 1234                       /usr/bin/my prog\n" +
        "55d0c9000000-55d0c9021000 rw-p 00000000 00:00 0                          [heap]\n" +
        "7f1c2a000000-7f1c2a021000 rw-s 00000000 00:05 98765                      /memfd:buf (deleted)\n" +
        "7f1c2b000000-7f1c2b001000 r--p 0001f000 fd:1a 42                         /tmp/a (b)  c (deleted)\n" +
        "7f1c2c000000-7f1c2c001000 ---p 00000000 00:00 0 \n" +
        "7f1c2d000000-7f1c2d001000 rw-p 00000000 00:00 0\n" +
        "7f1c2e000000-7f1c2e001000 r--s 00000000 00:01 7                          /dev/zero\n" +
        "7f1c2f000000-7f1c2f001000 r--p 00000000 08:01 77                         /tmp/trailing \n" +
        "7ffd1a5f0000-7ffd1a5f4000 r--p 00000000 00:00 0                          [vvar]\n" +
        "7ffd1a5fe000-7ffd1a600000 r-xp 00000000 00:00 0                          [vdso]\n" +
        "7ffd1a600000-7ffd1a621000 rw-p 00000000 00:00 0                          [stack]\n" +
        "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n";

    [Fact]
    public void Maps_ParsesSample()
    {
        var v = ProcMaps.Parse(MapsSample);
        Assert.Equal(13, v.Count);

        Assert.Equal(0x55d0c8a00000ul, v[0].Start);
        Assert.Equal(0x55d0c8a02000ul, v[0].End);
        Assert.Equal(0x2000ul, v[0].Length);
        Assert.True(v[0].Read);
        Assert.False(v[0].Write || v[0].Exec || v[0].Shared);
        Assert.Equal(8u, v[0].DevMajor);
        Assert.Equal(1u, v[0].DevMinor);
        Assert.Equal(1234ul, v[0].Inode);
        Assert.Equal("/usr/bin/my prog", v[0].Path);
        Assert.True(v[0].IsFileBacked);
        Assert.False(v[0].IsDeleted || v[0].IsSpecial);

        Assert.True(v[1].Exec);
        Assert.Equal(0x2000ul, v[1].Offset);
        Assert.Equal("/usr/bin/my prog", v[1].Path);

        Assert.Equal("[heap]", v[2].Path);
        Assert.True(v[2].IsSpecial && v[2].Read && v[2].Write && !v[2].Exec);
        Assert.False(v[2].IsFileBacked);
        Assert.Equal(0ul, v[2].Inode);

        Assert.True(v[3].Shared);
        Assert.True(v[3].IsDeleted);
        Assert.Equal("/memfd:buf (deleted)", v[3].Path);
        Assert.Equal(5u, v[3].DevMinor);

        Assert.Equal("/tmp/a (b)  c (deleted)", v[4].Path);
        Assert.True(v[4].IsDeleted);
        Assert.Equal(0x1f000ul, v[4].Offset);
        Assert.Equal(0xfdu, v[4].DevMajor);
        Assert.Equal(0x1au, v[4].DevMinor);

        Assert.Equal("", v[5].Path);
        Assert.False(v[5].Read || v[5].Write || v[5].Exec);
        Assert.Equal("", v[6].Path);
        Assert.Equal("/dev/zero", v[7].Path);
        Assert.True(v[7].Shared);
        Assert.Equal("/tmp/trailing ", v[8].Path);
        Assert.Equal("[vvar]", v[9].Path);
        Assert.Equal("[vdso]", v[10].Path);
        Assert.True(v[10].IsSpecial && v[10].Exec);
        Assert.Equal("[stack]", v[11].Path);
        Assert.Equal(0xffffffffff600000ul, v[12].Start);
        Assert.Equal("[vsyscall]", v[12].Path);
        Assert.All(v, x => Assert.Empty(x.VmFlags));
    }

    private const string SmapsSample = """
        55d0c8a00000-55d0c8a02000 r--p 00000000 08:01 1234                       /usr/bin/my prog
        Size:                  8 kB
        KernelPageSize:        4 kB
        MMUPageSize:           4 kB
        Rss:                   8 kB
        Pss:                   8 kB
        Pss_Dirty:             0 kB
        Shared_Clean:          0 kB
        Private_Clean:         8 kB
        Anonymous:             0 kB
        KSM:                   0 kB
        LazyFree:              0 kB
        AnonHugePages:         0 kB
        FilePmdMapped:         0 kB
        Shared_Hugetlb:        0 kB
        Private_Hugetlb:       0 kB
        Swap:                  0 kB
        SwapPss:               0 kB
        Locked:                0 kB
        THPeligible:           0
        ProtectionKey:         0
        VmFlags: rd mr mw me dw sd
        7f1c2a000000-7f1c2a021000 rw-s 00000000 00:05 98765                      /memfd:a b (deleted)
        Size:                132 kB
        Rss:                   0 kB
        VmFlags: rd wr sh mr mw me ms dd sd 
        7ffd1a5fe000-7ffd1a600000 r-xp 00000000 00:00 0                          [vdso]
        Size:                  8 kB
        VmFlags: rd ex mr mw me de sd
        7ffd1a600000-7ffd1a621000 rw-p 00000000 00:00 0                          [stack]
        Size:                132 kB
        VmFlags: rd wr mr mw me gd ac
        """;

    [Fact]
    public void Smaps_ParsesHeadersAndVmFlags()
    {
        var v = ProcMaps.Parse(SmapsSample);
        Assert.Equal(4, v.Count);
        Assert.Equal("/usr/bin/my prog", v[0].Path);
        Assert.Equal(new HashSet<string> { "rd", "mr", "mw", "me", "dw", "sd" }, v[0].VmFlags);
        Assert.Equal("/memfd:a b (deleted)", v[1].Path);
        Assert.True(v[1].IsDeleted && v[1].Shared);
        Assert.Equal(new HashSet<string> { "rd", "wr", "sh", "mr", "mw", "me", "ms", "dd", "sd" }, v[1].VmFlags);
        Assert.Equal("[vdso]", v[2].Path);
        Assert.Contains("de", v[2].VmFlags);
        Assert.Equal("[stack]", v[3].Path);
        Assert.Contains("gd", v[3].VmFlags);
        Assert.DoesNotContain("gd", v[0].VmFlags);
        // resident and swapped kB: known where smaps gives them, -1 (unknown) where it does not
        Assert.Equal((8L, 0L), (v[0].RssKb, v[0].SwapKb));
        Assert.Equal((0L, -1L), (v[1].RssKb, v[1].SwapKb));
        Assert.Equal((-1L, -1L), (v[3].RssKb, v[3].SwapKb));
        Assert.All(ProcMaps.Parse(MapsSample), x => Assert.Equal((-1L, -1L), (x.RssKb, x.SwapKb)));
    }

    [Fact]
    public void VmFlags_TakenFromSmapsLaterEvenWhereAScratchMappingMerged()
    {
        static VmaInfo R(ulong s, ulong e, params string[] f) => new() { Start = s, End = e, VmFlags = f.ToHashSet() };
        var maps = new List<VmaInfo> { R(0x1000, 0x3000), R(0x3000, 0x5000), R(0x8000, 0x9000) };
        // the scratch mapping (0x5000-0x6000) merged with the region before it, and one more came after
        var smaps = new List<VmaInfo> { R(0x1000, 0x3000, "rd"), R(0x3000, 0x6000, "rd", "wr", "dd"), R(0x7000, 0x7800, "rd"), R(0x8000, 0x9000, "rd", "ex", "lo") };
        Assert.Null(MemoryRegion.TakeVmFlags(maps, smaps));
        Assert.Equal(new HashSet<string> { "rd" }, maps[0].VmFlags);
        Assert.Equal(new HashSet<string> { "rd", "wr", "dd" }, maps[1].VmFlags);
        Assert.Equal(new HashSet<string> { "rd", "ex", "lo" }, maps[2].VmFlags);
        // a region that is not in smaps (moved or cut while frozen) is named
        var moved = new List<VmaInfo> { R(0x1000, 0x3000), R(0x8000, 0xa000) };
        Assert.Same(moved[1], MemoryRegion.TakeVmFlags(moved, smaps));
        var gone = new List<VmaInfo> { R(0x1000, 0x3000), R(0x6800, 0x7000) };
        Assert.Same(gone[1], MemoryRegion.TakeVmFlags(gone, smaps));
    }

    [Fact]
    public void TimeNamespaceOffsets_RoundTripIncludingNegative()
    {
        Assert.Equal((86400L * 1_000_000_000, 0L), TimeNamespace.ParseOffsets("monotonic    86400         0\nboottime         0         0\n"));
        Assert.Equal("monotonic -2 500000000\nboottime 3 0\n", TimeNamespace.FormatOffsets(-1_500_000_000, 3_000_000_000));
        foreach (long ns in new[] { 0L, 1L, -1L, -1_500_000_000L, 123_456_789_012L, -98_765_432_101L })
            Assert.Equal((ns, -ns), TimeNamespace.ParseOffsets(TimeNamespace.FormatOffsets(ns, -ns)));
        Assert.Throws<FormatException>(() => TimeNamespace.ParseOffsets("monotonic x 0\n"));
    }

    [Fact]
    public void Cgroup_LinesOfV1AndV2()
    {
        var m = Cgroups.Parse("12:cpu,cpuacct:/a/b\n1:name=systemd:/user.slice/x:y.scope\n0::/\n");
        Assert.Equal(new Cgroups.Membership(12, "cpu,cpuacct", "/a/b"), m[0]);
        Assert.Equal(new Cgroups.Membership(1, "name=systemd", "/user.slice/x:y.scope"), m[1]);   // a path may hold ':'
        Assert.Equal(new Cgroups.Membership(0, "", "/"), m[2]);
        Assert.Throws<FormatException>(() => Cgroups.Parse("nonsense\n"));
    }

    [Fact]
    public void Smaps_VmFlagsBeforeAnyMappingIsAnError()
    {
        Assert.Throws<FormatException>(() => ProcMaps.Parse("VmFlags: rd wr\n" + MapsSample));
    }

    [Fact]
    public void Maps_LiveSelfHasTheUsualSpecialMappings()
    {
        var maps = ProcMaps.ReadMaps(Environment.ProcessId);
        Assert.Contains(maps, v => v.Path == "[stack]");
        Assert.Contains(maps, v => v.Path == "[vdso]" && v.Exec);
        Assert.All(maps, v => Assert.True(v.Start < v.End, v.ToString()));
        for (int i = 1; i < maps.Count; i++) Assert.True(maps[i - 1].End <= maps[i].Start, $"{maps[i - 1]} / {maps[i]}");
        var smaps = ProcMaps.ReadSmaps(Environment.ProcessId);
        Assert.Contains(smaps, v => v.Path == "[stack]" && v.VmFlags.Contains("gd"));
        Assert.All(smaps, v => Assert.NotEmpty(v.VmFlags));
        Assert.All(smaps.Where(v => v.Read), v => Assert.Contains("rd", v.VmFlags));
    }

    [Fact]
    public void ReadLines_GivesEveryLineWhateverItsLengthAndTheBufferBoundaries()
    {
        // lines shorter and longer than the 64 KiB buffer, lines across its boundaries, an empty line, a
        // last line without its newline, and bytes that are not ASCII
        var rnd = new Random(7);
        var lines = new List<string> { "first", "", new string('x', 200_000), "ünïcödé ✓" };
        for (int i = 0; i < 3000; i++) lines.Add(new string((char)('a' + i % 26), rnd.Next(0, 300)));
        lines.Add(new string('y', 65536));
        lines.Add("last, without a newline");
        string path = Path.Combine(Path.GetTempPath(), $"ckpt-lines-{Environment.ProcessId}");
        File.WriteAllText(path, string.Join('\n', lines));
        try
        {
            var got = new List<string>();
            FileCalls.ReadLines(path, l => got.Add(System.Text.Encoding.UTF8.GetString(l)));
            Assert.Equal(lines, got);
        }
        finally { File.Delete(path); }
        Assert.Throws<FileNotFoundException>(() => FileCalls.ReadLines("/proc/self/no-such-file", _ => { }));
    }

    [Fact]
    public void Smaps_ReadAsItComesEqualsTheWholeTextParsed()
    {
        // a process that does not change: the same regions, paths, sizes and flags both ways
        var child = System.Diagnostics.Process.Start("sleep", "30");
        try
        {
            Thread.Sleep(100);
            foreach (var file in new[] { "smaps", "maps" })
            {
                var streamed = file == "smaps" ? ProcMaps.ReadSmaps(child.Id) : ProcMaps.ReadMaps(child.Id);
                var whole = ProcMaps.Parse(File.ReadAllText($"/proc/{child.Id}/{file}"));
                Assert.True(streamed.Count > 5);
                Assert.Equal(whole.Select(v => $"{v} {v.Offset} {v.DevMajor}:{v.DevMinor} {v.Inode} {v.RssKb} {v.SwapKb} {v.SharedKb} {string.Join(',', v.VmFlags.Order())}"),
                    streamed.Select(v => $"{v} {v.Offset} {v.DevMajor}:{v.DevMinor} {v.Inode} {v.RssKb} {v.SwapKb} {v.SharedKb} {string.Join(',', v.VmFlags.Order())}"));
            }
        }
        finally { child.Kill(); child.WaitForExit(); }
    }

    [Fact]
    public void Maps_LiveFileWithSpacesAndParenthesesThenDeleted()
    {
        string dir = Directory.CreateTempSubdirectory("ckpt-maps-").FullName;
        string path = Path.Combine(dir, "a file (with) spaces  x");
        File.WriteAllBytes(path, new byte[8192]);
        int fd = FileCalls.Open(path, FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0);
        Assert.True(fd >= 0);
        nint addr = MemoryCalls.Mmap(0, 8192, MemoryCalls.PROT_READ, MemoryCalls.MAP_PRIVATE, fd, 4096);
        FileCalls.Close(fd);
        Assert.NotEqual((nint)(-1), addr);
        try
        {
            Assert.True(FileCalls.TryStat(path, out var st));

            var v = ProcMaps.ReadSmaps(Environment.ProcessId).Single(x => x.Start == (ulong)addr);
            Assert.Equal(path, v.Path);
            Assert.Equal((ulong)addr + 8192, v.End);
            Assert.Equal(4096ul, v.Offset);
            Assert.Equal(st.Ino, v.Inode);
            Assert.Equal(FileCalls.MajorOf(st.Dev), (int)v.DevMajor);
            Assert.Equal(FileCalls.MinorOf(st.Dev), (int)v.DevMinor);
            Assert.True(v.Read && !v.Write && !v.Exec && !v.Shared);
            Assert.True(v.IsFileBacked && !v.IsDeleted);
            Assert.Contains("rd", v.VmFlags);
            Assert.DoesNotContain("wr", v.VmFlags);

            File.Delete(path);
            v = ProcMaps.ReadMaps(Environment.ProcessId).Single(x => x.Start == (ulong)addr);
            Assert.Equal(path + " (deleted)", v.Path);
            Assert.True(v.IsDeleted);
        }
        finally
        {
            MemoryCalls.Munmap(addr, 8192);
            Directory.Delete(dir, recursive: true);
        }
    }

    // ---------------------------------------------------------------- /proc/PID/timers

    // as Linux 6.18 prints it: newest first; a glibc SIGEV_THREAD timer (signal 32 to its helper thread),
    // CLOCK_PROCESS_CPUTIME_ID (-6), a default sigevent (SIGALRM), SIGEV_NONE, a raw SIGEV_THREAD on a
    // pid CPU clock, and a sparse id
    private const string TimersSample =
        "ID: 12349\n" +
        "signal: 35/0000000000000042\n" +
        "notify: thread/pid.10427\n" +
        "ClockID: -83422\n" +
        "ID: 6\n" +
        "signal: 32/000055ff5238d460\n" +
        "notify: signal/tid.20693\n" +
        "ClockID: 1\n" +
        "ID: 5\n" +
        "signal: 0/0000000000000000\n" +
        "notify: none/pid.20691\n" +
        "ClockID: -6\n" +
        "ID: 4\n" +
        "signal: 14/0000000000000000\n" +
        "notify: signal/pid.20691\n" +
        "ClockID: 1\n" +
        "ID: 0\n" +
        "signal: 35/ffffffffffffffff\n" +
        "notify: signal/pid.20691\n" +
        "ClockID: 0\n";

    [Fact]
    public void Timers_ParsesEveryBlockInIdOrder()
    {
        var t = ProcTimers.Parse(TimersSample);
        Assert.Equal([0, 4, 5, 6, 12349], t.Select(x => x.Id));
        Assert.Equal(new ProcTimers.Timer(0, 35, ulong.MaxValue, ProcTimers.SIGEV_SIGNAL, 20691, 0), t[0]);
        Assert.Equal(new ProcTimers.Timer(4, 14, 0, ProcTimers.SIGEV_SIGNAL, 20691, 1), t[1]);
        Assert.Equal(new ProcTimers.Timer(5, 0, 0, ProcTimers.SIGEV_NONE, 20691, -6), t[2]);
        Assert.Equal(new ProcTimers.Timer(6, 32, 0x55ff5238d460, ProcTimers.SIGEV_SIGNAL | ProcTimers.SIGEV_THREAD_ID, 20693, 1), t[3]);
        Assert.True(t[3].ToThread);
        Assert.False(t[0].ToThread);
        Assert.Equal(new ProcTimers.Timer(12349, 35, 0x42, ProcTimers.SIGEV_THREAD, 10427, -83422), t[4]);
    }

    [Fact]
    public void Timers_EmptyFileIsNoTimer()
    {
        Assert.Empty(ProcTimers.Parse(""));
        Assert.Empty(ProcTimers.Parse("\n"));
    }

    [Theory]
    [InlineData("ID: 1\nsignal: 14/0\nnotify: signal/pid.5\n")]                        // cut short
    [InlineData("ID: 1\nnotify: signal/pid.5\nsignal: 14/0\nClockID: 1\n")]           // lines out of order
    [InlineData("ID: x\nsignal: 14/0\nnotify: signal/pid.5\nClockID: 1\n")]           // bad id
    [InlineData("ID: 1\nsignal: 14\nnotify: signal/pid.5\nClockID: 1\n")]             // no sigev_value
    [InlineData("ID: 1\nsignal: 14/zz\nnotify: signal/pid.5\nClockID: 1\n")]          // bad hex
    [InlineData("ID: 1\nsignal: 14/0\nnotify: bogus/pid.5\nClockID: 1\n")]            // unknown notification
    [InlineData("ID: 1\nsignal: 14/0\nnotify: signal/pgid.5\nClockID: 1\n")]          // unknown target
    [InlineData("ID: 1\nsignal: 14/0\nnotify: signal/pid.5\nClockID: 1\nID: 1\nsignal: 14/0\nnotify: signal/pid.5\nClockID: 1\n")] // id twice
    public void Timers_RefusesMalformedText(string text)
        => Assert.Throws<FormatException>(() => ProcTimers.Parse(text));

    [Fact]
    public void Timers_CpuClocksDecode()
    {
        Assert.Equal((0, false, 2), ProcTimers.DecodeCpuClock(-6));      // CLOCK_PROCESS_CPUTIME_ID as the kernel stores it
        Assert.Equal((0, true, 2), ProcTimers.DecodeCpuClock(-2));       // CLOCK_THREAD_CPUTIME_ID
        Assert.Equal((10427, false, 2), ProcTimers.DecodeCpuClock(-83422));
        Assert.Equal(-83422, ProcTimers.MakeCpuClock(10427, false, 2));
        Assert.Equal((77, true, 0), ProcTimers.DecodeCpuClock(ProcTimers.MakeCpuClock(77, true, 0)));
    }

    /// <summary>The parser reads what this kernel prints for the test process's own timers.</summary>
    [Fact]
    public unsafe void Timers_ReadsOwnProcess()
    {
        if (!ProcTimers.Available(Environment.ProcessId)) return;
        // struct sigevent: value 0x1234, SIGRTMIN+2 (36), SIGEV_NONE
        var ev = new byte[64];
        BitConverter.TryWriteBytes(ev.AsSpan(0), 0x1234UL);
        BitConverter.TryWriteBytes(ev.AsSpan(8), 36);
        BitConverter.TryWriteBytes(ev.AsSpan(12), ProcTimers.SIGEV_NONE);
        int got = 0;
        long rc;
        fixed (byte* e = ev) rc = Sys.Call(Nr.timer_create, 1 /* CLOCK_MONOTONIC */, (nint)e, (nint)(&got));
        Assert.Equal(0, rc);
        int id = got;
        try
        {
            var t = ProcTimers.Read(Environment.ProcessId).Single(x => x.Id == id);
            Assert.Equal(new ProcTimers.Timer(id, 36, 0x1234, ProcTimers.SIGEV_NONE, Environment.ProcessId, 1), t);
        }
        finally { Sys.Call(Nr.timer_delete, id); }
    }
}
