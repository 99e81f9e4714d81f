using System.Net;
using System.Net.Sockets;
using Ckpt.Native;
using Xunit;

namespace Ckpt.Tests;

/// <summary>
/// ProcessCalls.CloseAside: an fd whose release waits (here a TCP socket lingering, SO_LINGER 60 s, its
/// send queue full and its peer not reading) is closed without ckpt waiting, by a child that holds no
/// other fd meanwhile, and the release does happen (its peer gets all the data, then the end).
/// </summary>
public unsafe class CloseAsideTests
{
    private const int F_DUPFD_CLOEXEC = 1030, SO_LINGER = 13, O_CLOEXEC = 0x80000;

    [Fact]
    public void ALingeringSocketIsReleasedByAChildHoldingNothingElse()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.ReceiveBufferSize = 4096;
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { SendBufferSize = 4096 };
        client.Connect(listener.LocalEndPoint!);
        using var server = listener.Accept();
        // the client's send queue filled: its close lingers until the server has read it all
        client.Blocking = false;
        var chunk = new byte[4096];
        long sent = 0;
        for (int i = 0; ; i++)
        {
            chunk.AsSpan().Fill((byte)i);
            int n;
            try { n = client.Send(chunk); }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock) { break; }
            sent += n;
        }
        Assert.True(sent > 0);
        int fd = FileCalls.Fcntl((int)client.Handle, F_DUPFD_CLOEXEC, 3);
        Assert.True(fd >= 0);
        client.Dispose();   // the dup keeps the socket
        int* linger = stackalloc int[2] { 1, 60 };
        Assert.Equal(0, SocketCalls.SetSockOpt(fd, SocketCalls.SOL_SOCKET, SO_LINGER, linger, 8));
        int* p = stackalloc int[2];
        Assert.Equal(0, FileCalls.Pipe2(p, O_CLOEXEC));

        // returns without waiting for the linger (a plain close would wait up to 60 s: the server reads
        // only after this)
        var closing = new Thread(() => ProcessCalls.CloseAside(fd));
        closing.Start();
        Assert.True(closing.Join(TimeSpan.FromSeconds(30)), "CloseAside waited for the socket's release");

        // the pipe's read end sees its end while the socket still lingers: the child that closes the
        // socket holds no copy of ckpt's other fds (its write end)
        FileCalls.Close(p[1]);
        var pfd = new PollFd { Fd = p[0], Events = TerminalCalls.POLLIN };
        Assert.True(TerminalCalls.Poll(&pfd, 1, 30_000) == 1, "the pipe's write end is still held (by the child that closes the socket?)");
        byte b;
        Assert.Equal(0, (long)FileCalls.Read(p[0], &b, 1));
        FileCalls.Close(p[0]);

        // the server gets everything that was sent, then the end: the socket was released, not just
        // dropped from this process's table
        server.ReceiveTimeout = 30_000;
        long got = 0;
        var buf = new byte[65536];
        int r;
        while ((r = server.Receive(buf)) > 0)
        {
            for (int i = 0; i < r; i++)
                Assert.Equal((byte)((got + i) / 4096), buf[i]);
            got += r;
        }
        Assert.Equal(sent, got);
    }
}
