using Xunit;

namespace Ckpt.Tests.EndToEnd;

/// <summary>
/// The command line itself: help and version on request (their options exist only when asked for, which
/// spares every other start the lookup of their descriptions), usage errors as one line and exit 64.
/// </summary>
[Collection(EndToEndCollection.Name)]
public sealed class CliTests(E2eEnvironment env)
{
    private Exec.Result Ckpt(params string[] args) => Exec.Run(env.Ckpt, args, TimeSpan.FromSeconds(30));

    [Fact]
    public void HelpAndVersionOnRequest()
    {
        foreach (var flag in new[] { "--help", "-h", "-?" })
        {
            var help = Ckpt(flag);
            Assert.Equal(0, help.Code);
            foreach (var command in new[] { "checkpoint <pid>", "restart", "info <image>", "--version" }) Assert.Contains(command, help.Stdout);
        }
        var sub = Ckpt("restart", "--help");
        Assert.Equal(0, sub.Code);
        Assert.Contains("--detach", sub.Stdout);
        Assert.Contains("--inherit-fd", sub.Stdout);
        var version = Ckpt("--version");
        Assert.Equal(0, version.Code);
        Assert.Matches(@"^\d+\.\d+\.\d+", version.Stdout.Trim());
    }

    /// <summary>A checkpoint of a process ckpt descends from (its own shell; `; exit` keeps bash from
    /// running ckpt in its place) is refused: the tree would hold ckpt.</summary>
    [Fact]
    public void AncestorOfCkptIsRefused()
    {
        var r = Exec.Run("bash", ["-c", $"\"{env.Ckpt}\" checkpoint $$ -o /dev/null; exit $?"], TimeSpan.FromSeconds(30));
        Assert.Equal(69, r.Code);
        Assert.Contains("ancestor of ckpt", r.Stderr);
    }

    [Theory]
    [InlineData(new string[0], "Required command")]
    [InlineData(new[] { "checkpoint" }, "Required argument")]
    [InlineData(new[] { "bogus" }, "bogus")]
    [InlineData(new[] { "checkpoint", "1", "--no-such-option" }, "--no-such-option")]
    [InlineData(new[] { "restart", "--version" }, "--version")]
    public void UsageErrorsAreOneLineAndExit64(string[] args, string named)
    {
        var r = Ckpt(args);
        Assert.Equal(64, r.Code);
        Assert.Equal("", r.Stdout);
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.All(lines, l => Assert.StartsWith("ckpt: ", l));
        Assert.Contains(named, r.Stderr);
        Assert.Contains("see 'ckpt --help'", r.Stderr);
    }
}
