using System.Security.Cryptography;
using MLNet.FineTune.Checkpoints;

namespace MLNet.FineTune.Persistence;

/// <summary>The identity of a base model folder: what model.zip (by reference) and training checkpoints record, so a
/// changed base is refused rather than silently used.</summary>
internal static class BaseFolderHash
{
    /// <summary>SHA-256 over config.json and the weight files, in a fixed order.</summary>
    public static string Compute(string folder)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var file in new[] { Path.Combine(folder, "config.json") }.Concat(HfCheckpoint.WeightFiles(folder).Order(StringComparer.Ordinal)))
        {
            using var stream = File.OpenRead(file);
            var buffer = new byte[1 << 20];
            int read;
            while ((read = stream.Read(buffer)) > 0) sha.AppendData(buffer, 0, read);
        }
        return Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant();
    }
}
