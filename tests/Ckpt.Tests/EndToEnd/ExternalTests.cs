using Xunit;

namespace Ckpt.Tests.EndToEnd;

/// <summary>
/// stdout piped to another process: refused by default, saved as external with --external, and
/// replaced at restart by the stdout of <c>ckpt restart</c> (or an fd named with --inherit-fd).
/// </summary>
[Collection(EndToEndCollection.Name)]
public sealed class ExternalTests(E2eEnvironment env)
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void StdoutPipedToCaller(bool inheritFd)
    {
        env.Program("pipes");
        string restart = inheritFd
            ? """ck restart -i "$W/img" --detach --log "$W/rs.log" --inherit-fd 1:7 7>"$W/out2" > "$W/pid.txt" """
            : """ck restart -i "$W/img" --detach --log "$W/rs.log" > "$W/out2" """;
        var r = new E2eScript(env, "external-" + inheritFd).Run($$"""
            ( "$BIN/pipes" < /dev/null 2>&1 | cat > "$W/out" ) &
            wait_for "$W/out" '^READY' 15 || fail "the program did not print READY"
            P=$(pgrep -n -f "^$BIN/pipes")
            [ -n "$P" ] || fail "no pid"
            ck checkpoint $P -o "$W/img" 2>"$W/err.txt"; echo "PLAIN: $?"
            ck checkpoint $P -o "$W/img" --kill --external --log "$W/ck.log" || fail "checkpoint --external failed"
            for i in $(seq 1 200); do [ -e /proc/$P ] || break; sleep 0.02; done
            [ -e /proc/$P ] && fail "the original was not reaped"
            "$CKPT" info "$W/img" | grep -q 'kind=external' || fail "info shows no external fd"
            {{restart}} || fail "restart failed"
            kill -USR1 $P
            wait_exit $P 20; echo "TARGET: $?"
            """);
        Assert.Contains("PLAIN: 69", r.Stdout);
        Assert.Contains("--external", r.File("err.txt"));
        Assert.Contains("PASS", r.File("out2"));
        Assert.DoesNotContain("FAIL", r.File("out2"));
    }
}
