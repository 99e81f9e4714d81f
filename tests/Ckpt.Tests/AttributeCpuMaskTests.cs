using Ckpt.Native;
using Xunit;

namespace Ckpt.Tests;

/// <summary>The CPU mask helpers behind the per-thread affinity of the Thread record.</summary>
public class AttributeCpuMaskTests
{
    [Fact]
    public void CpuListRendersRanges()
    {
        var m = new ulong[16];
        Assert.Equal("none", ProcessCalls.CpuList(m));
        m[0] = 0b1011_0111;          // 0-2,4-5,7
        m[1] = 1UL << 63 | 1;        // 64, 127
        m[2] = 1;                    // 128: 127-128 is one range
        Assert.Equal("0-2,4-5,7,64,127-128", ProcessCalls.CpuList(m));
        Assert.Equal("0", ProcessCalls.CpuList(ProcessCalls.SingleCpu(0)));
    }

    [Fact]
    public void OnlineCpusIncludeThisOne()
    {
        var online = ProcessCalls.OnlineCpus();
        int cpu = ProcessCalls.GetCpu();
        Assert.NotEqual(0UL, online[cpu / 64] & (1UL << (cpu % 64)));
        Assert.Equal(Environment.ProcessorCount >= 1, online.Any(w => w != 0));
    }
}
