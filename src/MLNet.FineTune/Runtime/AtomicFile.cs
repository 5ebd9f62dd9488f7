namespace MLNet.FineTune.Runtime;

/// <summary>Writes files so that a reader never sees half of one and a failed write leaves the old file intact.</summary>
internal static class AtomicFile
{
    /// <summary>Writes through <paramref name="write"/> into a temporary file beside <paramref name="path"/>, then
    /// moves it into place. On failure the temporary file is removed and any existing file is untouched.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var temp = full + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp";
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>Writes text (UTF-8, no BOM) atomically.</summary>
    public static void WriteAllText(string path, string text) =>
        Write(path, s => { var bytes = new System.Text.UTF8Encoding(false).GetBytes(text); s.Write(bytes); });

    /// <summary>
    /// Writes files that only make sense together (a config and the weights it describes) into
    /// <paramref name="folder"/>: <paramref name="write"/> fills a temporary folder beside it, then the files are moved
    /// in. A new folder is moved in whole. Into an existing folder, the old <paramref name="commitFile"/> (the file a
    /// reader opens first) is removed before any new file lands and the new one is moved in last, so a reader finds
    /// either the old set, or the new set, or no commit file, never new files beside an old commit file. Other files
    /// in the folder are kept. A failure while writing leaves the folder as it was; the temporary folder is removed.
    /// </summary>
    /// <param name="folder">The destination folder (created when absent).</param>
    /// <param name="commitFile">The file name moved in last; <paramref name="write"/> must create it.</param>
    /// <param name="write">Writes the files into the folder it is given.</param>
    public static void WriteFileSet(string folder, string commitFile, Action<string> write)
    {
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(folder));
        var temp = SiblingName(full, "tmp");
        Directory.CreateDirectory(temp);
        try
        {
            write(temp);
            var files = Directory.GetFiles(temp).Select(f => Path.GetFileName(f)).ToList();
            if (!files.Contains(commitFile))
                throw new InvalidOperationException($"Writing {full} created no {commitFile} (wrote: {string.Join(", ", files)}).");
            if (!Directory.Exists(full))
            {
                Directory.Move(temp, full);
                return;
            }
            File.Delete(Path.Combine(full, commitFile));
            foreach (var file in files.Where(f => f != commitFile))
                File.Move(Path.Combine(temp, file), Path.Combine(full, file), overwrite: true);
            File.Move(Path.Combine(temp, commitFile), Path.Combine(full, commitFile));
        }
        finally
        {
            if (Directory.Exists(temp))
                try { Directory.Delete(temp, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// Moves the complete folder <paramref name="completed"/> to <paramref name="folder"/>, replacing any folder there:
    /// the old folder is first moved aside, and deleted only once the new one is in place (it is moved back if the new
    /// one cannot be moved in), so the old one is never lost before the new one has arrived.
    /// </summary>
    /// <param name="completed">A folder on the same volume, fully written.</param>
    /// <param name="folder">The destination.</param>
    public static void ReplaceDirectory(string completed, string folder)
    {
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(folder));
        if (!Directory.Exists(full))
        {
            Directory.Move(completed, full);
            return;
        }
        var aside = SiblingName(full, "old");
        Directory.Move(full, aside);
        try
        {
            Directory.Move(completed, full);
        }
        catch
        {
            Directory.Move(aside, full);
            throw;
        }
        // The new folder is in place; an old one that cannot be deleted stays hidden beside it.
        try { Directory.Delete(aside, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    // A hidden name beside the path, on the same volume, so a move is a rename.
    private static string SiblingName(string fullPath, string suffix) =>
        Path.Combine(Path.GetDirectoryName(fullPath)!, $".{Path.GetFileName(fullPath)}.{Guid.NewGuid().ToString("N")[..8]}.{suffix}");
}
