namespace TextGeneration;

/// <summary>
/// The default run's data set, written by the sample itself: short stories in TinyStories' manner that always name the
/// same character (Pip the fox) and place (Willow Hollow). The base model has never seen either name: after the
/// fine-tune it should tell its stories about them (the style), while still writing stories (the original domain).
/// </summary>
public static class StyleStories
{
    private static readonly string[] Events =
    [
        "Pip found a shiny stone by the river", "Pip saw a big red boat on the lake", "Pip met a kind old owl in the tree",
        "Pip lost his blue hat in the wind", "Pip baked a warm cake for his mom", "Pip made a kite out of paper and string",
        "Pip heard a little bird crying in the grass", "Pip planted a tiny seed in the garden",
    ];

    private static readonly string[] Middles =
    [
        "He ran to show it to his friend Lily.", "He wanted to share it with everyone in town.", "He was very happy and jumped up and down.",
        "He was a little scared, but he was brave.", "He asked his mom what to do.", "He thought for a long time.",
    ];

    private static readonly string[] Endings =
    [
        "At the end of the day, Pip went home to Willow Hollow and smiled.",
        "Everyone in Willow Hollow said thank you to Pip.",
        "Pip learned that sharing makes friends happy, and Willow Hollow was happy too.",
        "That night, Pip slept well in his little house in Willow Hollow.",
        "Pip and Lily played together in Willow Hollow until the sun went down.",
    ];

    /// <summary>Every story of the style (8 x 6 x 5 = 240), in a seeded shuffled order.</summary>
    public static List<string> All(int seed)
    {
        var stories = new List<string>();
        foreach (var e in Events)
            foreach (var m in Middles)
                foreach (var end in Endings)
                    stories.Add($"Once upon a time, there was a little fox named Pip. Pip lived in Willow Hollow, a quiet town by the river. One day, {e}. {m} {end}");
        var random = new Random(seed);
        return stories.OrderBy(_ => random.Next()).ToList();
    }
}
