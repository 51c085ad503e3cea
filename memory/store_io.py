"""Persistence of FaissStore (a mixin, so store.py stays about searching and evicting).

`state_dict()` holds tensors and python scalars only, so a store can live inside one checkpoint dict loaded
with `torch.load(weights_only=True)`. `save(path)` writes a folder with two files, each atomically:
index-<token>.pt (normalised keys + serialised FAISS indexes) and store.pt (values, metadata, ids, eviction
state, settings, and the name of its index file). store.pt is written last and names its own index file, so
the save commits when store.pt is replaced: a save killed before that leaves the previous pair loadable (its
index file is only deleted afterwards), one killed after it leaves the new pair and a stale file the next save
removes. A pair of files from different saves is refused on load (both carry the token).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import numpy as np
import torch

from memory.config import ivf_lists_for, ivf_probes_for
from memory.persist import atomic_torch_save, checked_torch_load, file_stamp, remove_dead_writers_temp_files
from memory.saved_state import MAX_SAVED_COUNT, build_from_saved, check_saved_config, saved_count
from memory.store_lookup import META_FIELDS
from memory.store_search import CodedKeys, write_keys

FORMAT = "memstream.FaissStore/4"  # /2: metadata gained the "token" column, /3: "prev", /4: live rows only
LEGACY_FORMAT = "memstream.FaissStore/3"  # every row saved: loads (`_live_rows_of`)
WHERE = "FaissStore.load_state_dict"
LEGACY_INDEX = "index.pt"  # the index file of saves that predate per-save index names
LOAD_TRIES = 5  # reads of a folder that saves keep committing to while it is read (`load`)
SAVED_INDEX = re.compile(r"index-[0-9a-f]{32}\.pt")  # `save`'s index file names: index-<uuid4 hex>.pt


class StorePersistence:
    """Mixin for FaissStore: state_dict / load_state_dict / save / load."""

    def _settings(self) -> dict:
        return {"dim": self.dim, "value_dim": self.value_dim, "capacity": self.capacity, "lanes": self.lanes,
                "scope": self.scope, "index": self.index, "eviction": self.eviction, "metric": self.metric}

    def _tuning(self) -> dict:
        return {"threads": self.threads, "ivf_lists": self.ivf_lists, "ivf_probes": self.ivf_probes,
                "hnsw_neighbors": self.hnsw_neighbors, "hnsw_ef_search": self.hnsw_ef_search,
                "hnsw_min_entries": self.hnsw_min_entries, "exact_block": self.exact_block,
                "precision": self.precision, "importance_halflife": self.importance_halflife}

    # saved at the live rows only ("rows", ascending): an empty row's content is never read (search masks it,
    # `_take_rows` takes it before any entry) and a load writes what a new store's empty rows hold (_EMPTY), so
    # the state grows with the entries, not the capacity (ContinualShift's checkpoint: README "Long runs")
    _ROWS = ("_keys", "_values", "_meta", "_row_id", "_stamp", "_importance")
    _EMPTY = {"_keys": 0, "_values": 0, "_meta": -1, "_row_id": -1, "_stamp": 0, "_importance": 0}
    # whole: a row's gen outlives its entry (ids are never reused), and so does its seq (emptied rows are reused
    # oldest first, `_take_rows`: the ids of later adds depend on it)
    _WHOLE = ("_gen", "_seq", "_fill", "_count")

    def state_dict(self) -> dict:
        """Tensors and python scalars only (loads with torch.load(weights_only=True)); the per-row arrays at the
        live rows only (`rows`), gen and seq of every row."""
        rows = np.flatnonzero(self._row_id >= 0)  # (n,) ascending
        d = {"format": FORMAT, "config": {**self._settings(), **self._tuning()},
             "clock": self._clock, "adds": self._adds,
             "ann": [a.state() for a in self._ann] if self._ann is not None else [],
             "codes": self.coded.digest() if self.coded is not None else None,  # the codes its keys were checked under
             "rows": torch.from_numpy(rows)}
        skip = 0  # leading key columns left out
        if self.coded is not None and self._coded_exactly(rows):  # the coded blocks are their codes, bit for bit:
            # the table and the metadata write them back at a load (ContinualShift: 256 of 384 columns, 42 MB)
            skip = self.coded.width
            d["key_codes"] = {"codes": self.coded.codes.clone(), "fields": list(self.coded.fields)}
        for name in self._ROWS:  # (n, ...), keys (n, D - skip): indexing copies once
            saved = self._keys[rows, skip:] if name == "_keys" else getattr(self, name)[rows]
            d[name.lstrip("_")] = torch.from_numpy(saved)
        for name in self._WHOLE:
            d[name.lstrip("_")] = torch.from_numpy(getattr(self, name).copy())
        return d

    def _coded_exactly(self, rows: np.ndarray, chunk: int = 8192) -> bool:
        """Whether the coded blocks of the entries at `rows` are their codes bit for bit (`add` also takes blocks
        within CODE_TOLERANCE of them, e.g. from bfloat16 autocast; a state of those keeps whole keys). In chunks of
        rows: the compared copies stay small beside a snapshot of a full store."""
        Dc = self.coded.codes.shape[1]
        for start in range(0, len(rows), chunk):
            at = rows[start:start + chunk]
            for f, field in enumerate(self.coded.fields):
                ids = self._meta[at, META_FIELDS.index(field)]
                want, got = self.coded.block(ids), self._keys[at, f * Dc:(f + 1) * Dc]  # (c, Dc) each
                if (ids >= len(self.coded.codes)).any() or not np.array_equal(got.view(np.uint32),
                                                                              want.view(np.uint32)):
                    return False
        return True

    def _saved_codes(self, d: dict, n: int) -> CodedKeys | None:
        """The codes of a state saved without its keys' coded blocks (`key_codes`, `state_dict`), checked: the
        table must be the one whose digest it was saved with ("codes"), finite, and cover its entries' metadata, and
        keys (n, D - coded width) float32; None for a state of whole keys."""
        saved = d.get("key_codes")
        if saved is None:
            return None
        table, fields = (saved.get(k) for k in ("codes", "fields")) if isinstance(saved, dict) else (None, None)
        if not (isinstance(table, torch.Tensor) and table.dtype == torch.float32 and table.dim() == 2
                and isinstance(fields, (list, tuple)) and fields and all(f in META_FIELDS for f in fields)
                and len(fields) * table.shape[1] <= self.dim and self.metric == "ip"  # coded keys are ip's
                and bool(table.isfinite().all()) and CodedKeys(table, tuple(fields)).digest() == d.get("codes")):
            raise ValueError("FaissStore.load_state_dict: the saved key codes are not the codes its keys were saved "
                             "under; the state is damaged")
        coded, rest = CodedKeys(table, tuple(fields)), d.get("keys")
        shape = (n, self.dim - coded.width)
        if not isinstance(rest, torch.Tensor) or tuple(rest.shape) != shape or rest.dtype != torch.float32:
            got = f"{tuple(rest.shape)} {rest.dtype}" if isinstance(rest, torch.Tensor) else type(rest).__name__
            raise ValueError(f"FaissStore.load_state_dict: keys is {got}, expected {shape} torch.float32 (keys "
                             "saved without their coded blocks); the state is damaged")
        meta = d["meta"].numpy()
        for field in coded.fields:
            if (meta[:, META_FIELDS.index(field)] >= len(table)).any():
                raise ValueError(f"FaissStore.load_state_dict: the saved state holds {field} ids past its "
                                 f"{len(table)} key codes; it is damaged")
        return coded

    def _checked_arrays(self, d: dict, names: tuple[str, ...], n: int) -> None:
        """`d`'s arrays `names` are tensors of this store's shapes and dtypes (those of _ROWS with `n` rows), or a
        one-line ValueError; `d` first holds every part of a state."""
        missing = sorted({"config", "clock", "adds", "ann", *(n.lstrip("_") for n in names)} - set(d))
        if missing:
            raise ValueError(f"FaissStore.load_state_dict: the saved state lacks {', '.join(missing)}; it is damaged "
                             "or not a FaissStore's")
        if not isinstance(d["config"], dict):
            raise ValueError("FaissStore.load_state_dict: the saved settings ('config') are not a dict; the state is "
                             "damaged")
        check_saved_config("FaissStore", d["config"], self._settings())
        for name in names:
            saved, mine = d[name.lstrip("_")], getattr(self, name)
            if not isinstance(saved, torch.Tensor):
                raise ValueError(f"FaissStore.load_state_dict: {name.lstrip('_')} is a {type(saved).__name__}, "
                                 "expected a tensor; the state is damaged")
            shape = (n, *mine.shape[1:]) if name in self._ROWS else mine.shape
            if tuple(saved.shape) != shape or saved.numpy().dtype != mine.dtype:
                raise ValueError(f"FaissStore.load_state_dict: {name.lstrip('_')} is {tuple(saved.shape)} "
                                 f"{saved.numpy().dtype}, expected {shape} {mine.dtype}")

    def _live_rows_of(self, d: dict) -> dict:
        """A FaissStore/3 state (every row saved) as this format's (the live rows: id >= 0), checked as /3 states
        were: an empty row's id is -1 and its importance finite, as every row's."""
        self._checked_arrays(d, self._ROWS + self._WHOLE, self.rows)
        problem = ("entry ids that this store did not issue for their rows" if (d["row_id"].numpy() < -1).any()
                   else "NaN or inf importances" if not np.isfinite(d["importance"].numpy()).all() else None)
        if problem is not None:
            raise ValueError(f"FaissStore.load_state_dict: the saved state holds {problem}; it is damaged")
        rows = torch.from_numpy(np.flatnonzero(d["row_id"].numpy() >= 0))
        return {**d, "format": FORMAT, "rows": rows, **{n.lstrip("_"): d[n.lstrip("_")][rows] for n in self._ROWS}}

    def load_state_dict(self, d: dict) -> None:
        if isinstance(d, dict) and d.get("format") == LEGACY_FORMAT:
            d = self._live_rows_of(d)
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"FaissStore.load_state_dict: format {got!r}, expected {FORMAT!r}")
        rows = d.get("rows")
        if not isinstance(rows, torch.Tensor) or rows.dim() != 1 or rows.dtype != torch.int64:
            raise ValueError("FaissStore.load_state_dict: the saved state's rows are missing or not an int64 "
                             "vector; it is damaged or not a FaissStore's")
        rows = rows.numpy()
        self._checked_arrays(d, tuple(a for a in self._ROWS + self._WHOLE if a != "_keys"), len(rows))
        saved_codes = self._saved_codes(d, len(rows))  # keys (n, D - its width) if not None
        if saved_codes is None:
            self._checked_arrays(d, ("_keys",), len(rows))
        if len(rows) and not (rows[0] >= 0 and rows[-1] < self.rows and (np.diff(rows) > 0).all()):
            raise ValueError(f"FaissStore.load_state_dict: the saved rows are not ascending rows of [0, {self.rows}); "
                             "the state is damaged")
        clock, adds = saved_count(d["clock"], "clock", WHERE), saved_count(d["adds"], "adds", WHERE)
        # the index states too (they were found wanting only after every array had been copied)
        ann, keys = d["ann"], ("blob", "row_of", "alive", "built") if self.index == "hnsw" else ("blob",)
        if not isinstance(ann, (list, tuple)) or len(ann) != len(self._ann or []) or not all(
                isinstance(a, dict) and set(keys) <= set(a) for a in ann):
            raise ValueError(f"FaissStore.load_state_dict: the saved {self.index} index state does not fit "
                             f"{self.partitions} partitions; the state is damaged")
        # before anything is copied: the bookkeeping must agree with the rows (a hand-edited count loaded silently)
        part, count, fill = rows // self.capacity, d["count"].numpy(), d["fill"].numpy()
        used = np.zeros(self.partitions, dtype=np.int64)  # 1 + last live row of each partition
        np.maximum.at(used, part, rows - part * self.capacity + 1)
        if not ((count == np.bincount(part, minlength=self.partitions)).all() and (fill >= used).all()
                and (fill <= self.capacity).all()):
            raise ValueError("FaissStore.load_state_dict: the saved entry counts do not match its rows; the state is "
                             "damaged")
        for name in ("keys", "values"):  # add() refuses NaN / inf: such a file was damaged or edited
            bad = int((~np.isfinite(d[name].numpy())).any(1).sum())
            if bad:
                raise ValueError(f"FaissStore.load_state_dict: {name} of {bad} entries hold NaN or inf, which add() "
                                 "refuses; the state is damaged")
        self._check_rows(d, rows, clock)
        if self.coded is not None and d.get("codes") != self.coded.digest():  # a search looks coded blocks up by
            # metadata: keys that are not those codes (a store saved with other codes, or without them) ranked silently
            # wrong, a token past the table failed. Keys checked at `add` under these very codes need no second look.
            keys, meta = d["keys"].numpy(), d["meta"].numpy()
            if saved_codes is not None:  # whole keys for the check (rarely: a store made with other codes)
                keys = np.empty((len(rows), self.dim), dtype=np.float32)  # (n, D)
                write_keys(keys, np.arange(len(rows)), d["keys"].numpy(), meta, saved_codes)
            self.coded.check(keys, {f: meta[:, META_FIELDS.index(f)] for f in self.coded.fields},
                             "FaissStore.load_state_dict", "make this store with the codes of the store that saved "
                             "them (MemNet: its token_codes), or without coded=")
        # the indexes load into new objects first (a damaged blob raises here), so a refused state changes nothing
        fresh = None if self._ann is None else [self._make_ann(p) for p in range(self.partitions)]
        try:
            for index, state in zip(fresh or [], d["ann"], strict=True):
                index.load_state(state)
        except Exception as e:
            raise ValueError(f"FaissStore.load_state_dict: the saved {self.index} index state does not load "
                             f"({type(e).__name__}); the state is damaged") from None
        self._undo.before_write(slice(None))  # (a load within a mark: undone whole)
        self._ann_changes(range(self.partitions))
        for name, empty in self._EMPTY.items():
            mine = getattr(self, name)
            mine.fill(empty)
            if name == "_keys" and saved_codes is not None:
                write_keys(mine, rows, d["keys"].numpy(), d["meta"].numpy(), saved_codes)
            else:
                mine[rows] = d[name.lstrip("_")].numpy()
        for name in self._WHOLE:
            getattr(self, name)[...] = d[name.lstrip("_")].numpy()
        self._write_search_copies()
        self._clock, self._adds, self._ann = clock, adds, fresh

    def _check_rows(self, d: dict, rows: np.ndarray, clock: int) -> None:
        """What `add` and `search` guarantee of the entries of a saved state (`rows` (n,): the rows holding them, its
        per-row arrays' order; `clock`: the saved clock), or one ValueError line: an entry's id is (gen - 1) R + row
        (ids are issued so: an edited one returned another entry's values for it), generations >= 0 (a negative one
        issued negative ids), insertion numbers distinct and below the clock, last-use stamps from the insertion on
        and below the clock (fifo / lru order, tie-breaks and replacement's newest-first read them: edited ones
        evicted or replaced the wrong entries, and later adds reissued them), finite importances (NaN ones were never
        evicted), keys no longer than unit in a cosine store (others scored past [-1, 1]) and each entry's lane one
        of the store's, its partition's with scope=lane (another lane's survived that lane's `clear`)."""
        row_id, gen = d["row_id"].numpy(), d["gen"].numpy()
        seq, stamp = d["seq"].numpy()[rows], d["stamp"].numpy()
        problem = None
        if (gen < 0).any() or (gen > MAX_SAVED_COUNT).any():
            problem = f"generation counts out of [0, {MAX_SAVED_COUNT}]"
        elif (row_id < 0).any() or (row_id != (gen[rows] - 1) * self.rows + rows).any():
            problem = "entry ids that this store did not issue for their rows"
        elif (seq < 0).any() or (seq >= clock).any() or len(np.unique(seq)) != len(seq):
            problem = f"insertion numbers (seq) that are negative, repeated or not below its clock ({clock})"
        elif (stamp < seq).any() or (stamp >= clock).any():
            problem = f"last-use stamps before their entry's insertion or not below its clock ({clock})"
        elif not np.isfinite(d["importance"].numpy()).all():
            problem = "NaN or inf importances"
        elif self.metric == "cosine" and len(rows):
            keys = d["keys"].numpy()  # |k| = 1, or below where a key under 1e-12 was scaled by the 1e12 cap
            sq = np.einsum("ij,ij->i", keys, keys)  # (no copy of the keys: a store may hold millions)
            if not (sq <= 1 + 2e-3).all():
                problem = "keys longer than unit vectors (a cosine store keeps them normalised)"
        if problem is None and len(rows):
            lane = d["meta"].numpy()[:, META_FIELDS.index("lane")]
            own = rows // self.capacity if self.scope == "lane" else None
            if ((lane < 0) | (lane >= self.lanes)).any() or (own is not None and (lane != own).any()):
                problem = f"entries of lanes outside [0, {self.lanes}) or outside their lane's partition"
        if problem is not None:
            raise ValueError(f"FaissStore.load_state_dict: the saved state holds {problem}; it is damaged")

    def save(self, path) -> None:
        """Write folder `path`: index-<token>.pt (normalised keys + FAISS indexes), then store.pt (values, metadata,
        ids, eviction state, settings; it names the index file), each atomically; then the older index files of
        this folder's saves go (`_replaced_index_files`), and no other file."""
        folder, (state, token) = Path(path), (self.state_dict(), uuid.uuid4().hex)
        index_name = f"index-{token}.pt"
        replaced = _replaced_index_files(folder)
        index_part = {"format": FORMAT + ":index", "token": token, "keys": state.pop("keys"), "ann": state.pop("ann")}
        atomic_torch_save(index_part, folder / index_name)
        try:
            atomic_torch_save({**state, "token": token, "index_file": index_name}, folder / "store.pt")  # the commit
        except BaseException:  # (a full disk): the save before stands, and this one's index file, the larger part,
            (folder / index_name).unlink(missing_ok=True)  # held on to the room a retry needs until a save committed
            raise
        for old in replaced:
            if old.name != index_name and old.is_file():
                old.unlink()
        remove_dead_writers_temp_files(folder, SAVED_INDEX)  # killed saves' index temps (each save names its own)

    @classmethod
    def load(cls, path) -> StorePersistence:
        """Rebuild a store saved with `save(path)`; missing, damaged or mismatched files raise one-line errors. A
        save into the folder while it is read (another process's) is not one: its commit deletes the index file the
        store.pt just read names, so the read starts again on the store.pt that save committed (LOAD_TRIES times);
        a reader was told the files were damaged or from another save."""
        commit = Path(path) / "store.pt"
        for attempt in range(LOAD_TRIES):
            committed = file_stamp(commit)
            try:
                return cls._load_once(path)
            except (OSError, ValueError):
                if attempt == LOAD_TRIES - 1 or committed is None or file_stamp(commit) == committed:
                    raise

    @classmethod
    def _load_once(cls, path) -> StorePersistence:
        if Path(path).is_file():  # e.g. the store.pt inside the folder
            raise FileNotFoundError(f"FaissStore: {path} is a file, and FaissStore.save writes a folder; point "
                                    "FaissStore.load at the folder")
        store_part = checked_torch_load(Path(path) / "store.pt", "FaissStore", (FORMAT, LEGACY_FORMAT),
                                        saved_as="folder")
        index_name = store_part.pop("index_file", LEGACY_INDEX)
        if not isinstance(index_name, str) or Path(index_name).name != index_name:
            raise ValueError(f"FaissStore: {path}/store.pt names index file {index_name!r}, not a file in its folder")
        if not (Path(path) / index_name).is_file():
            raise FileNotFoundError(f"FaissStore: {path}/store.pt names index file {index_name}, which is not in the "
                                    "folder (a store.pt from another save, or a folder copied in part); load the "
                                    "folder FaissStore.save wrote whole")
        index_part = checked_torch_load(Path(path) / index_name, "FaissStore", store_part["format"] + ":index")
        if store_part.get("token") != index_part.get("token"):
            raise ValueError(f"FaissStore: {path}/{index_name} and store.pt come from different saves")
        if not isinstance(store_part.get("config"), dict):
            raise ValueError(f"FaissStore: {path}/store.pt lacks its settings ('config'); it is damaged")
        cfg = dict(store_part["config"])
        if cfg.get("index") == "ivf" and cfg.get("ivf_lists") is not None:  # saves from before the store refused
            # IVF settings beyond its bounds hold the values as asked; they used them clamped, as here
            cfg["ivf_lists"] = ivf_lists_for(cfg["capacity"], cfg["ivf_lists"])
            if cfg.get("ivf_probes") is not None:
                cfg["ivf_probes"] = ivf_probes_for(cfg["ivf_lists"], cfg["ivf_probes"])
        store = build_from_saved(cls, cfg, f"FaissStore: {path}/store.pt", skip=("coded",))
        store.load_state_dict({**store_part, "keys": index_part["keys"], "ann": index_part["ann"]})
        return store


def _replaced_index_files(folder: Path) -> list[Path]:
    """The index files a new save into `folder` replaces: the one its store.pt names (index.pt for a save from
    before per-save names) and those of saves killed before they committed (index-<uuid4 hex>.pt, a name only
    `save` makes). A user's own files there (index.pt beside no store.pt that names it, index-best.pt) were
    deleted too, by a glob of index-*.pt."""
    files = [p for p in folder.glob("index-*.pt") if SAVED_INDEX.fullmatch(p.name)]
    named = None
    for mmap in (True, False):  # mmap: only the small pickle of store.pt is read, not its arrays (where it can)
        try:
            named = torch.load(folder / "store.pt", map_location="cpu", weights_only=True, mmap=mmap)
            break
        except Exception:  # none, or not a store's (it names no index file of ours), or no mmap here
            if not (folder / "store.pt").is_file():
                break
    if isinstance(named, dict) and str(named.get("format", "")).startswith("memstream.FaissStore/"):
        name = named.get("index_file", LEGACY_INDEX)
        if isinstance(name, str) and Path(name).name == name and name not in ("", ".", "..", "store.pt"):
            files.append(folder / name)
    return files
