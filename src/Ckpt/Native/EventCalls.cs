using System.Runtime.InteropServices;

namespace Ckpt.Native;

/// <summary>
/// Constants of the anon-inode event objects (eventfd, timerfd, signalfd, epoll, inotify) and the few
/// calls ckpt makes on its own side for them (most are injected into the vessel, see <see cref="Nr"/>).
/// </summary>
public static unsafe partial class EventCalls
{
    public const int EFD_SEMAPHORE = 1;
    /// <summary>TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET (timerfd_settime flags).</summary>
    public const int TFD_TIMER_ABSTIME = 1, TFD_TIMER_CANCEL_ON_SET = 2;
    /// <summary>_IOW('T', 0, u64): sets the expiration count of a timerfd (CONFIG_CHECKPOINT_RESTORE).</summary>
    public const uint TFD_IOC_SET_TICKS = 0x40085400;
    public const int CLOCK_REALTIME = 0, CLOCK_MONOTONIC = 1, CLOCK_BOOTTIME = 7, CLOCK_REALTIME_ALARM = 8, CLOCK_BOOTTIME_ALARM = 9;
    public const int EPOLL_CTL_ADD = 1;
    public const uint EPOLLEXCLUSIVE = 1u << 28, EPOLLWAKEUP = 1u << 29, EPOLLONESHOT = 1u << 30, EPOLLET = 1u << 31;
    public const uint IN_DONT_FOLLOW = 0x02000000, IN_EXCL_UNLINK = 0x04000000, IN_MASK_ADD = 0x20000000,
        IN_ONESHOT = 0x80000000, IN_IGNORED = 0x8000, IN_ALL_EVENTS = 0xfff;
    public const uint FIONREAD = 0x541B;
    /// <summary>kcmp type: is fd idx1 of pid1 the file epoll efd of pid2 watches as tfd (kcmp_epoll_slot at idx2)?</summary>
    public const int KCMP_EPOLL_TFD = 7;

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    public static partial int Ioctl(int fd, nuint request, void* arg);

    [LibraryImport("libc", EntryPoint = "open_by_handle_at", SetLastError = true)]
    public static partial int OpenByHandleAt(int mountFd, byte* handle, int flags);

    /// <summary>Bytes of events queued in an inotify instance (FIONREAD).</summary>
    public static int QueuedBytes(int fd, int pid)
    {
        int n = 0;
        if (Ioctl(fd, FIONREAD, &n) != 0) throw SyscallException.Last("ioctl(FIONREAD)", pid);
        return n;
    }

    /// <summary>kcmp(KCMP_EPOLL_TFD): 0 when fd <paramref name="fd"/> of pid is the file epoll <paramref name="epfd"/> watches as <paramref name="tfd"/>; -errno on error.</summary>
    public static long KcmpEpollTfd(int pid, int fd, int epfd, int tfd, int toff = 0)
    {
        uint* slot = stackalloc uint[3];
        slot[0] = (uint)epfd; slot[1] = (uint)tfd; slot[2] = (uint)toff;
        long r = Sys.Call(Nr.kcmp, pid, pid, KCMP_EPOLL_TFD, fd, (long)slot);
        return r == -1 ? -Marshal.GetLastPInvokeError() : r;
    }

    /// <summary>clock_gettime in nanoseconds.</summary>
    public static long ClockNs(int clock)
    {
        long* ts = stackalloc long[2];
        if (Sys.Call(Nr.clock_gettime, clock, (long)ts) != 0) throw SyscallException.Last($"clock_gettime({clock})");
        return ts[0] * 1_000_000_000 + ts[1];
    }
}
