"""FaissStore (flat, cosine, scope="lane") against a plain reference model of its documented behaviour (README
"FaissStore"): random sequences of add / search / remove / clear; after each, every id issued so far reads back as
the model says (live ids: their values; evicted or removed ids: missing), and searches are exact top-k."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory.store import FaissStore
from tests.examples import examples

D, DV, LANES = 6, 2, 2


class Model:
    def __init__(self, capacity, eviction, scope="lane", halflife=None):
        self.cap, self.eviction, self.scope, self.halflife = capacity, eviction, scope, halflife
        self.e: dict[int, dict] = {}  # id -> lane, seq, stamp, imp, key, value
        self.clock = 0

    def lane(self, b):
        return [i for i, e in self.e.items() if e["lane"] == b]

    def part(self, b):
        """The entries lane b's add competes with and its query searches: its own, or all with scope="shared"."""
        return list(self.e) if self.scope == "shared" else self.lane(b)

    def prio(self, i):
        e = self.e[i]
        return ({"fifo": e["seq"], "lru": e["stamp"], "importance": e["imp"]}[self.eviction], e["seq"])

    def add(self, ids, lanes, keys, values, imps):
        evicted = []
        if self.halflife is not None:  # LRFU: every importance halves each `halflife` adds, before the victims
            for e in self.e.values():
                e["imp"] *= 2.0 ** (-1.0 / self.halflife)
        for b in range(LANES if self.scope == "lane" else 1):
            new = [j for j in range(len(ids)) if lanes[j] == b or self.scope == "shared"]
            over = len(self.part(b)) + len(new) - self.cap
            if over > 0:  # the lowest-priority resident entries go; ties: the oldest
                for i in sorted(self.part(b), key=self.prio)[:over]:
                    del self.e[i]
                    evicted.append(i)
        for j, i in enumerate(ids):
            self.e[i] = dict(lane=lanes[j], seq=self.clock, stamp=self.clock, imp=imps[j] + (self.halflife is not None),
                             key=keys[j],
                             value=values[j])
            self.clock += 1
        return sorted(evicted)

    def search(self, q, k):
        """q (LANES, Q, D) -> ids (LANES, Q, k) -1 padded, scores (cosines), and the hits' bookkeeping."""
        ids = np.full(q.shape[:2] + (k,), -1)
        scores = np.full(q.shape[:2] + (k,), -np.inf)
        hits = []
        for b in range(LANES):
            mine = self.part(b)
            if not mine:
                continue
            keys = np.stack([self.e[i]["key"] for i in mine]).astype(np.float64)
            keys /= np.linalg.norm(keys, axis=1, keepdims=True)
            for j, qq in enumerate(q[b].astype(np.float64)):
                cos = keys @ (qq / np.linalg.norm(qq))
                best = np.argsort(-cos)[:k]
                ids[b, j, : len(best)] = np.array(mine)[best]
                scores[b, j, : len(best)] = cos[best]
                hits += [mine[t] for t in best]
        for i in set(hits):
            self.e[i]["stamp"] = self.clock
        self.clock += 1 if hits else 0
        for i in hits:
            self.e[i]["imp"] += 1
        return ids, scores


program = st.lists(st.one_of(
    st.tuples(st.just("add"), st.lists(st.integers(0, LANES - 1), min_size=1, max_size=6), st.integers(0, 2**31),
              st.booleans()),
    st.tuples(st.just("search"), st.integers(1, 2), st.integers(1, 4), st.integers(0, 2**31)),
    st.tuples(st.just("remove"), st.lists(st.integers(0, 40), max_size=3)),
    st.tuples(st.just("clear"), st.sampled_from([None, 0, 1])), st.tuples(st.just("reload"),)), min_size=1,
    max_size=30)


@pytest.mark.parametrize(("eviction", "scope", "halflife"), [
    ("fifo", "lane", None), ("lru", "lane", None), ("importance", "lane", None), ("importance", "lane", 2.0),
    ("lru", "shared", None), ("importance", "shared", None)])
@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(capacity=st.integers(1, 4), ops=program)
def test_store_follows_documented_policy(tmp_path, eviction, scope, halflife, capacity, ops):
    store = FaissStore(dim=D, value_dim=DV, capacity=capacity, lanes=LANES, eviction=eviction, scope=scope,
                       importance_halflife=halflife)
    model = Model(capacity, eviction, scope, halflife)
    issued: list[int] = []
    for step, op in enumerate(ops):
        if op[0] == "add":
            lanes, g = np.array(op[1]), np.random.default_rng((op[2], step))  # no two keys alike: no ties
            if (np.bincount(lanes, minlength=LANES).max() if scope == "lane" else len(lanes)) > capacity:
                with pytest.raises(ValueError, match="exceed capacity"):
                    store.add(np.ones((len(lanes), D)), np.ones((len(lanes), DV)), lanes)
                continue
            keys = g.normal(size=(len(lanes), D)).astype(np.float32)
            values = g.normal(size=(len(lanes), DV)).astype(np.float32)
            imps = g.integers(0, 3, size=len(lanes)).astype(float) if op[3] else np.zeros(len(lanes))
            ids, evicted = store.add(keys, values, lanes, importance=imps if op[3] else None)
            assert len(set(ids.tolist()) & set(issued)) == 0  # ids are never reused
            want = model.add(ids.tolist(), lanes.tolist(), keys, values, imps.tolist())
            assert sorted(evicted.tolist()) == want, (op, evicted, want)
            issued += ids.tolist()
        elif op[0] == "search":
            q = np.random.default_rng(op[3]).normal(size=(LANES, op[1], D)).astype(np.float32)
            k = min(op[2], capacity)
            res = store.search(q, k)
            ids, scores = model.search(q, k)
            np.testing.assert_array_equal(np.asarray(res.ids), ids)
            got = np.asarray(res.scores)
            assert (np.isinf(got) == np.isinf(scores)).all() and (got[ids < 0] == -np.inf).all()
            np.testing.assert_allclose(got[ids >= 0], scores[ids >= 0], atol=1e-5)
        elif op[0] == "remove":
            gone = [i for i in set(op[1]) if i in model.e]
            assert store.remove(np.array(op[1], dtype=np.int64)) == len(gone)
            for i in gone:
                del model.e[i]
        elif op[0] == "reload":  # saved and loaded back at any point, it goes on as if it had not been
            store.save(tmp_path / "store")
            store = FaissStore.load(tmp_path / "store")
        else:
            lanes = None if op[1] is None else [op[1]]
            gone = sorted(i for i, e in model.e.items() if lanes is None or e["lane"] in lanes)
            assert sorted(store.clear(lanes).tolist()) == gone
            for i in gone:
                del model.e[i]
        values, meta = store.get(np.array(issued + [-1], dtype=np.int64))
        live = [i in model.e for i in issued] + [False]
        np.testing.assert_array_equal(meta["found"], live)
        for j, i in enumerate(issued):
            if i in model.e:
                np.testing.assert_array_equal(values[j], model.e[i]["value"])
                assert meta["lane"][j] == model.e[i]["lane"]
            else:
                assert not values[j].any() and meta["lane"][j] == -1
        assert [store.size(b) for b in range(LANES)] == [len(model.lane(b)) for b in range(LANES)]
        assert len(store) == len(model.e)
