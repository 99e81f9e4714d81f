// Computations for ckpt's end-to-end tests (RealProgramTests), on the real .NET runtime. Everything printed
// is deterministic, so an interrupted and restarted run must print exactly what an uninterrupted one does.
//
//   dotnet-app [ROUNDS]    rounds spread over worker threads with Parallel.For, allocating plenty of
//                          garbage (lists, strings, arrays) and hashing with SHA-256 (OpenSSL-backed)
//   dotnet-app events DIR  a FileSystemWatcher (inotify) on DIR counting the files an async loop creates
//                          there, fed through a Channel by a producer that awaits Task.Delay (timers)
using System.Security.Cryptography;
using System.Text;
using System.Threading.Channels;

if (args.Length == 2 && args[0] == "events") return await Events(args[1]);
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
return 0;

static async Task<int> Events(string dir)
{
    const int Items = 80;
    Directory.CreateDirectory(dir);
    int seen = 0;
    using var w = new FileSystemWatcher(dir) { EnableRaisingEvents = true };
    w.Created += (_, _) => Interlocked.Increment(ref seen);
    var ch = Channel.CreateUnbounded<int>();
    var producer = Task.Run(async () =>
    {
        for (int i = 0; i < Items; i++) { await Task.Delay(50); await ch.Writer.WriteAsync(i); }
        ch.Writer.Complete();
    });
    Console.WriteLine("READY");
    long sum = 0;
    await foreach (var i in ch.Reader.ReadAllAsync())
    {
        sum += (long)i * i;
        await File.WriteAllTextAsync(Path.Combine(dir, $"f{i}"), i.ToString());
        Console.WriteLine($"item {i}");
    }
    await producer;
    for (int t = 0; t < 100 && Volatile.Read(ref seen) < Items; t++) await Task.Delay(50);
    Console.WriteLine($"RESULT {sum} created={Volatile.Read(ref seen)}");
    return 0;
}
