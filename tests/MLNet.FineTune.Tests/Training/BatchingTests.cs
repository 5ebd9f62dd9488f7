using MLNet.FineTune.Training;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Training;

[TestClass]
public sealed class BatchingTests
{
    [TestMethod]
    public void EpochsArePermutationsDeterministicPerSeed()
    {
        var sampler = new BatchSampler(103, 10, seed: 5);
        Assert.AreEqual(11, sampler.BatchesPerEpoch);
        var e0 = sampler.Epoch(0);
        CollectionAssert.AreEqual(Enumerable.Range(0, 103).ToArray(), e0.SelectMany(b => b).Order().ToArray(), "each example exactly once");
        Assert.AreEqual(3, e0[^1].Length, "the last batch holds the remainder");
        CollectionAssert.AreEqual(e0.SelectMany(b => b).ToArray(), new BatchSampler(103, 10, seed: 5).Epoch(0).SelectMany(b => b).ToArray(), "same seed, same order");
        CollectionAssert.AreNotEqual(e0.SelectMany(b => b).ToArray(), sampler.Epoch(1).SelectMany(b => b).ToArray(), "each epoch reshuffles");
        CollectionAssert.AreNotEqual(e0.SelectMany(b => b).ToArray(), new BatchSampler(103, 10, seed: 6).Epoch(0).SelectMany(b => b).ToArray(), "another seed, another order");
        // Batch size only cuts the same permutation differently (what makes k micro-batches equal one big batch).
        CollectionAssert.AreEqual(e0.SelectMany(b => b).ToArray(), new BatchSampler(103, 20, seed: 5).Epoch(0).SelectMany(b => b).ToArray());
    }

    [TestMethod]
    public void LengthBucketingGroupsSimilarLengthsAndCutsPadding()
    {
        var random = new Random(11);
        var lengths = Enumerable.Range(0, 1000).Select(_ => random.Next(5, 200)).ToArray();
        var plain = new BatchSampler(1000, 16, seed: 1, lengths);
        var bucketed = new BatchSampler(1000, 16, seed: 1, lengths, lengthBucketing: true, megaBatchBatches: 10);
        long Padding(IReadOnlyList<int[]> batches) => batches.Sum(b => (long)b.Max(i => lengths[i]) * b.Length - b.Sum(i => lengths[i]));
        var epoch = bucketed.Epoch(0);
        long plainPad = Padding(plain.Epoch(0)), bucketPad = Padding(epoch);
        Console.WriteLine($"padding tokens per epoch: shuffled {plainPad}, length-bucketed {bucketPad} ({100.0 * bucketPad / plainPad:F1}%)");
        CollectionAssert.AreEqual(Enumerable.Range(0, 1000).ToArray(), epoch.SelectMany(b => b).Order().ToArray(), "each example exactly once");
        Assert.IsTrue(bucketPad * 4 < plainPad, "bucketing should cut padding by far more than 4x here");
        foreach (var batch in epoch)   // inside a batch: longest first
            for (int i = 1; i < batch.Length; i++) Assert.IsTrue(lengths[batch[i - 1]] >= lengths[batch[i]]);
        CollectionAssert.AreEqual(epoch.SelectMany(b => b).ToArray(),
            new BatchSampler(1000, 16, seed: 1, lengths, lengthBucketing: true, megaBatchBatches: 10).Epoch(0).SelectMany(b => b).ToArray(), "deterministic");
        Assert.IsFalse(epoch.Select(b => lengths[b[0]]).SequenceEqual(epoch.Select(b => lengths[b[0]]).OrderDescending()), "batches are shuffled, not sorted");
    }

    [TestMethod]
    public void PadsRightAndLeftWithMasks()
    {
        MLNet.FineTune.Runtime.TorchRuntime.EnsureLoaded();
        IReadOnlyList<long>[] rows = [[101, 7, 102], [101, 102], [101, 5, 6, 7, 102]];
        var right = Collate.Encoder(rows, padTokenId: 0, PaddingSide.Right, tokenTypeIds: [[0, 0, 0], [0, 0], [0, 0, 1, 1, 1]]);
        CollectionAssert.AreEqual(new long[] { 3, 5 }, right.InputIds.shape);
        CollectionAssert.AreEqual(new long[] { 101, 7, 102, 0, 0, 101, 102, 0, 0, 0, 101, 5, 6, 7, 102 }, right.InputIds.data<long>().ToArray());
        CollectionAssert.AreEqual(new long[] { 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1 }, right.AttentionMask.data<long>().ToArray());
        CollectionAssert.AreEqual(new long[] { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1 }, right.TokenTypeIds!.data<long>().ToArray());

        var left = Collate.Encoder(rows, padTokenId: 9, PaddingSide.Left, padToMultipleOf: 4);
        CollectionAssert.AreEqual(new long[] { 3, 8 }, left.InputIds.shape);
        CollectionAssert.AreEqual(new long[] { 9, 9, 9, 9, 9, 101, 7, 102 }, left.InputIds[0].data<long>().ToArray());
        CollectionAssert.AreEqual(new long[] { 0, 0, 0, 0, 0, 1, 1, 1 }, left.AttentionMask[0].data<long>().ToArray());
        CollectionAssert.AreEqual(new long[] { 0, 0, 0, 1, 1, 1, 1, 1 }, left.AttentionMask[2].data<long>().ToArray());
        Assert.IsNull(left.TokenTypeIds);

        using var labels = Collate.PadRows(new IReadOnlyList<int>[] { [4, 5], [6] }, padValue: -100);
        CollectionAssert.AreEqual(new long[] { 4, 5, 6, -100 }, labels.data<long>().ToArray());
    }

    [TestMethod]
    public void RejectsMismatchedSegmentIds()
    {
        MLNet.FineTune.Runtime.TorchRuntime.EnsureLoaded();
        var e = Assert.ThrowsExactly<ArgumentException>(() => Collate.Encoder([[1, 2, 3]], 0, tokenTypeIds: [[0, 0]]));
        StringAssert.Contains(e.Message, "Row 0");
    }
}
