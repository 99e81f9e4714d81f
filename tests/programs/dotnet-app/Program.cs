// A computation for ckpt's end-to-end tests (RealProgramTests.DotnetApp): several rounds, each spread over
// worker threads with Parallel.For, allocating plenty of garbage (lists, strings, arrays) and hashing with
// SHA-256 (the OpenSSL-backed implementation). Prints one line per round and a final result, all
// deterministic, so an interrupted and restarted run must print exactly what an uninterrupted one does.
using System.Security.Cryptography;
using System.Text;

int rounds = args.Length > 0 ? int.Parse(args[0]) : 200;
const int Chunks = 16;
Console.WriteLine("READY");
byte[] state = SHA256.HashData("ckpt"u8);
var sum = new long[Chunks];
for (int r = 0; r < rounds; r++)
{
    var results = new byte[Chunks][];
    Parallel.For(0, Chunks, c =>
    {
        // garbage: a list of strings and arrays, rebuilt many times
        var h = SHA256.HashData([.. state, (byte)c, (byte)r]);
        var keep = new List<string>();
        for (int i = 0; i < 3000; i++)
        {
            var s = Convert.ToHexString(h) + i.ToString();
            keep.Add(s);
            if (keep.Count > 64) keep.RemoveRange(0, 32);
            h = SHA256.HashData(Encoding.ASCII.GetBytes(s));
            var junk = new int[h[0] + 16];
            junk[^1] = h[1];
            Interlocked.Add(ref sum[c], junk[^1]);
        }
        results[c] = h;
    });
    using var all = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    foreach (var x in results) all.AppendData(x);
    state = all.GetHashAndReset();
    Console.WriteLine($"round {r} {Convert.ToHexString(state)[..16]}");
}
Console.WriteLine($"RESULT {Convert.ToHexString(state)} {sum.Sum()} gc={(GC.CollectionCount(0) > 0 ? "yes" : "no")}");
