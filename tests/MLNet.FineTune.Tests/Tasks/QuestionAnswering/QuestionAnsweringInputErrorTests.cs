using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.FineTune.Tasks.QuestionAnswering;

using static MLNet.FineTune.Tests.Tasks.QuestionAnswering.QaTrainingRows;

namespace MLNet.FineTune.Tests.Tasks.QuestionAnswering;

/// <summary>
/// Bad question-answering input fails with an error naming the row (and question id), the data and the column:
/// empty contexts and questions (training, validation; scoring answers them with no answer, see ScoringEmptyTextTests), a gold answer that is not the context's text at its
/// start, unanswerable rows under SQuAD v1.1 rules, and mistyped optional columns. Also: the estimator's output schema
/// promises what the fitted transformer gives. The official SQuAD files pass every check.
/// </summary>
[TestClass]
public sealed class QuestionAnsweringInputErrorTests
{
    private static readonly string Folder = Directory.CreateTempSubdirectory("mlft-qa-input-tests-").FullName;

    public sealed class QaInput { public string Context { get; set; } = ""; public string Question { get; set; } = ""; }
    public sealed class QaOutput { public string Answer { get; set; } = ""; }

    [TestMethod]
    public void EmptyContextsAndQuestionsAreNamedInTrainingValidationAndScoring()
    {
        var ml = new MLContext(seed: 1);
        var noContext = Rows(4);
        noContext[2].Context = "";
        NamedErrors.Expect<InvalidDataException>(() => ml.FineTune().Lora(Options()).Fit(ml.Data.LoadFromEnumerable(noContext)),
            "Row 2 of the training data", "column 'Context'", "Remove or fill");
        var noQuestion = Rows(4);
        noQuestion[1].Question = "  ";
        NamedErrors.Expect<InvalidDataException>(() => ml.FineTune().Lora(Options()).Fit(ml.Data.LoadFromEnumerable(noQuestion)),
            "Row 1 of the training data", "column 'Question'");
        NamedErrors.Expect<InvalidDataException>(() => ml.FineTune().Lora(Options(ml.Data.LoadFromEnumerable(noQuestion))).Fit(ml.Data.LoadFromEnumerable(Rows(4))),
            "Row 1 of the validation data", "column 'Question'");

        // Scoring is not training: an empty context or question gets "no answer" (ScoringEmptyTextTests), so one such
        // row does not fail the whole Transform.
        var model = ml.FineTune().Lora(Options()).Fit(ml.Data.LoadFromEnumerable(Rows(4)));
        Assert.AreEqual("", model.Transform(ml.Data.LoadFromEnumerable(noQuestion)).GetColumn<string>("Answer").ElementAt(1));
        var engine = ml.Model.CreatePredictionEngine<QaInput, QaOutput>(model);
        Assert.AreEqual("", engine.Predict(new QaInput { Context = "", Question = "Where does Anna live?" }).Answer);
    }

    [TestMethod]
    public void AnAnswerThatIsNotTheContextsTextAtItsStartIsNamed()
    {
        var ml = new MLContext(seed: 1);
        var rows = Rows(4);
        rows[3].AnswerStart = 3; // "a li", not "Oslo"
        NamedErrors.Expect<InvalidDataException>(() => ml.FineTune().Lora(Options()).Fit(ml.Data.LoadFromEnumerable(rows)),
            "Row 3 (question 'q3') of the training data", "'AnswerText'", "\"Oslo\"", "\"a li\"", "'AnswerStart' = 3");
        NamedErrors.Expect<InvalidDataException>(() => ml.FineTune().Lora(Options(ml.Data.LoadFromEnumerable(rows))).Fit(ml.Data.LoadFromEnumerable(Rows(4))),
            "Row 3 (question 'q3') of the validation data");
        rows[3].AnswerStart = 17; // past the end
        NamedErrors.Expect<InvalidDataException>(() => ml.FineTune().Lora(Options()).Fit(ml.Data.LoadFromEnumerable(rows)), "question 'q3'", "ends past its context");
    }

    [TestMethod]
    public void EveryAnswerOfTheOfficialSquadFilesIsItsContextsText()
    {
        var ml = new MLContext(seed: 1);
        var folder = TestPaths.SharedOrSkip("data", "squad");
        var files = Directory.GetFiles(folder, "squad-v*.json").Order(StringComparer.Ordinal).ToList();
        Assert.IsNotEmpty(files, $"no squad-v*.json in {folder}");
        foreach (var file in files)
        {
            var data = ml.Data.LoadFromSquadJson(file);
            var options = Options();
            QaRows.CheckTrainingColumns(data.Schema, options, "training data");
            var rows = QaRows.ReadTraining(data, options, "training data");
            int answered = rows.Count(r => r.Example.HasAnswer);
            Console.WriteLine($"{Path.GetFileName(file)}: {rows.Count} questions read, {answered} gold answers equal their context's text at AnswerStart, {rows.Count - answered} unanswerable");
            Assert.IsGreaterThan(500, rows.Count);
            foreach (var row in rows.Where(r => r.Example.HasAnswer).Take(1000))
                Assert.AreEqual(row.Example.AnswerText, row.Example.Context.Substring(row.Example.AnswerStart, row.Example.AnswerText!.Length));
        }
    }

    [TestMethod]
    public void UnanswerableRowsUnderVersionOneRulesAreRefusedNamingTheOption()
    {
        var ml = new MLContext(seed: 1);
        var rows = Rows(6);
        foreach (var i in new[] { 2, 4 }) (rows[i].AnswerText, rows[i].AnswerStart, rows[i].AllAnswers, rows[i].IsImpossible) = ("", -1, [], true);
        var options = Options();
        options.VersionTwoWithNegative = false;
        NamedErrors.Expect<InvalidDataException>(() => ml.FineTune().Lora(options).Fit(ml.Data.LoadFromEnumerable(rows)),
            "VersionTwoWithNegative is false", "2 of the 6 training questions", "row 2, question 'q2'");
    }

    public sealed class IntImpossible { public string Context { get; set; } = "Anna lives in Oslo."; public string Question { get; set; } = "Where?"; public string AnswerText { get; set; } = "Oslo"; public int AnswerStart { get; set; } = 14; public int IsImpossible { get; set; } }
    public sealed class IntId { public string Context { get; set; } = "Anna lives in Oslo."; public string Question { get; set; } = "Where?"; public string AnswerText { get; set; } = "Oslo"; public int AnswerStart { get; set; } = 14; public int Id { get; set; } }
    public sealed class FloatAnswers { public string Context { get; set; } = "Anna lives in Oslo."; public string Question { get; set; } = "Where?"; public string AnswerText { get; set; } = "Oslo"; public int AnswerStart { get; set; } = 14; public float[] AllAnswers { get; set; } = [1f]; }

    [TestMethod]
    public void MistypedOptionalColumnsAreNamedInTrainingAndValidationData()
    {
        var ml = new MLContext(seed: 1);
        var good = ml.Data.LoadFromEnumerable(Rows(4));
        (IDataView Data, string Expected)[] cases =
        [
            (ml.Data.LoadFromEnumerable(new[] { new IntImpossible() }), "is-impossible column 'IsImpossible': expected Boolean, got Int32"),
            (ml.Data.LoadFromEnumerable(new[] { new IntId() }), "id column 'Id': expected String (text), got Int32"),
            (ml.Data.LoadFromEnumerable(new[] { new FloatAnswers() }), "all-answers column 'AllAnswers': expected a vector of String (or String), got Vector<Single>"),
        ];
        foreach (var (data, expected) in cases)
        {
            NamedErrors.Expect<ArgumentOutOfRangeException>(() => ml.FineTune().Lora(Options()).Fit(data), "In the training data: Schema mismatch for " + expected);
            NamedErrors.Expect<ArgumentOutOfRangeException>(() => ml.FineTune().Lora(Options(data)).Fit(good), "In the validation data: Schema mismatch for " + expected);
        }
    }

    [TestMethod]
    [DataRow(false, null)]
    [DataRow(true, true)]
    [DataRow(true, null)]
    public void TheEstimatorsSchemaPromisesWhatTheFittedModelGives(bool versionTwoData, bool? versionTwoOption)
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromSquadJson(SyntheticSquad.Write(Path.Combine(Folder, $"schema-{versionTwoData}.json"), 6, 5, unanswerableFraction: versionTwoData ? 0.25 : 0));
        var options = Options();
        options.VersionTwoWithNegative = versionTwoOption;
        var estimator = ml.FineTune().Lora(options);
        var promised = Columns(estimator.GetOutputSchema(SchemaShape.Create(train.Schema)));
        var model = estimator.Fit(train);
        var given = Columns(SchemaShape.Create(model.GetOutputSchema(train.Schema)));

        Console.WriteLine($"v2.0 data {versionTwoData}, VersionTwoWithNegative {versionTwoOption?.ToString() ?? "null"}: model v2.0 {model.VersionTwoWithNegative}; " +
            $"promised [{string.Join(", ", promised)}]; given [{string.Join(", ", given)}]");
        Assert.AreEqual(versionTwoData, model.VersionTwoWithNegative);
        CollectionAssert.IsSubsetOf(promised, given, "every promised column must be in the fitted model's output, with its type");
        var extra = given.Except(promised).ToList();
        if (versionTwoOption is null && versionTwoData)
            CollectionAssert.AreEqual(new[] { "NoAnswerScore Scalar Single" }, extra, "with the option null, only NoAnswerScore may go beyond the promise (as documented)");
        else
            Assert.IsEmpty(extra, "the fitted model must give exactly the promised columns");
    }

    /// <summary>"Name Kind Type" of every column (key columns marked), in name order.</summary>
    private static List<string> Columns(SchemaShape shape) =>
        shape.Select(c => $"{c.Name} {c.Kind} {c.ItemType}{(c.IsKey ? " key" : "")}").Order(StringComparer.Ordinal).ToList();
}
