using System.Text.Json.Nodes;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Runtime;
using MLNet.FineTune.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Persistence;

/// <summary>How model.zip describes the base model and the dtype it was held in.</summary>
internal sealed record StoredBaseModel(BaseModelStorage Storage, string? Folder, string? Sha256, string BaseDType);

/// <summary>
/// An adapted model's model.zip payloads: the base config and tokenizer files, the method's config, and either every
/// weight (self-contained) or the trained ones plus the base folder's path and hash (by reference).
/// </summary>
internal static class AdaptedModelZip
{
    private const string ConfigPayload = "base/config.json";
    private const string TokenizerPrefix = "base/tokenizer/";
    private const string AdapterConfigPayload = PeftConfigJson.FileName;
    private const string StoredBasePayload = "base_model.json";
    private const string FullStatePayload = "model.safetensors";
    private const string TrainedStatePayload = "trained.safetensors";

    /// <summary>What a saved model consists of.</summary>
    public sealed record Parts(nn.Module Model, PeftModel Peft, HfTokenizer Tokenizer, IReadOnlyDictionary<string, byte[]> TokenizerFiles,
        HfConfig Config, ScalarType BaseDType, string? BaseFolder, string? BaseSha256,
        IReadOnlyDictionary<string, ScalarType>? SavedDTypes = null);

    /// <summary>Writes the model into model.zip payloads: base config, tokenizer files, the method's config, and
    /// either every weight (self-contained) or the trained ones plus the base folder's path and hash.</summary>
    /// <remarks>Full fine-tuning trains every weight, so its <see cref="BaseModelStorage.ByReference"/> zip holds all
    /// of them (as large as a self-contained one, and still tied to the base folder).</remarks>
    public static void Write(ModelPayloadWriter payloads, BaseModelStorage storage, Parts parts)
    {
        payloads.AddText(ConfigPayload, parts.Config.ToString());
        foreach (var (name, bytes) in parts.TokenizerFiles) payloads.Add(TokenizerPrefix + name, bytes);
        payloads.AddText(AdapterConfigPayload, PeftConfigJson.WriteModelMethod(parts.Peft.Config));
        if (storage == BaseModelStorage.ByReference)
        {
            payloads.AddJson(StoredBasePayload, new StoredBaseModel(storage, parts.BaseFolder, parts.BaseSha256, parts.BaseDType.ToString()), ModelZipStorage.JsonOptions);
            payloads.Add(TrainedStatePayload, s => WriteState(s, TrainedState(parts.Model, parts.Peft), parts.SavedDTypes));
        }
        else
        {
            payloads.AddJson(StoredBasePayload, new StoredBaseModel(storage, null, null, parts.BaseDType.ToString()), ModelZipStorage.JsonOptions);
            payloads.Add(FullStatePayload, s => WriteState(s, parts.Model.state_dict(), parts.SavedDTypes));
        }
    }

    /// <summary>Rebuilds a model written by <see cref="Write"/>.</summary>
    public static Parts Read<TModel>(ModelPayloadReader payloads, Func<HfConfig, TModel> createTaskModel, Device device, string where)
        where TModel : nn.Module, IPretrainedModel
    {
        TorchRuntime.EnsureLoaded();
        var config = HfConfig.Parse(payloads.ReadText(ConfigPayload), $"{where} {ConfigPayload}");
        var tokenizerFiles = payloads.Names.Where(n => n.StartsWith(TokenizerPrefix, StringComparison.Ordinal))
            .ToDictionary(n => n[TokenizerPrefix.Length..], payloads.ReadBytes);
        var tokenizer = TokenizerFromFiles(tokenizerFiles, config);
        var stored = payloads.ReadJson<StoredBaseModel>(StoredBasePayload, ModelZipStorage.JsonOptions);
        var method = PeftConfigJson.ParseModelMethod(JsonNode.Parse(payloads.ReadText(AdapterConfigPayload))!.AsObject(), $"{where} {AdapterConfigPayload}") with { InferenceMode = false };
        var baseDType = Enum.Parse<ScalarType>(stored.BaseDType);

        var model = createTaskModel(config);
        string? baseFolder = null;
        if (stored.Storage == BaseModelStorage.ByReference)
        {
            baseFolder = stored.Folder!;
            if (!Directory.Exists(baseFolder))
                throw new DirectoryNotFoundException($"{where} references the base model folder {baseFolder}, which does not exist on this machine. Copy the base model there, or save the model with BaseModelStorage.SelfContained.");
            var actual = BaseFolderHash.Compute(baseFolder);
            if (!string.Equals(actual, stored.Sha256, StringComparison.OrdinalIgnoreCase))
                throw new InvalidDataException($"{where} was trained on the base model in {baseFolder} with SHA-256 {stored.Sha256}, but the folder now hashes to {actual}: the base model changed. Restore the original files or retrain.");
            ModelFactory.LoadPretrained(model, baseFolder, baseDType);
        }
        else
        {
            model.to(baseDType);
        }
        // A self-contained QLoRA zip holds the packed 4-bit weights: quantizing the fresh model first gives them their shapes.
        PeftMethods.For(method).PrepareBase(model, method, log: null);
        var peft = PeftModel.Inject(model, method);
        var statePayload = stored.Storage == BaseModelStorage.ByReference ? TrainedStatePayload : FullStatePayload;
        var state = LoadStateFromPayload(payloads, statePayload);
        try
        {
            var report = WeightLoader.Load(model, state, basePrefix: null, sourceName: where);
            if (report.Unexpected.Count > 0 || (stored.Storage == BaseModelStorage.SelfContained && report.Missing.Count > 0))
                throw new InvalidDataException($"{where}: the saved weights do not fit the model built from its config: {report}.");
            // By reference the base folder supplies the frozen weights, but nothing can stand in for a trained one.
            var missingTrained = TrainedState(model, peft).Keys.Intersect(report.Missing).Order(StringComparer.Ordinal).ToList();
            if (missingTrained.Count > 0)
                throw new InvalidDataException($"{where}: {statePayload} lacks the trained tensor '{missingTrained[0]}'{(missingTrained.Count > 1 ? $" and {missingTrained.Count - 1} more" : "")}; the file is incomplete or belongs to another model.");
        }
        finally
        {
            foreach (var t in state.Values) t.Dispose();
        }
        model.to(device);
        model.eval();
        return new Parts(model, peft, tokenizer, tokenizerFiles, config, baseDType, baseFolder, stored.Sha256);
    }

    /// <summary>Writes <paramref name="state"/>, each tensor named in <paramref name="savedDTypes"/> (held in float32 for
    /// scoring) in its trained dtype, so the file is what training produced.</summary>
    private static void WriteState(Stream stream, IReadOnlyDictionary<string, Tensor> state, IReadOnlyDictionary<string, ScalarType>? savedDTypes)
    {
        if (savedDTypes is null || savedDTypes.Count == 0)
        {
            SafeTensors.Write(stream, state);
            return;
        }
        using var scope = NewDisposeScope();
        var stored = state.ToDictionary(p => p.Key, p => savedDTypes.TryGetValue(p.Key, out var dtype) ? p.Value.to_type(dtype) : p.Value, StringComparer.Ordinal);
        SafeTensors.Write(stream, stored);
    }

    /// <summary>The tensors that differ from the base checkpoint: trained parameters, and the base weights an
    /// initialisation rewrote (PiSSA's residual).</summary>
    private static Dictionary<string, Tensor> TrainedState(nn.Module model, PeftModel peft)
    {
        var state = model.named_parameters().Where(p => p.parameter.requires_grad).ToDictionary(p => p.name, p => (Tensor)p.parameter);
        if (PeftMethods.For(peft.Config).RewritesBaseWeights(peft.Config))
        {
            var all = model.state_dict();
            foreach (var path in peft.Layers.Keys) state[path + ".weight"] = all[path + ".weight"];
        }
        return state;
    }

    private static Dictionary<string, Tensor> LoadStateFromPayload(ModelPayloadReader payloads, string name)
    {
        var temp = Path.Combine(Path.GetTempPath(), "mlnet-finetune-" + Guid.NewGuid().ToString("N") + ".safetensors");
        try
        {
            payloads.ExtractFile(name, temp);
            return SafeTensors.Load(temp);
        }
        finally
        {
            File.Delete(temp);
        }
    }

    public static Dictionary<string, byte[]> ReadTokenizerFiles(string folder) =>
        TokenizerFolder.FileNames.Where(f => File.Exists(Path.Combine(folder, f))).ToDictionary(f => f, f => File.ReadAllBytes(Path.Combine(folder, f)));

    private static HfTokenizer TokenizerFromFiles(IReadOnlyDictionary<string, byte[]> files, HfConfig config)
    {
        // The tokenizer reads a folder (config.json informs casing): lay the files out in a scratch folder.
        var folder = Directory.CreateTempSubdirectory("mlnet-finetune-tokenizer-").FullName;
        try
        {
            foreach (var (name, bytes) in files) File.WriteAllBytes(Path.Combine(folder, name), bytes);
            File.WriteAllText(Path.Combine(folder, "config.json"), config.ToString());
            return HfTokenizer.FromFolder(folder);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
