namespace MLNet.FineTune.Tests;

/// <summary>Where tests find their inputs: committed fixtures, and the optional ../shared folder (data, real models).</summary>
internal static class TestPaths
{
    /// <summary>A committed fixture, copied next to the test assembly.</summary>
    public static string Fixture(params string[] parts) =>
        Path.Combine([AppContext.BaseDirectory, "Fixtures", .. parts]);

    /// <summary>The shared folder beside the checkout (../shared), or null on a fresh clone.</summary>
    public static string? SharedRoot { get; } = FindShared();

    /// <summary>A path under ../shared; the calling test is skipped (Inconclusive) with a message when it is absent.</summary>
    public static string SharedOrSkip(params string[] parts)
    {
        if (SharedRoot is null)
            Assert.Inconclusive("../shared is absent (fresh clone): skipping a test that needs shared data or models.");
        var path = Path.Combine([SharedRoot!, .. parts]);
        if (!File.Exists(path) && !Directory.Exists(path))
            Assert.Inconclusive($"Shared input absent: {path}");
        return path;
    }

    private static string? FindShared()
    {
        var env = Environment.GetEnvironmentVariable("MLNET_FINETUNE_SHARED");
        if (!string.IsNullOrEmpty(env) && Directory.Exists(env)) return env;
        // Walk up from bin/<cfg>/<tfm>/ to the checkout, whose sibling is shared/.
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "shared");
            if (dir.Parent is not null && Directory.Exists(Path.Combine(candidate, "fixtures")) && Directory.Exists(Path.Combine(candidate, "data")))
                return candidate;
        }
        return null;
    }
}
