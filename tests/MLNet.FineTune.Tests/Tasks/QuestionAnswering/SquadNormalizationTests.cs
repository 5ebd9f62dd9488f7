using MLNet.FineTune.Tasks.QuestionAnswering;

namespace MLNet.FineTune.Tests.Tasks.QuestionAnswering;

/// <summary>
/// The official answer normalisation and token F1. Expected strings are what CPython 3.11 gives for the official
/// normalize_answer on the same input.
/// </summary>
[TestClass]
public sealed class SquadNormalizationTests
{
    [TestMethod]
    [DataRow("The Quick, Brown Fox!", "quick brown fox")]
    [DataRow("an apple a day keeps THE doctor away", "apple day keeps doctor away")]
    [DataRow("a an the", "")]
    [DataRow("theater and anthem", "theater and anthem")]          // articles only as whole words
    [DataRow("Anne the theologian", "anne theologian")]
    [DataRow("2nd (the) [a] {an}", "2nd")]                          // punctuation goes first, then the articles
    [DataRow("A-B", "ab")]                                          // ...so "a-b" is one word, not an article
    [DataRow("a.m.", "am")]
    [DataRow("the_end", "theend")]                                  // '_' is in string.punctuation
    [DataRow("", "")]
    [DataRow("   ", "")]
    public void NormalizesArticlesAndAsciiPunctuation(string input, string expected) =>
        AssertNormalizes(input, expected);

    [TestMethod]
    [DataRow("\u201cSmart quotes\u201d \u2014 dash", "\u201csmart quotes\u201d \u2014 dash")]   // only ASCII punctuation goes
    [DataRow("Stra\u00dfe", "stra\u00dfe")]                           // Python's lower keeps ß
    [DataRow("\u00c9T\u00c9 the \u00e9t\u00e9", "\u00e9t\u00e9 \u00e9t\u00e9")]
    [DataRow("\u0130stanbul", "i\u0307stanbul")]                       // U+0130 lowers to two code points
    [DataRow("\u039f\u0394\u039f\u03a3", "\u03bf\u03b4\u03bf\u03c2")]  // final capital sigma -> ς
    [DataRow("\u03a3\u0391\u03a3. \u03a3", "\u03c3\u03b1\u03c2 \u03c3")]   // a lone Σ is not final
    [DataRow("the\u0301 end", "\u0301 end")]                          // a combining mark is not \w in Python: "the" is a word
    [DataRow("an\u00b2", "an\u00b2")]                                 // ² is numeric, so \w: "an²" is one word
    [DataRow("\u00bd an", "\u00bd")]
    [DataRow("\uff21 the", "\uff41")]                                 // full-width A lowers, is no article
    [DataRow("the \U0001F600 smile", "\U0001F600 smile")]             // outside the BMP
    public void NormalizesUnicodeAsPythonDoes(string input, string expected) =>
        AssertNormalizes(input, expected);

    [TestMethod]
    [DataRow("The\u00a0Beatles", "beatles")]
    [DataRow("  a\tb\n\u2003c\u001fd\u200be ", "b c d\u200be")]      // U+001F splits in Python, U+200B does not
    [DataRow("x\r\n\u000b\u000c\u0085\u1680\u2028\u2029\u202f\u205f\u3000y", "x y")]
    public void CollapsesWhitespaceAsPythonSplitDoes(string input, string expected) =>
        AssertNormalizes(input, expected);

    [TestMethod]
    public void LowerMatchesPythonWhereDotNetDiffers()
    {
        // Invariant .NET lower-casing maps U+0130 to 'i' and Σ always to σ; Python does neither.
        Assert.AreEqual("i\u0307", SquadAnswerNormalizer.PythonLower("\u0130"));
        Assert.AreEqual("\u03c3\u03bf\u03c2 \u03bf\u03c2'", SquadAnswerNormalizer.PythonLower("\u03a3\u039f\u03a3 \u039f\u03a3'"));
        Assert.AreEqual("a\u03c3b", SquadAnswerNormalizer.PythonLower("A\u03a3B"));
        Assert.AreEqual("a\u03c3\u0301b", SquadAnswerNormalizer.PythonLower("A\u03a3\u0301B"));   // skips the mark, sees B
        Assert.AreEqual("\u2170", SquadAnswerNormalizer.PythonLower("\u2160"));                  // Roman numeral one
    }

    [TestMethod]
    [DataRow("Panthers", "Carolina Panthers", 2.0 / 3.0)]                  // p = 1, r = 1/2
    [DataRow("the cat sat on the mat", "a cat on a mat", 6.0 / 7.0)]       // p = 3/4, r = 1
    [DataRow("a b b c", "b b b d", 4.0 / 7.0)]                             // counts clip: 2 common of [b b c] and [b b b d]
    [DataRow("New York City", "new york", 0.8)]
    [DataRow("Denver Broncos", "Broncos, Denver", 1.0)]                    // order does not matter to F1
    [DataRow("Denver", "Carolina", 0.0)]
    public void F1OfPartialOverlaps(string prediction, string gold, double expected)
    {
        foreach (var version in new[] { SquadVersion.V1, SquadVersion.V2 })
        {
            var f1 = SquadEvaluator.F1Score(prediction, gold, version);
            Console.WriteLine($"{version} F1('{prediction}', '{gold}') = {f1:R} (expected {expected:R}, diff {f1 - expected:E2})");
            Assert.AreEqual(expected, f1, 1e-15);
        }
        Assert.IsFalse(SquadEvaluator.IsExactMatch(prediction, gold));
    }

    [TestMethod]
    public void EmptyAnswersScoreDifferentlyInV1AndV2()
    {
        // v1.1: no common token -> 0, even when both are empty. v2.0: both empty -> 1, one empty -> 0.
        Assert.AreEqual(0.0, SquadEvaluator.F1Score("", "", SquadVersion.V1));
        Assert.AreEqual(1.0, SquadEvaluator.F1Score("", "", SquadVersion.V2));
        Assert.AreEqual(0.0, SquadEvaluator.F1Score("the", "", SquadVersion.V1));
        Assert.AreEqual(1.0, SquadEvaluator.F1Score("the", "", SquadVersion.V2));   // "the" normalises to nothing
        Assert.AreEqual(0.0, SquadEvaluator.F1Score("", "Denver", SquadVersion.V2));
        Assert.AreEqual(0.0, SquadEvaluator.F1Score("Denver", "", SquadVersion.V2));
        Assert.IsTrue(SquadEvaluator.IsExactMatch("", "The"));
        Assert.IsTrue(SquadEvaluator.IsExactMatch("the Denver  Broncos.", "Denver Broncos"));
        Assert.IsFalse(SquadEvaluator.IsExactMatch("Denver", "Denver Broncos"));
    }

    private static void AssertNormalizes(string input, string expected)
    {
        var actual = SquadEvaluator.NormalizeAnswer(input);
        Console.WriteLine($"normalize({Escape(input)}) = {Escape(actual)}");
        Assert.AreEqual(expected, actual, $"normalize({Escape(input)})");
    }

    private static string Escape(string s) =>
        "\"" + string.Concat(s.Select(c => c is < ' ' or > '~' ? $"\\u{(int)c:x4}" : c.ToString())) + "\"";
}
