"""What a sweep checks before Ray starts, each failure one `error:` line: the cluster at RAY_ADDRESS answers, a
trial's CPUs and GPUs fit a local Ray, the sweep folder can be made. Ray would otherwise retry for minutes, wait forever
or fail with a traceback. And where Ray's and Tune's log lines go: the sweep folder's ray.log, not the terminal."""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from pathlib import Path

from agents.checkpoint_paths import shell_arg
from agents.config import ConfigError
from agents.new_folders import STAMP_LENGTH, claim_new_folder, remove_made_folders, stamped_names
from agents.tune_signals import EXPERIMENT_STATE


def check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """A RAY_ADDRESS of the form [ray://]host:port must accept a TCP connection within `timeout_s`: ray.init
    otherwise retries for minutes (over 3 minutes measured) before it fails. Other forms (unset, auto, local) are
    left to ray.init."""
    if not address or "://" in address and not address.startswith("ray://"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not (sep and host and port.isdigit()):
        return  # not host:port: ray.init's own parser says what is wrong
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"RAY_ADDRESS={address!r}: nothing answers at {host}:{port} ({exc.strerror or exc}); "
                          "start the cluster's head there (`ray start --head`) or unset RAY_ADDRESS for a local "
                          "Ray") from None


def local_cpus() -> float:
    """The CPUs a local `ray.init()` gives its node, counted as Ray counts them: RAY_OVERRIDE_RESOURCES's CPU when
    set, else os.cpu_count() capped by a container's cgroup CPU quota (ray._private.utils.get_num_cpus). Not the
    affinity mask: Ray ignores it, so `taskset` does not change what a trial may reserve."""
    import json

    try:
        override = json.loads(os.environ.get("RAY_OVERRIDE_RESOURCES") or "{}").get("CPU")
    except (ValueError, AttributeError):
        override = None  # ray.init reports a malformed override itself
    if override is not None:
        return float(override)
    try:
        from ray._private.utils import get_num_cpus  # private: fall back to what it starts from
    except ImportError:
        return float(os.cpu_count() or 1)
    return float(get_num_cpus(override_docker_cpu_warning=True))


def check_local_resources(resources: dict, base: dict, search_space: dict) -> None:
    """A trial that reserves more CPUs or GPUs than a local Ray has is never scheduled: Tune waits forever and its
    warning goes to ray.log only. Checked only for a Ray this command starts on this machine: a cluster
    (RAY_ADDRESS) may have, or autoscale to, bigger nodes; a Ray already running in-process is the caller's.
    Ray hides the GPUs from a trial that reserves none (CUDA_VISIBLE_DEVICES=""): trials of device=cuda would each
    fail, refused here wherever Ray runs; those of device=auto train on the CPU, which a note says beside GPUs.
    First of all, Ray Tune must import (`check_tune_imports`)."""
    check_tune_imports()
    import ray

    gpus, devices = resources["gpus"], trial_devices(base, search_space)
    if "cuda" in devices and not gpus:
        raise ConfigError("device=cuda: the trials reserve no GPU (sweep.resources.gpus=0), and Ray hides the GPUs "
                          "from such trials; set sweep.resources.gpus=1 (0.5: two trials share one GPU)")
    if os.environ.get("RAY_ADDRESS", "local") not in ("", "local") or ray.is_initialized():  # a cluster's resources
        return
    cpus, have = resources["cpus"], local_cpus()
    if cpus > have:
        raise ConfigError(f"sweep.resources.cpus={cpus}: no trial would ever start, this machine has {have:g} "
                          f"CPU(s) (as Ray counts them); set sweep.resources.cpus={have:g} or less, or run the sweep "
                          "on a cluster with bigger nodes (RAY_ADDRESS)")
    have = local_gpus()
    if gpus > have:
        raise ConfigError(f"sweep.resources.gpus={gpus:g}: no trial would ever start, this machine has {have} GPU(s) "
                          "(as torch counts them); set sweep.resources.gpus=0 (the trials train on the CPU), or run "
                          "the sweep on a cluster with GPUs (RAY_ADDRESS)")
    if have and not gpus and "auto" in devices:
        print(f"note: the trials reserve no GPU (sweep.resources.gpus=0), so Ray hides this machine's {have} GPU(s) "
              "from them and device=auto trains them on the CPU; sweep.resources.gpus=1 (0.5: two trials share one) "
              "gives each trial a GPU", flush=True)


def check_tune_imports() -> None:
    """Ray Tune imports, or one ConfigError line with the reason: its own ImportError says to install ray[tune]
    whatever the cause, and came as a traceback once Ray had started (with NumPy 1.26, pyarrow, which Tune
    imports, stops: "pyarrow requires NumPy 2.0 or newer")."""
    try:
        import ray.tune  # noqa: F401
    except ImportError as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(f"Ray Tune cannot be imported here ({type(cause).__name__}: "
                          f"{(str(cause).splitlines() or [''])[0][:200]}); install memstream as the README's set-up "
                          "command does (pip install -e \".[dev]\"), which brings the versions it needs") from None


def local_gpus() -> int:
    """This machine's CUDA devices as torch counts them (CUDA_VISIBLE_DEVICES honoured, as a local Ray does)."""
    import torch

    return torch.cuda.device_count()


def trial_devices(base: dict, search_space: dict) -> set[str]:
    """The `device` values the trials run with: the base config's, or those a search space sweeps."""
    swept = search_space.get("device")
    return {str(v) for args in swept.values() for v in args} if swept else {str(base.get("device", "auto"))}


def make_sweep_folder(sweep_dir: Path, new: bool = False) -> tuple[Path, list[Path]]:
    """The sweep folder, created before Ray starts: a path through a file, no permission or a read-only disk
    is one error line (the wording of agents.run's run folder). A new sweep claims the first free name from
    `sweep_dir`'s stamp on (`claim_new_folder`: another sweep started in the same second may have taken it since
    `prepare` chose it); a resumed one uses its own. Returns the folder and those this call made, deepest first
    (none for the folder of a resumed sweep), for `remove_made_folders`."""
    try:
        if new:  # (prepare named it <stamp> or <stamp>-<n>: the stamp is its first 19 characters)
            return claim_new_folder(stamped_names(sweep_dir.parent, sweep_dir.name[:STAMP_LENGTH]))
        made = [p for p in (sweep_dir, *sweep_dir.parents) if not p.exists()]
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the sweep folder {str(sweep_dir)!r} ({exc.strerror or exc}); choose "
                          "another runs_root=") from None
    return sweep_dir, made


def write_plan(path: Path, saved: dict) -> None:
    """The sweep's plan (sweep.yaml, what resume= reads), written as the sweep starts, after Ray did; a write that
    fails (a full disk) is one ConfigError line (it was a traceback), and `run_sweep` removes the new folder."""
    import yaml

    from agents.report import write_text_atomic
    from memory.disk import write_failure

    try:
        write_text_atomic(path, yaml.safe_dump(saved, sort_keys=False))
    except OSError as exc:
        why, fix = write_failure(exc, path.parent)
        raise ConfigError(f"cannot write {path} ({why}): {fix}, then start the sweep again") from None


def readable_sweep(sweep_dir: Path) -> Path:
    """`sweep_dir` of resume=, or one ConfigError line where it (or a folder above it) may not be read: Tune's
    restore raised pyarrow's PermissionError ("Failed stat()ing path ..."), a traceback. (Reading it takes Ray Tune:
    `check_tune_imports` first.)"""
    check_tune_imports()
    try:
        os.listdir(sweep_dir)
    except (FileNotFoundError, NotADirectoryError):  # load_saved_plan says what is there instead
        pass
    except PermissionError as exc:
        raise ConfigError(f"resume={str(sweep_dir)!r}: cannot read it ({exc.strerror}); give it (and the folders "
                          "above it) read and search permission, then run the command again") from None
    return sweep_dir


def lock_sweep(sweep_dir: Path) -> int | None:
    """One driver per sweep folder: an flock on <sweep dir>/.run.lock while the sweep runs (`agents.run_lock`; the
    kernel drops it when the driver dies, SIGKILL included). A resume= of a sweep still running started a second Tune
    on its trials: their folder locks failed the copies, three trials ended "error", and the first sweep, whose trials
    had all trained to the end, read the second's saved state and ended "interrupted" with those errors. Returns the
    lock's fd for `unlock_sweep`."""
    from agents.run_lock import FolderInUse, lock_run

    try:
        return lock_run(sweep_dir)
    except FolderInUse as exc:  # (a lock file that cannot be opened keeps its own line)
        raise ConfigError(f"sweep folder {str(sweep_dir)!r} is in use by another sweep (pid {exc.holder}); wait for it "
                          f"to end or stop it, then continue it with: python -m agents.tune "
                          f"{shell_arg('resume', sweep_dir)}") from None


def unlock_sweep(fd: int | None, sweep_dir: Path, made: list[Path]) -> None:
    """Release `lock_sweep`'s lock; with `made` (a new sweep whose Ray did not start), its lock file and the
    folders made for it go too, as `remove_made_folders`."""
    from agents.run_lock import RUN_LOCK

    if fd is not None:
        os.close(fd)
    if made:
        (sweep_dir / RUN_LOCK).unlink(missing_ok=True)
        remove_made_folders(made)


def remove_unstarted_sweep(sweep_dir: Path, made: list[Path]) -> None:
    """Undo a new sweep stopped (Ctrl+C, SIGTERM) after Ray started, before Tune saved its state: the caller checked
    that the folder holds only what the sweep and Tune wrote by then (ray.log, sweep.yaml or its temp file, tuner.pkl).
    It was left behind, which resume= then called a sweep holding no trial. Ray's log file is closed first."""
    ray_logger = logging.getLogger("ray")
    for handler in list(ray_logger.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == sweep_dir:
            ray_logger.removeHandler(handler)
            handler.close()
    if not ray_logger.handlers:  # else Python's last-resort handler prints its warnings to the terminal
        ray_logger.addHandler(logging.NullHandler())
    for path in sweep_dir.iterdir():
        path.unlink(missing_ok=True)
    remove_made_folders(made)


def damaged(path: Path, why: str = "") -> str:
    """The one line for a sweep folder whose saved state cannot be read back."""
    return f"{str(path)!r} is damaged{f' ({why})' if why else ''}; start the sweep afresh"


TUNE_STATES = (EXPERIMENT_STATE, "basic-variant-state-*.json")  # Tune's trials (JSON), its searcher (pickle)


def check_tune_state(sweep_dir: Path) -> None:
    """The newest of each of Tune's state files, the ones its restore reads, loads. Tune copies them into the sweep
    folder in place (not atomically), so a sweep killed while it copies leaves one cut short; Tune's restore then
    started the experiment over without its search space: one trial of none of the swept values (a new folder, the
    saved state replaced), then `error: memory.slots: null is not a whole number`."""
    import json
    import pickle

    for pattern in TUNE_STATES:
        files = sorted(sweep_dir.glob(pattern))  # Tune reads the newest by name (a timestamp)
        if not files:
            continue  # (no experiment state: not a sweep Tune saved, which load_saved_plan names)
        try:
            data = files[-1].read_bytes()
            json.loads(data) if pattern.startswith("experiment") else pickle.loads(data)  # noqa: S301 (Tune's own)
        except Exception as exc:  # noqa: BLE001  (whatever a cut-short file raises: it does not load)
            why = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}; cut short, as by a kill while Tune " \
                  "wrote it"
            raise ConfigError(damaged(files[-1], why)) from None


def _token_available() -> bool:
    """A Ray auth token where Ray looks for one: RAY_AUTH_TOKEN, the file at RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or Path(path or Path.home() / ".ray" / "auth_token").is_file()


def connect_error(address: str | None, exc: BaseException) -> str:
    """The one line for a ray.init(address) that failed to connect (`exc`: its ConnectionError or Ray's
    AuthenticationError). Ray 2.60 enables token auth on a cluster that `ray start` started where a token exists
    (~/.ray/auth_token, written by any local ray.init), but a client given an explicit address sends its token
    only with RAY_AUTH_MODE=token: the connection then fails after ~20 s of InvalidAuthToken warnings, as a
    ConnectionError that need not name auth. So: auth words in the error, or a token at hand that Ray did not
    send (RAY_AUTH_MODE is not token), mean the cluster wants its token."""
    why = (str(exc).splitlines() or [""])[0]
    mode = (os.environ.get("RAY_AUTH_MODE") or "").lower()
    named = any(w in str(exc).lower() for w in ("auth", "unauthenticated", "token"))
    if mode == "token" and named:
        return (f"RAY_ADDRESS={address!r}: the Ray cluster there rejected this machine's auth token ({why}); use the "
                "cluster's token (`ray get-auth-token` on its head) in RAY_AUTH_TOKEN or ~/.ray/auth_token")
    none_running = "could not find any running ray instance" in str(exc).lower()  # RAY_ADDRESS=auto, nothing up
    if mode != "token" and (named or _token_available() and not none_running):
        needs = "needs" if named else "probably needs"  # a token at hand, unsent: the usual cause, not the only one
        return (f"RAY_ADDRESS={address!r}: the Ray cluster there {needs} its auth token ({why}); set "
                "RAY_AUTH_MODE=token (Ray then sends the token in RAY_AUTH_TOKEN, the file at RAY_AUTH_TOKEN_PATH or "
                "~/.ray/auth_token: the cluster's, from `ray get-auth-token` on its head)")
    return (f"RAY_ADDRESS={address!r}: no Ray cluster answers there ({why}); start one with `ray start --head` or "
            "unset RAY_ADDRESS for a local Ray")


RAY_LOG = "ray.log"


def _ray_log_handler(sweep_dir: Path) -> logging.Handler:
    """A handler that appends to <sweep dir>/ray.log (a folder it cannot write in: one that drops the lines)."""
    try:
        handler = logging.FileHandler(sweep_dir / RAY_LOG)
    except OSError:
        return logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


def log_ray_to(sweep_dir: Path) -> None:
    """From now on Ray's and Tune's log lines go to <sweep dir>/ray.log (the `ray` logger: Tune and Train log below
    it, and it does not propagate to the root); the terminal handler, or an earlier sweep's log file, goes."""
    ray_logger = logging.getLogger("ray")
    for old in list(ray_logger.handlers):
        ray_logger.removeHandler(old)
        if isinstance(old, logging.FileHandler):
            old.close()
    ray_logger.addHandler(_ray_log_handler(sweep_dir))
    ray_logger.setLevel(logging.INFO)


@contextmanager
def ray_log_while(sweep_dir: Path):
    """Ray's and Tune's log lines of the block go to <sweep dir>/ray.log; the `ray` logger is put back after."""
    ray_logger = logging.getLogger("ray")
    saved, level = list(ray_logger.handlers), ray_logger.level
    handler = _ray_log_handler(sweep_dir)
    for old in saved:
        ray_logger.removeHandler(old)
    ray_logger.addHandler(handler)
    ray_logger.setLevel(min(level or logging.INFO, logging.INFO))
    try:
        yield
    finally:
        ray_logger.removeHandler(handler)
        handler.close()
        for old in saved:
            ray_logger.addHandler(old)
        ray_logger.setLevel(level)
