using System.Runtime.InteropServices;
using Ckpt.Native;

namespace Ckpt.Engine;

/// <summary>
/// Creates the process that a restart rebuilds, with a chosen pid (clone3 set_tid). The clone3 call is
/// made from a few bytes of machine code so that no managed code ever runs in the child: the child is a
/// copy of this process parked in a pause() loop, which the restorer seizes and empties by injection.
/// </summary>
public static unsafe class Vessel
{
    //  0: b8 b3 01 00 00   mov eax, 435 (clone3); rdi = args, rsi = size from the caller
    //  5: 0f 05            syscall
    //  7: 48 85 c0         test rax, rax
    //  a: 74 01            je child
    //  c: c3               ret                      (parent: rax = pid or -errno)
    //  d: b8 22 00 00 00   child: mov eax, 34 (pause)
    // 12: 0f 05            syscall
    // 14: eb f7            jmp child
    // 16: 0f 05            gadget: syscall (used for the first injections into the child)
    // 18: cc               int3
    private static ReadOnlySpan<byte> Code =>
    [
        0xb8, 0xb3, 0x01, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x85, 0xc0, 0x74, 0x01, 0xc3,
        0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7, 0x0f, 0x05, 0xcc,
    ];
    public const int GadgetOffset = 0x16;

    private static nint s_blob;

    /// <summary>The address of the blob page, identical in this process and in every vessel.</summary>
    public static nint Blob
    {
        get
        {
            if (s_blob != 0) return s_blob;
            nint p = MemoryCalls.Mmap(0, 4096, MemoryCalls.PROT_READ | MemoryCalls.PROT_WRITE,
                MemoryCalls.MAP_PRIVATE | MemoryCalls.MAP_ANONYMOUS, -1, 0);
            if (p == -1) throw SyscallException.Last("mmap (vessel code)");
            Code.CopyTo(new Span<byte>((void*)p, 4096));
            if (Sys.Call(Nr.mprotect, p, 4096, MemoryCalls.PROT_READ | MemoryCalls.PROT_EXEC) != 0)
                throw SyscallException.Last("mprotect (vessel code)");
            s_blob = p;
            return p;
        }
    }

    public static ulong Gadget => (ulong)(Blob + GadgetOffset);
    /// <summary>The child's pause() loop of the blob (0x0d): where a vessel waits when it runs.</summary>
    public static ulong PauseLoop => (ulong)(Blob + 0x0d);

    private static nint s_scratch;

    /// <summary>
    /// A writable page of ckpt, allocated before the first vessel is forked, so that every vessel (a
    /// copy of ckpt until its own state is restored) has it at the same address: arguments of the
    /// calls injected into fresh vessels go there.
    /// </summary>
    public static ulong Scratch
    {
        get
        {
            if (s_scratch != 0) return (ulong)s_scratch;
            nint p = MemoryCalls.Mmap(0, 4096, MemoryCalls.PROT_READ | MemoryCalls.PROT_WRITE,
                MemoryCalls.MAP_PRIVATE | MemoryCalls.MAP_ANONYMOUS, -1, 0);
            if (p == -1) throw SyscallException.Last("mmap (vessel scratch)");
            s_scratch = p;
            return (ulong)p;
        }
    }

    /// <summary>
    /// Whether a clone3 that found <paramref name="pid"/> taken (EEXIST) should be tried again, after a
    /// millisecond (<paramref name="tries"/> counts them):
    /// - no /proc entry holds the pid: a task that has just died leaves /proc a few ms before the kernel
    ///   frees its pid number (a restart right after <c>checkpoint --kill</c>): up to ~200 ms;
    /// - the holder is a zombie: the processes of a tree just killed by <c>checkpoint --kill</c> are
    ///   orphans that pid 1 reaps, which may take seconds: up to ~3 s;
    /// - the holder has a SIGKILL pending (it is exiting): up to ~1 s;
    /// - no task has it, but it is the group or session id of processes that are all exiting or exited: up to ~3 s.
    /// A pid held by a live task fails at once, unless the image comes through a pipe
    /// (<see cref="Input"/>): the tree may be that of a <c>checkpoint --kill</c> on this machine writing
    /// into the pipe, which kills its tree only once the whole image is written. Then the rest of the
    /// image is drained into a spool file so that the checkpoint can finish, and the pid is waited for
    /// until the image has come whole and ~1 s more.
    /// </summary>
    public static bool RetryTakenPid(int pid, PidWait w)
    {
        if (Directory.Exists($"/proc/{pid}"))
        {
            try
            {
                var st = Proc.ProcStatus.Read(pid);
                int limit;
                string? holder = null;
                if (st.State == 'Z') (limit, holder) = (3000, "a zombie");
                // killed and still exiting (a tree just killed by checkpoint --kill: a process with much
                // memory takes a while to free it): up to ~1 s
                else if (st.State == 'X' || BeingKilled(st)) (limit, holder) = (1000, "a process being killed");
                else if (Input is not { } input) return false;
                else
                {
                    if (!input.Spooling)
                    {
                        WaitLog?.Invoke($"pid {pid} is in use and the image comes through a pipe: the rest of it goes into a spool file while its writer (a checkpoint --kill of this machine?) finishes");
                        input.StartSpooling(Path.GetTempPath());
                    }
                    if (!input.AtEnd) { Thread.Sleep(2); return true; }
                    limit = 1000;
                }
                if (++w.Tries > limit) return false;
                if (w.Tries == 1 && holder != null) WaitLog?.Invoke($"pid {pid} is still held by {holder} (of a tree just killed by checkpoint --kill?): waiting for it to be freed");
                Thread.Sleep(1);
                return true;
            }
            catch (IOException) { }   // gone meanwhile: try again
        }
        // its own budget: a zombie reaped after a while leaves its pid number a few ms after its /proc entry;
        // a pid held as the process group or session id of processes that are exiting or exited (the
        // members of a tree just killed by checkpoint --kill, orphans that pid 1 reaps every few seconds)
        // is freed once they are reaped: up to ~3 s
        if (++w.GoneTries == 20) WaitLog?.Invoke($"pid {pid} is not free yet (just exited, or the group or session id of exiting processes): waiting for it to be freed");
        if (w.GoneTries > 200 && (w.GoneTries > 3000 || (w.GoneTries % 100 == 1 && !HeldByTheDying(pid)))) return false;
        Thread.Sleep(1);
        return true;
    }

    /// <summary>A SIGKILL is pending for the process: it is exiting.</summary>
    private static bool BeingKilled(Proc.ProcStatus st) => ((st.ShdPnd | st.SigPnd) & (1UL << 8)) != 0;

    /// <summary>Whether every process whose group or session id is <paramref name="pid"/> is a zombie or has a SIGKILL pending (and there is one).</summary>
    private static bool HeldByTheDying(int pid)
    {
        bool any = false;
        foreach (var (other, st) in HoldersOfId(pid))
        {
            any = true;
            if (st.State is 'Z' or 'X') continue;
            try { if (!BeingKilled(Proc.ProcStatus.Read(other))) return false; }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { }
        }
        return any;
    }

    /// <summary>The processes (pid, stat) whose session or process group id is <paramref name="pid"/>; those gone while read are left out.</summary>
    internal static IEnumerable<(int Pid, Proc.ProcStat Stat)> HoldersOfId(int pid)
    {
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int other)) continue;
            Proc.ProcStat st;
            try { st = Proc.ProcStat.Read(other); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { continue; }
            if (st.Session == pid || st.Pgrp == pid) yield return (other, st);
        }
    }

    /// <summary>
    /// Who holds a pid number, for the message: a task with that id, or live processes whose session or
    /// process group still has that id (a leader that exited leaves its id in use while they live on).
    /// </summary>
    internal static string TakenBy(int pid)
    {
        try
        {
            if (Directory.Exists($"/proc/{pid}"))
            {
                var st = Proc.ProcStat.Read(pid);
                return $" (by {(st.Pid == pid && File.Exists($"/proc/{pid}/task/{pid}/stat") ? "process" : "task")} {pid}, {st.Comm})";
            }
            foreach (var (other, st) in HoldersOfId(pid))
                return $" (as the {(st.Session == pid ? "session" : "process group")} id of process {other}, {st.Comm}, which outlived its leader)";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { }
        return "";
    }

    /// <summary>How long <see cref="RetryTakenPid"/> has waited for one pid.</summary>
    public sealed class PidWait { public int Tries, GoneTries; }

    /// <summary>The image input of the restart, when it comes through a pipe (set by the restorer for its run).</summary>
    public static Image.SpoolingInput? Input { get; set; }
    /// <summary>Where <see cref="RetryTakenPid"/> says that it waits for a pid or spools the input.</summary>
    public static Action<string>? WaitLog { get; set; }

    /// <summary>Forks a vessel whose pid is <paramref name="pid"/>; it is our child, parked in pause().</summary>
    public static int Create(int pid)
    {
        _ = Scratch;
        // the init of a pid namespace of the tree: made with its namespace, with its id at each level
        // (the image's other tasks, or ids it names, are never made by ckpt itself: a stand-in or helper with such an id is made plainly)
        bool newNs = Kinds.PidNamespace.Current is { } layout && layout.Tasks.TryGetValue(pid, out var t) && t.Ids.Length == 1 && t.Ids[0] == 1
            && layout.Spaces[t.Ns].Init == pid;
        int[] ids = newNs ? Kinds.PidNamespace.Current!.SetTid(pid) : [pid];
        // a namespace owned by the tree's user namespace is made by a helper inside that one, and this thread
        // forks the init into it (pid_for_children entered for the fork)
        int into = newNs ? Kinds.UserNamespace.MakePidNamespaceFor(pid) : -1;
        int* want = stackalloc int[ids.Length];
        for (int i = 0; i < ids.Length; i++) want[i] = ids[i];
        var args = new CloneArgs { ExitSignal = 17 /* SIGCHLD */, SetTid = (ulong)want, SetTidSize = (ulong)ids.Length, Flags = newNs && into < 0 ? CLONE_NEWPID : 0 };
        long r;
        var wait = new PidWait();
        int own = -1;
        if (into >= 0)
        {
            own = FileCalls.Open("/proc/thread-self/ns/pid", FileCalls.O_RDONLY | FileCalls.O_CLOEXEC, 0);
            if (own < 0) throw SyscallException.Last("open /proc/thread-self/ns/pid");
            if (ProcessCalls.Setns(into, (int)CLONE_NEWPID) != 0) { var e = SyscallException.Last("setns (the pid namespace of the init)", pid); FileCalls.Close(own); throw e; }
        }
        try
        {
            do r = Fork(&args, (ulong)want);
            while (r == -Errors.EEXIST && RetryTakenPid(pid, wait));
        }
        finally
        {
            if (own >= 0)
            {
                int back = ProcessCalls.Setns(own, (int)CLONE_NEWPID);
                FileCalls.Close(own);
                Kinds.UserNamespace.CurrentSession?.CloseOwn(into);
                if (back != 0) throw SyscallException.Last("setns (ckpt's own pid namespace)");
            }
        }
        if (r == -Errors.EEXIST)
            throw new CkptException($"restart: pid {pid} is already in use{TakenBy(pid)}; {PidTakenHint}", ExitCodes.RestoreConflict);
        if (r == -Errors.EPERM)
            throw new CkptException($"restart: creating a process with pid {pid} needs root (CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN); run ckpt restart as root", ExitCodes.Permission);
        if (r < 0) throw new SyscallException("clone3 (set_tid)", (int)-r, pid);
        Kinds.PidNamespace.Made((int)r, 0, newNs, (int)r);
        return (int)r;
    }

    /// <summary>clone3 by the blob (the child parks in pause()), with ckpt's memory but the blob's few pages marked not to be copied meanwhile.</summary>
    private static long Fork(CloneArgs* args, ulong stackAddress)
    {
        var fn = (delegate* unmanaged<CloneArgs*, ulong, long>)Blob;
        var notCopied = NotForked(stackAddress);
        foreach (var (start, len) in notCopied) Sys.Call(Nr.madvise, (long)start, (long)len, MADV_DONTFORK);
        try { return fn(args, (ulong)sizeof(CloneArgs)); }
        finally
        {
            foreach (var (start, len) in notCopied) Sys.Call(Nr.madvise, (long)start, (long)len, MADV_DOFORK);
        }
    }

    /// <summary>
    /// A short-lived helper vessel with whatever pid the kernel gives, seized and ready for injection (a
    /// copy of ckpt, parked in pause()); the caller kills and reaps it with <see cref="KillAndReap"/>.
    /// </summary>
    public static Tracing.TracedTask CreateHelper()
    {
        _ = Scratch;
        int anchor = 0;
        var args = new CloneArgs { ExitSignal = 17 /* SIGCHLD */ };
        long r = Fork(&args, (ulong)&anchor);
        if (r < 0) throw new SyscallException("clone3 (helper)", (int)-r, 0);
        try
        {
            var task = Tracing.TracedTask.SeizeAndStop((int)r, RestoreContext.VesselOptions);
            task.SyscallGadget = Gadget;
            return task;
        }
        catch
        {
            KillAndReap((int)r);
            throw;
        }
    }

    private const ulong CLONE_NEWPID = 0x20000000, CLONE_THREAD = 0x10000;

    private const int MADV_DONTFORK = 10, MADV_DOFORK = 11;

    /// <summary>Kills a vessel of ckpt's (a child of this thread: a helper, a stand-in, a vessel whose set-up failed) and reaps it.</summary>
    public static void KillAndReap(int pid)
    {
        ProcessCalls.Kill(pid, Tracing.TracedTask.SIGKILL);
        Ptrace.Wait(pid);
    }

    /// <summary>
    /// A stand-in for an ended process whose /proc files the tree holds (a working directory, an open
    /// file): a vessel parked in pause(), child of this thread, with pid <paramref name="want"/> if it is
    /// free, else one of the next; the caller kills and reaps it once its /proc entry was used.
    /// </summary>
    public static int StandIn(int want, string forWhat)
    {
        for (int pid = want; pid < want + 1000; pid++)
        {
            if (Directory.Exists($"/proc/{pid}")) continue;
            try { return Create(pid); }
            catch (CkptException) { }
        }
        throw new CkptException($"restart: no free pid near {want} for {forWhat}", ExitCodes.RestoreConflict);
    }

    /// <summary>
    /// The parts of ckpt's memory a vessel does without, marked not to be copied (MADV_DONTFORK) while it
    /// is forked: all but the blob, the scratch page, the vDSO and the mapping of the calling thread's
    /// stack and thread area (the kernel writes the rseq area there whenever the vessel is scheduled, until
    /// it is seized). A fork copies the page tables of ckpt's heap and write-protects ckpt's own pages
    /// (each later write to one faults), and the vessel would unmap all of it again: ~1 ms and a few
    /// hundred faults here. Ranges of adjacent mappings, each marked whole.
    /// </summary>
    private static List<(ulong Start, ulong Length)> NotForked(ulong stackAddress)
    {
        ulong got = 0;
        const int ARCH_GET_FS = 0x1003;
        Sys.Call(Nr.arch_prctl, ARCH_GET_FS, (long)&got);
        ulong fsBase = got, blob = (ulong)Blob, scratch = Scratch;
        bool Keep(Proc.VmaInfo v)
        {
            bool Has(ulong a) => a >= v.Start && a < v.End;
            return Kinds.MmState.VdsoNames.Contains(v.Path) || Has(stackAddress) || Has(fsBase) || Has(blob) || Has(scratch);
        }
        var ranges = new List<(ulong Start, ulong Length)>();
        ulong runStart = 0, runEnd = 0;
        foreach (var v in Proc.ProcMaps.ReadMaps(Environment.ProcessId))
        {
            if (Keep(v) || v.Path == "[vsyscall]") continue;
            if (runEnd == v.Start && runEnd != 0) { runEnd = v.End; continue; }
            if (runEnd != 0) ranges.Add((runStart, runEnd - runStart));
            (runStart, runEnd) = (v.Start, v.End);
        }
        if (runEnd != 0) ranges.Add((runStart, runEnd - runStart));
        return ranges;
    }

    /// <summary>
    /// Unmaps everything of a fresh vessel (a copy of ckpt's address space) but the blob, the scratch
    /// page and the vDSO, so that the vessels forked from it copy almost nothing and empty fast.
    /// </summary>
    public static void Strip(Tracing.TracedTask vessel)
    {
        var keep = new List<(ulong Start, ulong End)> { ((ulong)Blob, (ulong)Blob + 4096), (Scratch, Scratch + 4096) };
        foreach (var v in Proc.ProcMaps.ReadMaps(vessel.Tid))
            if (Kinds.MmState.VdsoNames.Contains(v.Path)) keep.Add((v.Start, v.End));
        foreach (var (start, len) in Kinds.MmState.AllBut(keep))
            vessel.InjectChecked("munmap", Nr.munmap, (long)start, (long)len);
    }

    /// <summary>
    /// What to do when a pid of the tree is taken here: in a pid namespace of its own (ckpt its init) every
    /// pid is free; the tree ends with ckpt there, so not with --detach.
    /// </summary>
    internal const string PidTakenHint = "stop the process that holds it, or restart the tree in a pid namespace of its own: unshare --pid --fork --mount-proc ckpt restart ... (without --detach)";

    /// <summary>
    /// Forks a child of the fresh vessel <paramref name="parent"/> (still a copy of ckpt) whose pid is
    /// <paramref name="pid"/>, by an injected clone3; the child is attached by PTRACE_O_TRACEFORK/CLONE
    /// and returned stopped.
    /// </summary>
    public static Tracing.TracedTask CreateChild(Tracing.TracedTask parent, int pid, int exitSignal, ShareFlags shares = ShareFlags.None, bool forParent = false)
    {
        const ulong CLONE_FS = 0x200, CLONE_FILES = 0x400, CLONE_PARENT = 0x8000;
        ulong flags = (shares.HasFlag(ShareFlags.Files) ? CLONE_FILES : 0) | (shares.HasFlag(ShareFlags.Fs) ? CLONE_FS : 0);
        // forParent: a child of the caller's parent (which gets the caller's exit signal: clone3 takes none then)
        if (forParent) flags |= CLONE_PARENT;
        var args = new CloneArgs { Flags = flags, ExitSignal = forParent ? 0 : (ulong)exitSignal };
        var child = InjectClone(parent, Scratch, args, pid, "pid", PidTakenHint);
        child.SyscallGadget = Gadget;
        // the init of a pid namespace of the tree: ids made at will there from now on stay clear of the image's
        Kinds.PidNamespace.PrimeCursor(child, Scratch);
        return child;
    }

    /// <summary>
    /// Injects clone3(<paramref name="args"/>) with set_tid = <paramref name="id"/> into <paramref name="parent"/>
    /// (the arguments written at <paramref name="scratch"/>, the id 256 bytes further), retrying while the id
    /// is about to be freed (<see cref="RetryTakenPid"/>); returns the new task, attached and stopped
    /// (PTRACE_O_TRACEFORK/CLONE). An id in use fails naming it (<paramref name="what"/>: "pid", "thread id").
    /// Id 0: any id the kernel gives.
    /// </summary>
    public static Tracing.TracedTask InjectClone(Tracing.TracedTask parent, ulong scratch, CloneArgs args, int id, string what, string hint)
    {
        // its ids in the tree's pid namespaces (the init of one: made with it; into one the parent is not
        // forking into: the parent enters it for this clone)
        var (newNs, ids) = Kinds.PidNamespace.Plan(parent, scratch, id, (args.Flags & CLONE_THREAD) != 0, out bool entered);
        // a thread of a process inside the tree's user namespace: its id at ckpt's level comes from ns_last_pid
        if ((args.Flags & CLONE_THREAD) != 0 && id != 0 && Kinds.UserNamespace.SettableLevels(parent.Tid, ids) is int settable)
            return InjectThreadByCursor(parent, scratch, args, ids, settable, what, hint);
        if (newNs) args.Flags |= CLONE_NEWPID;
        args.SetTid = ids.Length > 0 ? scratch + 256 : 0;
        args.SetTidSize = (ulong)ids.Length;
        var bytes = new byte[256 + 4 * Math.Max(ids.Length, 1)];
        MemoryMarshal.Write(bytes, in args);
        for (int i = 0; i < ids.Length; i++) BitConverter.TryWriteBytes(bytes.AsSpan(256 + 4 * i), ids[i]);
        MemoryCalls.WriteRemote(parent.Tid, scratch, bytes);
        long r;
        var wait = new PidWait();
        parent.LastNewTask = 0;
        try
        {
            do r = parent.Inject(Nr.clone3, (long)scratch, sizeof(CloneArgs));
            while (r == -Errors.EEXIST && id != 0 && RetryTakenPid(id, wait));
        }
        finally { if (entered) Kinds.PidNamespace.Leave(parent, scratch); }
        if (r == -Errors.EEXIST)
            throw new CkptException($"restart: {what} {id} is already in use{TakenBy(id)}; {hint}", ExitCodes.RestoreConflict);
        if (r < 0) throw new SyscallException($"clone3 {what}{(id != 0 ? $" {id}" : "")} (injected)", (int)-r, parent.Tid);
        // (the clone's result is the id in the parent's pid namespace; the fork event gives ckpt's)
        int got = parent.LastNewTask != 0 ? parent.LastNewTask : (int)r;
        Kinds.PidNamespace.Made(got, parent.Tid, newNs, (int)r);
        return Tracing.TracedTask.Adopt(got);
    }

    /// <summary>
    /// A thread of <paramref name="parent"/> (inside a user namespace that cannot choose ids at ckpt's level)
    /// with ids <paramref name="ids"/> (innermost first): set_tid gives the first <paramref name="settable"/>,
    /// ckpt's ns_last_pid the last, just before the clone. A thread that got another id (a process forked
    /// meanwhile took it) exits and the clone is tried again.
    /// </summary>
    private static Tracing.TracedTask InjectThreadByCursor(Tracing.TracedTask parent, ulong scratch, CloneArgs args, int[] ids, int settable, string what, string hint)
    {
        int want = ids[^1];
        args.SetTid = settable > 0 ? scratch + 256 : 0;
        args.SetTidSize = (ulong)settable;
        var bytes = new byte[256 + 4 * Math.Max(settable, 1)];
        MemoryMarshal.Write(bytes, in args);
        for (int i = 0; i < settable; i++) BitConverter.TryWriteBytes(bytes.AsSpan(256 + 4 * i), ids[i]);
        for (int attempt = 0; ; attempt++)
        {
            if (Directory.Exists($"/proc/{want}"))
                throw new CkptException($"restart: {what} {want} is already in use{TakenBy(want)}; {hint}", ExitCodes.RestoreConflict);
            MemoryCalls.WriteRemote(parent.Tid, scratch, bytes);
            parent.LastNewTask = 0;
            Kinds.UserNamespace.PrimeThreadId(want);
            long r = parent.Inject(Nr.clone3, (long)scratch, sizeof(CloneArgs));
            if (r < 0) throw new SyscallException($"clone3 {what} {want} (injected, inside its user namespace)", (int)-r, parent.Tid);
            int got = parent.LastNewTask != 0 ? parent.LastNewTask : (int)r;
            var task = Tracing.TracedTask.Adopt(got);
            if (got == want)
            {
                Kinds.PidNamespace.Made(got, parent.Tid, false, (int)r);
                return task;
            }
            try { task.Inject(Nr.exit, 0); }
            catch (Tracing.TaskGoneException) { }
            if (attempt == 20)
                throw new CkptException($"restart: {what} {want} could not be had (another process took the id each time, {got} the last); run the restart again", ExitCodes.RestoreConflict);
        }
    }
}
