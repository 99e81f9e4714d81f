using System.CommandLine;
using System.Runtime.InteropServices;
using System.Text;
using Ckpt.Engine;
using Ckpt.Image;
using Ckpt.Native;
using Microsoft.Win32.SafeHandles;

namespace Ckpt.Cli;

/// <summary>The ckpt command: parses, wires streams, reports. All logic is in the Ckpt library.</summary>
public static class Program
{
    private static volatile bool s_cancelled;
    private static volatile int s_waitingFor;

    public static int Main(string[] args)
    {
        // a checkpoint's main thread runs real-time from here to its exit (the tracer until the tree is
        // frozen, see Checkpointer.Run): the command-line parsing before it, and the exit after it, took
        // seconds when the tree's many busy threads had the CPUs
        // (never put back: the process ends at that policy)
        // first: the pages of the young objects this command is about to allocate, present at once
        MemoryCalls.PopulateAllocationArea(1 << 20);
        if (args.Length > 0 && args[0] == "checkpoint") _ = Ckpt.Tracing.TracerThread.Unpreempted();
        // the tracer thread, made while the command line is parsed here, sets up the signal handlers first
        if (args.Length > 0 && args[0] is "checkpoint" or "restart") Ckpt.Tracing.TracerThread.Prestart(HandleSignals);
        var verbose = new Option<bool>("--verbose", "-v") { Description = "more detail in the log (repeat: -v -v)" };
        var logFile = new Option<string?>("--log") { Description = "write a detailed log (what was saved, phase timings) to FILE" };

        // the help and version options only when asked for: their descriptions are resources, which the
        // first lookup reads through reflection (~1.3 ms of every start)
        const string about = "ckpt: checkpoint and restart Linux processes";
        Command root = args.Any(a => a is "-h" or "--help" or "-?" or "/h" or "/?" or "--version")
            ? new RootCommand(about) : new Command("ckpt", about);
        // only the command named, when one is (each option made costs its start a little); all of them
        // for help, or a usage error that names them
        string? named = args.Length > 0 && args[0] is "checkpoint" or "restart" or "info" ? args[0] : null;
        if (named is null or "checkpoint") root.Subcommands.Add(CheckpointCommand(logFile, verbose));
        if (named is null or "restart") root.Subcommands.Add(RestartCommand(logFile, verbose));
        if (named is null or "info") root.Subcommands.Add(InfoCommand(logFile, verbose));
        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            foreach (var e in parsed.Errors) Console.Error.WriteLine($"ckpt: {e.Message}");
            Console.Error.WriteLine("ckpt: see 'ckpt --help'");
            return ExitCodes.Usage;
        }
        return parsed.Invoke();
    }

    private static Command CheckpointCommand(Option<string?> logFile, Option<bool> verbose)
    {
        var pid = new Argument<int>("pid") { Description = "process to checkpoint" };
        var output = new Option<string?>("--output", "-o") { Description = "image file (mode 0600); '-' or absent: standard output" };
        var kill = new Option<bool>("--kill") { Description = "kill the tree after a successful checkpoint (for migration)" };
        var leaveStopped = new Option<bool>("--leave-stopped") { Description = "leave the tree stopped (SIGSTOP) after a successful checkpoint: kill -CONT goes on, kill -KILL ends it once the restart elsewhere worked" };
        var external = new Option<bool>("--external") { Description = "save pipe ends shared with processes outside the tree (e.g. stdout piped to the caller) as external; restart replaces them" };
        var freezer = new Option<string?>("--freezer") { Description = "freeze this cgroup (v2 cgroup.freeze or v1 freezer; a path or a name) while the tree is seized, for trees that fork fast" };
        var skipInFlight = new Option<bool>("--skip-in-flight") { Description = "leave out TCP connections waiting to be accepted that a listener of the tree has not accepted after a moment (their clients see them reset once the listener is gone) instead of refusing" };
        var checkpoint = new Command("checkpoint", "save a running process and all its descendants into an image stream") { pid, output, kill, leaveStopped, external, skipInFlight, freezer, logFile, verbose };
        checkpoint.Validators.Add(r =>
        {
            if (r.GetValue(kill) && r.GetValue(leaveStopped)) r.AddError("--kill and --leave-stopped cannot be given together");
        });
        checkpoint.SetAction(r => Guard(r.GetValue(logFile), Verbosity(r.GetResult(verbose)), log =>
            Checkpoint(r.GetValue(pid), r.GetValue(output), r.GetValue(kill), r.GetValue(leaveStopped), r.GetValue(external), r.GetValue(skipInFlight), r.GetValue(freezer), r.GetValue(logFile), log)));
        return checkpoint;
    }

    private static Command RestartCommand(Option<string?> logFile, Option<bool> verbose)
    {
        var input = new Option<string?>("--input", "-i") { Description = "image file; '-' or absent: standard input" };
        var detach = new Option<bool>("--detach") { Description = "return as soon as the process runs, leaving it reparented" };
        var frozen = new Option<bool>("--frozen") { Description = "restore the process stopped (SIGSTOP), for inspection" };
        var inherit = new Option<string[]>("--inherit-fd")
        {
            Description = "IMAGEFD:FD: an external fd of the image is replaced by fd FD of ckpt (default: ckpt's fd of the same number)",
        };
        var huge = new Option<bool>("--huge-pages") { Description = "rebuild 2 MiB blocks that were fully present as transparent huge pages (faster when the machine has free huge pages at hand; the program's memory map and contents stay the same)" };
        var timens = new Option<bool>("--time-namespace") { Description = "run the tree in a time namespace whose monotonic and boot-time clocks go on from the checkpoint's (automatic when the image comes from another machine or boot)" };
        var restart = new Command("restart", "recreate a process from an image, with its original pid") { input, detach, frozen, huge, timens, inherit, logFile, verbose };
        restart.SetAction(r => Guard(r.GetValue(logFile), Verbosity(r.GetResult(verbose)), log =>
            Restart(r.GetValue(input), r.GetValue(detach), r.GetValue(frozen), r.GetValue(huge), r.GetValue(timens), ParseInherit(r.GetValue(inherit)), log)));
        return restart;
    }

    private static Command InfoCommand(Option<string?> logFile, Option<bool> verbose)
    {
        var file = new Argument<string>("image") { Description = "image file, or - for standard input" };
        var json = new Option<bool>("--json") { Description = "print JSON instead of text" };
        var info = new Command("info", "describe what an image holds, without restarting it") { file, json, logFile, verbose };
        info.SetAction(r => Guard(r.GetValue(logFile), Verbosity(r.GetResult(verbose)), log => Info(r.GetValue(file)!, r.GetValue(json))));
        return info;
    }

    /// <summary>How many times -v/--verbose was given (-vv counts twice).</summary>
    private static int Verbosity(System.CommandLine.Parsing.OptionResult? r)
        => r == null ? 0 : Math.Max(r.IdentifierTokenCount, 1) * (r.Implicit ? 0 : 1);

    /// <summary>Runs a command: one-line errors for the user, details in the log, documented exit codes.</summary>
    private static int Guard(string? logPath, int verbosity, Func<Log, int> body)
    {
        TextWriter? logWriter = null;
        try
        {
            if (logPath != null) logWriter = new StreamWriter(logPath, append: false, new UTF8Encoding(false));
            var log = new Log(logWriter, logWriter != null ? Math.Max(1, verbosity + 1) : 0);
            HandleSignals();
            // (the exception's text, with its stack trace, only for a log: making it costs ~1 ms)
            void Details(Exception e) { if (log.Enabled(0)) log.Error(e.ToString()); }
            try { return body(log); }
            catch (CkptException e) { Details(e); return Fail(e.Message, e.ExitCode); }
            catch (ImageFormatException e) { Details(e); return Fail(e.Message + "; the image cannot be used", ExitCodes.BadImage); }
            catch (SyscallException e) { Details(e); return Fail(e.Message + (logPath == null ? "; rerun with --log FILE for details" : ""), ExitCodes.Internal); }
            catch (IOException e) when (s_cancelled || e.HResult == 32 || e.Message.Contains("pipe", StringComparison.OrdinalIgnoreCase))
            {
                Details(e);
                return Fail($"output closed: {e.Message}", ExitCodes.Failure);
            }
            catch (Exception e) { Details(e); return Fail($"internal error: {e.Message}", ExitCodes.Internal); }
        }
        finally { logWriter?.Dispose(); }
    }

    private static readonly object s_signalsGate = new();
    private static PosixSignalRegistration? s_sigint, s_sigterm;

    /// <summary>SIGINT and SIGTERM to <see cref="OnSignal"/> from now to the command's exit (once, from any thread).</summary>
    private static void HandleSignals()
    {
        lock (s_signalsGate)
        {
            s_sigint ??= PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
            s_sigterm ??= PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        }
    }

    private static void OnSignal(PosixSignalContext c)
    {
        c.Cancel = true;
        int child = s_waitingFor;
        if (child != 0) ProcessCalls.Kill(child, c.Signal == PosixSignal.SIGINT ? 2 : 15);   // pass it on
        else s_cancelled = true;                                                             // stop the operation
    }

    private static int Fail(string message, int code)
    {
        Console.Error.WriteLine($"ckpt: {message}");
        return code;
    }

    private static bool StderrIsTerminal => !Console.IsErrorRedirected;

    /// <summary>
    /// The image and log files by full path (a plain loop: LINQ's Select on what OfType returns is a generic
    /// virtual method, which a Native AOT program resolves through its type loader, ~0.5 ms at each start).
    /// </summary>
    private static string[] OwnFiles(params string?[] paths)
    {
        var own = new List<string>(paths.Length);
        foreach (var p in paths) if (p != null) own.Add(Path.GetFullPath(p));
        return own.ToArray();
    }

    private static int Checkpoint(int pid, string? output, bool kill, bool leaveStopped, bool external, bool skipInFlight, string? freezer, string? logPath, Log log)
    {
        int fd;
        bool toFile = output != null && output != "-", regular = false;
        if (toFile)
        {
            // not O_TRUNC: an existing image is overwritten in place and cut to size at the end (freeing a
            // large file's pages first, then allocating new ones, costs as much as writing them)
            fd = FileCalls.Open(output!, FileCalls.O_WRONLY | FileCalls.O_CREAT | FileCalls.O_CLOEXEC, 0x180 /* 0600 */);
            if (fd < 0) return Fail($"cannot create {output}: {Errors.Describe(Marshal.GetLastPInvokeError())}", ExitCodes.Failure);
            // an existing image file keeps its mode on O_CREAT: make it private too (never touch devices)
            regular = FileCalls.FstatOrThrow(fd).Type == StatBuf.S_IFREG;
            if (regular) Sys.Call(91 /* fchmod */, fd, 0x180);
        }
        else
        {
            if (!Console.IsOutputRedirected) return Fail("refusing to write an image to a terminal; use -o FILE or a pipe", ExitCodes.Usage);
            fd = 1;
        }
        using var file = new FileStream(new SafeFileHandle(fd, ownsHandle: toFile), FileAccess.Write, 0);
        var progress = StderrIsTerminal ? new ProgressStream(file, "written") : null;
        Stream stream = progress ?? (Stream)file;
        // into a regular file (not appending), the image is written by position: the threads that read
        // pages write them too (a stream has one writer)
        bool positional = (toFile ? regular : FileCalls.FstatOrThrow(fd).Type == StatBuf.S_IFREG)
            && (FileCalls.Fcntl(fd, 3 /* F_GETFL */, 0) & FileCalls.O_APPEND) == 0;
        bool ok = false;
        try
        {
            var sw = System.Diagnostics.Stopwatch.StartNew();
            CheckpointResult r;
            try { r = Checkpointer.Run(pid, stream, new CheckpointOptions
            {
                Kill = kill, LeaveStopped = leaveStopped, External = external, SkipInFlight = skipInFlight, Freezer = freezer, Log = log, Cancelled = () => s_cancelled,
                OwnFiles = OwnFiles(toFile ? output : null, logPath),
                PositionalFile = positional ? fd : -1, Progress = positional && progress != null ? progress.Report : null,
            }); }
            finally { progress?.Done(); }
            if (regular && FileCalls.Ftruncate(fd, r.Bytes) != 0)
                return Fail($"cannot cut {output} to the image's size: {Errors.Describe(Marshal.GetLastPInvokeError())}", ExitCodes.Failure);
            ok = true;
            // connections lost to the image are said whether or not stderr is a terminal
            if (r.SkippedInFlight > 0)
                Console.Error.WriteLine($"ckpt: warning: {r.SkippedInFlight} connection(s) waiting to be accepted were left out of the image (--skip-in-flight)");
            if (StderrIsTerminal)
                Console.Error.WriteLine($"ckpt: checkpointed pid {pid}{(r.Processes > 1 ? $" and {r.Processes - 1} descendant(s)" : "")}: {r.Bytes / 1048576.0:F1} MiB, {r.Records} records in {sw.Elapsed.TotalMilliseconds:F0} ms{(kill ? (r.Processes > 1 ? "; processes killed" : "; process killed") : "")}");
            return ExitCodes.Ok;
        }
        finally
        {
            // a failed checkpoint leaves no partial image behind (only ever a regular file we wrote)
            if (!ok && regular) File.Delete(output!);
        }
    }

    private static Dictionary<int, int> ParseInherit(string[]? specs)
    {
        var map = new Dictionary<int, int>();
        foreach (var spec in specs ?? [])
        {
            var parts = spec.Split(':');
            if (parts.Length != 2 || !int.TryParse(parts[0], out int imageFd) || !int.TryParse(parts[1], out int fd) || imageFd < 0 || fd < 0)
                throw new CkptException($"--inherit-fd {spec}: expected IMAGEFD:FD, e.g. --inherit-fd 1:5", ExitCodes.Usage);
            map[imageFd] = fd;
        }
        return map;
    }

    private static int Restart(string? input, bool detach, bool frozen, bool hugePages, bool timeNamespace, Dictionary<int, int> inherit, Log log)
    {
        if ((input == null || input == "-") && !Console.IsInputRedirected)
            return Fail("refusing to read an image from a terminal; use -i FILE or a pipe", ExitCodes.Usage);
        Stream stream = input == null || input == "-"
            ? new FileStream(new SafeFileHandle(0, ownsHandle: false), FileAccess.Read, 0)
            : OpenInput(input);
        // an image that comes through a pipe may be drained into a spool file (a checkpoint --kill of this
        // machine writing into it needs the tree's pids freed, which happens once it has written it all)
        var spool = stream is FileStream fs && FileCalls.FstatOrThrow((int)fs.SafeFileHandle.DangerousGetHandle()).Type != StatBuf.S_IFREG
            ? new SpoolingInput(stream) : null;
        if (spool != null) stream = spool;
        int pid;
        var progress = StderrIsTerminal ? new ProgressStream(stream, "read") : null;
        var job = detach || frozen ? null : JobControl.OfCaller(log);
        using var relay = TerminalRelay.OfCaller(job, log);
        using (stream)
        {
            try { pid = Restorer.Run(progress ?? stream, new RestoreOptions { Detach = detach, Frozen = frozen, HugePages = hugePages, TimeNamespace = timeNamespace, InheritFds = inherit, Spool = spool, Job = job, Relay = relay, Cancelled = () => s_cancelled }, log); }
            finally { progress?.Done(); }
        }
        if (detach || frozen)
        {
            Console.Out.WriteLine(pid);
            return ExitCodes.Ok;
        }
        // like running it: wait for the process and exit with its status (from the foreground of a
        // terminal, the process has it meanwhile: JobControl); a SIGTERM or SIGINT sent to ckpt from now
        // on is passed on to it
        s_waitingFor = pid;
        // a root that led a session on a terminal: its new terminal is relayed to ckpt's until it ends
        return relay is { Active: true } ? relay.Run(pid) : JobControl.Wait(pid, job);
    }

    private static FileStream OpenInput(string path)
    {
        try { return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 0); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CkptException($"cannot open image {path}: {e.Message}", ExitCodes.NoTarget);
        }
    }

    private static int Info(string path, bool json)
    {
        using var stream = path == "-" ? new FileStream(new SafeFileHandle(0, false), FileAccess.Read, 0) : OpenInput(path);
        var info = ImageInfo.Describe(stream);
        if (json) Console.Out.WriteLine(info.ToJson());
        else
        {
            var sb = new StringBuilder();
            info.WriteText(sb);
            Console.Out.Write(sb.ToString());
        }
        return ExitCodes.Ok;
    }
}
