using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.FineTune.Tests.Tasks.QuestionAnswering;

/// <summary>
/// The evaluator against the numbers the official scripts reported for real predictions on the SQuAD validation
/// subsets in ../shared/data/squad (reference-scores.json). Skipped on a fresh clone.
/// </summary>
[TestClass]
public sealed class SquadReferenceScoresTests
{
    private const double Tolerance = 1e-6;

    [TestMethod]
    public void ReproducesEveryReferenceScore()
    {
        var scoresPath = TestPaths.SharedOrSkip("data", "squad", "reference-scores.json");
        var folder = Path.GetDirectoryName(scoresPath)!;
        using var reference = JsonDocument.Parse(File.ReadAllText(scoresPath));

        var compared = 0;
        var worst = 0.0;
        foreach (var datasetEntry in reference.RootElement.EnumerateObject())
        {
            if (datasetEntry.Value.ValueKind != JsonValueKind.Object) continue;   // "about"
            var dataset = SquadJson.Read(Path.Combine(folder, datasetEntry.Name));
            var expectedVersion = datasetEntry.Name.Contains("v2.0") ? SquadVersion.V2 : SquadVersion.V1;

            foreach (var predictionEntry in datasetEntry.Value.EnumerateObject())
            {
                var predictions = SquadJson.ReadPredictions(Path.Combine(folder, predictionEntry.Name));
                var metrics = SquadEvaluator.Evaluate(dataset, predictions);   // Auto must pick the script of the file
                Console.WriteLine($"{datasetEntry.Name} + {predictionEntry.Name}: {dataset.Count} questions, " +
                    $"{predictions.Count} predictions, {metrics.UnansweredQuestionIds.Count} unanswered");
                Assert.AreEqual(expectedVersion, metrics.Version, $"version chosen for {datasetEntry.Name}");

                var measured = metrics.ToOfficialDictionary();
                var expectedKeys = predictionEntry.Value.EnumerateObject().Select(p => p.Name).ToList();
                CollectionAssert.AreEquivalent(expectedKeys, measured.Keys.ToList(), $"metric names for {predictionEntry.Name}");
                foreach (var expected in predictionEntry.Value.EnumerateObject())
                {
                    var value = measured[expected.Name];
                    var diff = value - expected.Value.GetDouble();
                    worst = Math.Max(worst, Math.Abs(diff));
                    compared++;
                    Console.WriteLine($"  {expected.Name,-14} measured {value,20:R}  reference {expected.Value.GetDouble(),20:R}  diff {diff:E2}");
                    Assert.AreEqual(expected.Value.GetDouble(), value, Tolerance, $"{predictionEntry.Name}: {expected.Name}");
                }
            }
        }
        Console.WriteLine($"{compared} reference numbers compared, largest |diff| {worst:E2} (tolerance {Tolerance:E0})");
        Assert.AreEqual(13, compared, "reference-scores.json should hold 2 + 2 + 9 numbers");
    }

    [TestMethod]
    public void LoadsTheRealValidationFiles()
    {
        foreach (var (file, questions, impossible) in new[] { ("squad-v1.1-validation.json", 887, 0), ("squad-v2.0-validation.json", 988, 516) })
        {
            var path = TestPaths.SharedOrSkip("data", "squad", file);
            var records = SquadJson.Read(path);
            var mismatches = records.Sum(q => q.Answers.Count(a => q.Context.Substring(a.Start, a.Text.Length) != a.Text));
            var rows = new MLContext().Data.LoadFromSquadJson(path).GetColumn<string>("Id").Count();
            Console.WriteLine($"{file}: {records.Count} questions, {records.Count(q => q.IsImpossible)} impossible, " +
                $"{records.Sum(q => q.Answers.Count)} gold answers, {mismatches} answers not at their start, IDataView rows {rows}");
            Assert.HasCount(questions, records);
            Assert.AreEqual(impossible, records.Count(q => q.IsImpossible));
            Assert.IsTrue(records.All(q => q.IsImpossible == (q.Answers.Count == 0)), "is_impossible agrees with the answers");
            Assert.AreEqual(0, mismatches);
            Assert.AreEqual(questions, rows);
        }
    }
}
