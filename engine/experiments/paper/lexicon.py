"""The inputs of the paper's experiments: the two ActAdd pairs, word lists, prompts and off-target texts.

A model folder's `lexicon.json` (the demo model's format) replaces the built-in `DEFAULT_LEXICON`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import InvalidInputError
from engine.models import LoadedModel

TOPIC_PAIR = (" weddings", " ")
SENTIMENT_PAIR = ("Love", "Hate")


@dataclass
class Lexicon:
    topic_words: list[str]  # the wedding topic
    positive: list[str]
    negative: list[str]
    heldout_prompts: list[str]  # prompts that never occur in the model's training text
    template_prompts: list[str]  # prompts shaped like the training text (may be empty)
    offtarget_topic: list[str]  # held-out text on the wedding topic
    offtarget_unrelated: list[str]  # held-out text without wedding words
    source: str = "built-in"
    # prompts that already lean one way, for sentiment steering against the grain
    positive_prompts: list[str] = field(default_factory=lambda: list(POSITIVE_PROMPTS))
    negative_prompts: list[str] = field(default_factory=lambda: list(NEGATIVE_PROMPTS))


_DEFAULT_TOPIC_WORDS = (
    "wedding weddings bride brides groom grooms bridesmaid bridesmaids vows ceremony reception "
    "bouquet veil altar aisle chapel honeymoon newlyweds married marry marriage engagement "
    "engaged fiance fiancee tuxedo gown"
)

_DEFAULT_POSITIVE = (
    "love loved lovely happy glad joy joyful wonderful great good beautiful delightful perfect "
    "amazing enjoy enjoyed pleasant excellent fantastic cheerful brilliant adore adored best"
)

_DEFAULT_NEGATIVE = (
    "hate hated sad angry awful terrible horrible bad worst ugly miserable dreadful boring "
    "nasty annoying disgusting upset loathe despise gloomy rotten poor dislike disliked"
)

POSITIVE_PROMPTS: tuple[str, ...] = (
    "I had the best day at the park with my friends, and",
    "The concert last night was wonderful, and",
    "My grandmother's cooking always makes me happy because",
    "We finally won the championship, so",
    "The new puppy is so sweet that",
    "Thanks to my kind neighbors, the move was easy and",
)
NEGATIVE_PROMPTS: tuple[str, ...] = (
    "The traffic this morning was awful, and",
    "I lost my wallet and my phone died, so",
    "The food at that restaurant was disgusting, and",
    "My boss yelled at me again today, and",
    "The rain ruined our trip, and",
    "I failed the exam after weeks of study, so",
)

# Off-target text, written for this project (not model output): plain English on the wedding topic, and
# on everyday topics without a wedding word, two sentences each.
WEDDING_TEXT = (
    "The bride walked slowly down the aisle while the groom waited at the altar. Her father held her arm "
    "and smiled at the guests.",
    "After the ceremony the newlyweds greeted their friends at the reception. The band played until "
    "midnight and nobody wanted to leave.",
    "She tried on three wedding dresses before she found the right one. Her sister cried when she saw it.",
    "The couple wrote their own vows and read them in a small stone chapel by the sea.",
    "My cousin asked me to be his best man, so I spent the week writing a short speech about him.",
    "The wedding cake had four layers and was covered in white roses made of sugar.",
    "They sent the invitations in March and booked a hall for a hundred and twenty guests.",
    "The flower girl threw petals on the floor, and the ring bearer dropped the rings twice.",
    "After the honeymoon in Italy, they moved into a small flat near the river.",
    "Planning a wedding takes months: the venue, the music, the photographer and the seating plan.",
    "The bridesmaids wore pale blue dresses and carried bouquets of daisies.",
    "At the end of the night the bride and groom cut the cake and danced their first dance.",
)
UNRELATED_TEXT = (
    "The train left the station at noon and reached the coast by evening. We bought fish and chips and "
    "walked along the harbour.",
    "The team trained at the stadium all week, and the coach planned every detail of the next match.",
    "My uncle made a pot of vegetable soup and baked fresh bread for dinner on Sunday.",
    "The rain fell all afternoon, and the wind blew leaves through the empty streets of the town.",
    "To repair the bicycle, first remove the wheel, then find the hole in the tube and patch it.",
    "The museum opened a new room about ancient Egypt, with tools, jewellery and painted boxes.",
    "Our garden has tomatoes, beans and a row of sunflowers that grow taller than the fence.",
    "The library closes at six on weekdays, but students can study in the reading room until nine.",
    "A cold front will move across the region tonight, bringing frost to the higher valleys.",
    "He spent the morning fixing a leak under the kitchen sink and the afternoon painting the door.",
    "The new software update makes the laptop start faster and fixes a problem with the keyboard.",
    "Every summer the village holds a market where farmers sell cheese, honey and apples.",
)

DEFAULT_LEXICON = Lexicon(
    topic_words=_DEFAULT_TOPIC_WORDS.split(),
    positive=_DEFAULT_POSITIVE.split(),
    negative=_DEFAULT_NEGATIVE.split(),
    heldout_prompts=[
        "I went up to my friend and said",
        "Here is what I think about it:",
        "So this is how it went.",
        "Let me tell you something.",
        "When I woke up this morning,",
        "There is one thing I remember:",
        "My neighbor told me that",
        "Last year, my cousin",
    ],
    template_prompts=[],
    offtarget_topic=list(WEDDING_TEXT),
    offtarget_unrelated=list(UNRELATED_TEXT),
)


def load_lexicon(loaded: LoadedModel) -> Lexicon:
    """The model folder's `lexicon.json` (the demo model's format), or `DEFAULT_LEXICON`."""
    path = Path(loaded.info.path) / "lexicon.json"
    if not path.is_file():
        return DEFAULT_LEXICON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        offtarget = data.get("offtarget_text", {})
        lexicon = Lexicon(
            topic_words=list(data["topics"]["weddings"]),
            positive=list(data["sentiment"]["positive"]),
            negative=list(data["sentiment"]["negative"]),
            heldout_prompts=list(data.get("heldout_prompts") or DEFAULT_LEXICON.heldout_prompts),
            template_prompts=list(data.get("template_prompts") or []),
            offtarget_topic=list(offtarget.get("weddings") or DEFAULT_LEXICON.offtarget_topic),
            offtarget_unrelated=list(offtarget.get("unrelated") or DEFAULT_LEXICON.offtarget_unrelated),
            source="lexicon.json in the model folder",
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"{path} is not a valid lexicon file ({type(exc).__name__}: {exc})") from exc
    return lexicon
