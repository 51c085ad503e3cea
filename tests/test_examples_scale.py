"""MEMSTREAM_EXAMPLES scales every hypothesis test's examples (tests/examples.py); a bad value is one line."""

import pytest

from tests.examples import VARIABLE, examples


def test_unset_or_blank_keeps_each_tests_own_count(monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    assert [examples(n) for n in (1, 25, 400)] == [1, 25, 400]
    monkeypatch.setenv(VARIABLE, " ")
    assert examples(25) == 25


@pytest.mark.parametrize(("text", "want"), [("20", [20, 500]), ("0.1", [1, 2]), (" 2.5 ", [2, 62]), ("1e-9", [1, 1])])
def test_a_factor_multiplies_and_rounds_with_one_example_at_least(monkeypatch, text, want):
    monkeypatch.setenv(VARIABLE, text)
    assert [examples(1), examples(25)] == want


@pytest.mark.parametrize("text", ["0", "-3", "ten", "inf", "nan", "2x"])
def test_anything_but_a_positive_number_is_one_line_naming_the_variable(monkeypatch, text):
    monkeypatch.setenv(VARIABLE, text)
    with pytest.raises(ValueError) as info:
        examples(25)
    assert str(info.value) == (f"MEMSTREAM_EXAMPLES={text!r}: set it to a positive number (how many times each "
                               "hypothesis test's own examples to draw), or unset it for 1")
