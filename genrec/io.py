"""Artifact I/O shared by every stage: atomic writes, checksums, manifests and the run-folder lock.

Deliberately numpy/stdlib only, so the torch-free serving path can import it.

Temporary files and folders are named ``.NAME.<pid>-XXXX.tmp`` (``.old`` for a folder being replaced):
the writer's pid lets a later run remove what a killed writer left behind, and only that.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

try:
    import fcntl
except ImportError:   # Windows: run_lock falls back to an O_EXCL lock file and a pid check
    fcntl = None

MANIFEST = "manifest.json"

# Packages whose versions go into every manifest (missing ones are recorded as null).
TRACKED_PACKAGES = (
    "genrec", "torch", "lightning", "transformers", "vector-quantize-pytorch", "timm",
    "polars", "numpy", "onnx", "onnxruntime",
)


# The lock file a stage command holds inside the run folder while it runs (see run_lock).
LOCK_FILE = ".lock"
# Run sub-folder each stage writes; used to name the right manifest when a run folder is passed.
STAGE_DIRS = {"prepare": "dataset", "embed": "features", "tokenize": "sid"}


class ArtifactError(RuntimeError):
    """An artifact on disk is missing, corrupt or inconsistent; the message says how to fix it."""


class RunLockedError(ArtifactError):
    """Another live process holds the run folder's lock; the message names its pid and command."""


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this machine (it may belong to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _temp_prefix(name: str) -> str:
    return f".{name}.{os.getpid()}-"


_TEMP_RE = r"\.{name}\.(\d+)-.*\.(tmp|old)"


def remove_stale_temps(target: str | os.PathLike) -> list[Path]:
    """Remove the temporary files/folders of ``target`` left by writers that are no longer running.

    A ``.old`` folder holds the previous ``target`` while a folder is being replaced; if the writer died
    between its two renames, ``target`` is missing and the old copy is put back instead of deleted.
    Entries of live processes (another writer at work) are left alone. Returns what was removed.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = re.compile(_TEMP_RE.format(name=re.escape(target.name)))
    removed = []
    for name in sorted(n for n in os.listdir(target.parent) if n.startswith(f".{target.name}.")):
        entry = target.parent / name
        m = pattern.fullmatch(name)
        if m is None or pid_alive(int(m.group(1))):
            continue
        if m.group(2) == "old" and not target.exists() and (entry / target.name).exists():
            os.replace(entry / target.name, target)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    if removed:
        print(f"genrec: removed {len(removed)} leftover temporary file(s) of an interrupted run beside {target}: "
              f"{', '.join(p.name for p in removed)}", file=sys.stderr, flush=True)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    An interrupted writer therefore never leaves a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; artifacts get normal file permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_folder_beside(target: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """An empty folder next to ``target`` (same filesystem, so it can be renamed onto it).

    Leftovers of killed writers of ``target`` are removed first (:func:`remove_stale_temps`).
    mkdtemp makes it 0700; it gets normal folder permissions, since it becomes the artifact.
    """
    target = Path(target)
    remove_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target.name), suffix=suffix, dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def publish_folder(tmp: Path, target: Path) -> None:
    """Rename the finished folder ``tmp`` onto ``target``.

    An existing ``target`` is moved aside first and deleted only after the new folder is in
    place (it is put back if the second rename fails), so readers never see a half folder.
    """
    target = Path(target)
    if not target.exists():
        os.replace(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=_temp_prefix(target.name), suffix=".old", dir=target.parent))
    os.replace(target, old / target.name)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old / target.name, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_folder_atomic(target: str | os.PathLike, write: Callable[[Path], Any]) -> Any:
    """Build a folder in a temporary sibling with ``write(tmp)``, then publish it onto ``target``.

    Any error removes the temporary folder, so an interrupted stage leaves nothing half-written.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder_beside(target)
    try:
        result = write(tmp)
        publish_folder(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def as_manifest_json(obj: Any) -> Any:
    """``obj`` as it reads back from a manifest written by write_json_atomic (tuples become lists,
    numpy scalars plain numbers, paths strings), so a requested config compares equal to a stored one."""
    return json.loads(json.dumps(obj, sort_keys=True, default=_json_default))


def save_npy_atomic(path: str | os.PathLike, array) -> None:
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def input_checksums(run: str | os.PathLike, paths) -> dict[str, str]:
    """``{key: sha256}`` of the files a stage read, as its manifest's ``inputs`` records them: the key is
    the path relative to the run folder (``dataset/items.parquet``), or absolute for a file outside it
    (prepare's source files, imported matrices)."""
    run = Path(run).resolve()
    out = {}
    for path in paths:
        path = Path(path).resolve()
        key = path.relative_to(run).as_posix() if path.is_relative_to(run) else str(path)
        out[key] = sha256_file(path)
    return dict(sorted(out.items()))


def changed_input(run: str | os.PathLike, inputs: dict[str, str]) -> str | None:
    """The first input of a manifest whose file no longer matches its recorded checksum, as a reason
    (None when all match). A missing file inside the run counts as changed; a missing file outside
    it (e.g. a source folder that was not copied with the run) cannot be checked and is skipped."""
    run = Path(run)
    for key, expected in sorted(inputs.items()):
        path = run / key    # an absolute key stays absolute
        if not path.exists():
            if not Path(key).is_absolute():
                return f"{key} is missing"
            continue
        if sha256_file(path) != expected:
            return f"{key} changed"
    return None


def write_manifest(folder: str | os.PathLike, stage: str, *, files: list[str], inputs: dict[str, str] | None = None,
                   config: dict | None = None, **fields: Any) -> dict:
    """Write ``folder/manifest.json``, the one manifest shape every stage shares, and return it:

    ``stage``     the stage that wrote the folder
    ``inputs``    ``{path: sha256}`` of what it read (see :func:`input_checksums`); a later run compares
                  these to decide whether the folder is out of date
    ``config``    the stage's config as plain JSON (``dataclasses.asdict`` or ``to_dict()``)
    ``versions``  python and package versions; ``created``: UTC time, ISO 8601
    ``files``     ``{name: sha256}`` of ``files`` (relative to ``folder``), checked by ``read_manifest(verify=True)``
    plus the stage's own ``fields``.
    """
    folder = Path(folder)
    manifest = {
        "stage": stage,
        "inputs": dict(sorted((inputs or {}).items())),
        "config": as_manifest_json(config or {}),
        "versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": {name: sha256_file(folder / name) for name in sorted(files)},
        **fields,
    }
    write_json_atomic(folder / MANIFEST, manifest)
    return manifest


def read_manifest(folder: str | os.PathLike, stage: str | None = None, *, verify: bool = False) -> dict:
    """Read ``folder/manifest.json``; optionally check that every listed file matches its checksum."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        sub = STAGE_DIRS.get(stage)
        if sub is not None and folder.name != sub:   # a run folder without this stage's output
            source = " SOURCE" if stage == "prepare" else ""
            raise ArtifactError(f"{folder / sub / MANIFEST} not found: {folder} has no finished {sub}/ folder. "
                                f"Run `genrec {stage}{source} --run {folder}` first.")
        hint = f" Run `genrec {stage}` first." if stage else ""
        raise ArtifactError(f"{path} not found: {folder} is not a finished artifact folder.{hint}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}:{e.lineno}: manifest is not valid JSON ({e.msg}). "
                            "Re-run the stage that wrote it.") from e
    if stage is not None and manifest.get("stage") != stage:
        raise ArtifactError(f"{path}: expected a '{stage}' manifest, found stage={manifest.get('stage')!r}.")
    if verify:
        verify_files(folder, manifest.get("files", {}))
    return manifest


def verify_files(folder: Path, files: dict[str, str]) -> None:
    for name, expected in files.items():
        path = folder / name
        if not path.exists():
            raise ArtifactError(f"{path}: file listed in {folder / MANIFEST} is missing. Re-create the folder.")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(
                f"{path}: checksum mismatch (manifest {expected[:12]}…, file {actual[:12]}…). "
                "The file was modified or corrupted after it was written; re-create the folder."
            )


# ---------------------------------------------------------------------------------------------
# the run-folder lock

_HELD: dict[Path, int] = {}   # run folders this process holds the lock of -> nesting depth


def _holder(path: Path) -> dict:
    """The pid/command recorded in a lock file ({} while the holder has not written it yet)."""
    for _ in range(20):   # the holder writes its pid right after taking the lock
        try:
            holder = json.loads(path.read_text(encoding="utf-8") or "{}")
        except (OSError, json.JSONDecodeError):
            holder = {}
        if holder.get("pid"):
            return holder
        time.sleep(0.05)
    return {}


def _locked_message(run: Path, holder: dict) -> str:
    pid, command = holder.get("pid", "unknown"), holder.get("command", "unknown command")
    since = f", since {holder['started']}" if holder.get("started") else ""
    return (f"{run} is in use by pid {pid} (`{command}`{since}): two commands on one run folder would overwrite "
            "each other's output. Wait for it to finish (or stop it), or use another --run folder.")


def _default_command() -> str:
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"


@contextlib.contextmanager
def run_lock(run: str | os.PathLike, command: str | None = None, *, create: bool = True) -> Iterator[Path]:
    """Hold ``RUN/.lock`` while a stage writes into ``run``, so a second command on it is refused.

    The lock is ``fcntl.flock`` on the file (the kernel releases it when the holder exits, however it
    exits, so a lock left by a killed process is simply taken over); the file records the holder's pid,
    command and start time for the refusal message. Re-entrant within a process (``genrec pipeline``
    holds it while ``ensure_stages`` takes it again). Creates ``run`` if needed (with ``create``; a
    stage that only adds to a run wants it to exist); raises :class:`RunLockedError` when another live
    process holds it.
    """
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise ArtifactError(f"{run} is a file, not a run folder: pass a folder path as --run "
                            "(it is created if it does not exist)")
    if not create and not run.is_dir():
        raise ArtifactError(f"run folder {run} does not exist: check the path, or start the run with "
                            f"`genrec prepare SOURCE --run {run}`")
    run.mkdir(parents=True, exist_ok=True)
    key = run.resolve()
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield run
        finally:
            _HELD[key] -= 1
        return
    path = run / LOCK_FILE
    record = {"pid": os.getpid(), "command": command or _default_command(),
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    release = _flock(path, run) if fcntl is not None else _exclusive_create(path, run)
    try:
        with open(path, "r+", encoding="utf-8") as f:
            f.truncate(0)
            f.write(json.dumps(record) + "\n")
        _HELD[key] = 1
        try:
            yield run
        finally:
            del _HELD[key]
    finally:
        release()


def _flock(path: Path, run: Path) -> Callable[[], None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunLockedError(_locked_message(run, _holder(path))) from None

    def release() -> None:
        # The file stays (deleting a flock-ed file lets two processes lock different inodes); emptied so
        # it names no holder.
        os.ftruncate(fd, 0)
        os.close(fd)
    return release


def _exclusive_create(path: Path, run: Path) -> Callable[[], None]:
    for _ in range(2):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            holder = _holder(path)
            if holder.get("pid") and pid_alive(int(holder["pid"])):
                raise RunLockedError(_locked_message(run, holder)) from None
            path.unlink(missing_ok=True)   # stale: its holder is gone
            continue
        os.close(fd)
        return lambda: path.unlink(missing_ok=True)
    raise RunLockedError(_locked_message(run, _holder(path)))
