using System.Runtime.InteropServices;
using Ckpt.Native;

namespace Ckpt.Engine;

/// <summary>
/// Work done on a short-lived thread of ckpt that entered other namespaces: setns is per thread, so ckpt's
/// other threads stay where they are; the thread's fs (root, cwd), which every thread shares, is unshared
/// first (setns into a mount namespace wants it so).
/// </summary>
public static class NamespaceThread
{
    /// <summary>What failed (or null), and the errno of a namespace that could not be entered (0 otherwise).</summary>
    public readonly record struct Outcome(string? Failed, int EnterErrno);

    /// <summary>
    /// Runs <paramref name="work"/> (null, or what failed) on a new thread once it entered each of
    /// <paramref name="namespaces"/> in order: an fd of the namespace, its CLONE_NEW* type, and what to call
    /// it in a message ("the tree's mnt").
    /// </summary>
    public static Outcome Run(IReadOnlyList<(int Fd, long Type, string Name)> namespaces, Func<string?> work, string threadName)
    {
        Outcome outcome = default;
        var th = new Thread(() =>
        {
            const long CLONE_FS = 0x200;
            if (Sys.Call(Nr.unshare, CLONE_FS) != 0)
            {
                int e = Marshal.GetLastPInvokeError();
                outcome = new Outcome($"unshare(CLONE_FS): {Errors.Describe(e)}", e);
                return;
            }
            foreach (var (fd, type, name) in namespaces)
                if (Sys.Call(Nr.setns, fd, type) != 0)
                {
                    int e = Marshal.GetLastPInvokeError();
                    outcome = new Outcome($"cannot enter {name} namespace: {Errors.Describe(e)}", e);
                    return;
                }
            outcome = new Outcome(work(), 0);
        }) { Name = threadName };
        th.Start();
        th.Join();
        return outcome;
    }
}
