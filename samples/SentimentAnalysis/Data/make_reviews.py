"""Writes reviews.tsv: a small, varied, labelled sentiment set for the sample's default run and fresh-clone tests.

Sentences are composed from hand-written fragments across several domains (restaurants, films, products, hotels,
apps, books), with varied sentence shapes, so a pretrained encoder has to generalise from wording rather than memorise
a template. Deterministic (seeded). Label 1 = positive.
"""
import random

rng = random.Random(20261128)

subjects = {
    "restaurant": ["the food", "the soup", "our waiter", "the dessert", "the pasta", "the service", "the steak", "the coffee", "this place", "the staff"],
    "film": ["the movie", "the plot", "the acting", "this film", "the soundtrack", "the ending", "the script", "the lead actor", "the dialogue", "the cinematography"],
    "product": ["the battery", "this phone", "the keyboard", "the headphones", "the charger", "the screen", "this blender", "the camera", "the build quality", "the laptop"],
    "hotel": ["the room", "the bed", "the front desk", "the breakfast", "the pool", "the view", "the hotel", "the shower", "the location", "the check-in"],
    "app": ["the app", "the update", "the interface", "the search feature", "the sync", "the new design", "the notifications", "the login", "the editor", "the dashboard"],
    "book": ["the novel", "the first chapter", "the characters", "the writing", "this book", "the story", "the translation", "the author's style", "the twist", "the audiobook"],
}
positive = ["was delicious", "was wonderful", "was excellent", "exceeded my expectations", "was a delight", "was superb",
            "worked perfectly", "was fantastic", "felt warm and welcoming", "was beautifully done", "was outstanding",
            "made my day", "was worth every penny", "was brilliant", "was lovely", "impressed everyone", "was flawless",
            "was genuinely moving", "was fast and reliable", "was a pleasant surprise"]
negative = ["was terrible", "was awful", "was a huge disappointment", "was bland and cold", "broke after a week",
            "was painfully slow", "was a waste of money", "felt cheap", "was rude and careless", "was boring",
            "was a mess", "never worked properly", "was dirty", "was overpriced", "was confusing", "ruined the evening",
            "was mediocre at best", "fell apart", "kept crashing", "was unbearable"]
pos_extras = ["I would happily come back.", "Highly recommended!", "I loved it.", "Five stars from me.", "Absolutely worth it.",
              "I will tell all my friends.", "Can't wait to try it again.", "What a great experience."]
neg_extras = ["I will not be back.", "Avoid it.", "I regret it.", "One star, and that is generous.", "Never again.",
              "I want my money back.", "Such a letdown.", "Save yourself the trouble."]
pos_openers = ["Honestly,", "Wow,", "To be fair,", "I have to say", "From start to finish,", "Surprisingly,", ""]
neg_openers = ["Sadly,", "Unfortunately,", "Honestly,", "I have to say", "From start to finish,", "Once again,", ""]
pos_intens = ["really", "truly", "absolutely", "simply", ""]
neg_intens = ["really", "just", "frankly", "simply", ""]
pos_short = ["Loved every minute of it.", "Great value and friendly people.", "A masterpiece.", "Best purchase this year.",
             "Everything was perfect.", "Would recommend to anyone.", "Pure joy from beginning to end.", "Top notch."]
neg_short = ["Worst experience ever.", "Not worth the price.", "A complete waste of time.", "Everything went wrong.",
             "Would not recommend.", "Deeply disappointing.", "Broken on arrival.", "Never buying this again."]
contrast_pos = ["{a} was slow, but {b} {p} and made up for it.", "I expected little, yet {b} {p}."]
contrast_neg = ["{a} looked nice, but {b} {n}.", "I had high hopes, but {b} {n}."]

plural = {"the headphones", "the notifications", "the characters", "the staff"}

def agree(subj, phrase):
    # "the characters were", not "was".
    return phrase.replace("was ", "were ", 1) if subj in plural and phrase.startswith("was ") else phrase

def cap(s):
    s = " ".join(s.split())
    return s[0].upper() + s[1:]

def sentence(label):
    domain = rng.choice(list(subjects))
    subj = rng.choice(subjects[domain])
    shape = rng.random()
    if shape < 0.12:
        return rng.choice(pos_short if label else neg_short)
    if shape < 0.27:
        a, b = rng.sample(subjects[domain], 2)
        t = rng.choice(contrast_pos if label else contrast_neg)
        t = t.replace("{a} was", "{a} were" if a in plural else "{a} was")
        return cap(t.format(a=a, b=b, p=agree(b, rng.choice(positive)), n=agree(b, rng.choice(negative))))
    opener = rng.choice(pos_openers if label else neg_openers)
    verb = rng.choice(positive if label else negative)
    inten = rng.choice(pos_intens if label else neg_intens)
    if inten and verb.startswith("was "):
        verb = "was " + inten + " " + verb[4:]
    s = cap(f"{opener} {subj} {agree(subj, verb)}.")
    if rng.random() < 0.5:
        s += " " + rng.choice(pos_extras if label else neg_extras)
    return s

rows, seen = [], set()
while len(rows) < 480:
    label = len(rows) % 2
    s = sentence(label)
    if s in seen:
        continue
    seen.add(s)
    rows.append((s, label))
rng.shuffle(rows)
with open("reviews.tsv", "w", encoding="utf-8", newline="\n") as f:
    f.write("sentence\tlabel\n")
    for s, l in rows:
        f.write(f"{s}\t{l}\n")
print(len(rows), "rows")
