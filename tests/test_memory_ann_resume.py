"""FAISS indexes (IVF, HNSW) read back from a state dict continue exactly as the index that saved them: what a
resumed run and every evaluation's memory restore rely on. FAISS's own serialisation leaves out the clustering
settings, the HNSW level generator and writes the id map in history order."""

import numpy as np

from memory.store_index import HNSWIndex, IVFIndex

KEYS = np.random.default_rng(0).standard_normal((600, 16)).astype(np.float32) * 5  # not unit norm: spherical matters


def blob(index) -> np.ndarray:
    return index.state()["blob"].numpy()


def test_an_untrained_ivf_index_read_back_trains_the_same_spherical_centroids():
    straight, resumed = IVFIndex(KEYS, None, None, 1), IVFIndex(KEYS, None, None, 1)
    resumed.load_state(resumed.state())  # a run resumed before its index reached min_entries
    for index in (straight, resumed):
        index.build(np.arange(512))
    centroids = [index.index.quantizer.reconstruct_n(0, index.lists) for index in (straight, resumed)]
    np.testing.assert_array_equal(centroids[0], centroids[1])
    np.testing.assert_allclose(np.linalg.norm(centroids[1], axis=1), 1.0, rtol=1e-5)  # spherical k-means
    q = KEYS[:20] + 0.1
    np.testing.assert_array_equal(straight.search(q, 8)[1], resumed.search(q, 8)[1])


def test_a_trained_ivf_index_read_back_continues_bit_for_bit():
    straight, resumed = IVFIndex(KEYS, 4, None, 1), IVFIndex(KEYS, 4, None, 1)
    for index in (straight, resumed):
        index.build(np.arange(300))
        index.remove(np.arange(10, 50))
        index.add(np.arange(300, 340))
    resumed.load_state(resumed.state())
    for index in (straight, resumed):  # removal by id works after a load (the id map is rebuilt)
        index.remove(np.arange(100, 130))
        index.add(np.arange(340, 400))
    np.testing.assert_array_equal(blob(straight), blob(resumed))


def test_an_hnsw_graph_read_back_gives_new_nodes_the_same_levels():
    straight, resumed = HNSWIndex(KEYS, 32, 64, 1, 16), HNSWIndex(KEYS, 32, 64, 1, 16)
    for index in (straight, resumed):
        index.build(np.arange(300))
    resumed.load_state(resumed.state())
    for index in (straight, resumed):
        index.add(np.arange(300, 600))
    np.testing.assert_array_equal(blob(straight), blob(resumed))
