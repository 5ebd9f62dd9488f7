namespace MLNet.FineTune.Training;

/// <summary>
/// The order in which training examples are visited: a seeded shuffle per epoch, cut into batches, optionally grouped
/// by length. The order of epoch <c>e</c> depends only on (seed, e, example count, lengths), never on how much random
/// state the model consumed, so a resumed run visits exactly the batches the uninterrupted run would have.
/// </summary>
/// <remarks>
/// Length bucketing (as Hugging Face's LengthGroupedSampler): the shuffled indices are cut into mega-batches of
/// <c>megaBatchBatches * batchSize</c> examples, each mega-batch is sorted by length (longest first, ties kept in
/// shuffled order), cut into batches, and the list of all batches is shuffled again. Batches then hold examples of
/// similar length (less padding) while the order of batches stays random.
/// </remarks>
internal sealed class BatchSampler
{
    private readonly int _exampleCount, _batchSize, _seed, _megaBatchBatches;
    private readonly IReadOnlyList<int>? _lengths;

    /// <param name="exampleCount">Number of training examples (indices 0 .. count-1).</param>
    /// <param name="batchSize">Examples per batch; the last batch of an epoch may be smaller.</param>
    /// <param name="seed">Seed of the shuffle.</param>
    /// <param name="lengths">Length of each example (tokens); required for bucketing.</param>
    /// <param name="lengthBucketing">Group examples of similar length (see remarks).</param>
    /// <param name="megaBatchBatches">Batches per mega-batch when bucketing.</param>
    public BatchSampler(int exampleCount, int batchSize, int seed, IReadOnlyList<int>? lengths = null, bool lengthBucketing = false, int megaBatchBatches = 50)
    {
        if (exampleCount < 1) throw new ArgumentOutOfRangeException(nameof(exampleCount), exampleCount, "There must be at least one training example.");
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "Batch size must be at least 1.");
        if (megaBatchBatches < 1) throw new ArgumentOutOfRangeException(nameof(megaBatchBatches), megaBatchBatches, "Mega-batch size must be at least 1 batch.");
        if (lengthBucketing && lengths is null)
            throw new ArgumentException("Length bucketing needs the length of every example (TrainingSetup.ExampleLengths).", nameof(lengths));
        if (lengths is not null && lengths.Count != exampleCount)
            throw new ArgumentException($"ExampleLengths has {lengths.Count} entries but there are {exampleCount} examples.", nameof(lengths));
        _exampleCount = exampleCount; _batchSize = batchSize; _seed = seed; _megaBatchBatches = megaBatchBatches;
        _lengths = lengthBucketing ? lengths : null;
    }

    /// <summary>Batches in every epoch: ceil(exampleCount / batchSize).</summary>
    public int BatchesPerEpoch => (_exampleCount + _batchSize - 1) / _batchSize;

    /// <summary>The batches of 0-based epoch <paramref name="epoch"/>, each a list of example indices.</summary>
    public IReadOnlyList<int[]> Epoch(int epoch)
    {
        var rng = new SplitMix64(Mix((ulong)(uint)_seed, (ulong)(uint)epoch));
        var order = Enumerable.Range(0, _exampleCount).ToArray();
        rng.Shuffle(order);
        if (_lengths is null) return Chunk(order);

        int megaSize = checked(_megaBatchBatches * _batchSize);
        var batches = new List<int[]>(BatchesPerEpoch);
        for (int start = 0; start < order.Length; start += megaSize)
        {
            var mega = order.AsSpan(start, Math.Min(megaSize, order.Length - start)).ToArray();
            // Stable sort, longest first: ties keep their shuffled order so the result depends on the seed alone.
            var sorted = mega.Select((index, position) => (index, position))
                .OrderByDescending(x => _lengths[x.index]).ThenBy(x => x.position).Select(x => x.index).ToArray();
            batches.AddRange(Chunk(sorted));
        }
        var shuffled = batches.ToArray();
        rng.Shuffle(shuffled);
        return shuffled;
    }

    private List<int[]> Chunk(int[] indices)
    {
        var result = new List<int[]>((indices.Length + _batchSize - 1) / _batchSize);
        for (int start = 0; start < indices.Length; start += _batchSize)
            result.Add(indices.AsSpan(start, Math.Min(_batchSize, indices.Length - start)).ToArray());
        return result;
    }

    private static ulong Mix(ulong seed, ulong epoch) => seed * 0x9E3779B97F4A7C15UL ^ (epoch + 0x632BE59BD9B4E019UL) * 0xBF58476D1CE4E5B9UL;

    /// <summary>SplitMix64 (Steele, Lea &amp; Flood 2014): a tiny generator whose sequence we control, so data order
    /// is identical across .NET versions and platforms.</summary>
    private struct SplitMix64(ulong state)
    {
        private ulong _state = state;

        public ulong Next()
        {
            ulong z = _state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }

        /// <summary>Uniform in [0, bound) without modulo bias (rejection sampling).</summary>
        public int NextBelow(int bound)
        {
            ulong limit = ulong.MaxValue - ulong.MaxValue % (ulong)bound;
            ulong x;
            do x = Next(); while (x >= limit);
            return (int)(x % (ulong)bound);
        }

        /// <summary>Fisher-Yates shuffle in place.</summary>
        public void Shuffle<T>(T[] items)
        {
            for (int i = items.Length - 1; i > 0; i--)
            {
                int j = NextBelow(i + 1);
                (items[i], items[j]) = (items[j], items[i]);
            }
        }
    }
}
