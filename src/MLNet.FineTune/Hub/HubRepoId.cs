using System.Text.RegularExpressions;

namespace MLNet.FineTune.Hub;

/// <summary>A model id as huggingface_hub accepts it ("org/name"), with the revision after '@' (default "main").</summary>
internal sealed partial record HubRepoId(string RepoId, string Revision)
{
    public const string DefaultRevision = "main";

    /// <summary>Parses "org/name" or "org/name@revision"; null when <paramref name="text"/> is not of that form.</summary>
    public static HubRepoId? TryParse(string text)
    {
        var at = text.IndexOf('@');
        var repo = at < 0 ? text : text[..at];
        var revision = at < 0 ? DefaultRevision : text[(at + 1)..];
        // huggingface_hub's validate_repo_id, with the namespace required: a bare "name" is too easily a mistyped folder.
        if (!RepoIdPattern().IsMatch(repo) || repo.Contains("--") || repo.Contains("..") || repo.EndsWith(".git", StringComparison.Ordinal) || repo.Length > 96)
            return null;
        if (revision.Length == 0 || revision.Contains("..") || revision.StartsWith('/') || revision.EndsWith('/')) return null;
        return new HubRepoId(repo, revision);
    }

    /// <summary>A full 40-hex commit hash: files at it never change, so the cache answers without a request.</summary>
    public static bool IsCommitHash(string revision) => CommitPattern().IsMatch(revision);

    public override string ToString() => Revision == DefaultRevision ? RepoId : $"{RepoId}@{Revision}";

    [GeneratedRegex(@"^[\w\-.]+/[\w\-.]+$")]
    private static partial Regex RepoIdPattern();

    [GeneratedRegex("^[0-9a-f]{40}$")]
    private static partial Regex CommitPattern();
}
