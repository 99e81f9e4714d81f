using System.Text.RegularExpressions;
using Ckpt.Engine;
using Ckpt.Image;
using Xunit;

namespace Ckpt.Tests;

/// <summary>
/// Every record kind of the format is in the one table of docs/image-format.md (number, name, owning
/// file) and, but for the stream's own Header and Trailer, handled by exactly one state kind of
/// <see cref="KindTable"/>: a kind added in code and forgotten in the documentation, or in the table of
/// kinds (a record restart could not dispatch), fails here.
/// </summary>
public class RecordKindTableTests
{
    private static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "docs", "image-format.md"))) return d.FullName;
        throw new InvalidOperationException($"docs/image-format.md not found above {AppContext.BaseDirectory}");
    }

    [Fact]
    public void EveryRecordKindIsDocumented()
    {
        string root = RepoRoot();
        string doc = File.ReadAllText(Path.Combine(root, "docs", "image-format.md"));
        foreach (var k in Enum.GetValues<RecordKind>())
        {
            var row = Regex.Match(doc, $@"^\| {(uint)k} \| {k} \| `([^`]+)`", RegexOptions.Multiline);
            Assert.True(row.Success, $"docs/image-format.md has no table row '| {(uint)k} | {k} | `FILE` |'");
            Assert.True(File.Exists(Path.Combine(root, "src", "Ckpt", row.Groups[1].Value)),
                $"the owning file {row.Groups[1].Value} of record {k} does not exist");
        }
    }

    [Fact]
    public void EveryStateRecordHasOneOwner()
    {
        foreach (var k in Enum.GetValues<RecordKind>())
        {
            if (k is RecordKind.Header or RecordKind.Trailer) continue;
            var owners = KindTable.Ordered.Where(x => x.Records.Contains(k)).Select(x => x.Name).ToList();
            Assert.True(owners.Count == 1, $"record {k} is handled by {owners.Count} kinds ({string.Join(", ", owners)}), not one");
        }
    }
}
