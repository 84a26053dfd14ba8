"""Start the real server (`python serve.py`, uvicorn on loopback) in a subprocess for a test."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 90     # a loaded 2-core machine can take a while to import onnxruntime + fastapi


@contextmanager
def running_server(folder: Path, log_path: Path, *flags: str):
    """Yields (base url, log file, process) of `serve.py --export FOLDER --port 0 FLAGS...`; stops it after."""
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, str(REPO / "serve.py"), "--export", str(folder), "--host", "127.0.0.1",
                                 "--port", "0", *flags], stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        yield wait_for_url(proc, log_path), log_path, proc
    finally:
        stop(proc)


def wait_for_url(proc: subprocess.Popen, log_path: Path) -> str:
    deadline = time.time() + STARTUP_TIMEOUT_S
    while True:
        text = log_path.read_text(errors="replace")
        match = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", text)
        if match and '"event": "ready"' in text:
            return match.group(1)
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"server did not start (exit {proc.poll()}):\n{text[-5000:]}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
