"""Writes the sample's small SQuAD v1.1-format files (train.json, test.json) from the paragraphs below.

The paragraphs describe made-up places, people and things, written for this sample. Each question's answer is a
span of its paragraph; answer_start is found here, so the files stay consistent when a paragraph is edited.
Run: python3 make_squad.py (from this folder).
"""
import json

PARAGRAPHS = [
    ("Brindlecombe",
     "The village of Brindlecombe sits on the eastern bank of the Marrow River. It was founded in 1642 by wool "
     "merchants from the coast. Today about 3,400 people live there, and its stone bridge, built in 1791, is the "
     "oldest crossing on the river. Every October the village holds a lantern festival that draws visitors from "
     "the whole valley.",
     [("Which river is Brindlecombe on?", "Marrow River"),
      ("When was Brindlecombe founded?", "1642"),
      ("Who founded the village?", "wool merchants from the coast"),
      ("When was the stone bridge built?", "1791"),
      ("How many people live in Brindlecombe?", "about 3,400"),
      ("When does the village hold its lantern festival?", "Every October")]),
    ("Copper Kettle",
     "Tessa Okonkwo opened the Copper Kettle bakery in 2009 after twelve years as a ship's cook. The bakery is "
     "known for its rye bread, which is baked in a wood-fired oven every morning at four o'clock. In 2018 the shop "
     "moved to a larger building on Harbour Street, and it now employs nine bakers.",
     [("Who opened the Copper Kettle bakery?", "Tessa Okonkwo"),
      ("What bread is the bakery known for?", "rye bread"),
      ("What kind of oven is the bread baked in?", "a wood-fired oven"),
      ("What did Tessa Okonkwo work as before opening the bakery?", "a ship's cook"),
      ("Where did the shop move in 2018?", "Harbour Street"),
      ("How many bakers work at the Copper Kettle?", "nine")]),
    ("Halvard Observatory",
     "The Halvard Observatory stands on a ridge 2,150 metres above sea level. Its main telescope has a mirror 4.2 "
     "metres wide and was first used in 1987. Astronomers chose the site because the air is dry and the nights are "
     "clear for more than 250 days a year. The observatory is run by a consortium of five universities.",
     [("How high above sea level is the observatory?", "2,150 metres"),
      ("How wide is the mirror of the main telescope?", "4.2 metres"),
      ("When was the main telescope first used?", "1987"),
      ("Who runs the observatory?", "a consortium of five universities"),
      ("For how many days a year are the nights clear?", "more than 250 days")]),
    ("Pip",
     "Pip is a small delivery robot designed by students at the Lindqvist Institute. It carries parcels of up to "
     "eight kilograms and travels at a walking pace of about five kilometres per hour. Pip finds its way with four "
     "cameras and a map of the campus, and it returns to its charging station when its battery falls below twenty "
     "percent.",
     [("Who designed Pip?", "students at the Lindqvist Institute"),
      ("How heavy can Pip's parcels be?", "up to eight kilograms"),
      ("How fast does Pip travel?", "about five kilometres per hour"),
      ("How many cameras does Pip use?", "four"),
      ("When does Pip return to its charging station?", "when its battery falls below twenty percent")]),
    ("Greyfield Public Library",
     "The Greyfield Public Library was opened in 1923 with a gift from the engineer Margaret Doyle. Its reading "
     "room has a glass ceiling designed to let in daylight. The library lends books, maps and musical instruments, "
     "and it holds a chess club every Thursday evening. In 2015 a children's wing was added on the north side.",
     [("When was the Greyfield Public Library opened?", "1923"),
      ("Whose gift paid for the library?", "Margaret Doyle"),
      ("What does the reading room have?", "a glass ceiling"),
      ("When does the chess club meet?", "every Thursday evening"),
      ("What was added to the library in 2015?", "a children's wing"),
      ("What does the library lend besides books?", "maps and musical instruments")]),
    ("Lake Ostra",
     "Lake Ostra is a cold mountain lake that freezes every winter from December to March. It is 14 kilometres "
     "long and 90 metres deep at its deepest point. The lake is home to a rare silver trout, and fishing is allowed "
     "only from June to September. A ferry connects the towns of Vell and Ardo on opposite shores.",
     [("When does Lake Ostra freeze?", "from December to March"),
      ("How long is Lake Ostra?", "14 kilometres"),
      ("How deep is the lake at its deepest point?", "90 metres"),
      ("Which rare fish lives in the lake?", "silver trout"),
      ("Which towns does the ferry connect?", "Vell and Ardo"),
      ("When is fishing allowed?", "from June to September")]),
    ("Norrby race",
     "The Norrby cycling race covers 180 kilometres of coastal roads and is held every May. The first race, in "
     "1956, had only eleven riders. The route climbs the Skarn Pass, the highest point of the race at 940 metres. "
     "The winner receives a bronze bell instead of a trophy.",
     [("How long is the Norrby cycling race?", "180 kilometres"),
      ("When is the race held?", "every May"),
      ("How many riders took part in the first race?", "eleven"),
      ("What does the winner receive?", "a bronze bell"),
      ("What is the highest point of the race?", "the Skarn Pass")]),
    ("Fennel",
     "Fennel is a plant with feathery leaves and a mild taste of anise. Gardeners sow its seeds in spring, and the "
     "bulbs are ready to harvest after about ninety days. The plant grows best in full sun and well-drained soil. "
     "Its yellow flowers attract bees and other pollinators.",
     [("What does fennel taste of?", "anise"),
      ("When do gardeners sow fennel seeds?", "in spring"),
      ("What colour are fennel's flowers?", "yellow"),
      ("How long until the bulbs are ready to harvest?", "about ninety days"),
      ("What do fennel's flowers attract?", "bees and other pollinators"),
      ("Where does fennel grow best?", "in full sun and well-drained soil")]),
]

TEST_PER_PARAGRAPH = 2  # the last questions of each paragraph are held out


def squad(split):
    articles = []
    for title, context, questions in PARAGRAPHS:
        chosen = questions[:-TEST_PER_PARAGRAPH] if split == "train" else questions[-TEST_PER_PARAGRAPH:]
        qas = []
        for number, (question, answer) in enumerate(questions):
            if (question, answer) not in chosen:
                continue
            start = context.find(answer)
            assert start >= 0, f"'{answer}' is not in the paragraph '{title}'"
            qas.append({"id": f"{title.lower().replace(' ', '-')}-{number + 1}", "question": question,
                        "answers": [{"text": answer, "answer_start": start}]})
        articles.append({"title": title, "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "1.1", "data": articles}


for split in ("train", "test"):
    with open(f"{split}.json", "w", encoding="utf-8") as f:
        json.dump(squad(split), f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(split, sum(len(a["paragraphs"][0]["qas"]) for a in squad(split)["data"]), "questions")
