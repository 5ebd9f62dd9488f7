using System.Text.Json.Nodes;

namespace MLNet.FineTune.Tests;

/// <summary>Tiny Hugging Face folders built from the committed fixtures, for fast end-to-end tests.</summary>
internal static class TinyModels
{
    /// <summary>Words of the tiny vocabulary (after the special tokens); synthetic tasks draw from these.</summary>
    public static readonly string[] Words =
    [
        "the", "a", "movie", "food", "service", "room", "book", "phone", "was", "is", "very", "really", "quite",
        "good", "great", "excellent", "wonderful", "lovely", "bad", "awful", "terrible", "boring", "poor",
        "red", "green", "blue", "yes", "no", "maybe", "agree", "disagree", "cat", "dog", "bird", "and", "but",
        "today", "yesterday", "we", "they", "it", "this", "that", ".", ",", "!", "?",
    ];

    /// <summary>bert-tiny (2 layers, hidden 32, random weights from transformers) with a 512-token WordPiece vocabulary.</summary>
    public static string BertTiny()
    {
        var folder = Path.Combine(Path.GetTempPath(), "mlnet-finetune-tests", "bert-tiny-with-vocab");
        var marker = Path.Combine(folder, "vocab.txt");
        if (File.Exists(marker)) return folder;
        var staging = folder + "." + Guid.NewGuid().ToString("N")[..8];
        Directory.CreateDirectory(staging);
        foreach (var file in new[] { "config.json", "model.safetensors" })
            File.Copy(TestPaths.Fixture("hf-reference", "bert-tiny", file), Path.Combine(staging, file));
        var vocab = new List<string> { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" };
        vocab.AddRange(Words);
        for (int i = vocab.Count; i < 512; i++) vocab.Add($"unused{i}");
        File.WriteAllLines(Path.Combine(staging, "vocab.txt"), vocab);
        File.WriteAllText(Path.Combine(staging, "tokenizer_config.json"), new JsonObject { ["do_lower_case"] = true, ["model_max_length"] = 64 }.ToJsonString());
        try { Directory.Move(staging, folder); }
        catch (IOException) { Directory.Delete(staging, recursive: true); } // another test process won the race
        return folder;
    }

    /// <summary>
    /// <see cref="BertTiny"/> with dropout in its checkpoint (hidden, attention and classifier 0.1), whose committed
    /// config has none: for tests of <see cref="FineTuneOptions.Dropout"/>.
    /// </summary>
    public static string BertTinyWithDropout()
    {
        var folder = Path.Combine(Path.GetTempPath(), "mlnet-finetune-tests", "bert-tiny-with-dropout");
        var marker = Path.Combine(folder, "vocab.txt");
        if (File.Exists(marker)) return folder;
        var source = BertTiny();
        var staging = folder + "." + Guid.NewGuid().ToString("N")[..8];
        Directory.CreateDirectory(staging);
        foreach (var file in Directory.GetFiles(source)) File.Copy(file, Path.Combine(staging, Path.GetFileName(file)));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(source, "config.json")))!.AsObject();
        config["hidden_dropout_prob"] = 0.1;
        config["attention_probs_dropout_prob"] = 0.1;
        config["classifier_dropout"] = 0.1;
        File.WriteAllText(Path.Combine(staging, "config.json"), config.ToJsonString());
        try { Directory.Move(staging, folder); }
        catch (IOException) { Directory.Delete(staging, recursive: true); } // another test process won the race
        return folder;
    }

    /// <summary>Short sentiment sentences over the tiny vocabulary, alternating positive (true) and negative, seeded.</summary>
    public static List<(string Text, bool Label)> LabelledSentences(int count, int seed)
    {
        var rng = new Random(seed);
        string[] positive = ["good", "great", "excellent"], negative = ["bad", "awful", "boring"];
        return Enumerable.Range(0, count)
            .Select(i => ($"the {Words[2 + rng.Next(5)]} was {(i % 2 == 0 ? positive : negative)[rng.Next(3)]}", i % 2 == 0)).ToList();
    }
}
