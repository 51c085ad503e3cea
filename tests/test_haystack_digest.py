"""NeedleRecall's haystack file is recorded by content (sha256) in a run's checkpoint: a resume (or re-evaluation)
whose file under the same path now holds other text is refused in one line, instead of going on in another world."""

import json

import gymnasium as gym
import pytest
import torch

import envs  # noqa: F401  (registers the ids)
from agents import evaluate, run
from agents.checkpoint import CheckpointError, save_checkpoint
from agents.checkpoint_fields import check_env_files
from envs.haystack import text_sha256
from tests.test_run import tiny

TEXT = "the quick brown fox jumps over the lazy dog. " * 40
SMALL = {"delay": 1, "haystack_length": 24, "facts_per_episode": 1, "train_facts": 16, "fresh_facts": 8}


def digest_of(path) -> str | None:
    return gym.make("NeedleRecall-v0", haystack_path=str(path), **SMALL).unwrapped.haystack_sha256


def test_the_digest_is_stable_for_the_same_text_and_differs_for_changed_text(tmp_path):
    a, b, c, crlf = (tmp_path / f"{n}.txt" for n in "abcd")
    a.write_text(TEXT, encoding="utf-8")
    b.write_text(TEXT, encoding="utf-8")
    c.write_text(TEXT.replace("fox", "cat", 1), encoding="utf-8")
    crlf.write_bytes(TEXT.replace(". ", ".\n").encode("utf-8").replace(b"\n", b"\r\n"))
    assert digest_of(a) == digest_of(a) == digest_of(b) == text_sha256(TEXT)  # the content, not the file
    assert len(digest_of(a)) == 64 and digest_of(c) != digest_of(a)
    assert digest_of(crlf) == text_sha256(TEXT.replace(". ", ".\n"))  # the text as read: the same episodes
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + TEXT.encode("utf-8"))  # an editor's UTF-8 byte-order mark: not text
    assert digest_of(bom) == digest_of(a)
    venv = gym.make_vec("NeedleRecall-v0", num_envs=2, vectorization_mode="vector_entry_point",
                        haystack_path=str(a), **SMALL)
    assert venv.haystack_sha256 == digest_of(a)
    assert gym.make("NeedleRecall-v0", **SMALL).unwrapped.haystack_sha256 is None  # the built-in Markov text


def test_an_edited_haystack_file_is_refused_on_resume_and_evaluate(tmp_path, capsys, monkeypatch):
    hay, run_dir = tmp_path / "hay.txt", tmp_path / "run"
    hay.write_text(TEXT, encoding="utf-8")
    assert run.main(tiny("NeedleRecall-v0", "memnet", run_dir, f"env.kwargs.haystack_path={hay}")) == 0
    ckpt = run_dir / "checkpoints" / "last.pt"
    saved = torch.load(ckpt, weights_only=True)["env_files"]
    assert saved == {"haystack_path": {"path": str(hay), "sha256": text_sha256(TEXT)}}
    assert run.main([f"resume={run_dir}"]) == 0  # unchanged: resumes
    capsys.readouterr()

    hay.write_text(TEXT.replace("fox", "cat"), encoding="utf-8")  # as long as before: the env still builds
    assert run.main([f"resume={run_dir}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"checkpoint '{run_dir}': the haystack file '{hay}' changed since the run was trained (sha256 " \
           f"{text_sha256(TEXT)[:12]}... then, {text_sha256(TEXT.replace('fox', 'cat'))[:12]}... now); restore " \
           f"that file or start a new run with config={run_dir / 'config.yaml'}" in err, err

    # agents.evaluate: the same path is the run's env, and its eval episodes would differ without a word
    assert evaluate.main([f"checkpoint={run_dir}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "changed since the run was trained" in err
    assert "evaluate on the new text under another path (env.kwargs.haystack_path=<a copy of it>)" in err
    other = tmp_path / "other.txt"  # another file, asked for: a changed env, as any env.kwargs.* of an evaluation
    other.write_text(hay.read_text(encoding="utf-8"), encoding="utf-8")
    assert evaluate.main([f"checkpoint={run_dir}", f"env.kwargs.haystack_path={other}"]) == 0
    # a path relative to where the command runs is recorded absolute: the JSON lands in the run folder
    monkeypatch.chdir(tmp_path)
    assert evaluate.main([f"checkpoint={run_dir}", "env.kwargs.haystack_path=other.txt", "out=copy.json"]) == 0
    recorded = json.loads((run_dir / "copy.json").read_text())["env_kwargs"]
    assert recorded == {"haystack_path": str(other)}

    hay.write_text(TEXT, encoding="utf-8")  # the file restored: the run resumes again
    assert run.main([f"resume={run_dir}"]) == 0

    # the file moved away (the project folder renamed): the env's "no such file" line named no fix
    hay.rename(tmp_path / "moved.txt")
    capsys.readouterr()
    assert run.main([f"resume={run_dir}"]) == 2
    gone = f"checkpoint '{run_dir}': the haystack file '{hay}' the run was trained on is not there any more " \
           "(moved or deleted); put it back there"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and gone + ", then resume (or start a new run with env.kwargs.haystack_path=<its " \
        "new path>)" in err, err
    assert evaluate.main([f"checkpoint={run_dir}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and gone + ", or evaluate on a copy elsewhere with env.kwargs.haystack_path=<copy>" \
        in err, err
    assert evaluate.main([f"checkpoint={run_dir}", f"env.kwargs.haystack_path={tmp_path / 'moved.txt'}",
                          "out=moved.json"]) == 0  # as that line says


def test_a_checkpoint_without_env_files_still_loads_and_a_garbled_one_says_so(tmp_path, capsys):
    hay, run_dir = tmp_path / "hay.txt", tmp_path / "run"
    hay.write_text(TEXT, encoding="utf-8")
    assert run.main(tiny("NeedleRecall-v0", "memnet", run_dir, f"env.kwargs.haystack_path={hay}")) == 0
    ckpt = run_dir / "checkpoints" / "last.pt"
    body = torch.load(ckpt, weights_only=True)
    save_checkpoint(ckpt, {**body, "env_files": "abc"})
    assert run.main([f"resume={run_dir}"]) == 2
    assert "does not hold what this memstream saves (env_files: 'abc', not a mapping" in capsys.readouterr().err
    del body["env_files"]  # written before the digest was kept: nothing to compare
    save_checkpoint(ckpt, body)
    hay.write_text(TEXT.replace("fox", "cat"), encoding="utf-8")
    assert run.main([f"resume={run_dir}"]) == 0


def test_check_env_files_compares_only_the_same_file(tmp_path):
    hay = tmp_path / "hay.txt"
    hay.write_text(TEXT, encoding="utf-8")
    link = tmp_path / "link.txt"
    link.symlink_to(hay)
    then = {"haystack_path": {"path": str(hay), "sha256": "a" * 64}}
    for evaluating in (False, True):
        check_env_files(then, {}, "ckpt.pt", evaluating)  # the Markov text now (haystack_path=null): asked for
        check_env_files(then, {"haystack_path": {"path": str(tmp_path / "b.txt"), "sha256": "b" * 64}},
                        "ckpt.pt", evaluating)  # another file: a changed env asked for
        check_env_files(then, then, "ckpt.pt", evaluating)
        with pytest.raises(CheckpointError, match=r"sha256 aaaaaaaaaaaa\.\.\. then, bbbbbbbbbbbb\.\.\. now"):
            check_env_files(then, {"haystack_path": {"path": str(link), "sha256": "b" * 64}}, "ckpt.pt", evaluating)


def test_a_haystack_file_long_enough_for_write_episodes_but_not_recall_ones_is_refused(tmp_path):
    """Recall blocks are shorter than write blocks, so a recall episode holds more haystack (76 here, 64 in a
    write episode): the file must hold the longer one, else the first recall episode failed (or drew past it)."""
    import gymnasium as gym
    import pytest

    text = tmp_path / "short.txt"
    text.write_text("ab" * 35)  # 70 characters
    with pytest.raises(ValueError, match="has 70 characters; haystack_length=64 needs at least 76"):
        gym.make("NeedleRecall-v0", haystack_path=str(text), haystack_length=64, delay=2, train_facts=16,
                 fresh_facts=16, facts_per_episode=4)


def test_a_one_character_haystack_file_is_counted_in_the_singular(tmp_path):
    import gymnasium as gym
    import pytest

    text = tmp_path / "one.txt"
    text.write_text("a")
    with pytest.raises(ValueError, match="has 1 character; haystack_length=64 needs at least 76"):
        gym.make("NeedleRecall-v0", haystack_path=str(text), haystack_length=64, delay=2, train_facts=16,
                 fresh_facts=16, facts_per_episode=4)
