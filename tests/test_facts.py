"""The one fact prompt (precompute.facts): answer rule, subject span, brackets, window rule."""

from __future__ import annotations

import pytest

from precompute.facts import (
    answer_matches,
    fact_parts,
    parse_windows,
    scaled_window,
    split_marked,
    subject_tokens,
    swap_subject,
    window_layers,
)
from precompute.types import Item

PROMPT = "The Eiffel Tower is located in the city of"


@pytest.fixture()
def gpt2(tiny_models):
    """The tiny GPT-2 (its tokenizer is GPT-2's)."""
    return tiny_models["tiny-gpt2"]


def _first(lm, text: str) -> int:
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"][0]


def test_answer_rule_cases(gpt2):
    # In the tiny tokenizer " capital" and " layer" are single tokens.
    capital = _first(gpt2, " capital")
    assert gpt2.tokenizer.decode([capital]) == " capital"
    assert answer_matches(gpt2, capital, "capital") is True
    assert answer_matches(gpt2, capital, " Capital ") is True  # stripped, case-insensitive
    assert answer_matches(gpt2, capital, "capital city") is True  # first token of " " + gold
    assert answer_matches(gpt2, capital, "layer") is False
    # Without a gold answer the correctness is unknown, the same everywhere.
    for gold in (None, "", "   "):
        assert answer_matches(gpt2, capital, gold) is None


def test_fact_parts_read_both_fact_files_with_one_priority():
    team = Item("f", "The capital of France is", {"subject": "France", "answer": "Paris"})
    rome = Item(
        "k", "Paris is in", {"subject": "Paris", "attribute": "France", "relation_id": "P17"}
    )
    both = Item("b", "x", {"subject": "s", "answer": "A", "attribute": "B", "relation": "r"})
    empty = Item("e", "x", {"subject": "s", "answer": "", "attribute": "B"})
    assert fact_parts(team) == ("The capital of France is", "France", "Paris", "")
    assert fact_parts(rome) == ("Paris is in", "Paris", "France", "P17")
    assert fact_parts(both)[2] == "A"  # answer first, then attribute
    assert fact_parts(empty)[2] == "B"
    assert fact_parts(Item("n", "x", {}))[1:3] == ("", "")


def test_subject_span_by_text_and_by_picked_span_agree(gpt2):
    by_text = subject_tokens(gpt2, PROMPT, "Eiffel Tower")
    by_span = subject_tokens(gpt2, PROMPT, char_span=(4, 16))
    assert (by_text.start, by_text.end) == (by_span.start, by_span.end)
    toks = gpt2.token_strs(by_text.ids)
    assert "".join(toks[by_text.start : by_text.end]).strip() == "Eiffel Tower"
    assert by_text.char_start == 4 and by_text.subject == "Eiffel Tower"


def test_picked_span_is_used_not_the_first_occurrence(gpt2):
    prompt = "The capital saw the capital near the house of"
    second = prompt.index("capital", 5)
    first = subject_tokens(gpt2, prompt, "capital")
    picked = subject_tokens(gpt2, prompt, char_span=(second, second + len("capital")))
    assert picked.start > first.start and picked.char_start == second
    # The swapped prompt of a pair keeps the picked occurrence.
    corr = swap_subject(gpt2, picked, "layer")
    assert corr.text == "The capital saw the layer near the house of"
    assert (corr.start, corr.end) == (picked.start, picked.end)


@pytest.mark.parametrize(
    ("prompt", "subject", "span", "match"),
    [
        (PROMPT, "elephant", None, "does not occur"),
        (PROMPT, "  ", None, "empty"),
        ("Eiffel Tower", "Eiffel Tower", None, "whole prompt"),
        ("The city of Paris", "Paris", None, "continue after the subject"),
        (PROMPT, None, (5, 2), "not inside"),
        (PROMPT, None, (0, 999), "not inside"),
    ],
)
def test_bad_subjects_are_explained(gpt2, prompt, subject, span, match):
    with pytest.raises(ValueError, match=match):
        subject_tokens(gpt2, prompt, subject, char_span=span)


def test_too_long_prompt_is_refused(gpt2):
    with pytest.raises(ValueError, match="limit is 4"):
        subject_tokens(gpt2, PROMPT, "Eiffel Tower", max_tokens=4)


def test_bracket_syntax():
    assert split_marked("[The Eiffel Tower] is in") == (
        "The Eiffel Tower is in",
        "The Eiffel Tower",
    )
    assert split_marked("Where is [Paris] located") == ("Where is Paris located", "Paris")
    for bad in ("no brackets here", "only [open", "only close]", "wrong ]order[ here"):
        with pytest.raises(ValueError, match="brackets"):
            split_marked(bad)


def test_window_rule():
    assert list(window_layers(0, 9, 30)) == [0, 1, 2, 3, 4]
    assert list(window_layers(15, 10, 30)) == list(range(10, 20))
    assert list(window_layers(29, 10, 30)) == list(range(24, 30))
    assert list(window_layers(5, 1, 30)) == [5]
    assert list(window_layers(5, 0, 30)) == [] == list(window_layers(5, -3, 30))
    for w in range(1, 12):  # W layers, centred, fewer only at the ends
        assert all(len(window_layers(c, w, 30)) == w for c in range(w, 30 - w))
    assert scaled_window(48) == 10 and scaled_window(30) == 6 and scaled_window(2) == 1
    assert parse_windows("auto,1", 30) == [("Wauto", 6), ("W1", 1)]
    assert parse_windows(9, 18) == [("W9", 9)]  # a stored integer config still reads
    for bad in ("", "0", "auto,-1", "wide"):
        with pytest.raises(ValueError, match="auto"):
            parse_windows(bad, 30)


def test_bad_windows_are_refused_at_set_time():
    from precompute.methods.attention_knockout import KnockoutConfig
    from precompute.model.tracing import CausalTracingConfig

    assert KnockoutConfig().with_overrides({"window": "auto,1,9"}).window == "auto,1,9"
    assert CausalTracingConfig().with_overrides({"window": "4"}).window == "4"
    for cfg, value in ((KnockoutConfig(), "wide"), (CausalTracingConfig(), "0")):
        with pytest.raises(ValueError, match="auto"):
            cfg.with_overrides({"window": value})
    with pytest.raises(ValueError, match="one window"):
        CausalTracingConfig().with_overrides({"window": "auto,1"})
