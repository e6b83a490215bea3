"""The benchmarks' official per-sample metrics, computed as lmms-eval computes them.

    from layerprobe.data.metrics import score, vqa_accuracy, anls
    vqa_accuracy("Two", ["2", "2", "2"] + ["3"] * 7)       # 0.9: three of ten humans agree
    anls("Region based", ["Region-based segmentation"])      # 0.0: below the 0.5 threshold
    score("gqa_accuracy", "Cat.", ["cat"])                   # 1.0

Every metric takes the model's answer and the reference answers and returns a float in [0, 1]
for one sample; with no reference answers (test splits, scored on a server) it returns nan, so an
unscorable sample is never counted as wrong.
"""

from __future__ import annotations

import math
import re
import string
from typing import Callable

from layerprobe.errors import ConfigError

# The contractions table of the official VQA evaluation code (vqaEval.py), as MMF's and lmms-eval's
# EvalAIAnswerProcessor carry it, entry for entry. Its quirks are kept on purpose, because scores
# must equal lmms-eval's: capitalised keys ("Im", "Ive") never match lowercased text, and
# "somebody'd" maps to "somebodyd".
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
               "@", "`", ",", "?", "!")
# The reference regex meant a lookbehind but wrote "(?!<=\d)", a lookahead for the text "<=";
# kept as written so that "5." and "a.b" lose their period exactly as in lmms-eval.
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_DIGIT_COMMA = re.compile(r"(?<=\d)(\,)+(?=\d)")
# The reference passes re.UNICODE (== 32) where re.sub expects `count`: at most 32 periods go.
_PERIOD_COUNT = int(re.UNICODE)


def normalize_answer(text: str) -> str:
    """The EvalAI/MMF answer processor (lowercase, punctuation, digits, articles, contractions: vqaEval.py's order), for predictions and answers."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    text = _split_or_join_punctuation(text)
    text = _PERIOD.sub("", text, count=_PERIOD_COUNT)
    words = (NUMBER_WORDS.get(w, w) for w in text.lower().split())
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def _split_or_join_punctuation(text: str) -> str:
    # The test looks at the text as it was before any mark was handled, and at the whole text:
    # one "a - b" anywhere makes every "-" vanish, so "x-ray" then becomes "xray", not "x ray".
    digit_comma = _DIGIT_COMMA.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        if mark + " " in text or " " + mark in text or digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return out


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """Mean over leave-one-out subsets of min(1, matches/3): 0, .3, .6, .9, 1 for 0..4+ of 10.

    With a single answer every subset is empty and the score is 0, as in lmms-eval; single-answer
    benchmarks use ``gqa_accuracy`` or ``exact_match``.
    """
    if not answers:
        return math.nan
    pred = normalize_answer(prediction)
    hits = [normalize_answer(a) == pred for a in answers]
    matches = sum(hits)
    return sum(min(1.0, (matches - hit) / 3) for hit in hits) / len(hits)


def _gqa_text(text: str) -> str:
    text = text.lower().strip().translate(str.maketrans("", "", string.punctuation))
    return " ".join(text.split())


def gqa_accuracy(prediction: str, answer: str) -> float:
    """Exact match after lowercasing, stripping and deleting punctuation ("Cat." == "cat")."""
    return float(_gqa_text(prediction) == _gqa_text(answer))


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute; each costs 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _collapse(text: str) -> str:
    return " ".join(text.strip().lower().split())


def anls(prediction: str, answers: list[str], threshold: float = 0.5) -> float:
    """lmms-eval's ANLS for one question: 1 - the smallest normalised Levenshtein distance over the
    references, 0 when below ``threshold`` (NL = 0.5 exactly scores 0.5)."""
    if not answers:
        return math.nan
    pred = _collapse(prediction)
    distances = []
    for answer in answers:
        # lmms-eval divides by the *raw* lengths, measured after .upper() ("ß" counts twice).
        length = max(len(answer.upper()), len(prediction.upper()))
        distances.append(0.0 if length == 0 else levenshtein(_collapse(answer), pred) / length)
    similarity = 1.0 - min(distances)
    return similarity if similarity >= threshold else 0.0


def exact_match(prediction: str, answers: list[str]) -> float:
    """1.0 when the answer equals any reference, ignoring case and surrounding/repeated spaces."""
    if not answers:
        return math.nan
    pred = _collapse(prediction)
    return float(any(_collapse(a) == pred for a in answers))


def _gqa_over_list(prediction: str, answers: list[str]) -> float:
    # GQA has one answer per question; results rows pass it as [answer].
    if not answers:
        return math.nan
    return max(gqa_accuracy(prediction, a) for a in answers)


METRICS: dict[str, Callable[[str, list[str]], float]] = {
    "vqa_accuracy": vqa_accuracy,
    "gqa_accuracy": _gqa_over_list,
    "anls": anls,
    "exact_match": exact_match,
}


def score(metric_name: str, prediction: str, answers: list[str]) -> float:
    """Score one prediction with a metric named as in a benchmark config (``data.metric``)."""
    try:
        metric = METRICS[metric_name]
    except KeyError:
        raise ConfigError(f"metric {metric_name!r} is unknown; known: {', '.join(METRICS)}") from None
    return metric(prediction, answers)
