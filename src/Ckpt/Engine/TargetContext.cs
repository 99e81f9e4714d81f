using Ckpt.Native;

namespace Ckpt.Engine;

/// <summary>
/// What checkpoint and restart contexts share: the process being worked on, a pidfd of it opened on
/// first use (for pidfd_getfd), and a per-operation state bag through which stateless kinds keep what
/// they need between calls.
/// </summary>
public abstract class TargetContext : StateBag
{
    /// <summary>The process being checkpointed, or the vessel being rebuilt.</summary>
    public abstract int TargetPid { get; }

    private int _pidfd = -1;
    /// <summary>A pidfd of the target (for pidfd_getfd), opened on first use.</summary>
    public int Pidfd => _pidfd >= 0 ? _pidfd : _pidfd = ProcessCalls.PidfdOpen(TargetPid);

    /// <summary>Our own copy of fd <paramref name="targetFd"/> of the target (the same open file description).</summary>
    public int GrabFd(int targetFd) => ProcessCalls.PidfdGetfd(Pidfd, targetFd, TargetPid);

    public void Close()
    {
        if (_pidfd >= 0) FileCalls.Close(_pidfd);
        _pidfd = -1;
    }
}

/// <summary>
/// State kept by stateless kinds between calls for one operation: one object per type, made on first use.
/// A process's context has one (per-process state); a checkpoint or restart session has one for state
/// that spans the processes of a tree.
/// </summary>
public abstract class StateBag
{
    private readonly Dictionary<Type, object> _state = new();

    public T State<T>() where T : new()
    {
        if (!_state.TryGetValue(typeof(T), out var o)) _state[typeof(T)] = o = new T();
        return (T)o;
    }

    /// <summary>The state of type T if it was ever asked for, else null.</summary>
    public T? Existing<T>() where T : class => _state.TryGetValue(typeof(T), out var o) ? (T)o : null;

    /// <summary>Stores a state made elsewhere (one that needs constructor arguments).</summary>
    public void Set<T>(T value) where T : class => _state[typeof(T)] = value;

    /// <summary>Drops the state of type T.</summary>
    public void Forget<T>() => _state.Remove(typeof(T));
}
