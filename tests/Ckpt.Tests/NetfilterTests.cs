using System.Net;
using System.Net.Sockets;
using Ckpt.Native;
using Xunit;

namespace Ckpt.Tests;

/// <summary>
/// The nf_tables tables ckpt makes (through netlink, without the nft tool), tried on a listener of this
/// process: connection requests to it are dropped while a rule holds them, and no longer once its
/// deadline is past.
/// </summary>
public class NetfilterTests
{
    private static bool Connects(int port, int timeoutMs)
    {
        using var c = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try { return c.ConnectAsync(IPAddress.Loopback, port).Wait(timeoutMs); }
        catch (AggregateException) { return false; }
    }

    [Fact]
    public void ListenerRequestsHeldUntilTheDeadline()
    {
        using var l = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        l.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        l.Listen(16);
        int port = ((IPEndPoint)l.LocalEndPoint!).Port;
        var sa = new byte[16];
        sa[0] = 2;                                   // AF_INET, little-endian
        sa[2] = (byte)(port >> 8); sa[3] = (byte)port; // port in network order
        sa[4] = 127; sa[7] = 1;
        string table = $"ckpt_test_{Environment.ProcessId}";
        Assert.True(Connects(port, 2000), "no connection without a table");
        NetfilterCalls.AddDropTable(table, [], [sa], DateTime.UtcNow + TimeSpan.FromSeconds(60));
        try { Assert.False(Connects(port, 400), "a connection request went through a held listener"); }
        finally { NetfilterCalls.DeleteTable(table); }
        NetfilterCalls.AddDropTable(table, [], [sa], DateTime.UtcNow - TimeSpan.FromSeconds(1));
        try { Assert.True(Connects(port, 2000), "a rule past its deadline still dropped connection requests"); }
        finally { NetfilterCalls.DeleteTable(table); }
    }
}
