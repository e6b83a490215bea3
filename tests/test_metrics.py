"""The official metrics on hand-checked vectors and on the answer processor's quirks."""

import math

import pytest

from layerprobe.errors import ConfigError
from layerprobe.data.metrics import (CONTRACTIONS, METRICS, anls, exact_match, gqa_accuracy, levenshtein,
                                normalize_answer, score, vqa_accuracy)


@pytest.mark.parametrize("raw, expected", [
    ("Two dogs.", "2 dogs"),
    ("The cat", "cat"),
    ("100,978", "100978"),
    ("None", "0"),
    ("Unanswerable", "unanswerable"),
    ("it's John's", "it 's john 's"),
])
def test_normalize_vectors_from_the_spec(raw, expected):
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("", ""),
    ("   \n\t ", ""),
    ("Café Crème", "café crème"),                 # unicode letters survive, only case changes
    ("ÉCOLE", "école"),
    ("1,000,000 people", "1000000 people"),
    ("dont", "don't"),                            # contractions table, after lowercasing
    ("Whats that", "what's that"),
    ("Im here", "im here"),                        # capitalised table keys never match: kept quirk
    ("ten apples and an orange", "10 apples and orange"),
    ("3.5 kg.", "3.5 kg"),                         # a period before a digit stays
    ("yes!", "yes"),
    ("multi\nline\tanswer", "multi line answer"),
])
def test_normalize_edge_cases(raw, expected):
    assert normalize_answer(raw) == expected


def test_punctuation_rule_looks_at_the_whole_text():
    # Alone, a hyphen between letters becomes a space...
    assert normalize_answer("x-ray") == "x ray"
    # ...but one " - " anywhere deletes every hyphen, also the one in "x-ray".
    assert normalize_answer("x-ray - bone") == "xray bone"
    # The test is per mark: the spaced "/" does not change how "-" is treated.
    assert normalize_answer("x-ray / bone") == "x ray bone"


def test_at_most_32_periods_are_deleted():
    assert normalize_answer("." * 40) == "." * 8
    assert normalize_answer("a." * 32 + "b.") == "a" * 32 + "b."


def test_contractions_table_is_the_official_one():
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["somebody'd"] == "somebodyd"       # the official table's typo, kept
    assert CONTRACTIONS["ow's'at"] == "'ow's'at"
    assert all(v.replace("'", "") == k.replace("'", "") for k, v in CONTRACTIONS.items())


@pytest.mark.parametrize("k, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_accuracy_closed_form(k, expected):
    answers = ["two"] * k + ["three"] * (10 - k)
    assert vqa_accuracy("2", answers) == pytest.approx(expected)


def test_vqa_accuracy_normalises_both_sides_and_any_length():
    assert vqa_accuracy("The Cat.", ["cat", "cats", "a cat"]) == pytest.approx(2 / 3 * 1 / 3 + 1 / 3 * 2 / 3)
    assert vqa_accuracy("Unanswerable", ["unanswerable"] * 8 + ["blurry", "unsuitable"]) == 1.0
    assert vqa_accuracy("cat", ["cat"]) == 0.0                 # leave-one-out leaves nothing
    assert vqa_accuracy("", ["cat"] * 10) == 0.0
    assert vqa_accuracy("", [""] * 3 + ["x"] * 7) == pytest.approx(0.9)
    assert math.isnan(vqa_accuracy("cat", []))                # test split: not scorable here


def test_gqa_accuracy():
    assert gqa_accuracy("Cat.", "cat") == 1.0
    assert gqa_accuracy("  the cat ", "cat") == 0.0           # no article removal in GQA
    assert gqa_accuracy("t-shirt", "tshirt") == 1.0
    assert gqa_accuracy("", "no") == 0.0


def test_levenshtein():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("flaw", "lawn") == 2


def test_anls_threshold():
    assert anls("abcd", ["abcd"]) == 1.0
    assert anls("abcx", ["abcd"]) == pytest.approx(0.75)       # NL = 1/4
    assert anls("abxy", ["abcd"]) == 0.5                       # NL = 0.5 exactly still scores
    assert anls("axyz", ["abcd"]) == 0.0                       # NL = 0.75 -> 0
    assert anls("", ["abcd"]) == 0.0
    assert anls("", [""]) == 1.0


def test_anls_normalises_but_divides_by_raw_lengths():
    # Lowercased, stripped and space-collapsed before the distance, so these match exactly...
    assert anls("  Region-Based   Segmentation ", ["region-based segmentation"]) == 1.0
    # ...but the raw length (6 with the spaces) is the denominator: 1 - 1/6.
    assert anls(" abc  ", ["abd"]) == pytest.approx(1 - 1 / 6)


def test_anls_takes_the_best_reference():
    refs = ["completely different", "np.zeros_like", "zeros_like"]
    assert anls("zeros_like", refs) == 1.0
    assert anls("np.zeros", refs) == pytest.approx(1 - 5 / 13)
    assert math.isnan(anls("x", []))


def test_exact_match():
    assert exact_match(" Cat ", ["dog", "cat"]) == 1.0
    assert exact_match("cat.", ["cat"]) == 0.0


def test_score_dispatches_by_name():
    assert set(METRICS) == {"vqa_accuracy", "gqa_accuracy", "anls", "exact_match"}
    assert score("vqa_accuracy", "two", ["2"] * 3 + ["3"] * 7) == pytest.approx(0.9)
    assert score("gqa_accuracy", "Left.", ["left"]) == 1.0
    assert score("anls", "abxy", ["abcd", "zzzz"]) == 0.5
    assert score("exact_match", "yes", ["yes"]) == 1.0
    with pytest.raises(ConfigError, match="known: vqa_accuracy"):
        score("bleu", "a", ["a"])
