using System.Text.Json.Nodes;

namespace MLNet.FineTune.Tests.Tasks.QuestionAnswering;

/// <summary>
/// A small SQuAD-format set made up on the spot: each context describes one person in a few shuffled sentences
/// (where they live, their car's colour, their age, their pet), and each question asks for one of those facts.
/// The v2.0 variant leaves a fact out of some contexts and still asks for it (unanswerable).
/// </summary>
internal static class SyntheticSquad
{
    private static readonly string[] Names = ["Anna", "Boris", "Clara", "David", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kira", "Liam", "Mona", "Nils", "Olga", "Pavel"];
    private static readonly string[] Cities = ["Paris", "Berlin", "Madrid", "Lisbon", "Vienna", "Oslo", "Prague", "Dublin", "Warsaw", "Athens", "Rome", "Bern"];
    private static readonly string[] Colours = ["red", "blue", "green", "yellow", "black", "white", "purple", "orange"];
    private static readonly string[] Pets = ["cat", "dog", "parrot", "horse", "rabbit", "goldfish", "turtle"];

    /// <summary>One fact: its sentence in the context, its question, and its answer (a word of the sentence).</summary>
    private sealed record Fact(string Sentence, string Question, string Answer);

    /// <summary>Writes a SQuAD JSON file of <paramref name="contexts"/> paragraphs and returns its path.</summary>
    /// <param name="unanswerableFraction">v2.0: the expected share of questions whose fact the context leaves out (at most 1 / questionsPerContext).</param>
    /// <param name="questionsPerContext">Questions asked about each context (1 to 4): asking several about one context
    /// shows the model that the question, not the context, decides the answer.</param>
    public static string Write(string path, int contexts, int seed, double unanswerableFraction = 0, int questionsPerContext = 4)
    {
        var rng = new Random(seed);
        var paragraphs = new JsonArray();
        int questionNumber = 0;
        for (int c = 0; c < contexts; c++)
        {
            var name = Names[rng.Next(Names.Length)];
            var facts = new List<Fact>
            {
                new($"{name} lives in {Cities[rng.Next(Cities.Length)]}.", $"Where does {name} live?", ""),
                new($"The car of {name} is {Colours[rng.Next(Colours.Length)]}.", $"What colour is the car of {name}?", ""),
                new($"{name} is {rng.Next(18, 90)} years old.", $"How old is {name}?", ""),
                new($"{name} has a {Pets[rng.Next(Pets.Length)]} at home.", $"What pet does {name} have?", ""),
            };
            // The answer is the fact's distinctive word: city, colour, age, pet.
            facts = facts.Select((f, i) => f with { Answer = f.Sentence.TrimEnd('.').Split(' ')[i switch { 0 => 3, 1 => 5, 2 => 2, _ => 3 }] }).ToList();
            var order = facts.OrderBy(_ => rng.Next()).ToList();
            // v2.0: leave one fact out of the context and ask about it among the others.
            Fact? missing = rng.NextDouble() < questionsPerContext * unanswerableFraction ? order[^1] : null;
            var context = string.Join(" ", order.Where(f => f != missing).Select(f => f.Sentence));
            var asked = facts.Where(f => f != missing).OrderBy(_ => rng.Next()).Take(missing is null ? questionsPerContext : questionsPerContext - 1).ToList();
            if (missing is not null) asked.Insert(rng.Next(asked.Count + 1), missing);
            var qas = new JsonArray();
            foreach (var fact in asked)
            {
                bool impossible = fact == missing;
                var answers = new JsonArray();
                if (!impossible)
                {
                    int start = context.IndexOf(fact.Sentence, StringComparison.Ordinal) + fact.Sentence.IndexOf(" " + fact.Answer, StringComparison.Ordinal) + 1;
                    if (context.Substring(start, fact.Answer.Length) != fact.Answer) throw new InvalidOperationException("answer offset");
                    answers.Add(new JsonObject { ["text"] = fact.Answer, ["answer_start"] = start });
                }
                var qa = new JsonObject { ["id"] = $"q{seed}-{questionNumber++}", ["question"] = fact.Question, ["answers"] = answers };
                if (unanswerableFraction > 0) qa["is_impossible"] = impossible;
                qas.Add(qa);
            }
            paragraphs.Add(new JsonObject { ["context"] = context, ["qas"] = qas });
        }
        var root = new JsonObject
        {
            ["version"] = unanswerableFraction > 0 ? "v2.0" : "1.1",
            ["data"] = new JsonArray { new JsonObject { ["title"] = "People", ["paragraphs"] = paragraphs } },
        };
        File.WriteAllText(path, root.ToJsonString());
        return path;
    }
}
