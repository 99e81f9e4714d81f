using System.Runtime.InteropServices;

namespace Ckpt.Native;

/// <summary>A failed system call: carries errno, the call and the pid it concerned.</summary>
public sealed class SyscallException : Exception
{
    public int Errno { get; }
    public string Call { get; }
    public int Pid { get; }

    public SyscallException(string call, int errno, int pid = 0, string? detail = null)
        : base($"{call}{(pid != 0 ? $" (pid {pid})" : "")}{(detail != null ? $" {detail}" : "")}: {Errors.Describe(errno)}")
    {
        Errno = errno; Call = call; Pid = pid;
    }

    /// <summary>Throws with the calling thread's last P/Invoke errno.</summary>
    public static SyscallException Last(string call, int pid = 0, string? detail = null)
        => new(call, Marshal.GetLastPInvokeError(), pid, detail);
}

public static class Errors
{
    public const int EPERM = 1, ENOENT = 2, ESRCH = 3, EINTR = 4, EIO = 5, EBADF = 9, ECHILD = 10,
        EAGAIN = 11, ENOMEM = 12, EACCES = 13, EFAULT = 14, EBUSY = 16, EEXIST = 17, EINVAL = 22,
        ENOSPC = 28, ESPIPE = 29, EPIPE = 32, ENOSYS = 38, EOPNOTSUPP = 95, ECONNRESET = 104, ENOTCONN = 107;

    public static string Describe(int errno)
    {
        string name = errno switch
        {
            EPERM => "EPERM", ENOENT => "ENOENT", ESRCH => "ESRCH", EINTR => "EINTR", EIO => "EIO",
            EBADF => "EBADF", ECHILD => "ECHILD", EAGAIN => "EAGAIN", ENOMEM => "ENOMEM",
            EACCES => "EACCES", EFAULT => "EFAULT", EBUSY => "EBUSY", EEXIST => "EEXIST",
            EINVAL => "EINVAL", ENOSPC => "ENOSPC", ESPIPE => "ESPIPE", EPIPE => "EPIPE", ENOSYS => "ENOSYS",
            ECONNRESET => "ECONNRESET", ENOTCONN => "ENOTCONN",
            _ => $"errno {errno}",
        };
        return $"{name} ({Marshal.GetPInvokeErrorMessage(errno)})";
    }
}
