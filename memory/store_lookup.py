"""Reading FaissStore entries by id or by metadata (a mixin, so store.py stays about writing, searching and
evicting), and the argument checks they share with store.py. Every read here is a peek: it does not count as an
access for the lru / importance policies."""

from __future__ import annotations

import numpy as np
import torch

META_FIELDS = ("lane", "episode", "position", "step", "task", "time", "token", "prev")  # the metadata table's columns
# what add(meta=...) may set (token: the observation an entry holds, prev: the one before it); lane/time: the store's
CALLER_META = ("episode", "position", "step", "task", "token", "prev")
NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)  # float tensors numpy holds as they are
# metric="ip" stores keys as given, and |q.k| <= |q| |k| (Cauchy-Schwarz; the scan's partial sums too): keys and
# queries of norm below sqrt(float32 max) score within float32, where an overflow would read as a missing entry
# (+-inf) or rank arbitrarily (NaN). `add` took exactly these keys before (its finiteness check squared them);
# queries are checked for NaN / inf only, as before: a large query against small keys scores fine
IP_NORM_LIMIT = float(np.sqrt(np.float64(np.finfo(np.float32).max)))  # ~1.84e19
ASKED_TABLE = 1 << 24  # ids_with: at most this many (lane, value) codes are marked in a table (16 MB of bools)


def checked_array(x, name: str, dtype) -> np.ndarray:
    """An array or tensor as a numpy array of `dtype`, or a one-line TypeError naming the argument. Floating tensors
    numpy has no type for (bfloat16) arrive as float32. An integer `dtype` takes integers only (an empty input of
    any type too): a cast would truncate floats silently (lanes 0.7 -> 0, meta -0.5 -> 0, an id + 0.9 -> the id)
    and read bools as 0/1, so they are refused as TieredKVCache refuses them."""
    kind = type(x).__name__
    try:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            x = (x.float() if x.is_floating_point() and x.dtype not in NUMPY_FLOATS else x).numpy()
        x = np.asarray(x)
        complex_input = x.dtype.kind == "c"  # a cast dropped the imaginary part with only a ComplexWarning
        if not complex_input and not (np.issubdtype(dtype, np.integer) and x.dtype.kind not in "iu" and x.size):
            return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise TypeError(f"FaissStore: {name} must be a numeric array or tensor, got {kind} ({e})") from None
    if complex_input:
        raise TypeError(f"FaissStore: {name} must be real numbers, got dtype {x.dtype}")
    raise TypeError(f"FaissStore: {name} must be integers, got dtype {x.dtype}; pass ints")


def check_finite(x: np.ndarray, name: str) -> np.ndarray:
    """x itself, or a one-line ValueError where it holds NaN or inf (the same error for every argument)."""
    if not np.isfinite(x).all():
        raise ValueError(f"FaissStore: {name} must be finite (got NaN or inf)")
    return x


def squared_norms(x: np.ndarray, name: str) -> np.ndarray:
    """(..., D) float32 -> (...) float32 |x|^2 (einsum: 3x faster than np.linalg.norm, which matters for the add
    rate), inf where a row is finite but its square overflows float32 (|x| > IP_NORM_LIMIT). NaN / inf values get
    check_finite's error; an overflowing square alone is no sign of them, so the values themselves decide."""
    sq = np.einsum("...i,...i->...", x, x)
    if not np.isfinite(sq).all():
        check_finite(x, name)
    return sq


def norms64(x: np.ndarray) -> np.ndarray:
    """(..., D) -> (...) float64 |x|, finite where float32 squares overflow (float32's max squared is ~1e77)."""
    x = x.astype(np.float64)
    return np.sqrt(np.einsum("...i,...i->...", x, x))


def inverse_norms(x: np.ndarray, name: str) -> np.ndarray:
    """(..., D) float32 -> (...) 1/|x| (zero rows get a finite factor and stay zero), float32; float64 where some
    row's square overflows float32: its norm comes from float64, and beyond |x| = 2^126 its inverse would be a
    float32 subnormal (few digits). The other rows' factors are their float32 ones either way, and a float32 value
    times such a factor rounds to the float32 product (the exact product fits float64), so they stay bit-identical."""
    sq = squared_norms(x, name)
    inv = (1.0 / np.sqrt(np.maximum(sq, 1e-24))).astype(np.float32)
    big = np.isinf(sq)
    if not big.any():
        return inv
    inv = inv.astype(np.float64)
    inv[big] = 1.0 / norms64(x[big])
    return inv


class NormRangeError(ValueError):
    """`check_ip_range`'s refusal, with what was refused (`what`) and its largest norm (`norm`): a model that feeds
    the store its activations reads it as its weights having diverged (MemNet: `diverged_on_overflow`)."""

    def __init__(self, message: str, what: str, norm: float):
        super().__init__(message)
        self.what, self.norm = what, norm


def check_ip_range(x: np.ndarray, name: str) -> np.ndarray:
    """x itself, or a one-line NormRangeError (a ValueError) where a row's norm reaches IP_NORM_LIMIT (NaN / inf:
    check_finite's)."""
    big = np.isinf(squared_norms(x, name))
    if big.any():
        norm = float(norms64(x[big]).max())
        raise NormRangeError(f"FaissStore: {name} of norm up to {IP_NORM_LIMIT:.3g} are supported with metric='ip' "
                             f"(the scan's inner products must fit float32); got norm {norm:.3g}; scale them down, "
                             "or use metric='cosine'", name, norm)
    return x


def meta_column(field, method: str) -> int:
    """The metadata table's column of `field`, or a one-line ValueError naming the fields there are."""
    if field not in META_FIELDS:
        raise ValueError(f"FaissStore.{method}: field={field!r} is no metadata field; choose one of {META_FIELDS}")
    return META_FIELDS.index(field)


def normalise(x: np.ndarray, name: str) -> np.ndarray:
    return (x * inverse_norms(x, name)[..., None]).astype(np.float32, copy=False)  # float32 whatever the factors


class StoreLookup:
    """Mixin for FaissStore: get / keys_of / meta_of by id, ids_with by metadata."""

    rows: int
    _keys: np.ndarray
    _values: np.ndarray
    _meta: np.ndarray
    _row_id: np.ndarray
    _seq: np.ndarray

    def _rows_of(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """ids (...) -> rows (...) int64 (0 where not found), found (...) bool."""
        ids = checked_array(ids, "ids", np.int64)
        rows = np.where(ids >= 0, ids % self.rows, 0)
        found = (ids >= 0) & (self._row_id[rows] == ids)
        return np.where(found, rows, 0), found

    def get(self, ids) -> tuple[np.ndarray, dict]:
        """ids (...) int64 (-1 allowed) -> values (..., Dv) float32 (zeros where missing) and meta: field ->
        (...) int64 (-1 where missing) plus "found" (...) bool. A peek: does not count as an access."""
        rows, found = self._rows_of(ids)
        values = np.where(found[..., None], self._values[rows], 0.0).astype(np.float32)
        meta = {name: np.where(found, self._meta[rows, i], -1) for i, name in enumerate(META_FIELDS)}
        meta["found"] = found
        return values, meta

    def keys_of(self, ids, columns: slice = slice(None)) -> np.ndarray:
        """ids (...) int64 (-1 allowed) -> stored keys (..., D) float32 (normalised for metric="cosine"), zeros
        where missing; `columns` picks part of each key (..., D') without gathering the rest. A peek, like get."""
        rows, found = self._rows_of(ids)
        keys = self._keys[rows, columns]
        return keys if found.all() else np.where(found[..., None], keys, np.float32(0.0))  # all found: no 2nd copy

    def meta_of(self, ids, field: str) -> np.ndarray:
        """ids (...) int64 (-1 allowed) -> that metadata column (...) int64, -1 where missing. A peek, like get."""
        column = meta_column(field, "meta_of")
        rows, found = self._rows_of(ids)
        return np.where(found, self._meta[rows, column], -1)

    def ids_with(self, field: str, values, lanes) -> np.ndarray:
        """values (n,), lanes (n,) int -> (n, m) int64: ids of lane i's live entries whose metadata `field` equals
        values[i], newest first, -1 padded (m = the most matches). An exact lookup (no index); a peek, like get."""
        column = meta_column(field, "ids_with")
        values = checked_array(values, "values", np.int64).reshape(-1)
        lanes = checked_array(lanes, "lanes", np.int64).reshape(-1)
        if values.shape != lanes.shape:
            raise ValueError(f"FaissStore.ids_with: values ({len(values)}) and lanes ({len(lanes)}) must have one "
                             "entry each per lookup")
        if len(lanes) and (lanes.min() < 0 or lanes.max() >= self.lanes):  # found nothing, as if no entry matched
            raise ValueError(f"FaissStore.ids_with: lanes must lie in [0, {self.lanes}), got "
                             f"{lanes.min()}..{lanes.max()}")
        rows = np.flatnonzero(self._row_id >= 0)
        col = self._meta[rows, column]  # (r,) the field of every live entry
        span = int(max(values.max(initial=0), col.max(initial=0))) + 2
        if self.lanes * span > 2**62:  # values near int64's end: lane * span + value wrapped (another lane's entry
            known, col = np.unique(col, return_inverse=True)  # matched) or overflowed; code the values' ranks instead
            values = np.where(np.isin(values, known), np.searchsorted(known, values), -2)  # -2: held by no entry
            span = len(known) + 2
        have = self._meta[rows, 0] * span + col + 1  # (lane, value) codes
        # a value below -1 (stored nowhere, `add` refuses it) would alias another lane's code: it matches nothing
        want = np.where(values >= -1, lanes * span + values + 1, -1)
        if self.lanes * span <= ASKED_TABLE:  # sort only the rows asked for (a chunk's ~500 lookups among ~50,000
            asked = np.zeros(self.lanes * span, dtype=bool)  # live rows: 2.0 -> 1.0 ms), by a table of the codes
            asked[want[want >= 0]] = True
            keep = asked[have]
            rows, have = rows[keep], have[keep]
        # by code, newest first within a code (live rows' seq are distinct): one sort of one int64 key
        age = self._seq[rows].max(initial=0) - self._seq[rows]  # (r,) 0 = newest
        if (int(have.max(initial=0)) + 1) * (int(age.max(initial=0)) + 1) < 2**62:
            order = np.argsort(have * (int(age.max(initial=0)) + 1) + age)
        else:  # a key that would overflow int64: two keys
            order = np.lexsort((age, have))
        have, rows = have[order], rows[order]
        lo, hi = np.searchsorted(have, want, "left"), np.searchsorted(have, want, "right")
        pick = lo[:, None] + np.arange(int((hi - lo).max(initial=0)))  # (n, m)
        if not len(rows):
            return np.full(pick.shape, -1, dtype=np.int64)
        return np.where(pick < hi[:, None], self._row_id[rows[np.minimum(pick, len(rows) - 1)]], -1)
