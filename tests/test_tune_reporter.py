"""agents.tune_trial.TuneReporter: what a trial reports to Tune with each evaluation."""

import os

from agents.config import load_config


def test_a_report_carries_the_checkpoint_only_when_last_pt_is_new(monkeypatch, tmp_path):
    """TuneReporter's doc: a report that follows a fresh checkpoints/last.pt carries it as the Tune checkpoint, and a
    checkpoint the trial was restored from is not reported again. Evaluations between two saves
    (train.checkpoint_every above the evaluation interval) report without one: Tune stored a copy of the same
    folder at each of them."""
    from types import SimpleNamespace

    from ray import tune

    from agents.tune_trial import TuneReporter

    sent = []
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: sent.append(checkpoint is not None))
    folder = tmp_path / "checkpoints"
    folder.mkdir()

    def save(text):  # as Trainer.save: a temp file, then os.replace (a new inode)
        (folder / "tmp").write_text(text)
        os.replace(folder / "tmp", folder / "last.pt")

    save("restored from")
    reporter = TuneReporter(folder, logger=None, metric="cl/ACC")
    trainer = SimpleNamespace(episode=1, total_episodes=9, train_steps=10, cfg=load_config(["env=ContinualShift-v0"]))
    reporter(trainer, {"cl/ACC": 0.5})  # the restored checkpoint: not reported again
    save("episode 2")
    reporter(trainer, {"cl/ACC": 0.5})  # a fresh save: reported
    reporter(trainer, {"cl/ACC": 0.5})  # no save since: no checkpoint
    save("episode 4")
    reporter(trainer, {"cl/ACC": 0.5})
    assert sent == [False, True, False, True]
