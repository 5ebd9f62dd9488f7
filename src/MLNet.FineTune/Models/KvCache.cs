using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>
/// Keys and values of the tokens a causal model has already seen, one pair per layer, each (B, Hkv, S, D) after
/// RoPE (Hugging Face's DynamicCache). Each forward call appends its tokens; the next call then feeds only new tokens.
/// </summary>
/// <remarks>
/// The cache owns its tensors: they are detached from the caller's dispose scopes so that they outlive each decoding
/// step, and released when replaced or when the cache is disposed.
/// </remarks>
internal sealed class KvCache : IDisposable
{
    private readonly Tensor?[] _keys;
    private readonly Tensor?[] _values;

    /// <summary>An empty cache for a model with <paramref name="numLayers"/> layers.</summary>
    public KvCache(int numLayers)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(numLayers);
        _keys = new Tensor?[numLayers];
        _values = new Tensor?[numLayers];
    }

    /// <summary>Number of layers this cache was made for.</summary>
    public int NumLayers => _keys.Length;

    /// <summary>Tokens cached so far (S), the same in every layer between calls.</summary>
    public long Length => _keys[0] is { } k ? k.shape[2] : 0;

    /// <summary>The cached keys and values of a layer, or nulls before the first call.</summary>
    public (Tensor? Keys, Tensor? Values) this[int layer] => (_keys[layer], _values[layer]);

    /// <summary>Appends a layer's new keys and values (B, Hkv, T, D) and returns all of them (B, Hkv, S + T, D).</summary>
    internal (Tensor Keys, Tensor Values) Append(int layer, Tensor keys, Tensor values)
    {
        if ((uint)layer >= (uint)_keys.Length)
            throw new ArgumentOutOfRangeException(nameof(layer), $"Layer {layer} does not exist in a cache for {_keys.Length} layers.");
        _keys[layer] = Replace(_keys[layer], keys);
        _values[layer] = Replace(_values[layer], values);
        return (_keys[layer]!, _values[layer]!);
    }

    private static Tensor Replace(Tensor? old, Tensor added)
    {
        var all = old is null ? added.contiguous() : cat([old, added], dim: 2);
        if (ReferenceEquals(all, added)) all = added.alias();   // keep the cache's handle apart from the caller's
        all.DetachFromDisposeScope();
        old?.Dispose();
        return all;
    }

    /// <summary>Releases the cached tensors; the cache is then empty.</summary>
    public void Dispose()
    {
        for (int i = 0; i < _keys.Length; i++)
        {
            _keys[i]?.Dispose(); _keys[i] = null;
            _values[i]?.Dispose(); _values[i] = null;
        }
    }
}
