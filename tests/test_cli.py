"""The console script: every stage documents itself, and user errors are one-line messages, not tracebacks.

Every failure a user can fix exits with code 2 and prints exactly one stderr line that names the file
and line (or the field), what was expected, and the fix. Run folders are locked while a stage writes,
and leftovers of killed writers are removed by the next run.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

import genrec.io as gio
from genrec.cli import STAGES, main
from genrec.io import LOCK_FILE, read_manifest, run_lock

REPO = Path(__file__).resolve().parents[1]
NO_CORE = ["--user-core", "0", "--item-core", "0", "--progress", "false"]


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
    one_error_line(capsys, "unknown stage 'frobnicate'", "genrec --help")


def test_a_usage_error_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["embed"])
    assert e.value.code == 2
    one_error_line(capsys, "genrec embed: error:", "--run", "genrec embed --help")


def test_prepare_on_a_folder_without_data_explains(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    assert main(["prepare", str(tmp_path / "src"), "--run", str(tmp_path / "run")]) == 2
    line = one_error_line(capsys, "genrec prepare: error", str(tmp_path / "src"), "--format")
    assert "raw2014" in line and "rechorus" in line   # the expected files of every format, on the one line


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


# The commands of bench/ (a shared module such as cornac_common.py has no __main__ and no --help).
BENCH_SCRIPTS = sorted(p.name for p in (REPO / "bench").glob("*.py") if '__name__ == "__main__"' in p.read_text())


@pytest.mark.parametrize("script", BENCH_SCRIPTS)
def test_every_bench_script_has_help(script):
    """Every bench/ command answers --help without running anything (no data or training needed)."""
    out = subprocess.run([sys.executable, f"bench/{script}", "--help"], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage:") and "--" in out.stdout


# ---------------------------------------------------------------- one line per failure


def one_error_line(capsys, *needles: str) -> str:
    """The single stderr line of a failed command; it must contain every needle."""
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err[:3000]}"
    assert "Traceback" not in err and ": error: " in lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def review(user: int, item: int, ts: int = 0) -> str:
    return json.dumps({"user_id": f"U{user}", "parent_asin": f"I{item}", "timestamp": 1_600_000_000_000 + ts})


# 5 users x 3 items: every user keeps 3 events with user_core = item_core = 0
GOOD = [review(u, (u + k) % 7, 10 * u + k) for u in range(5) for k in range(3)]


def raw2023(tmp_path: Path, lines: list[str] | bytes, name: str = "Cat.jsonl", meta: list[str] | None = None) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    data = lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode()
    (src / name).write_bytes(data)
    if meta is not None:
        (src / "meta_Cat.jsonl").write_text("\n".join(meta) + "\n")
    return src


def prepare_cli(src: Path, run: Path, *flags: str) -> int:
    return main(["prepare", str(src), "--run", str(run), *NO_CORE, *flags])


def test_a_huge_timestamp_is_a_bad_line_not_a_polars_traceback(tmp_path, capsys):
    huge = json.dumps({"user_id": "U9", "parent_asin": "I1", "timestamp": 10 ** 30})
    src = raw2023(tmp_path, GOOD[:4] + [huge] + GOOD[4:])
    assert prepare_cli(src, tmp_path / "run") == 2
    one_error_line(capsys, "Cat.jsonl, line 5", "field 'timestamp'", "int64", "--skip-bad-lines")
    assert prepare_cli(src, tmp_path / "run", "--skip-bad-lines") == 0
    manifest = read_manifest(tmp_path / "run" / "dataset")
    assert manifest["skipped"] == {"Cat.jsonl: bad timestamp": 1} and manifest["n_interactions"] == len(GOOD)


def test_run_that_is_a_file(tmp_path, capsys):
    src = raw2023(tmp_path, GOOD)
    (tmp_path / "run").write_text("not a folder")
    assert prepare_cli(src, tmp_path / "run") == 2
    one_error_line(capsys, str(tmp_path / "run"), "is a file", "pass a folder path as --run")


def test_a_bad_first_line_is_named_and_skippable(tmp_path, capsys):
    src = raw2023(tmp_path, ["{broken"] + GOOD)
    assert prepare_cli(src, tmp_path / "run") == 2
    one_error_line(capsys, "Cat.jsonl, line 1", "expected a JSON object", "--skip-bad-lines")
    for forced in ([], ["--format", "raw2023"]):
        assert prepare_cli(src, tmp_path / "run", "--skip-bad-lines", *forced) == 0
        manifest = read_manifest(tmp_path / "run" / "dataset")
        assert manifest["format"] == "raw2023" and manifest["skipped"] == {"Cat.jsonl: not a JSON object": 1}
        assert manifest["n_interactions"] == len(GOOD)


def test_a_gz_that_is_not_gzip(tmp_path, capsys):
    src = raw2023(tmp_path, GOOD, name="Cat.jsonl.gz")
    for forced in ([], ["--format", "raw2023"]):
        assert prepare_cli(src, tmp_path / "run", *forced) == 2
        one_error_line(capsys, "Cat.jsonl.gz", "not gzip-compressed", "remove the .gz suffix")
    (src / "Cat.jsonl.gz").write_bytes(gzip.compress((src / "Cat.jsonl.gz").read_bytes()))
    assert prepare_cli(src, tmp_path / "run") == 0


def test_an_empty_file(tmp_path, capsys):
    src = raw2023(tmp_path, b"")
    assert prepare_cli(src, tmp_path / "run") == 2
    one_error_line(capsys, "Cat.jsonl", "the file is empty", "download it again")
    # an empty file of a format detected by name alone (2018 reviews)
    (src / "Cat.jsonl").unlink()
    (src / "Cat_5.json").write_text("")
    assert prepare_cli(src, tmp_path / "run") == 2
    one_error_line(capsys, "Cat_5.json", "no interactions found", "is it empty?")


def test_missing_columns(tmp_path, capsys):
    src = raw2023(tmp_path, [json.dumps({"rating": 5, "parent_asin": f"I{i}"}) for i in range(3)])
    assert prepare_cli(src, tmp_path / "run") == 2
    one_error_line(capsys, "Cat.jsonl", "line 1", "without 'user_id'", "fix the file")
    # no timestamp: a field of a review line, reported with the line and skippable
    src = raw2023(tmp_path, [json.dumps({"user_id": "U1", "parent_asin": "I1"})] + GOOD)
    assert prepare_cli(src, tmp_path / "run") == 2
    one_error_line(capsys, "Cat.jsonl, line 1", "field 'timestamp'", "--skip-bad-lines")
    # a ReChorus header without the id columns
    (src / "Cat.jsonl").unlink()
    (src / "train.csv").write_text("uid\tiid\ttime\n1\t2\t3\n")
    assert prepare_cli(src, tmp_path / "run") == 2
    one_error_line(capsys, "train.csv", "line 1", "no user_id and item_id columns", "fix the header")


def test_a_line_nested_100000_deep(tmp_path, capsys):
    deep = "[" * 100_000 + "]" * 100_000
    src = raw2023(tmp_path, GOOD[:3] + [deep] + GOOD[3:])
    assert prepare_cli(src, tmp_path / "run") == 2
    one_error_line(capsys, "Cat.jsonl, line 4", "--skip-bad-lines")
    assert prepare_cli(src, tmp_path / "run", "--skip-bad-lines") == 0
    assert read_manifest(tmp_path / "run" / "dataset")["skipped"] == {"Cat.jsonl: not a JSON object": 1}


def test_an_11_mb_title_is_cut_and_counted(tmp_path, capsys):
    meta = [json.dumps({"parent_asin": f"I{i}", "title": "x" * 11_000_000 if i == 2 else f"item {i}"})
            for i in range(7)]
    src = raw2023(tmp_path, GOOD, meta=meta)
    assert prepare_cli(src, tmp_path / "run") == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning: 1 text values" in err and "--max-text-chars" in err
    manifest = read_manifest(tmp_path / "run" / "dataset")
    cap = manifest["config"]["max_text_chars"]
    assert manifest["truncated_texts"] == {"title": 1} and any("max_text_chars" in n for n in manifest["notes"])
    titles = pl.read_parquet(tmp_path / "run" / "dataset" / "items.parquet")["title"]
    assert titles.str.len_chars().max() == cap == 50_000


@pytest.mark.parametrize("stage, missing", [("embed", "dataset"), ("tokenize", "features"), ("evaluate", "dataset")])
def test_missing_stage_output_names_the_stage_folder(tmp_path, capsys, stage, missing):
    run = tmp_path / "run"
    run.mkdir()
    assert main([stage, "--run", str(run)]) == 2
    one_error_line(capsys, f"{run}/{missing}/manifest.json not found", f"--run {run}` first")


def test_a_stage_on_a_run_that_does_not_exist_creates_nothing(tmp_path, capsys):
    run = tmp_path / "typo"
    assert main(["embed", "--run", str(run)]) == 2
    one_error_line(capsys, f"run folder {run} does not exist", "check the path")
    assert not run.exists()


def test_genuine_bugs_keep_their_traceback_and_debug_shows_every_one(tmp_path, monkeypatch, capsys):
    import genrec.data.prepare as prepare_module

    def bug(*args, **kwargs):
        return json.loads("{")   # a ValueError raised inside a library, not a message genrec wrote

    monkeypatch.setattr(prepare_module, "prepare", bug)
    src = raw2023(tmp_path, GOOD)
    with pytest.raises(json.JSONDecodeError):
        prepare_cli(src, tmp_path / "run")
    monkeypatch.undo()
    (src / "Cat.jsonl").write_text("{broken\n")
    monkeypatch.setenv("GENREC_DEBUG", "1")
    with pytest.raises(ValueError, match="Cat.jsonl"):
        prepare_cli(src, tmp_path / "run")
    monkeypatch.delenv("GENREC_DEBUG")
    with pytest.raises(ValueError, match="Cat.jsonl"):
        main(["--debug", "prepare", str(src), "--run", str(tmp_path / "run"), *NO_CORE])


def test_errors_in_a_fresh_process_are_one_line_without_traceback(tmp_path):
    src = raw2023(tmp_path, GOOD[:2] + [json.dumps({"user_id": "U", "parent_asin": "I", "timestamp": 10 ** 30})])
    out = subprocess.run([sys.executable, "-m", "genrec.cli", "prepare", str(src), "--run", str(tmp_path / "run"),
                          *NO_CORE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Cat.jsonl, line 3" in out.stderr and "Traceback" not in out.stderr


# ---------------------------------------------------------------- leftovers of killed writers


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temp_folders_are_removed_by_the_next_run(tmp_path, capsys):
    src = raw2023(tmp_path, GOOD)
    run = tmp_path / "run"
    run.mkdir()
    stale = run / f".dataset.{dead_pid()}-abc123.tmp"
    live = run / f".dataset.{os.getpid()}-def456.tmp"    # a writer still at work (this process)
    other = run / f".features.{dead_pid()}-ghi789.tmp"   # another stage's: left to that stage
    for folder in (stale, live, other):
        (folder / "sub").mkdir(parents=True)
    assert prepare_cli(src, run) == 0
    assert not stale.exists() and live.exists() and other.exists()
    assert "removed 1 leftover" in capsys.readouterr().err


def test_a_writer_killed_mid_write_leaves_nothing_after_the_next_run(tmp_path):
    run = tmp_path / "run"
    code = textwrap.dedent(f"""
        import time
        from genrec.io import write_folder_atomic
        def write(tmp):
            (tmp / "half.parquet").write_bytes(b"x")
            print("writing", flush=True)
            time.sleep(120)
        write_folder_atomic({str(run / "dataset")!r}, write)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert [p.name.startswith(f".dataset.{child.pid}-") for p in run.iterdir()] == [True]
    assert prepare_cli(raw2023(tmp_path, GOOD), run) == 0
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE, "dataset"]


def test_a_folder_swap_interrupted_between_its_renames_is_put_back(tmp_path):
    run = tmp_path / "run"
    old = run / f".dataset.{dead_pid()}-x.old"
    (old / "dataset").mkdir(parents=True)
    (old / "dataset" / "manifest.json").write_text("{}")
    assert gio.remove_stale_temps(run / "dataset") == [old]
    assert (run / "dataset" / "manifest.json").read_text() == "{}" and not old.exists()


# ---------------------------------------------------------------- the run-folder lock


def test_a_second_command_on_a_locked_run_is_refused(tmp_path, capsys):
    from conftest import start_lock_holder

    src = raw2023(tmp_path, GOOD)
    run = tmp_path / "run"
    holder = start_lock_holder(run)
    try:
        assert prepare_cli(src, run) == 2
        one_error_line(capsys, f"{run} is in use by pid {holder.pid}", "`genrec embed --run R`", "Wait for it")
        assert not (run / "dataset").exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    # The killed holder's record is still in the file, but its lock died with it: taken over.
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid
    assert prepare_cli(src, run) == 0
    assert (run / LOCK_FILE).read_text() == ""   # released: names no holder


def test_the_lock_is_reentrant_and_refuses_other_holders_in_process(tmp_path):
    run = tmp_path / "run"
    with run_lock(run, "genrec pipeline"):
        with run_lock(run, "ensure_stages"):    # pipeline -> ensure_stages: the same process
            pass
        record = json.loads((run / LOCK_FILE).read_text())
        assert record["pid"] == os.getpid() and record["command"] == "genrec pipeline"
        gio._HELD.clear()       # pretend to be another process
        try:
            with pytest.raises(gio.RunLockedError, match=f"in use by pid {os.getpid()} \\(`genrec pipeline`"):
                with run_lock(run):
                    pass
        finally:
            gio._HELD[run.resolve()] = 1


def test_lock_file_fallback_without_flock(tmp_path, monkeypatch):
    """Where fcntl is missing: an O_EXCL lock file; a live holder refuses, a dead one is taken over."""
    monkeypatch.setattr(gio, "fcntl", None)
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"pid": os.getppid(), "command": "genrec tokenize"}))
    with pytest.raises(gio.RunLockedError, match=f"pid {os.getppid()} \\(`genrec tokenize`"):
        with run_lock(run):
            pass
    (run / LOCK_FILE).write_text(json.dumps({"pid": dead_pid(), "command": "genrec tokenize"}))
    with run_lock(run, "genrec embed"):
        assert json.loads((run / LOCK_FILE).read_text())["command"] == "genrec embed"
    assert not (run / LOCK_FILE).exists()
