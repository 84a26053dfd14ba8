"""Artifact I/O shared by every stage: atomic writes, checksums and manifests.

Deliberately numpy/stdlib only, so the torch-free serving path can import it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

MANIFEST = "manifest.json"

# Packages whose versions go into every manifest (missing ones are recorded as null).
TRACKED_PACKAGES = (
    "genrec", "torch", "lightning", "transformers", "vector-quantize-pytorch", "timm",
    "polars", "numpy", "onnx", "onnxruntime",
)


class ArtifactError(RuntimeError):
    """An artifact on disk is missing, corrupt or inconsistent; the message says how to fix it."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    An interrupted writer therefore never leaves a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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

    mkdtemp makes it 0700; it gets normal folder permissions, since it becomes the artifact.
    """
    target = Path(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent))
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
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
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


def write_manifest(folder: str | os.PathLike, stage: str, *, files: list[str], **fields: Any) -> dict:
    """Write ``folder/manifest.json`` with checksums of ``files`` (relative to folder) and versions."""
    folder = Path(folder)
    manifest = {
        "stage": stage,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
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
        hint = f" Run `genrec {stage}` first." if stage else ""
        raise ArtifactError(f"{path} not found: {folder} is not a finished artifact folder.{hint}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}:{e.lineno}: manifest is not valid JSON ({e.msg}). Re-run the stage that wrote it.") from e
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
