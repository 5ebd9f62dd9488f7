namespace MLNet.FineTune.Tests;

/// <summary>
/// One fuzzed input through a parser: it parses, or it is refused with an <see cref="InvalidDataException"/> that
/// names what was read; any other exception, or allocating more than the budget, fails the test.
/// </summary>
internal static class FuzzCase
{
    /// <summary>Runs <paramref name="parse"/> on <paramref name="bytes"/> (already in place) and returns
    /// <paramref name="parsedOutcome"/> or "refused".</summary>
    /// <param name="what">The mutation, for messages.</param>
    /// <param name="bytes">The input (printed in hex when an unexpected exception escapes).</param>
    /// <param name="parse">Reads the input.</param>
    /// <param name="mustName">What a refusal's message must name (the file, the component).</param>
    /// <param name="inputKind">"file", "manifest": for the allocation message.</param>
    /// <param name="parsedOutcome">The outcome's name when the input parses ("loaded", "read").</param>
    /// <param name="allocationBudget">Most managed bytes the attempt may allocate.</param>
    public static string Run(string what, byte[] bytes, Action parse, string mustName, string inputKind, string parsedOutcome, long allocationBudget)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        string outcome;
        try
        {
            parse();
            outcome = parsedOutcome;
        }
        catch (InvalidDataException e)
        {
            Assert.Contains(mustName, e.Message, $"{what}: the error must name the {inputKind}");
            outcome = "refused";
        }
        catch (Exception e)
        {
            throw new AssertFailedException($"{what} ({Convert.ToHexString(bytes)}): {e.GetType().Name} escaped: {e.Message}", e);
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.IsLessThan(allocationBudget, allocated, $"{what}: a {bytes.Length}-byte {inputKind} allocated {allocated} bytes");
        return outcome;
    }
}
