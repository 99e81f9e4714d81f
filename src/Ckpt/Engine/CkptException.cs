namespace Ckpt.Engine;

/// <summary>Documented exit codes of the ckpt command (see README).</summary>
public static class ExitCodes
{
    public const int Ok = 0, Failure = 1, Usage = 64, BadImage = 65, NoTarget = 66, NotCheckpointable = 69,
        Internal = 70, RestoreConflict = 71, Permission = 77, Interrupted = 130;
}

/// <summary>An error for the user: one line saying what failed and what to do; carries its exit code.</summary>
public class CkptException(string message, int exitCode = ExitCodes.Failure, Exception? inner = null)
    : Exception(message, inner)
{
    public int ExitCode { get; } = exitCode;
}

/// <summary>The target holds something that cannot be saved faithfully.</summary>
public sealed class NotCheckpointableException(int pid, string what)
    : CkptException($"cannot checkpoint pid {pid}: {what}", ExitCodes.NotCheckpointable);
