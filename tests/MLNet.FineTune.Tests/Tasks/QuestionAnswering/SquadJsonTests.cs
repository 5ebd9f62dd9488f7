using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.FineTune.Tests.Tasks.QuestionAnswering;

/// <summary>The SQuAD JSON reader and <c>ml.Data.LoadFromSquadJson</c> on small files written by the tests.</summary>
[TestClass]
public sealed class SquadJsonTests
{
    // v1.1 shape: no is_impossible; the second question has three gold answers, two equal. The second paragraph
    // has an emoji (two UTF-16 units, one code point) before the answer, so answer_start 7 (code points) is 8 in UTF-16.
    private const string V11Json = """
        {"version": "1.1", "data": [
          {"title": "Super_Bowl_50", "paragraphs": [
            {"context": "Denver Broncos won Super Bowl 50.", "qas": [
              {"id": "a1", "question": "Who won?", "answers": [{"text": "Denver Broncos", "answer_start": 0}]},
              {"id": "a2", "question": "Which Super Bowl?", "answers": [
                {"text": "Super Bowl 50", "answer_start": 19}, {"text": "50", "answer_start": 30}, {"text": "50", "answer_start": 30}]}
            ]},
            {"context": "Café 😀 Zürich", "qas": [
              {"id": "a3", "question": "Où?", "answers": [{"text": "Zürich", "answer_start": 7}]}
            ]}
          ]}
        ]}
        """;

    // v2.0 shape: an impossible question with plausible_answers (not gold) and an answerable one.
    private const string V20Json = """
        {"version": "v2.0", "data": [
          {"title": "Normans", "paragraphs": [
            {"context": "The Normans gave their name to Normandy.", "qas": [
              {"id": "b1", "question": "Who gave their name to Normandy?", "answers": [{"text": "The Normans", "answer_start": 0}], "is_impossible": false},
              {"id": "b2", "question": "Who took the name of Normandy?", "answers": [], "plausible_answers": [{"text": "The Normans", "answer_start": 0}], "is_impossible": true}
            ]}
          ]}
        ]}
        """;

    private string _dir = "";

    [TestInitialize]
    public void CreateFolder() => Directory.CreateDirectory(_dir = Path.Combine(Path.GetTempPath(), "squad-tests-" + Guid.NewGuid().ToString("N")));

    [TestCleanup]
    public void DeleteFolder() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, string json)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllText(path, json);   // UTF-8 without BOM
        return path;
    }

    [TestMethod]
    public void ReadsV11()
    {
        var questions = SquadJson.Read(Write("v11.json", V11Json));
        Assert.HasCount(3, questions);
        var a2 = questions[1];
        Assert.AreEqual("a2", a2.Id);
        Assert.AreEqual("Super_Bowl_50", a2.Title);
        Assert.AreEqual("Which Super Bowl?", a2.Question);
        Assert.AreEqual("Super Bowl 50", a2.AnswerText);
        Assert.AreEqual(19, a2.AnswerStart);
        CollectionAssert.AreEqual(new[] { "Super Bowl 50", "50", "50" }, a2.Answers.Select(a => a.Text).ToArray());
        Assert.IsFalse(a2.IsImpossible);

        var a3 = questions[2];
        Assert.AreEqual("Café 😀 Zürich", a3.Context);
        Assert.AreEqual("Où?", a3.Question);
        Assert.AreEqual(8, a3.AnswerStart);   // code point 7 -> UTF-16 8 after the surrogate pair
        Assert.AreEqual("Zürich", a3.Context.Substring(a3.AnswerStart, a3.AnswerText.Length));
        foreach (var q in questions)
            foreach (var answer in q.Answers)
                Assert.AreEqual(answer.Text, q.Context.Substring(answer.Start, answer.Text.Length), q.Id);
    }

    [TestMethod]
    public void ReadsV20ImpossibleQuestions()
    {
        var questions = SquadJson.Read(Write("v20.json", V20Json));
        Assert.HasCount(2, questions);
        Assert.IsFalse(questions[0].IsImpossible);
        Assert.AreEqual("The Normans", questions[0].AnswerText);
        var b2 = questions[1];
        Assert.IsTrue(b2.IsImpossible);
        Assert.AreEqual("", b2.AnswerText);
        Assert.AreEqual(-1, b2.AnswerStart);
        Assert.IsEmpty(b2.Answers);   // plausible_answers are not gold answers
    }

    [TestMethod]
    public void ReadsAFileWithAByteOrderMark()
    {
        var path = Path.Combine(_dir, "bom.json");
        File.WriteAllText(path, V20Json, new System.Text.UTF8Encoding(encoderShouldEmitUTF8Identifier: true));
        Assert.HasCount(2, SquadJson.Read(path));
    }

    [TestMethod]
    public void LoadsColumnsIntoAnIDataView()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromSquadJson(Write("v11.json", V11Json));
        var schema = data.Schema;
        foreach (var name in new[] { "Id", "Title", "Context", "Question", "AnswerText" })
            Assert.AreEqual(TextDataViewType.Instance, schema[name].Type, name);
        Assert.AreEqual(NumberDataViewType.Int32, schema["AnswerStart"].Type);
        Assert.AreEqual(BooleanDataViewType.Instance, schema["IsImpossible"].Type);
        var allAnswers = (VectorDataViewType)schema["AllAnswers"].Type;
        Assert.AreEqual(TextDataViewType.Instance, allAnswers.ItemType);
        Assert.IsFalse(allAnswers.IsKnownSize);

        var rows = ml.Data.CreateEnumerable<Row>(data, reuseRowObject: false).ToList();
        Assert.HasCount(3, rows);
        CollectionAssert.AreEqual(new[] { "a1", "a2", "a3" }, rows.Select(r => r.Id).ToArray());
        CollectionAssert.AreEqual(new[] { "Super Bowl 50", "50", "50" }, rows[1].AllAnswers);
        Assert.AreEqual(8, rows[2].AnswerStart);
        Assert.AreEqual("Café 😀 Zürich", rows[2].Context);

        var v2 = ml.Data.CreateEnumerable<Row>(ml.Data.LoadFromSquadJson(Write("v20.json", V20Json)), reuseRowObject: false).ToList();
        Assert.IsTrue(v2[1].IsImpossible);
        Assert.AreEqual("", v2[1].AnswerText);
        Assert.AreEqual(-1, v2[1].AnswerStart);
        Assert.IsEmpty(v2[1].AllAnswers);
    }

    [TestMethod]
    public void MissingFileIsNamed()
    {
        var path = Path.Combine(_dir, "nope.json");
        var error = Assert.ThrowsExactly<FileNotFoundException>(() => new MLContext().Data.LoadFromSquadJson(path));
        Console.WriteLine(error.Message);
        StringAssert.Contains(error.Message, path);
    }

    [TestMethod]
    public void MalformedJsonNamesFileAndPath()
    {
        // A missing comma between the second question's fields.
        var broken = V20Json.Replace("\"Who took the name of Normandy?\", \"answers\"", "\"Who took the name of Normandy?\" \"answers\"");
        Assert.AreNotEqual(V20Json, broken);
        var path = Write("broken.json", broken);
        var error = Assert.ThrowsExactly<InvalidDataException>(() => SquadJson.Read(path));
        Console.WriteLine(error.Message);
        StringAssert.Contains(error.Message, path);
        StringAssert.Contains(error.Message, "$.data[0].paragraphs[0].qas[1].question");
        StringAssert.Contains(error.Message, "line 5");

        var truncated = Write("truncated.json", V20Json[..200]);
        var truncatedError = Assert.ThrowsExactly<InvalidDataException>(() => SquadJson.Read(truncated));
        Console.WriteLine(truncatedError.Message);
        StringAssert.Contains(truncatedError.Message, "not valid JSON");
    }

    [TestMethod]
    public void MissingOrMistypedFieldsAreNamed()
    {
        var noQuestion = Write("noq.json", V20Json.Replace("\"question\": \"Who took the name of Normandy?\", ", ""));
        var error = Assert.ThrowsExactly<InvalidDataException>(() => SquadJson.Read(noQuestion));
        Console.WriteLine(error.Message);
        StringAssert.Contains(error.Message, noQuestion);
        StringAssert.Contains(error.Message, "missing field 'question'");
        StringAssert.Contains(error.Message, "$.data[0].paragraphs[0].qas[1]");

        var noData = Write("nodata.json", """{"version": "1.1"}""");
        StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => SquadJson.Read(noData)).Message, "missing field 'data'");

        var textStart = Write("textstart.json", V11Json.Replace("\"answer_start\": 0}", "\"answer_start\": \"0\"}"));
        var typeError = Assert.ThrowsExactly<InvalidDataException>(() => SquadJson.Read(textStart));
        Console.WriteLine(typeError.Message);
        StringAssert.Contains(typeError.Message, "$.data[0].paragraphs[0].qas[0].answers[0].answer_start should be a number but is a string");

        var outside = Write("outside.json", V11Json.Replace("\"answer_start\": 7", "\"answer_start\": 99"));
        var rangeError = Assert.ThrowsExactly<InvalidDataException>(() => SquadJson.Read(outside));
        Console.WriteLine(rangeError.Message);
        StringAssert.Contains(rangeError.Message, "$.data[0].paragraphs[1].qas[0].answers[0].answer_start is 99");
        StringAssert.Contains(rangeError.Message, "'a3'");
    }

    [TestMethod]
    public void ReadsPredictionAndProbabilityFiles()
    {
        var predictions = SquadJson.ReadPredictions(Write("pred.json", """{"b1": "The Normans", "b2": ""}"""));
        Assert.AreEqual("The Normans", predictions["b1"]);
        Assert.AreEqual("", predictions["b2"]);
        var probabilities = SquadJson.ReadNoAnswerProbabilities(Write("na.json", """{"b1": 0.25, "b2": 1}"""));
        Assert.AreEqual(0.25, probabilities["b1"]);
        Assert.AreEqual(1.0, probabilities["b2"]);

        var bad = Write("badpred.json", """{"b1": ["The Normans"]}""");
        var error = Assert.ThrowsExactly<InvalidDataException>(() => SquadJson.ReadPredictions(bad));
        StringAssert.Contains(error.Message, "$.b1 should be a string but is an array");

        var metrics = SquadEvaluator.Evaluate(SquadJson.Read(Write("v20.json", V20Json)), predictions, probabilities);
        Console.WriteLine(metrics);
        Assert.AreEqual(100.0, metrics.ExactMatch);
    }

    private sealed class Row
    {
        public string Id { get; set; } = "";
        public string Title { get; set; } = "";
        public string Context { get; set; } = "";
        public string Question { get; set; } = "";
        public string AnswerText { get; set; } = "";
        public int AnswerStart { get; set; }
        public string[] AllAnswers { get; set; } = [];
        public bool IsImpossible { get; set; }
    }
}
