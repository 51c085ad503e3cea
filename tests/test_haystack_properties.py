"""Hypothesis over a NeedleRecall haystack file (`haystack_path`, a user's text): any UTF-8 text is its characters
numbered by falling frequency (reading the symbols back through their names gives the text, as text mode reads it),
and any other file content is one ValueError line naming the option."""

from collections import Counter

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from envs.haystack import text_corpus
from tests.examples import examples

SETTINGS = settings(max_examples=examples(80), deadline=None, suppress_health_check=list(HealthCheck))


@SETTINGS
@given(text=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40),
       symbols=st.integers(1, 12))
@example(text="\ufeffab\ufeff", symbols=3)  # a byte-order mark first (dropped) and inside the text (a character)
@example(text="\ufeff", symbols=2)
def test_a_text_file_is_its_characters_numbered_by_frequency(tmp_path_factory, text, symbols):
    path = tmp_path_factory.mktemp("haystack") / "h.txt"
    path.write_bytes(text.encode("utf-8"))
    read = path.read_text(encoding="utf-8-sig")  # text mode: \r\n and \r are \n; a leading byte-order mark dropped
    if not read:  # the text was a byte-order mark alone
        with pytest.raises(ValueError, match=r"^haystack_path=.* is empty$"):
            text_corpus(str(path), symbols)
        return
    ids, names, _ = text_corpus(str(path), symbols)
    counts = Counter(read)
    assert len(ids) == len(read) and len(names) == min(len(counts), symbols)
    if len(counts) <= symbols:
        assert "".join(names[i] for i in ids) == read
    else:  # the rarest characters share the last id
        assert names[-1] == "?" and all(names[i] == c for i, c in zip(ids, read, strict=True) if i < symbols - 1)
    by_id = Counter(ids.tolist())
    assert all(by_id[i] >= by_id[i + 1] for i in range(len(names) - 2))  # falling frequency (the last id: shared)


@SETTINGS
@given(content=st.binary(max_size=30))
def test_any_file_content_is_a_corpus_or_one_value_error_line(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("haystack") / "h.txt"
    path.write_bytes(content)
    try:
        ids, names, _ = text_corpus(str(path), 8)
    except ValueError as exc:
        assert str(exc).startswith("haystack_path=") and "\n" not in str(exc), str(exc)
        return
    assert len(ids) and names


@settings(max_examples=examples(30), deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(st.characters(codec="utf-8"), min_size=1, max_size=300), haystack=st.integers(0, 40))
@example(text="0" * 12, haystack=0)  # long enough: an env is made and run (the loop once stepped past its end)
def test_any_text_file_as_a_haystack_makes_an_env_that_passes_the_checker_or_is_one_line(tmp_path_factory, text,
                                                                                          haystack):
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    import envs  # noqa: F401

    path = tmp_path_factory.mktemp("haystack") / "h.txt"
    path.write_text(text, encoding="utf-8")
    try:
        env = gym.make("NeedleRecall-v0", haystack_path=str(path), haystack_length=haystack)
    except ValueError as exc:
        assert str(exc).startswith("haystack_path=") and "\n" not in str(exc), str(exc)
        return
    check_env(env.unwrapped, skip_render_check=True)
    env.reset(seed=3)
    for _ in range(2):  # a write episode, then the next one across the boundary
        steps, terminated, truncated = 0, False, False
        while not (terminated or truncated):
            _, _, terminated, truncated, _ = env.step(0)
            steps += 1
        assert steps <= env.unwrapped.episode_length
        env.reset()
