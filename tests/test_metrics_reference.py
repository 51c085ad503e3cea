"""Every metric against an independent reference written from its definition (README
"Continual-learning metrics" and "Memory metrics"), on random inputs: plain loops, no numpy tricks shared with
the code under test."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.cl_metrics import AccuracyByKey, continual_metrics, distance_buckets, schedule_blocks
from memory.metrics import (
    SlotLifetimeTracker,
    context_influence,
    kaplan_meier,
    memory_bytes,
    pattern_similarity,
    read_entropy,
    store_hit_rate,
    write_rate,
)
from memory.slots import ReadInfo, SlotState, WriteInfo
from tests.examples import examples

NAN = float("nan")


# ----------------------------------------------------------------------------------------- references
def ref_blocks(schedule):
    """(starts, tasks) of the maximal runs of equal consecutive task ids."""
    starts, tasks = [], []
    for e, t in enumerate(schedule):
        if e == 0 or schedule[e - 1] != t:
            starts.append(e)
            tasks.append(t)
    return starts, tasks


def ref_cl(R, b, tasks):
    """README's block definitions, literally: f_j / k_j the first / last block of task j."""
    K, T = len(R), len(R[0])
    f = [min(k for k in range(K) if tasks[k] == j) for j in range(T)]
    last = [max(k for k in range(K) if tasks[k] == j) for j in range(T)]
    bwt = [R[K - 1][j] - R[last[j]][j] for j in range(T) if last[j] < K - 1]
    fgt = [max(R[x][j] for x in range(K - 1) if not math.isnan(R[x][j])) - R[K - 1][j]
           for j in range(T) if last[j] < K - 1]
    fwt = [] if b is None else [R[f[j] - 1][j] - b[j] for j in range(T)
                                if f[j] >= 1 and not math.isnan(R[f[j] - 1][j]) and not math.isnan(b[j])]
    mean = (lambda xs: sum(xs) / len(xs) if xs else None)  # noqa: E731
    return {"ACC": sum(R[K - 1]) / T, "BWT": mean(bwt), "FWT": mean(fwt), "forgetting": mean(fgt)}


def same(a, b, tol=1e-9):
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= tol)


ACCURACY = st.floats(0, 1)


@st.composite
def block_case(draw):
    """A schedule that may revisit tasks (every task trained), its block matrix with optional NaN before f_j."""
    T = draw(st.integers(1, 5))
    extra = draw(st.lists(st.integers(0, T - 1), max_size=10))
    schedule = extra + list(range(T)) if draw(st.booleans()) else list(range(T)) + extra
    _, tasks = ref_blocks(schedule)
    first = [tasks.index(j) for j in range(T)]
    R = [[NAN if k < first[j] and draw(st.booleans()) else draw(ACCURACY) for j in range(T)]
         for k in range(len(tasks))]
    b = [draw(st.one_of(ACCURACY, st.just(NAN))) for _ in range(T)]
    return schedule, R, b, tasks


# ----------------------------------------------------------------------------------------- CL metrics
@settings(max_examples=examples(400), deadline=None)
@given(block_case())
def test_block_metrics_match_the_readme_definitions(case):
    schedule, R, b, tasks = case
    starts, block_tasks = schedule_blocks(schedule)
    assert (starts.tolist(), block_tasks.tolist()) == ref_blocks(schedule)
    for untrained in (b, None):
        got, want = continual_metrics(R, untrained, tasks=tasks), ref_cl(R, untrained, tasks)
        assert all(same(got[k], want[k]) for k in want), (got, want)


@settings(max_examples=examples(300), deadline=None)
@given(st.integers(1, 6).flatmap(lambda T: st.tuples(
    st.lists(st.lists(ACCURACY, min_size=T, max_size=T), min_size=T, max_size=T),
    st.lists(ACCURACY, min_size=T, max_size=T))))
def test_square_matrix_metrics_are_design_section_7_literally(case):
    R, b = case
    T = len(R)
    want = {"ACC": sum(R[T - 1]) / T, "BWT": None, "FWT": None, "forgetting": None}
    if T > 1:
        want["BWT"] = sum(R[T - 1][j] - R[j][j] for j in range(T - 1)) / (T - 1)
        want["FWT"] = sum(R[j - 1][j] - b[j] for j in range(1, T)) / (T - 1)
        want["forgetting"] = sum(max(R[x][j] for x in range(T - 1)) - R[T - 1][j] for j in range(T - 1)) / (T - 1)
    got = continual_metrics(R, b)
    assert all(same(got[k], want[k]) for k in want), (got, want)


@settings(max_examples=examples(200), deadline=None)
@given(block_case(), st.data())
def test_a_nan_where_the_task_was_already_trained_is_refused(case, data):
    _, R, _, tasks = case
    first = [tasks.index(j) for j in range(len(R[0]))]
    required = [(k, j) for k in range(len(R)) for j in range(len(R[0])) if k >= first[j]]
    k, j = data.draw(st.sampled_from(required))
    R[k][j] = NAN
    with pytest.raises(ValueError, match=rf"R\[{k}\]\[{j}\] is NaN"):
        continual_metrics(R, None, tasks=tasks)


# ----------------------------------------------------------------------------------------- distance buckets
@pytest.mark.parametrize("max_distance", [2**49 + 1, 2**53 + 1, 2**60 - 1])
def test_distance_buckets_reach_max_distance_for_huge_values(max_distance):
    """The last edge is the first power of two >= max_distance, also where log2 in float64 rounds down."""
    edges = distance_buckets(max_distance)
    assert edges[-1] >= max_distance and edges[-2] < max_distance
    AccuracyByKey(edges).update(np.array([max_distance]), np.array([True]))  # the largest distance has a bucket


@settings(max_examples=examples(300), deadline=None)
@given(st.integers(1, 5000), st.lists(st.tuples(st.integers(-3, 8192), st.booleans()), max_size=60),
       st.integers(1, 4))
def test_buckets_hold_e_half_exclusive_to_e_inclusive_and_zero_in_bucket_one(max_distance, samples, batches):
    edges = [1]
    while edges[-1] < max_distance:
        edges.append(2 * edges[-1])
    assert distance_buckets(max_distance).tolist() == edges
    samples = [(k, ok) for k, ok in samples if k <= edges[-1]]
    counter = AccuracyByKey(distance_buckets(max_distance))
    for part in np.array_split(np.arange(len(samples)), batches):  # streamed in batches
        counter.update(np.array([samples[i][0] for i in part], dtype=np.int64),
                       np.array([samples[i][1] for i in part], dtype=bool))
    got = counter.result()
    for e in edges:
        inside = [ok for k, ok in samples if k >= 0 and (k <= 1 if e == 1 else e / 2 < k <= e)]
        assert same(got[e], sum(inside) / len(inside) if inside else None), (e, got)


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(-2, 30), st.booleans()), max_size=10), max_size=5))
def test_exact_keys_count_every_delay_on_its_own(batches):
    counter = AccuracyByKey()
    for batch in batches:
        counter.update(np.array([k for k, _ in batch], dtype=np.int64), np.array([c for _, c in batch], dtype=bool))
    flat = [s for batch in batches for s in batch if s[0] >= 0]
    want = {k: sum(c for kk, c in flat if kk == k) / sum(1 for kk, _ in flat if kk == k) for k in {k for k, _ in flat}}
    assert counter.result() == pytest.approx(want) and list(counter.result()) == sorted(want)


# ----------------------------------------------------------------------------------------- survival
def ref_kaplan_meier(durations, observed):
    out, S = [], 1.0
    for t in sorted({d for d, o in zip(durations, observed, strict=True) if o}):
        at_risk = sum(1 for d in durations if d >= t)
        died = sum(1 for d, o in zip(durations, observed, strict=True) if o and d == t)
        S *= 1 - died / at_risk
        out.append((t, S))
    return out


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.booleans(), st.integers(1, 3)), max_size=30))
def test_kaplan_meier_with_counts_and_censoring(rows):
    durations = [d for d, _, c in rows for _ in range(c)]
    observed = [o for _, o, c in rows for _ in range(c)]
    t, s = kaplan_meier([d for d, _, _ in rows], [o for _, o, _ in rows],
                        counts=np.array([c for *_, c in rows], dtype=np.int64))
    want = ref_kaplan_meier(durations, observed)
    assert t[0] == 0 and s[0] == 1
    assert t[1:].tolist() == [w[0] for w in want] and np.allclose(s[1:], [w[1] for w in want])


@st.composite
def write_events(draw):
    B, N, M = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    events = []
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.integers(0, 5)) == 0:
            events.append(("reset", draw(st.one_of(st.none(), st.lists(st.integers(0, B - 1), min_size=1,
                                                                         max_size=B, unique=True)))))
            continue
        ids, gate = np.full((B, M), -1), np.zeros((B, M))
        for lane in range(B):  # a write call lands in distinct slots of a lane (the bank's allocation)
            for i, slot in enumerate(draw(st.lists(st.integers(0, N - 1), max_size=min(M, N), unique=True))):
                ids[lane, i], gate[lane, i] = slot, draw(st.floats(0, 1))
        events.append(("write", (ids, gate)))
    return B, N, events, draw(st.sampled_from([0.0, 0.5]))


@settings(max_examples=examples(300), deadline=None)
@given(write_events())
def test_slot_lifetimes_match_a_per_slot_simulation(case):
    B, N, events, min_gate = case
    tracker = SlotLifetimeTracker(B, N, min_gate=min_gate)
    born, done, step = {}, [], 0
    for kind, x in events:
        if kind == "write":
            ids, gate = x
            tracker.observe(WriteInfo(gate=torch.tensor(gate), slot_ids=torch.tensor(ids)))
            step += 1
            for lane, i in np.ndindex(*ids.shape):
                if ids[lane, i] >= 0 and gate[lane, i] >= min_gate:
                    if (lane, ids[lane, i]) in born:
                        done.append(step - born[(lane, ids[lane, i])])
                    born[(lane, ids[lane, i])] = step
        else:
            tracker.reset(x)
            for lane in range(B) if x is None else x:
                done += [step - born.pop((lane, s)) for s in range(N) if (lane, s) in born]
    alive = [step - v for v in born.values()]
    assert tracker.lifetimes().tolist() == sorted(done)
    assert sorted(tracker.alive_ages().tolist()) == sorted(alive)
    t, s = tracker.survival_curve()
    want = ref_kaplan_meier(done + alive, [True] * len(done) + [False] * len(alive))
    assert t[1:].tolist() == [w[0] for w in want] and np.allclose(s[1:], [w[1] for w in want])


# ----------------------------------------------------------------------------------------- memory metrics
@settings(max_examples=examples(100), deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.data())
def test_read_entropy_write_rate_and_hit_rate(B, Q, H, k, data):
    w = np.array(data.draw(st.lists(st.floats(0.01, 1), min_size=B * Q * H * k, max_size=B * Q * H * k)))
    w = (w.reshape(B, Q, H, k) / w.reshape(B, Q, H, k).sum(-1, keepdims=True)).astype(np.float32)
    want = np.mean([-sum(p * math.log(p) for p in w[i]) for i in np.ndindex(B, Q, H)])
    info = ReadInfo(weights=torch.tensor(w), slot_ids=torch.zeros(B, Q, H, k, dtype=torch.long))
    assert read_entropy(info) == pytest.approx(want, abs=1e-4)
    gate = np.array(data.draw(st.lists(st.floats(0, 1), min_size=B * Q, max_size=B * Q))).reshape(B, Q)
    assert write_rate(WriteInfo(gate=torch.tensor(gate), slot_ids=torch.zeros(B, Q, dtype=torch.long))) == \
        pytest.approx(sum(gate.ravel()) / gate.size)
    ids = np.array(data.draw(st.lists(st.integers(-1, 3), min_size=B * Q * k, max_size=B * Q * k))).reshape(B, Q, k)
    hits = [any(i >= 0 for i in ids[b, q]) for b in range(B) for q in range(Q)]
    assert store_hit_rate(torch.tensor(ids)) == pytest.approx(sum(hits) / len(hits))


def test_similarity_influence_and_bytes_by_hand():
    memory = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]])  # (1, 3, 2): the last slot empty
    state = SlotState(memory=memory, usage=torch.zeros(1, 3), age=torch.zeros(1, 3),
                      written=torch.ones(1, 3, dtype=torch.bool))
    hidden = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])  # mean (1, 0)
    assert np.allclose(pattern_similarity(state, hidden), [[1.0, 0.0, 0.0]])
    total, mem = torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert context_influence(total, mem) == pytest.approx((1.0 + 0.0) / 2)  # |m|/(|m|+|c|) per token, mean
    assert memory_bytes({"a": torch.zeros(3, 4), "b": [np.zeros(5, np.int8), torch.zeros(2, dtype=torch.float16)]}) \
        == 48 + 5 + 4
