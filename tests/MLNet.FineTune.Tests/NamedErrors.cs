namespace MLNet.FineTune.Tests;

/// <summary>Asserts for the project's error standard: the exception's type, and a message naming what is at fault.</summary>
internal static class NamedErrors
{
    /// <summary>Runs <paramref name="action"/>, which must throw exactly <typeparamref name="T"/> with each of
    /// <paramref name="expected"/> in its message; prints the message (the test output shows what users read).</summary>
    public static T Expect<T>(Action action, params string[] expected) where T : Exception
    {
        var error = Assert.ThrowsExactly<T>(action);
        Console.WriteLine(error.Message);
        foreach (var text in expected) StringAssert.Contains(error.Message, text);
        return error;
    }
}
