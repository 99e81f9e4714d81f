using Ckpt.Kinds;
using Ckpt.Proc;
using Xunit;

namespace Ckpt.Tests;

/// <summary>The fdinfo lines of anon-inode objects, as Linux 6.18 prints them.</summary>
public class FdInfoParserTests
{
    private static ProcFdInfo Info(string text) => ProcFdInfo.Parse(1, 9, text.Split('\n'));

    [Fact]
    public void EventFdFields()
    {
        var i = Info("pos:\t0\nflags:\t04002\nmnt_id:\t17\nino:\t1038\neventfd-count:        100000005\neventfd-id: 3\neventfd-semaphore: 1");
        Assert.Equal(0x100000005UL, ProcFdInfo.Hex(i.Require("eventfd-count")));
        Assert.Equal("1", i.Field("eventfd-semaphore"));
        Assert.Equal(0x802, ProcFdInfo.Oct(i.Require("flags")));
        Assert.Null(i.Field("eventfd"));   // a prefix of another key is not that key
        var e = Assert.Throws<Ckpt.Engine.NotCheckpointableException>(() => i.Require("sigmask"));
        Assert.Contains("fd 9", e.Message);
    }

    [Fact]
    public void EpollWatches()
    {
        var i = Info("pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1038\n"
            + "tfd:        5 events: 4000001c data:                7  pos:0 ino:40e sdev:10\n"
            + "tfd:       11 events: 80000019 data: deadbeefcafe0001  pos:0 ino:50fd sdev:f");
        var w = Epoll.ParseWatches(i);
        Assert.Equal(2, w.Count);
        Assert.Equal(new Epoll.Watch(5, 0x4000001c, 7), w[0].W);
        Assert.Equal(new Epoll.Watch(11, 0x80000019, 0xdeadbeefcafe0001), w[1].W);
        Assert.Equal(0x50fdUL, w[1].Ino);
        Assert.Equal("IN|ERR|HUP|ET", Epoll.EventNames(0x80000019));
    }

    [Fact]
    public void InotifyWords()
    {
        var w = ProcFdInfo.Words("inotify wd:2 ino:13 sdev:fe00000 mask:80000002 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:1300000000000000");
        Assert.Equal("2", w["wd"]);
        Assert.Equal("fe00000", w["sdev"]);
        Assert.Equal("1300000000000000", w["f_handle"]);
        Assert.Equal(0x80000002UL, ProcFdInfo.Hex(w["mask"]));
    }

    [Fact]
    public void SignalMask()
    {
        var i = Info("pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\nsigmask:\t0000000400000800");
        ulong m = ProcFdInfo.Hex(i.Require("sigmask"));
        Assert.Equal("12 35", SignalFd.Signals(m));
    }
}
