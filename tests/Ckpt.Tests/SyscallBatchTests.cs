using System.Text;
using Ckpt.Engine;
using Ckpt.Native;
using Ckpt.Tracing;
using Xunit;

namespace Ckpt.Tests;

/// <summary>
/// Batched injection (<see cref="TracedTask.InjectBatch"/>, <see cref="SyscallBatch"/>) in a real traced
/// process: a vessel (a copy of this test process parked in pause(), as restart makes them) with a code
/// page holding the batch routine and a page for the descriptors. Needs root (clone3 with set_tid).
/// </summary>
public class SyscallBatchTests
{
    private const int PR_SET_NAME = 15;

    private sealed class Target(TracedTask task, ulong code, ulong desc)
    {
        public TracedTask Task { get; } = task;
        public ulong Code { get; } = code;      // the routine (RWX page)
        public ulong Desc { get; } = desc;      // descriptors (RW page, 4 KiB)
        public int Pid => Task.Tid;
        public string Comm => File.ReadAllText($"/proc/{Pid}/comm").TrimEnd('\n');
        public ulong PutString(ulong at, string s) { MemoryCalls.WriteRemote(Pid, at, Encoding.UTF8.GetBytes(s + "\0")); return at; }
    }

    /// <summary>Runs <paramref name="body"/> on the tracer thread with a fresh vessel, killed afterwards.</summary>
    private static void WithTarget(Action<Target> body) => TracerThread.Run(() =>
    {
        int pid = 0;
        for (int p = 32000; p > 20000 && pid == 0; p -= 7)
        {
            if (Directory.Exists($"/proc/{p}")) continue;
            try { pid = Vessel.Create(p); } catch (CkptException) { }
        }
        Assert.NotEqual(0, pid);
        TracedTask? t = null;
        try
        {
            t = TracedTask.SeizeAndStop(pid, Ptrace.O_TRACESYSGOOD | Ptrace.O_EXITKILL);
            t.SetSigMask(ulong.MaxValue);   // as in every vessel
            t.SyscallGadget = Vessel.Gadget;
            long pages = t.InjectChecked("mmap", Nr.mmap, 0, 3 * 4096, MemoryCalls.PROT_READ | MemoryCalls.PROT_WRITE | MemoryCalls.PROT_EXEC,
                MemoryCalls.MAP_PRIVATE | MemoryCalls.MAP_ANONYMOUS, -1, 0);
            SyscallBatch.Install(pid, (ulong)pages + SyscallBatch.CodeOffset);
            body(new Target(t, (ulong)pages + SyscallBatch.CodeOffset, (ulong)pages + 4096));
        }
        finally
        {
            ProcessCalls.Kill(pid, TracedTask.SIGKILL);
            try { while (true) { int st = Ptrace.Wait(pid); if (!Ptrace.Stopped(st)) break; } } catch (SyscallException) { }
        }
        return 0;
    });

    [Fact]
    public void FailingCallStopsTheBatchWhenFlagged()
    {
        WithTarget(t =>
        {
            ulong a = t.PutString(t.Desc + 3072, "batch-a"), b = t.PutString(t.Desc + 3584, "batch-b");
            var calls = new TracedTask.BatchCall[]
            {
                new(Nr.getpid),
                new(Nr.prctl, PR_SET_NAME, (long)a, StopOnError: true),
                new(Nr.close, -1, StopOnError: true),            // EBADF: ends the batch
                new(Nr.prctl, PR_SET_NAME, (long)b),             // not run
            };
            var results = new long[calls.Length];
            int done = t.Task.InjectBatch(t.Code, t.Desc, calls, results);
            Assert.Equal(3, done);
            Assert.Equal(t.Pid, results[0]);
            Assert.Equal(0, results[1]);
            Assert.Equal(-Errors.EBADF, results[2]);
            Assert.Equal(TracedTask.BatchNotRun, results[3]);
            Assert.Equal("batch-a", t.Comm);
            // signals stay as they were: all blocked, the mask given back after the trap
            Assert.Equal(ulong.MaxValue & ~((1UL << 8) | (1UL << 18)), t.Task.GetSigMask() & ~((1UL << 8) | (1UL << 18)));
            Assert.Equal(t.Pid, t.Task.Inject(Nr.getpid));   // the task is still fine for plain injection
        });
    }

    [Fact]
    public void FailingCallWithoutTheFlagLetsTheRestRun()
    {
        WithTarget(t =>
        {
            ulong b = t.PutString(t.Desc + 3584, "batch-b");
            var calls = new TracedTask.BatchCall[] { new(Nr.close, -1), new(Nr.prctl, PR_SET_NAME, (long)b), new(110 /* getppid */) };
            var results = new long[3];
            Assert.Equal(3, t.Task.InjectBatch(t.Code, t.Desc, calls, results));
            Assert.Equal(-Errors.EBADF, results[0]);
            Assert.Equal(0, results[1]);
            Assert.Equal(Environment.ProcessId, results[2]);
            Assert.Equal("batch-b", t.Comm);
            // many calls, more than one flush of a small SyscallBatch area
            var batch = new SyscallBatch(t.Task, t.Code, t.Desc, 1024);
            var seen = new List<long>();
            for (int i = 0; i < 40; i++) batch.Add(Nr.getpid, check: r => seen.Add(r));
            batch.Flush();
            Assert.Equal(Enumerable.Repeat((long)t.Pid, 40), seen);
            Assert.True(batch.Flushes >= 3, $"{batch.Flushes} flushes");
        });
    }

    [Fact]
    public void CheckedCallFailsTheFlushNamingIt()
    {
        WithTarget(t =>
        {
            var batch = new SyscallBatch(t.Task, t.Code, t.Desc, 4096);
            batch.Reserve(3, 16);
            ulong name = batch.AddData("batch-c\0"u8);
            batch.AddChecked("prctl(PR_SET_NAME)", Nr.prctl, PR_SET_NAME, (long)name);
            batch.AddChecked("close(-1)", Nr.close, -1);
            batch.AddChecked("prctl again", Nr.prctl, PR_SET_NAME, 0);   // would fail with EFAULT: never runs
            var e = Assert.Throws<SyscallException>(batch.Flush);
            Assert.Equal("close(-1) (injected)", e.Call);
            Assert.Equal(Errors.EBADF, e.Errno);
            Assert.Equal("batch-c", t.Comm);
            Assert.Equal(0, batch.Count);
        });
    }

    [Fact]
    public void IgnoredSigtrapStaysIgnored()
    {
        WithTarget(t =>
        {
            // the kernel resets an ignored SIGTRAP to SIG_DFL when the routine's int3 forces it
            var act = new KernelSigaction { Handler = 1 /* SIG_IGN */ };
            ulong a = t.Desc + 3072;
            MemoryCalls.WriteRemote(t.Pid, a, Ckpt.Kinds.MmState.StructBytes(ref act));
            var results = new long[1];
            Assert.Equal(1, t.Task.InjectBatch(t.Code, t.Desc, [new(Nr.rt_sigaction, TracedTask.SIGTRAP, (long)a, 0, 8)], results));
            Assert.Equal(0, results[0]);
            t.Task.InjectBatch(t.Code, t.Desc, [new(Nr.getpid)], results);
            t.Task.InjectChecked("rt_sigaction", Nr.rt_sigaction, TracedTask.SIGTRAP, 0, (long)a + 64, 8);
            var now = new byte[8];
            MemoryCalls.ReadRemote(t.Pid, a + 64, now);
            Assert.Equal(1UL, BitConverter.ToUInt64(now));
        });
    }

    [Fact]
    public void FaultInTheRoutineIsAnErrorNotAHang()
    {
        WithTarget(t =>
        {
            // the first call unmaps the descriptors: storing its result faults
            var results = new long[2];
            var e = Assert.Throws<InjectionFaultException>(() =>
                t.Task.InjectBatch(t.Code, t.Desc, [new(Nr.munmap, (long)t.Desc, 4096), new(Nr.getpid)], results));
            Assert.Contains("signal 11", e.Message);
            Assert.Contains("call 0", e.Message);
            // the SIGSEGV was not delivered: the task lives on and takes injections
            Assert.Equal(t.Pid, t.Task.Inject(Nr.getpid));
        });
    }
}
