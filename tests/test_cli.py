"""The console script: every stage documents itself, and user errors are messages, not tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from genrec.cli import STAGES, main

REPO = Path(__file__).resolve().parents[1]


def test_top_level_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for stage in STAGES:
        assert stage.name in out


@pytest.mark.parametrize("stage", [s.name for s in STAGES if s.name != "train"])
def test_stage_help(stage, capsys):
    with pytest.raises(SystemExit) as e:
        main([stage, "--help"])
    assert e.value.code == 0
    assert "usage: genrec " + stage in capsys.readouterr().out


def test_unknown_stage_is_an_error(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown stage" in capsys.readouterr().err


def test_prepare_on_a_folder_without_data_explains(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    assert main(["prepare", str(tmp_path / "src"), "--run", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "genrec prepare: error" in err and str(tmp_path / "src") in err


def test_console_script_and_train_help_run_in_a_fresh_process():
    out = subprocess.run([sys.executable, "-m", "genrec.cli", "--help"], capture_output=True, text=True, check=True)
    assert "prepare" in out.stdout
    out = subprocess.run([sys.executable, "train.py", "--help"], capture_output=True, text=True, check=True,
                         cwd=REPO)
    assert "fit" in out.stdout and "validate" in out.stdout and "test" in out.stdout


def test_heavy_stack_imports_together():
    """torch/torchvision must be a pair that loads with timm, lightning, torchmetrics and transformers."""
    code = ("import torch, torchvision, timm, lightning, torchmetrics, transformers, vector_quantize_pytorch; "
            "import torchvision.ops; print(torch.__version__, torchvision.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


BENCH_SCRIPTS = sorted(p.name for p in (REPO / "bench").glob("*.py"))


@pytest.mark.parametrize("script", BENCH_SCRIPTS)
def test_every_bench_script_has_help(script):
    """Every bench/ command answers --help without running anything (no data or training needed)."""
    out = subprocess.run([sys.executable, f"bench/{script}", "--help"], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage:") and "--" in out.stdout
