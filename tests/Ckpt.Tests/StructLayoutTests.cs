using System.Diagnostics;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Ckpt.Native;
using Xunit;

namespace Ckpt.Tests;

/// <summary>
/// Compares the C# mirrors of kernel and libc structs with what gcc says about the real ones: a C file
/// is generated from the table below, compiled and run at test time, and it prints the offset and size
/// of every mapped field and the size of every struct.
/// </summary>
public class StructLayoutTests
{
    /// <summary>A C# field and the C member it mirrors; a null C member marks explicit padding in C#.</summary>
    public sealed record FieldMap(string Cs, string? C);

    public sealed record StructMap(Type CsType, string CType, FieldMap[] Fields);

    private static FieldMap F(string cs, string? c) => new(cs, c);

    private const string Prelude = """
        #define _GNU_SOURCE
        #include <stddef.h>
        #include <stdio.h>
        #include <signal.h>
        #include <sys/user.h>
        #include <sys/time.h>
        #include <sys/stat.h>
        #include <sys/uio.h>
        #include <sys/resource.h>
        #include <sys/syscall.h>
        #include <linux/sched.h>
        #include <linux/ptrace.h>
        #include <linux/prctl.h>
        #include <sys/ioctl.h>
        #include <poll.h>
        #include <linux/userfaultfd.h>
        #include <linux/mount.h>
        #include <asm/termbits.h>   /* the kernel's struct termios (glibc's, from termios.h, is larger) */

        /* The kernel's struct sigaction for rt_sigaction on x86-64 (not glibc's, whose mask is 128 bytes). */
        struct kernel_sigaction {
            void (*handler)(int);
            unsigned long flags;
            void (*restorer)(void);
            unsigned long mask;
        };
        """;

    public static readonly StructMap[] Structs =
    [
        new(typeof(UserRegs), "struct user_regs_struct",
        [
            F("R15", "r15"), F("R14", "r14"), F("R13", "r13"), F("R12", "r12"), F("Rbp", "rbp"), F("Rbx", "rbx"),
            F("R11", "r11"), F("R10", "r10"), F("R9", "r9"), F("R8", "r8"), F("Rax", "rax"), F("Rcx", "rcx"),
            F("Rdx", "rdx"), F("Rsi", "rsi"), F("Rdi", "rdi"), F("OrigRax", "orig_rax"), F("Rip", "rip"),
            F("Cs", "cs"), F("Eflags", "eflags"), F("Rsp", "rsp"), F("Ss", "ss"), F("FsBase", "fs_base"),
            F("GsBase", "gs_base"), F("Ds", "ds"), F("Es", "es"), F("Fs", "fs"), F("Gs", "gs"),
        ]),
        new(typeof(CloneArgs), "struct clone_args",
        [
            F("Flags", "flags"), F("Pidfd", "pidfd"), F("ChildTid", "child_tid"), F("ParentTid", "parent_tid"),
            F("ExitSignal", "exit_signal"), F("Stack", "stack"), F("StackSize", "stack_size"), F("Tls", "tls"),
            F("SetTid", "set_tid"), F("SetTidSize", "set_tid_size"), F("Cgroup", "cgroup"),
        ]),
        new(typeof(RseqConfiguration), "struct ptrace_rseq_configuration",
        [
            F("RseqAbiPointer", "rseq_abi_pointer"), F("RseqAbiSize", "rseq_abi_size"),
            F("Signature", "signature"), F("Flags", "flags"), F("Pad", "pad"),
        ]),
        new(typeof(KernelSigaction), "struct kernel_sigaction",
        [
            F("Handler", "handler"), F("Flags", "flags"), F("Restorer", "restorer"), F("Mask", "mask"),
        ]),
        new(typeof(StackT), "stack_t",
        [
            F("Sp", "ss_sp"), F("Flags", "ss_flags"), F("Pad", null), F("Size", "ss_size"),
        ]),
        new(typeof(PrctlMmMap), "struct prctl_mm_map",
        [
            F("StartCode", "start_code"), F("EndCode", "end_code"), F("StartData", "start_data"),
            F("EndData", "end_data"), F("StartBrk", "start_brk"), F("Brk", "brk"), F("StartStack", "start_stack"),
            F("ArgStart", "arg_start"), F("ArgEnd", "arg_end"), F("EnvStart", "env_start"), F("EnvEnd", "env_end"),
            F("Auxv", "auxv"), F("AuxvSize", "auxv_size"), F("ExeFd", "exe_fd"),
        ]),
        new(typeof(ItimerVal), "struct itimerval",
        [
            F("IntervalSec", "it_interval.tv_sec"), F("IntervalUsec", "it_interval.tv_usec"),
            F("ValueSec", "it_value.tv_sec"), F("ValueUsec", "it_value.tv_usec"),
        ]),
        new(typeof(PeekSiginfoArgs), "struct ptrace_peeksiginfo_args",
        [
            F("Off", "off"), F("Flags", "flags"), F("Nr", "nr"),
        ]),
        new(typeof(StatBuf), "struct stat",
        [
            F("Dev", "st_dev"), F("Ino", "st_ino"), F("Nlink", "st_nlink"), F("Mode", "st_mode"), F("Uid", "st_uid"),
            F("Gid", "st_gid"), F("Pad0", "__pad0"), F("Rdev", "st_rdev"), F("Size", "st_size"),
            F("Blksize", "st_blksize"), F("Blocks", "st_blocks"),
            F("AtimeSec", "st_atim.tv_sec"), F("AtimeNsec", "st_atim.tv_nsec"),
            F("MtimeSec", "st_mtim.tv_sec"), F("MtimeNsec", "st_mtim.tv_nsec"),
            F("CtimeSec", "st_ctim.tv_sec"), F("CtimeNsec", "st_ctim.tv_nsec"),
            F("Reserved0", "__glibc_reserved[0]"), F("Reserved1", "__glibc_reserved[1]"),
            F("Reserved2", "__glibc_reserved[2]"),
        ]),
        new(typeof(Iovec), "struct iovec",
        [
            F("Base", "iov_base"), F("Len", "iov_len"),
        ]),
        new(typeof(MountAttr), "struct mount_attr",
        [
            F("AttrSet", "attr_set"), F("AttrClr", "attr_clr"), F("Propagation", "propagation"), F("UsernsFd", "userns_fd"),
        ]),
        new(typeof(UffdioApi), "struct uffdio_api",
        [
            F("Api", "api"), F("Features", "features"), F("Ioctls", "ioctls"),
        ]),
        new(typeof(UffdioRange), "struct uffdio_range",
        [
            F("Start", "start"), F("Len", "len"),
        ]),
        new(typeof(UffdioRegister), "struct uffdio_register",
        [
            F("Start", "range.start"), F("Len", "range.len"), F("Mode", "mode"), F("Ioctls", "ioctls"),
        ]),
        new(typeof(UffdioCopy), "struct uffdio_copy",
        [
            F("Dst", "dst"), F("Src", "src"), F("Len", "len"), F("Mode", "mode"), F("Copy", "copy"),
        ]),
        new(typeof(RLimit), "struct rlimit",
        [
            F("Cur", "rlim_cur"), F("Max", "rlim_max"),
        ]),
        new(typeof(PollFd), "struct pollfd",
        [
            F("Fd", "fd"), F("Events", "events"), F("Revents", "revents"),
        ]),
    ];

    /// <summary>Constants the engine passes to the kernel, with the C expression that defines them.</summary>
    public static readonly (string Name, ulong Value, string C)[] Constants =
    [
        ("UFFD_API", MemoryCalls.UFFD_API, "UFFD_API"),
        ("UFFD_USER_MODE_ONLY", MemoryCalls.UFFD_USER_MODE_ONLY, "UFFD_USER_MODE_ONLY"),
        ("UFFDIO_API", MemoryCalls.UFFDIO_API, "UFFDIO_API"),
        ("UFFDIO_REGISTER", MemoryCalls.UFFDIO_REGISTER, "UFFDIO_REGISTER"),
        ("UFFDIO_UNREGISTER", MemoryCalls.UFFDIO_UNREGISTER, "UFFDIO_UNREGISTER"),
        ("UFFDIO_COPY", MemoryCalls.UFFDIO_COPY, "UFFDIO_COPY"),
        ("UFFDIO_REGISTER_MODE_MISSING", MemoryCalls.UFFDIO_REGISTER_MODE_MISSING, "UFFDIO_REGISTER_MODE_MISSING"),
        ("UFFDIO_COPY_MODE_DONTWAKE", MemoryCalls.UFFDIO_COPY_MODE_DONTWAKE, "UFFDIO_COPY_MODE_DONTWAKE"),
        ("userfaultfd", (ulong)Nr.userfaultfd, "__NR_userfaultfd"),
        ("TCGETS", TerminalCalls.TCGETS, "TCGETS"),
        ("TCSETS", TerminalCalls.TCSETS, "TCSETS"),
        ("TIOCGWINSZ", TerminalCalls.TIOCGWINSZ, "TIOCGWINSZ"),
        ("TIOCSWINSZ", TerminalCalls.TIOCSWINSZ, "TIOCSWINSZ"),
        ("TIOCSPGRP", TerminalCalls.TIOCSPGRP, "TIOCSPGRP"),
        ("TIOCGPGRP", TerminalCalls.TIOCGPGRP, "TIOCGPGRP"),
        ("TIOCSCTTY", TerminalCalls.TIOCSCTTY, "TIOCSCTTY"),
        ("TIOCGPKT", TerminalCalls.TIOCGPKT, "TIOCGPKT"),
        ("TIOCPKT", TerminalCalls.TIOCPKT, "TIOCPKT"),
        ("TIOCGPTLCK", TerminalCalls.TIOCGPTLCK, "TIOCGPTLCK"),
        ("TIOCSPTLCK", TerminalCalls.TIOCSPTLCK, "TIOCSPTLCK"),
        ("TIOCGPTN", TerminalCalls.TIOCGPTN, "TIOCGPTN"),
        ("TIOCGPTPEER", TerminalCalls.TIOCGPTPEER, "TIOCGPTPEER"),
        ("TermiosSize", TerminalCalls.TermiosSize, "sizeof(struct termios)"),
        ("WinsizeSize", TerminalCalls.WinsizeSize, "sizeof(struct winsize)"),
        ("LflagOffset", TerminalCalls.LflagOffset, "offsetof(struct termios, c_lflag)"),
        ("ICANON", TerminalCalls.ICANON, "ICANON"),
        ("ECHO", TerminalCalls.ECHO, "ECHO"),
        ("IflagOffset", TerminalCalls.IflagOffset, "offsetof(struct termios, c_iflag)"),
        ("OflagOffset", TerminalCalls.OflagOffset, "offsetof(struct termios, c_oflag)"),
        ("CflagOffset", TerminalCalls.CflagOffset, "offsetof(struct termios, c_cflag)"),
        ("CcOffset", TerminalCalls.CcOffset, "offsetof(struct termios, c_cc)"),
        ("VTIME", TerminalCalls.VTIME, "VTIME"),
        ("VMIN", TerminalCalls.VMIN, "VMIN"),
        ("IGNBRK", TerminalCalls.IGNBRK, "IGNBRK"),
        ("BRKINT", TerminalCalls.BRKINT, "BRKINT"),
        ("PARMRK", TerminalCalls.PARMRK, "PARMRK"),
        ("ISTRIP", TerminalCalls.ISTRIP, "ISTRIP"),
        ("INLCR", TerminalCalls.INLCR, "INLCR"),
        ("IGNCR", TerminalCalls.IGNCR, "IGNCR"),
        ("ICRNL", TerminalCalls.ICRNL, "ICRNL"),
        ("IXON", TerminalCalls.IXON, "IXON"),
        ("OPOST", TerminalCalls.OPOST, "OPOST"),
        ("CSIZE", TerminalCalls.CSIZE, "CSIZE"),
        ("CS8", TerminalCalls.CS8, "CS8"),
        ("PARENB", TerminalCalls.PARENB, "PARENB"),
        ("ISIG", TerminalCalls.ISIG, "ISIG"),
        ("ECHONL", TerminalCalls.ECHONL, "ECHONL"),
        ("IEXTEN", TerminalCalls.IEXTEN, "IEXTEN"),
        ("POLLIN", (ulong)TerminalCalls.POLLIN, "POLLIN"),
        ("POLLOUT", (ulong)TerminalCalls.POLLOUT, "POLLOUT"),
        ("POLLERR", (ulong)TerminalCalls.POLLERR, "POLLERR"),
        ("POLLHUP", (ulong)TerminalCalls.POLLHUP, "POLLHUP"),
        ("POLLNVAL", (ulong)TerminalCalls.POLLNVAL, "POLLNVAL"),
    ];

    public static TheoryData<string> ConstantNames()
    {
        var d = new TheoryData<string>();
        foreach (var c in Constants) d.Add(c.Name);
        return d;
    }

    [Theory]
    [MemberData(nameof(ConstantNames))]
    public void ConstantMatchesC(string name)
    {
        var c = Constants.Single(x => x.Name == name);
        Assert.Equal(((long)CLayout.Value[("const", name)].Offset), (long)c.Value);
    }

    public static TheoryData<string> StructNames()
    {
        var d = new TheoryData<string>();
        foreach (var s in Structs) d.Add(s.CsType.Name);
        return d;
    }

    /// <summary>(C# type name, C member or "" for the struct) → (offset, size), from the compiled C program.</summary>
    private static readonly Lazy<Dictionary<(string, string), (long Offset, long Size)>> CLayout = new(CompileAndRun);

    private static string GenerateC()
    {
        var sb = new StringBuilder(Prelude);
        sb.Append("\nint main(void)\n{\n");
        foreach (var s in Structs)
        {
            sb.Append($"    printf(\"%s|%s|%zu|%zu\\n\", \"{s.CsType.Name}\", \"\", (size_t)0, sizeof({s.CType}));\n");
            foreach (var f in s.Fields)
            {
                if (f.C == null) continue;
                sb.Append($"    printf(\"%s|%s|%zu|%zu\\n\", \"{s.CsType.Name}\", \"{f.C}\", " +
                          $"offsetof({s.CType}, {f.C}), sizeof((({s.CType} *)0)->{f.C}));\n");
            }
        }
        foreach (var c in Constants)
            sb.Append($"    printf(\"const|%s|%llu|0\\n\", \"{c.Name}\", (unsigned long long)({c.C}));\n");
        sb.Append("    return 0;\n}\n");
        return sb.ToString();
    }

    private static (int Code, string Out, string Err) Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {file}");
        var err = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output, err.Result);
    }

    private static Dictionary<(string, string), (long, long)> CompileAndRun()
    {
        string dir = Directory.CreateTempSubdirectory("ckpt-layout-").FullName;
        try
        {
            string src = Path.Combine(dir, "layout.c"), exe = Path.Combine(dir, "layout");
            File.WriteAllText(src, GenerateC());
            var cc = Run("gcc", "-std=gnu11", "-Wall", "-Werror", "-o", exe, src);
            if (cc.Code != 0) throw new InvalidOperationException($"gcc failed ({cc.Code}):\n{cc.Err}\n--- source ---\n{GenerateC()}");
            var run = Run(exe);
            if (run.Code != 0) throw new InvalidOperationException($"layout program failed ({run.Code}): {run.Err}");
            var d = new Dictionary<(string, string), (long, long)>();
            foreach (var line in run.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                var p = line.Split('|');
                d[(p[0], p[1])] = (long.Parse(p[2]), long.Parse(p[3]));
            }
            return d;
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void GeneratedProgramReportsEveryMappedField()
    {
        var layout = CLayout.Value;
        int expected = Structs.Sum(s => 1 + s.Fields.Count(f => f.C != null)) + Constants.Length;
        Assert.Equal(expected, layout.Count);
    }

    [Theory]
    [MemberData(nameof(StructNames))]
    public void CsStructMatchesC(string name)
    {
        var map = Structs.Single(s => s.CsType.Name == name);
        var t = map.CsType;
        var layout = CLayout.Value;
        var failures = new List<string>();

        // Every C# field is mapped exactly once and every mapped name exists.
        var csFields = t.GetFields(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance).Select(f => f.Name).ToList();
        foreach (var f in csFields)
            if (map.Fields.Count(m => m.Cs == f) != 1) failures.Add($"C# field {f} is mapped {map.Fields.Count(m => m.Cs == f)} times");
        foreach (var m in map.Fields)
            if (!csFields.Contains(m.Cs)) failures.Add($"mapped field {m.Cs} does not exist in C# {name}");
        Assert.True(failures.Count == 0, string.Join("\n", failures));

        long cSize = layout[(name, "")].Size;
        long csSize = Marshal.SizeOf(t);
        if (csSize != cSize) failures.Add($"sizeof: C {cSize}, C# Marshal.SizeOf {csSize}");
        long managedSize = RuntimeHelpers.SizeOf(t.TypeHandle);
        if (managedSize != cSize) failures.Add($"sizeof: C {cSize}, C# managed size {managedSize}");

        // A "Size"/"SizeOf" constant on the C# struct must agree with C too.
        foreach (var c in t.GetFields(BindingFlags.Public | BindingFlags.Static).Where(f => f.IsLiteral && f.Name is "Size" or "SizeOf"))
        {
            int v = (int)c.GetRawConstantValue()!;
            if (v != cSize) failures.Add($"const {name}.{c.Name} = {v}, C sizeof = {cSize}");
        }

        var cRanges = map.Fields.Where(m => m.C != null).Select(m => (m.C, layout[(name, m.C!)])).ToList();
        foreach (var m in map.Fields)
        {
            var fi = t.GetField(m.Cs, BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance)!;
            long off = Marshal.OffsetOf(t, m.Cs).ToInt64();
            long size = Marshal.SizeOf(fi.FieldType);
            if (m.C != null)
            {
                var (cOff, cSz) = layout[(name, m.C)];
                if (off != cOff) failures.Add($"{m.Cs} ({m.C}): offset C {cOff}, C# {off}");
                if (size != cSz) failures.Add($"{m.Cs} ({m.C}): size C {cSz}, C# {size}");
            }
            else
            {
                // Explicit C# padding must sit in a hole of the C layout.
                if (off + size > cSize) failures.Add($"padding {m.Cs} at {off}+{size} runs past the C struct ({cSize})");
                foreach (var (cName, (cOff, cSz)) in cRanges)
                    if (off < cOff + cSz && cOff < off + size)
                        failures.Add($"padding {m.Cs} at {off}+{size} overlaps C member {cName} at {cOff}+{cSz}");
            }
        }
        Assert.True(failures.Count == 0, $"{name} differs from {map.CType}:\n" + string.Join("\n", failures));
    }
}
