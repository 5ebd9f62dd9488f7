using System.Text.Json.Nodes;
using Microsoft.ML;
using MLNet.FineTune.Tokenization;

namespace MLNet.FineTune.Tests.Tokenization;

/// <summary>
/// A tokenizer with more tokens than the model's embedding table (config.json vocab_size) used to fail inside torch
/// ("index out of range in self") at the first text using such a token; it is refused when the folder loads, naming
/// both numbers and both files.
/// </summary>
[TestClass]
public sealed class TokenizerVocabularyFitTests
{
    public sealed class Review { public string Text { get; set; } = ""; public bool Label { get; set; } }

    private string _dir = "";

    [TestInitialize] public void Init() => _dir = Directory.CreateTempSubdirectory("mlft-vocab-fit-").FullName;
    [TestCleanup] public void Cleanup() => Directory.Delete(_dir, recursive: true);

    /// <summary>bert-tiny (512-token vocab.txt) with config.json's vocab_size set to <paramref name="vocabSize"/>.</summary>
    private string BertTinyWithVocabSize(int vocabSize)
    {
        foreach (var file in Directory.GetFiles(TinyModels.BertTiny())) File.Copy(file, Path.Combine(_dir, Path.GetFileName(file)));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "config.json")))!.AsObject();
        config["vocab_size"] = vocabSize;
        File.WriteAllText(Path.Combine(_dir, "config.json"), config.ToJsonString());
        return _dir;
    }

    [TestMethod]
    public void ATokenizerLargerThanVocabSize_IsRefusedWhenTheFolderLoads()
    {
        var folder = BertTinyWithVocabSize(100);
        NamedErrors.Expect<InvalidDataException>(() => HfTokenizer.FromFolder(folder),
            "512 tokens", "vocab_size 100", "vocab.txt", Path.Combine(folder, "config.json"));
    }

    [TestMethod]
    public void FitRefusesItBeforeTraining()
    {
        var ml = new MLContext(seed: 1);
        var folder = BertTinyWithVocabSize(100);
        var data = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 8).Select(i => new Review { Text = i % 2 == 0 ? "the movie was good" : "the food was awful", Label = i % 2 == 0 }));
        NamedErrors.Expect<InvalidDataException>(() => ml.FineTune().Lora(new TextClassificationOptions
        {
            BaseModel = folder, MaxSequenceLength = 16, Epochs = 1, BatchSize = 4, Precision = TrainingPrecision.Float32,
        }).Fit(data), "512 tokens", "vocab_size 100");
    }

    [TestMethod]
    public void AVocabSizeLargerThanTheTokenizer_IsFine()
    {
        // Embedding tables are often padded (to a multiple of 64, say): more rows than tokens is normal.
        var tokenizer = HfTokenizer.FromFolder(BertTinyWithVocabSize(576));
        Assert.AreEqual(512, tokenizer.VocabularySize);
    }
}
