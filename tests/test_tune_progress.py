"""The sweep's terminal lines (agents/tune_progress.py), driven with stand-in trials (no Ray run needed)."""

from types import SimpleNamespace

from agents.tune_progress import ProgressLine


def trial(trial_id, status, value, episode, total=4):
    return SimpleNamespace(trial_id=trial_id, status=status, path="/x",
                           last_result={"cl/ACC": value, "episode": episode, "total_episodes": total})


def test_the_best_so_far_counts_only_trials_that_trained_to_the_end(capsys):
    """A running trial's interim value (after fewer tasks) and an ASHA-stopped trial's are not ranked: the
    status line showed a best that no finished trial had (0.6875 from a trial still running at episode 2)."""
    running = trial("a", "RUNNING", 0.6875, 2)
    stopped = trial("b", "TERMINATED", 0.9, 2)
    finishing = trial("c", "RUNNING", 0.5938, 4)  # Tune marks it TERMINATED just after the callback
    waiting = trial("d", "PENDING", None, 0)
    ProgressLine("cl/ACC").on_trial_complete(0, [running, stopped, finishing, waiting], finishing)
    assert capsys.readouterr().out.strip() == ("trial c done at episode 4/4: cl/ACC=0.5938   [2 finished, 1 running, "
                                               "1 pending, 0 failed of 4] best cl/ACC 0.5938")
    ProgressLine("cl/ACC").on_trial_complete(0, [running, stopped, waiting], stopped)
    assert capsys.readouterr().out.strip() == ("trial b stopped early at episode 2/4: cl/ACC=0.9   [1 finished, "
                                               "1 running, 1 pending, 0 failed of 3] no finished cl/ACC yet")


def test_mode_min_ranks_the_smallest():
    done = [trial("a", "TERMINATED", 0.3, 4), trial("b", "TERMINATED", -0.1, 4)]
    assert ProgressLine("cl/ACC", mode="min")._status(done).endswith("best cl/ACC -0.1")


def test_once_every_trial_is_over_a_metric_none_measured_is_not_awaited_any_more(capsys):
    """A bucket no query reached: the last line said "no finished recall/accuracy_d64 yet" with every trial done."""
    first, last = trial("a", "TERMINATED", None, 4), trial("b", "RUNNING", None, 4)
    ProgressLine("cl/ACC").on_trial_complete(0, [first, last], last)
    assert capsys.readouterr().out.strip().endswith("[2 finished, 0 running, 0 pending, 0 failed of 2] no trial "
                                                    "measured cl/ACC")
    assert ProgressLine("cl/ACC")._status([first, last]).endswith("no finished cl/ACC yet")  # b may still measure it


def test_when_asha_stopped_every_trial_the_line_names_the_best_the_table_marks(capsys):
    """sweep.scheduler.max_t below the episodes: ASHA stops every trial at max_t. The last line said "no finished
    trial measured cl/ACC", then the table marked a stopped trial best (the furthest trained, `best_row`)."""
    from agents.tune_results import best_row, result_rows

    early, furthest, last = trial("a", "TERMINATED", 0.9, 1), trial("b", "TERMINATED", 0.5, 2), \
        trial("c", "RUNNING", 0.6, 2)
    ProgressLine("cl/ACC").on_trial_complete(0, [early, furthest, last], last)
    assert capsys.readouterr().out.strip() == (
        "trial c stopped early at episode 2/4: cl/ACC=0.6   [3 finished, 0 running, 0 pending, 0 failed of 3] best "
        "cl/ACC 0.6 (trial c, stopped early at episode 2: no trial trained to the end)")
    last.status = "TERMINATED"  # the final table's pick: the same trial
    rows = result_rows([SimpleNamespace(**vars(t), config={}) for t in (early, furthest, last)],
                       SimpleNamespace(search_space={}), "cl/ACC")
    assert best_row(rows, "cl/ACC", "max")["trial"] == "c"
    # while a trial may still train to the end, a stopped one is not named best
    assert ProgressLine("cl/ACC")._status([early, furthest, trial("d", "PENDING", None, 0)]).endswith(
        "no finished cl/ACC yet")


def test_trials_tune_has_not_made_yet_count_as_pending(capsys):
    """Under sweep.max_concurrent Tune makes a grid's trials one by one: with the first of two finished and nothing
    measured, the line said "[1 finished, 0 running, 0 pending, 0 failed of 1] no trial measured cl/ACC"."""
    first = trial("a", "RUNNING", None, 4)
    ProgressLine("cl/ACC", total=2).on_trial_complete(0, [first], first)
    assert capsys.readouterr().out.strip().endswith("[1 finished, 0 running, 1 pending, 0 failed of 2] no finished "
                                                    "cl/ACC yet")
    first.status, second = "TERMINATED", trial("b", "TERMINATED", 0.5, 4)
    assert ProgressLine("cl/ACC", total=2)._status([first, second]) == ("[2 finished, 0 running, 0 pending, 0 failed "
                                                                        "of 2] best cl/ACC 0.5")
