using System.Runtime.InteropServices;
using Ckpt.Native;
using Ckpt.Tracing;

namespace Ckpt.Engine;

/// <summary>
/// A restart that waits for the tree it restored (neither --detach nor --frozen), run from a terminal,
/// behaves as the program would had the shell started it: the restored root's process group gets the
/// terminal's foreground while ckpt waits, so that the program can read the terminal and change its
/// settings (a group in the background is stopped by SIGTTIN or SIGTTOU when it does) and Ctrl-C and
/// Ctrl-Z reach it. A program started from a shell with job control leads a process group of its own,
/// which the restart rebuilds in ckpt's session (the tree joins the session of <c>ckpt restart</c>).
/// <para>
/// When the root stops (Ctrl-Z, or a group stop for any reason) ckpt takes the terminal back and stops
/// itself with the same signal, so that a shell with job control sees its job stopped (ckpt's own group is
/// then another than its parent's); continued (<c>fg</c> or <c>bg</c>), ckpt gives the terminal to the
/// root's group again if its own group has it (<c>fg</c>), and continues the root's group. When the root
/// ends, the terminal goes back to ckpt's group, if the root's group still has it.
/// </para>
/// </summary>
public sealed unsafe class JobControl
{
    private const int SIGCONT = 18, SIGTTIN = 21, SIGTTOU = 22, SIGWINCH = 28, SIG_BLOCK = 0, SIG_SETMASK = 2, WUNTRACED = 2;
    private readonly int _fd;        // ckpt's fd on its controlling terminal
    private readonly int _own;       // ckpt's process group
    private readonly Log _log;
    private int _job;                // the group given the terminal, 0 before
    private byte[]? _termios;        // the program's settings of this terminal, from the image
    private int _redraw;             // the group sent SIGWINCH once the tree runs (settings applied), 0 for none

    private JobControl(int fd, int own, Log log) { _fd = fd; _own = own; _log = log; }

    /// <summary>
    /// ckpt's controlling terminal, when its standard input, output or error is that terminal and ckpt's
    /// group has its foreground; else null (started in the background, from a script without a terminal,
    /// under setsid...).
    /// </summary>
    public static JobControl? OfCaller(Log log)
    {
        int own = ProcessCalls.GetPgid(0);
        for (int fd = 0; fd <= 2; fd++)
        {
            int fg = TerminalCalls.TcGetPgrp(fd);
            if (fg > 0) return fg == own ? new JobControl(fd, own, log) : null;
        }
        return null;
    }

    /// <summary>
    /// A terminal of the image reopened as <paramref name="major"/>:<paramref name="minor"/>, with the
    /// settings it had: when that is ckpt's terminal, they are applied as the tree is released (an editor's
    /// raw mode: the shell that ran ckpt had its own in place), and the tree's foreground group is sent
    /// SIGWINCH once it runs, as after a resize, so that a full-screen program draws itself again (on
    /// another terminal, or over what the shell wrote since). The first terminal fd of the tree decides.
    /// </summary>
    public void Settings(int major, int minor, byte[] termios)
    {
        StatBuf st;
        if (_termios != null || FileCalls.Fstat(_fd, &st) != 0 || FileCalls.MajorOf(st.Rdev) != major || FileCalls.MinorOf(st.Rdev) != minor) return;
        _termios = termios;
    }

    /// <summary>
    /// Right before the tree is released: the program's settings of the terminal (<see cref="Settings"/>),
    /// and the terminal's foreground to the root's group, if it is a group of ckpt's session other than
    /// ckpt's own (a root in ckpt's group has it already).
    /// </summary>
    public void HandTo(int rootPid)
    {
        if (_termios != null)
            fixed (byte* t = _termios)
                if (EventCalls.Ioctl(_fd, (nuint)TerminalCalls.TCSETS, t) != 0)
                    _log.Info($"the terminal settings of the image not applied: {Errors.Describe(Marshal.GetLastPInvokeError())}");
        int pg = ProcessCalls.GetPgid(rootPid);
        if (_termios != null) _redraw = pg;
        if (pg <= 0 || pg == _own || ProcessCalls.GetSid(rootPid) != ProcessCalls.GetSid(0)) return;
        if (TerminalCalls.TcSetPgrp(_fd, pg) != 0)
        {
            _log.Info($"the terminal's foreground not given to process group {pg}: {Errors.Describe(Marshal.GetLastPInvokeError())}");
            return;
        }
        _job = pg;
        _log.Info($"process group {pg} has the foreground of the terminal (fd {_fd} of ckpt)");
    }

    /// <summary>The terminal back to ckpt's group, if the group it was given to still has it.</summary>
    public void TakeBack()
    {
        if (_job == 0 || TerminalCalls.TcGetPgrp(_fd) != _job) return;
        // from a background group: SIGTTOU, unless blocked
        ulong block = 1UL << (SIGTTOU - 1), old = 0;
        Sys.Call(Nr.rt_sigprocmask, SIG_BLOCK, (long)&block, (long)&old, 8);
        TerminalCalls.TcSetPgrp(_fd, _own);
        Sys.Call(Nr.rt_sigprocmask, SIG_SETMASK, (long)&old, 0, 8);
    }

    /// <summary>
    /// Waits for <paramref name="pid"/> (a child of ckpt) like a shell waits for a program it runs, and
    /// returns its exit status (128 + signal when a signal ended it). Stops are passed on as the class says.
    /// </summary>
    public static int Wait(int pid, JobControl? job)
    {
        // stops are relayed only where someone can continue ckpt: a parent doing job control put it in a
        // group of its own (a script without job control would stop with it, for good)
        bool relay = job != null && job._job != 0 && ProcessCalls.GetPgid(ProcessCalls.GetPPid()) != job._own;
        if (job is { _redraw: > 0 }) ProcessCalls.Kill(-job._redraw, SIGWINCH);
        while (true)
        {
            int r = Ptrace.WaitAny(out int st, relay ? WUNTRACED : 0);
            if (r == -Errors.EINTR) continue;
            if (r < 0) { job?.TakeBack(); throw new CkptException($"lost track of pid {pid}", ExitCodes.Internal); }
            if (r != pid) continue;
            if (Ptrace.Stopped(st)) { job!.Suspend(Ptrace.StopSig(st)); continue; }
            job?.TakeBack();
            return Ptrace.Exited(st) ? Ptrace.ExitCode(st) : 128 + Ptrace.TermSig(st);
        }
    }

    /// <summary>
    /// Stops ckpt's process group with <paramref name="sig"/>, as the terminal would have done, and returns
    /// once ckpt was continued. The other processes of the group (a <c>tee</c> ckpt's output goes through)
    /// are sent it first; ckpt sends it to this thread (tgkill), which stops on its way back from the call:
    /// sent to the whole group, the signal could be taken by another thread of ckpt and this one go on
    /// before the stop, handing the terminal and SIGCONT to the root's group while ckpt was not stopped yet.
    /// </summary>
    private void StopOwnGroup(int sig)
    {
        // .NET's handler of SIGCONT (installed with its signal handling) sets the terminal back to the
        // settings it found when ckpt started, from the foreground over the program's, and from the
        // background under a SIGTTOU handler of its own whose removal races with the SIGTTOU that the
        // kernel sends the group: ckpt stopped again once the root had the terminal. ckpt wants nothing
        // done on SIGCONT: its default action (continue) only
        KernelSigaction dfl = default;
        Sys.Call(Nr.rt_sigaction, SIGCONT, (long)&dfl, 0, 8);
        int self = ProcessCalls.GetPid();
        foreach (var (pid, st) in Vessel.HoldersOfId(_own))
            if (st.Pgrp == _own && pid != self) ProcessCalls.Kill(pid, sig);
        Sys.Call(Nr.tgkill, self, ProcessCalls.GetTid(), sig);
    }

    /// <summary>
    /// The root stopped: ckpt stops the same way, terminal back first; once continued, the root's group too.
    /// A stop for reading or setting the terminal from the background (SIGTTIN, SIGTTOU) once ckpt's group
    /// has the foreground again (the shell's <c>fg</c> after a <c>bg</c>) hands it the terminal instead.
    /// </summary>
    private void Suspend(int sig)
    {
        bool forTerminal = sig is SIGTTIN or SIGTTOU;
        if (!(forTerminal && TerminalCalls.TcGetPgrp(_fd) == _own))
        {
            _log.Info($"process group {_job} stopped (signal {sig}): ckpt stops too");
            TakeBack();
            StopOwnGroup(sig);
        }
        if (TerminalCalls.TcGetPgrp(_fd) == _own && TerminalCalls.TcSetPgrp(_fd, _job) != 0)
            _log.Info($"the terminal's foreground not given back to process group {_job}");
        ProcessCalls.Kill(-_job, TracedTask.SIGCONT);
        _log.Info($"continued: process group {_job} continued{(TerminalCalls.TcGetPgrp(_fd) == _job ? " in the foreground" : "")}");
    }
}
