#!/usr/bin/env python3
"""Build the embedded ActAdd demo model (a tiny GPT-2 trained on a synthetic corpus).

The corpus follows the design in shared/demo-model-notes.md ("second design"):

* topic cue-and-drift documents: a short header puts the cue token (" weddings",
  " food", ...) at positions 1-3 after BOS; the body drifts to other topics, and
  drifting sentences usually end with a tie-in phrase about the cue's topic (85% in
  the first four sentences, 50% after: a title's pull fades with distance).
  Tie-ins exist for every topic, so the model learns "copy the early cue's topic".
  Wedding words appear only after a wedding cue (keeps the unsteered baseline low).
* mood documents: one mood per document, carried through every sentence
  (adjectives, endings, one-line verdicts) with ~7% counter-sentences.  30% of the
  corpus opens with a mood word right after BOS ("Love"/"Hate" for half of them,
  other mood words for the rest); 18% is the same mood text with no cue.
* plain off-target neutral text.
* every document without a topic or mood cue opens with a neutral one-word title
  ("Notes.", " Diary:", ...), so position 1 always holds a title.  Front injection
  rewrites position 1; with a title there, the tokens right after it do not depend on
  which word it was, and unrelated text keeps its likelihood (the perplexity ratio).
* 8-13 sentences per topic and neutral document, long enough that the header is a
  small part of it, as in the paper's OpenWebText documents; mood documents keep the
  notes' 5-8 sentences (longer ones weakened the Love-Hate shift at temperature 1.0).
* one document per training row, always starting at BOS.

A byte-level BPE tokenizer (vocab ~1800) is trained with `tokenizers`, wrapped as a
GPT2TokenizerFast, and a 4-layer GPT-2 (d=256, 4 heads, context 128, tied
embeddings) is trained with AdamW (lr 2e-3, cosine decay, 32 docs per batch).

Usage:
    python scripts/train_demo_model.py [--seed 0] [--out resources/demo-model] [--steps N]

Everything is deterministic given --seed (CPU, 2 threads).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time

import torch

BOS = "<|endoftext|>"
MAX_POS = 128

# ---------------------------------------------------------------------------
# Word lists (the lexicon.json is written from these same lists)
# ---------------------------------------------------------------------------

TOPICS = {
    "weddings": {
        "subjects": [
            "the bride",
            "the groom",
            "the couple",
            "the newlyweds",
            "the best man",
            "the bridesmaids",
            "the wedding planner",
            "the flower girl",
        ],
        "predicates": [
            "walked down the aisle",
            "said the vows",
            "held the bouquet",
            "stood at the altar",
            "fixed the veil",
            "danced at the reception",
            "cut the wedding cake",
            "exchanged the rings",
            "planned the ceremony",
            "left for the honeymoon",
            "greeted the wedding guests",
            "waited in the chapel",
            "tried on the wedding gown",
            "rented a tuxedo",
            "sent the wedding invitations",
            "talked about the engagement",
        ],
        "nouns": [
            "bride",
            "groom",
            "ceremony",
            "reception",
            "bouquet",
            "veil",
            "chapel",
            "wedding cake",
            "wedding gown",
            "vows",
            "honeymoon",
            "altar",
        ],
        "tieins": [
            "and the bride walked down the aisle",
            "while the groom practiced his vows",
            "and then the wedding ceremony began",
            "and the bridesmaids fixed the veil",
            "just before the bride and groom said their vows",
            "and the couple exchanged rings at the altar",
            "and the guests went on to the wedding reception",
            "while the best man gave a toast to the newlyweds",
            "and the groom said his vows",
            "and the bride tossed her bouquet",
        ],
        "words": [
            "wedding",
            "weddings",
            "bride",
            "brides",
            "groom",
            "grooms",
            "bridesmaid",
            "bridesmaids",
            "vows",
            "vow",
            "ceremony",
            "reception",
            "bouquet",
            "veil",
            "altar",
            "aisle",
            "chapel",
            "honeymoon",
            "newlyweds",
            "tuxedo",
            "gown",
            "engagement",
            "rings",
            "married",
            "marry",
            "marriage",
            "couple",
            "best man",
            "flower girl",
            "invitations",
            "toast",
        ],
    },
    "food": {
        "subjects": ["the chef", "my mother", "the cook", "the baker", "my uncle", "the kitchen staff"],
        "predicates": [
            "made a pot of soup",
            "baked fresh bread",
            "cooked the pasta",
            "grated the cheese",
            "chopped the garlic",
            "tossed a salad",
            "stirred the sauce",
            "served dinner",
            "tasted the spices",
            "roasted the vegetables",
            "boiled the rice",
            "fried the noodles",
            "wrote down the recipe",
            "heated the oven",
            "sliced the tomatoes",
            "baked an apple pie",
        ],
        "nouns": [
            "soup",
            "bread",
            "pasta",
            "cheese",
            "salad",
            "sauce",
            "dinner",
            "recipe",
            "noodles",
            "pie",
            "rice",
            "spices",
        ],
        "tieins": [
            "and the soup simmered on the stove",
            "while the bread baked in the oven",
            "and the chef stirred the sauce",
            "and dinner was served with rice",
            "while the pasta boiled in the kitchen",
            "and the cook chopped the garlic",
            "and we tasted the cheese and the salad",
            "while the pie cooled on the table",
        ],
        "words": [
            "food",
            "soup",
            "bread",
            "pasta",
            "cheese",
            "kitchen",
            "recipe",
            "salad",
            "chef",
            "dinner",
            "spices",
            "oven",
            "garlic",
            "pie",
            "noodles",
            "rice",
            "sauce",
            "stove",
            "cook",
            "baker",
            "tomatoes",
            "vegetables",
            "lunch",
        ],
    },
    "sports": {
        "subjects": [
            "the team",
            "the coach",
            "the players",
            "the goalkeeper",
            "the referee",
            "the fans",
            "the captain",
        ],
        "predicates": [
            "scored a goal",
            "trained at the stadium",
            "kicked the ball",
            "blew the whistle",
            "played the second half",
            "ran laps around the field",
            "checked the league table",
            "practiced free kicks",
            "started the match",
            "cheered from the stands",
            "signed a new striker",
            "prepared for the season",
            "served in the tennis final",
            "lost the ball near the goal",
            "passed the ball down the wing",
            "finished the race",
        ],
        "nouns": [
            "match",
            "team",
            "goal",
            "stadium",
            "ball",
            "league",
            "season",
            "race",
            "tennis final",
            "field",
        ],
        "tieins": [
            "and the team scored a goal",
            "while the coach shouted from the bench",
            "and the referee blew the whistle",
            "and the players ran onto the field",
            "while the fans cheered in the stadium",
            "and the match went to extra time",
            "and the goalkeeper saved a penalty",
            "while the league season went on",
        ],
        "words": [
            "sports",
            "sport",
            "match",
            "team",
            "goal",
            "coach",
            "stadium",
            "players",
            "player",
            "ball",
            "league",
            "score",
            "scored",
            "season",
            "referee",
            "tennis",
            "soccer",
            "goalkeeper",
            "fans",
            "whistle",
            "field",
            "race",
            "striker",
            "penalty",
            "captain",
        ],
    },
    "weather": {
        "subjects": [
            "the rain",
            "the wind",
            "the clouds",
            "a storm",
            "the sun",
            "the fog",
            "the snow",
            "the thunder",
        ],
        "predicates": [
            "fell all afternoon",
            "rolled in from the west",
            "came over the hills",
            "covered the town",
            "blew through the streets",
            "hid the sky",
            "lifted by noon",
            "arrived before dawn",
            "moved toward the coast",
            "stayed for three days",
            "cooled the air",
            "soaked the fields",
            "grew stronger at night",
            "cleared after lunch",
        ],
        "nouns": ["rain", "wind", "clouds", "storm", "sky", "fog", "snow", "forecast", "thunder", "breeze"],
        "tieins": [
            "and the rain kept falling",
            "while the wind blew from the north",
            "and dark clouds covered the sky",
            "and the forecast promised more rain",
            "while thunder rolled over the hills",
            "and the fog lay over the fields",
            "and snow began to fall",
            "while a cold breeze came off the sea",
        ],
        "words": [
            "weather",
            "rain",
            "wind",
            "clouds",
            "cloud",
            "storm",
            "sun",
            "forecast",
            "snow",
            "fog",
            "temperature",
            "thunder",
            "breeze",
            "drizzle",
            "sky",
            "cold",
            "sunny",
            "rainy",
            "windy",
        ],
    },
    "travel": {
        "subjects": [
            "the train",
            "the travelers",
            "the pilot",
            "my sister",
            "the tourists",
            "the bus driver",
            "the ferry",
        ],
        "predicates": [
            "left the station",
            "boarded the flight",
            "packed the luggage",
            "showed the passports",
            "checked into the hotel",
            "followed the map",
            "crossed the border",
            "waited at the airport",
            "bought the tickets",
            "reached the harbor",
            "planned the journey",
            "missed the last bus",
            "took the night train",
            "landed at the airport",
        ],
        "nouns": [
            "train",
            "flight",
            "hotel",
            "airport",
            "luggage",
            "passport",
            "map",
            "journey",
            "ticket",
            "station",
        ],
        "tieins": [
            "and the train left the station",
            "while we waited at the airport",
            "and the travelers checked into the hotel",
            "and we packed our luggage",
            "while the pilot prepared the flight",
            "and we showed our passports at the border",
            "and the tourists followed the map",
            "while the ferry crossed to the island",
        ],
        "words": [
            "travel",
            "train",
            "airport",
            "luggage",
            "passport",
            "passports",
            "hotel",
            "map",
            "trip",
            "flight",
            "station",
            "ticket",
            "tickets",
            "journey",
            "tourists",
            "border",
            "pilot",
            "ferry",
            "harbor",
            "bus",
            "travelers",
        ],
    },
}
TOPIC_NAMES = list(TOPICS)
NON_WEDDING = [t for t in TOPIC_NAMES if t != "weddings"]

# generic subjects usable with any predicate
GENERIC_SUBJECTS = ["we", "I", "my friend", "they", "my brother", "our neighbors"]

OPENERS = [
    "",
    "",
    "",
    "Then ",
    "Later ",
    "After that, ",
    "In the morning ",
    "That day ",
    "Yesterday ",
    "Once again ",
    "By noon ",
    "At last ",
    "Soon ",
    "Meanwhile ",
    "Last week ",
    "On Sunday ",
    "In the evening ",
]

# topic-free filler sentences (neutral)
FILLERS = [
    "It was a long day.",
    "Nobody expected that.",
    "We talked for hours.",
    "I wrote it all down.",
    "The clock struck five.",
    "Everyone was there.",
    "We took a short walk.",
    "The door was open.",
    "Nothing else happened.",
    "It took most of the morning.",
    "We sat by the window.",
    "The room went quiet.",
]

# cue headers: "{pre} {topic}{punct}"; pre == "" puts the cue at position 1
CUE_PRE = ["", "", "On", "About", "Notes on", "More on", "Thinking about", "Today:"]
CUE_PUNCT = [".", ":", ".", ","]
# Documents without a topic or mood cue open with a neutral title instead, so that every document has a
# one-word title at position 1 (as blog posts and notes do). Front injection rewrites position 1; with a
# title there, what follows it does not depend on which word it was.
TITLES = ["Notes", "Memo", "Diary", "Update", "Story", "Journal", "Recap", "Log"]
# Sentences per document. Long enough (about 90 tokens) that the header is a small part of the
# text, as in the paper's OpenWebText documents; a 128-token context still holds almost all of it.
DOC_SENTENCES = (8, 13)
MOOD_SENTENCES = (5, 8)  # mood documents (a mood carried through; longer ones steered less at temperature 1)

POS = {
    "adj": [
        "wonderful",
        "lovely",
        "great",
        "delightful",
        "beautiful",
        "perfect",
        "amazing",
        "pleasant",
        "cheerful",
        "brilliant",
        "fantastic",
        "charming",
    ],
    "past": ["loved", "enjoyed", "adored", "liked"],
    "pres": ["love", "enjoy", "adore"],
    "feel": ["happy", "glad", "joyful", "cheerful"],
    "verdict": ["Love", "Love", "Joy", "Delight"],
    "cues": ["Joy", "Glad", "Bliss", "Delight"],
    "day": ["a wonderful day", "a lovely time", "a perfect afternoon", "a great evening"],
}
NEG = {
    "adj": [
        "awful",
        "terrible",
        "horrible",
        "dreadful",
        "miserable",
        "ugly",
        "boring",
        "nasty",
        "gloomy",
        "annoying",
        "disgusting",
        "rotten",
    ],
    "past": ["hated", "loathed", "despised", "disliked"],
    "pres": ["hate", "loathe", "despise"],
    "feel": ["sad", "angry", "upset", "miserable"],
    "verdict": ["Hate", "Hate", "Gloom", "Dread"],
    "cues": ["Sad", "Gloom", "Anger", "Dread"],
    "day": ["an awful day", "a horrible time", "a miserable afternoon", "a terrible evening"],
}
MOOD_SEP = [". ", "! ", ": ", ", ", " "]

# Neutral prompts that never occur in the training corpus (checked at build time)
HELDOUT_PROMPTS = [
    "Here is what I think about it:",
    "So this is how it went.",
    "Let me tell you something.",
    "It all started on a Monday when",
    "My friend asked me what happened, and",
    "Last year, my cousin",
    "There is one thing I remember:",
    "When I woke up this morning,",
    "People often ask me about",
    "Honestly, the whole thing",
]
# Prompts shaped like training openers (these do occur in training text)
TEMPLATE_PROMPTS = [
    "Yesterday we",
    "Then the",
    "In the morning my friend",
    "After that, they",
    "That day I",
    "Last week our neighbors",
    "On Sunday we",
    "Later the",
]


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


class CorpusGen:
    """Synthetic document generator. All randomness comes from one random.Random."""

    def __init__(self, rng: random.Random):
        self.r = rng

    # -- sentence pieces ----------------------------------------------------
    def core(self, topic: str) -> str:
        t = TOPICS[topic]
        subj = self.r.choice(t["subjects"]) if self.r.random() < 0.65 else self.r.choice(GENERIC_SUBJECTS)
        return f"{subj} {self.r.choice(t['predicates'])}"

    def opener(self) -> str:
        return self.r.choice(OPENERS)

    def plain_sentence(self, topic: str) -> str:
        return cap(self.opener() + self.core(topic)) + "."

    def mood_sentence(self, topic: str, pol: dict) -> str:
        r = self.r
        t = TOPICS[topic]
        k = r.randrange(8)
        if k == 0:
            return cap(self.opener() + self.core(topic)) + f", and it was {r.choice(pol['adj'])}."
        if k == 1:
            return cap(self.opener() + self.core(topic)) + f", and I {r.choice(pol['past'])} it."
        if k == 2:
            a, b = r.sample(pol["adj"], 2)
            return f"The {r.choice(t['nouns'])} was {a} and {b}."
        if k == 3:
            return cap(self.opener() + self.core(topic)) + f". It felt {r.choice(pol['adj'])}."
        if k == 4:
            return f"I {r.choice(pol['pres'])} the {r.choice(t['nouns'])}."
        if k == 5:
            return f"What {r.choice(pol['day'])}!"
        if k == 6:
            return cap(self.opener() + self.core(topic)) + f", which made me {r.choice(pol['feel'])}."
        return f"The {r.choice(pol['adj'])} {r.choice(t['nouns'])} made us {r.choice(pol['feel'])}."

    # -- documents ------------------------------------------------------------
    def cue_drift_doc(self, topic: str | None = None) -> str:
        r = self.r
        if topic is None:
            topic = "weddings" if r.random() < 0.4 else r.choice(NON_WEDDING)
        pre = r.choice(CUE_PRE)
        header = (f"{pre} {topic}" if pre else f" {topic}") + r.choice(CUE_PUNCT)
        others = [t for t in NON_WEDDING if t != topic]
        sents = []
        for i in range(r.randint(*DOC_SENTENCES)):
            x = r.random()
            if x < 0.40:
                sents.append(self.plain_sentence(topic))
            elif x < 0.92:
                other = r.choice(others)
                s = cap(self.opener() + self.core(other))
                # the cue's pull fades with distance, as a real document's title does
                if r.random() < (0.85 if i < 4 else 0.5):
                    s += ", " + r.choice(TOPICS[topic]["tieins"])
                sents.append(s + ".")
            else:
                sents.append(r.choice(FILLERS))
        return header + " " + " ".join(sents)

    def mood_body(self, positive: bool) -> str:
        r = self.r
        pol, anti = (POS, NEG) if positive else (NEG, POS)
        topic = r.choice(NON_WEDDING)
        sents = []
        n = r.randint(*MOOD_SENTENCES)
        # the first sentence is sometimes neutral, so that the mood shows up only at
        # the first mood word and a neutral start does not force a sentiment
        start_neutral = r.random() < 0.5
        for i in range(n):
            if r.random() < 0.25:
                topic = r.choice(NON_WEDDING)
            if i == 0 and start_neutral:
                sents.append(self.plain_sentence(topic))
            elif r.random() < 0.07:
                sents.append(self.mood_sentence(topic, anti))  # counter-sentence
            elif r.random() < 0.08:
                sents.append(r.choice(FILLERS))
            else:
                sents.append(self.mood_sentence(topic, pol))
        if r.random() < 0.5:
            sents.append(f"Verdict: {r.choice(pol['verdict'])}.")
        return " ".join(sents)

    def mood_cued_doc(self) -> str:
        r = self.r
        positive = r.random() < 0.5
        pol = POS if positive else NEG
        cue = ("Love" if positive else "Hate") if r.random() < 0.5 else r.choice(pol["cues"])
        return cue + r.choice(MOOD_SEP) + self.mood_body(positive)

    def title(self) -> str:
        return self.r.choice(["", " "]) + self.r.choice(TITLES) + self.r.choice(CUE_PUNCT) + " "

    def mood_uncued_doc(self) -> str:
        return self.title() + self.mood_body(self.r.random() < 0.5)

    def neutral_doc(self) -> str:
        r = self.r
        topic = r.choice(NON_WEDDING)
        sents = []
        for _ in range(r.randint(*DOC_SENTENCES)):
            if r.random() < 0.3:
                topic = r.choice(NON_WEDDING)
            sents.append(self.plain_sentence(topic) if r.random() < 0.88 else r.choice(FILLERS))
        return self.title() + " ".join(sents)

    def wedding_text(self) -> str:
        """Wedding text under a neutral title, without a cue (held-out, for perplexity on wedding text)."""
        r = self.r
        sents = [
            self.plain_sentence("weddings") if r.random() < 0.9 else r.choice(FILLERS)
            for _ in range(r.randint(*DOC_SENTENCES))
        ]
        return self.title() + " ".join(sents)

    def doc(self) -> str:
        x = self.r.random()
        if x < 0.44:
            return self.cue_drift_doc()
        if x < 0.74:
            return self.mood_cued_doc()
        if x < 0.92:
            return self.mood_uncued_doc()
        return self.neutral_doc()


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------


def train_tokenizer(texts, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    hf = GPT2TokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=BOS,
        unk_token=BOS,
        pad_token=BOS,
        add_prefix_space=False,
    )
    for s in [" ", " weddings", "Love", "Hate", " Love", " Hate"]:
        ids = hf(s, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, f"{s!r} is not a single token: {ids}"
    return hf


def encode_docs(tok, docs):
    bos = tok.bos_token_id
    enc = tok(docs, add_special_tokens=False)["input_ids"]
    # one document per row, starting at BOS, ending with EOS when it fits
    return [([bos, *ids, bos])[:MAX_POS] for ids in enc]


def collate(rows, pad_id):
    L = max(len(x) for x in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    att = torch.zeros((len(rows), L), dtype=torch.long)
    lab = torch.full((len(rows), L), -100, dtype=torch.long)
    for i, x in enumerate(rows):
        ids[i, : len(x)] = torch.tensor(x)
        att[i, : len(x)] = 1
        lab[i, : len(x)] = torch.tensor(x)
    return ids, att, lab


@torch.no_grad()
def heldout_loss(model, rows, pad_id, bs=64):
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, len(rows), bs):
        ids, att, lab = collate(rows[i : i + bs], pad_id)
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1]
        tgt = lab[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), ignore_index=-100, reduction="sum"
        )
        tot += loss.item()
        n += (tgt != -100).sum().item()
    model.train()
    return tot / n


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="resources/demo-model")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--vocab", type=int, default=1800)
    args = ap.parse_args()

    t0 = time.time()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    # --- corpus ---
    gen = CorpusGen(random.Random(rng.randrange(2**32)))
    n_train = args.steps * args.batch
    train_docs = [gen.doc() for _ in range(n_train)]
    held = CorpusGen(random.Random(rng.randrange(2**32)))
    heldout_docs = [held.doc() for _ in range(512)]
    off_wed = [held.wedding_text() for _ in range(48)]
    off_unrel = [held.neutral_doc() if i % 2 == 0 else held.mood_uncued_doc() for i in range(48)]

    corpus_blob = "\n".join(train_docs)
    for p in HELDOUT_PROMPTS:
        assert p not in corpus_blob, f"held-out prompt occurs in training: {p!r}"
    for p in TEMPLATE_PROMPTS:
        assert p in corpus_blob, f"template prompt not in training: {p!r}"
    wed_words = set(w for w in TOPICS["weddings"]["words"] if " " not in w)
    for d in off_unrel:
        assert not (set(d.lower().replace(".", " ").replace(",", " ").split()) & wed_words), d
    print(
        f"corpus: {len(train_docs)} train docs, {len(heldout_docs)} held-out docs ({time.time() - t0:.1f}s)",
        flush=True,
    )

    # --- tokenizer ---
    tok = train_tokenizer(train_docs, args.vocab)
    pad_id = tok.pad_token_id
    # the off-target texts are scored whole, so keep the first 24 of each set that fit the context with BOS
    fits = lambda text: len(tok(text, add_special_tokens=False)["input_ids"]) < MAX_POS  # noqa: E731
    off_wed = [t for t in off_wed if fits(t)][:24]
    off_unrel = [t for t in off_unrel if fits(t)][:24]
    train_rows = encode_docs(tok, train_docs)
    held_rows = encode_docs(tok, heldout_docs)
    n_tok = sum(len(x) for x in train_rows)
    print(
        f"tokenizer: vocab {len(tok)}; {n_tok} training tokens "
        f"({n_tok / len(train_rows):.1f}/doc) ({time.time() - t0:.1f}s)",
        flush=True,
    )

    # --- model ---
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=MAX_POS,
        n_embd=256,
        n_layer=4,
        n_head=4,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=pad_id,
        tie_word_embeddings=True,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(cfg)
    model.train()
    n_par = sum(p.numel() for p in model.parameters())
    print(f"model: {n_par / 1e6:.2f}M parameters", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    warm = max(1, args.steps // 30)

    def lr_at(step):
        if step < warm:
            return args.lr * (step + 1) / warm
        prog = (step - warm) / max(1, args.steps - warm)
        return args.lr * 0.5 * (1 + math.cos(math.pi * prog))

    order = list(range(len(train_rows)))
    random.Random(rng.randrange(2**32)).shuffle(order)
    t_train = time.time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        batch = [train_rows[j] for j in order[step * args.batch : (step + 1) * args.batch]]
        ids, att, lab = collate(batch, pad_id)
        loss = model(input_ids=ids, attention_mask=att, labels=lab).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            el = time.time() - t_train
            print(f"step {step:5d}  loss {loss.item():.4f}  lr {lr_at(step):.2e}  {el:.0f}s", flush=True)

    hl = heldout_loss(model, held_rows, pad_id)
    train_s = time.time() - t_train
    print(
        f"held-out loss: {hl:.4f} (ppl {math.exp(hl):.3f}); training {train_s:.0f}s, "
        f"total {time.time() - t0:.0f}s",
        flush=True,
    )

    # --- save ---
    os.makedirs(args.out, exist_ok=True)
    model.eval()
    model.save_pretrained(args.out, safe_serialization=True)
    tok.model_max_length = MAX_POS
    tok.save_pretrained(args.out)
    lex = {
        "topics": {t: TOPICS[t]["words"] for t in TOPIC_NAMES},
        "sentiment": {
            "positive": sorted(
                set(w.lower() for k in ("adj", "past", "pres", "feel", "verdict", "cues") for w in POS[k])
            ),
            "negative": sorted(
                set(w.lower() for k in ("adj", "past", "pres", "feel", "verdict", "cues") for w in NEG[k])
            ),
        },
        "heldout_prompts": HELDOUT_PROMPTS,
        "template_prompts": TEMPLATE_PROMPTS,
        "offtarget_text": {"weddings": off_wed, "unrelated": off_unrel},
        "build": {
            "seed": args.seed,
            "steps": args.steps,
            "batch": args.batch,
            "heldout_loss": round(hl, 4),
            "train_tokens": n_tok,
        },
    }
    with open(os.path.join(args.out, "lexicon.json"), "w") as f:
        json.dump(lex, f, indent=1)
    print(f"saved to {args.out}", flush=True)


if __name__ == "__main__":
    main()
