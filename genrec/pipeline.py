"""`genrec pipeline`: prepare -> embed -> tokenize -> train -> evaluate in one command.

``ensure_stages`` is also what the training DataModule calls, so `python train.py` on a
fresh run folder builds whatever earlier stage output is missing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from genrec.data.prepare import PrepareConfig
from genrec.evaluate import EvaluateConfig
from genrec.features.stage import EmbedConfig
from genrec.tokenizer.stage import TokenizeConfig


# The stages ensure_stages can build, in order, and the run sub-folder each one writes.
STAGE_FOLDERS = {"prepare": "dataset", "embed": "features", "tokenize": "sid"}


@dataclass
class PipelineConfig:
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    train_config: str = "configs/demo.yaml"  # Lightning CLI YAML for the train stage (data.run is overridden)
    train_args: list[str] = field(default_factory=list)  # extra Lightning CLI flags, e.g. --trainer.max_epochs=5
    force: bool = False          # re-run stages whose output already exists


# Defaults for the built-in demo: its pictures are 64 px, so the image encoder reads them at
# 128 px instead of 224 (about 3x less compute, no detail lost).
DEMO_OVERRIDES = {"embed": {"image": {"image_size": 128}}}


def demo_pipeline_config() -> PipelineConfig:
    from genrec.config import from_dict

    return from_dict(PipelineConfig, DEMO_OVERRIDES)


def _config_change(stored: dict | None, wanted: dict, prefix: str = "") -> str | None:
    """The first (dotted) config field that differs between a stage's manifest and the requested config."""
    stored = stored or {}
    for key in sorted(set(stored) | set(wanted)):
        old, new = stored.get(key), wanted.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            return _config_change(old, new, f"{prefix}{key}.")
        return f"{prefix}{key}: {old!r} -> {new!r}"
    return None


def stale_stages(run: Path, config: PipelineConfig | None = None) -> dict[str, str]:
    """Why each existing stage of ``run`` must be rebuilt: ``{stage: reason}`` (missing stages are listed too).

    A stage is stale when an earlier stage's output changed since it was built (the checksums its
    manifest recorded), or, when ``config`` is given, when its stored config differs from it.
    """
    from genrec.io import as_manifest_json, sha256_file

    run = Path(run)
    manifests = {}
    for stage, folder in STAGE_FOLDERS.items():
        path = run / folder / "manifest.json"
        manifests[stage] = json.loads(path.read_text()) if path.exists() else None
    wanted = {} if config is None else {"prepare": as_manifest_json(asdict(config.prepare)),
                                        "embed": as_manifest_json(asdict(config.embed)),
                                        "tokenize": as_manifest_json(config.tokenize.to_dict())}
    reasons: dict[str, str] = {}
    for stage, manifest in manifests.items():
        if manifest is None:
            reasons[stage] = "missing"
        elif reasons:     # an earlier stage is rebuilt, so this one's input changes
            reasons[stage] = f"{next(iter(reasons))} is rebuilt"
        elif stage == "embed" and manifest.get("dataset", {}).get("manifest_sha256") != sha256_file(
                run / STAGE_FOLDERS["prepare"] / "manifest.json"):
            reasons[stage] = "dataset/ changed since the features were built"
        elif stage == "tokenize" and manifest.get("features_manifest_files") != manifests["embed"].get("files"):
            reasons[stage] = "features/ changed since the semantic IDs were built"
        elif stage in wanted and (change := _config_change(manifest.get("config"), wanted[stage])):
            reasons[stage] = f"config changed ({change})"
    return reasons


def ensure_stages(run: Path, *, source: Path | None = None, demo: bool = False, fmt: str | None = None,
                  config: PipelineConfig | None = None, force: bool = False) -> None:
    """Run prepare / embed / tokenize for ``run`` where their output is missing or stale (or all, with force).

    With an explicit ``config`` (``genrec pipeline``), a stage built with other settings is rebuilt,
    and so is everything after it. Without one (``python train.py``, which does not know the stage
    settings), existing stages are kept as they are, but one whose input changed is an error,
    because training on semantic IDs of other features would be silently wrong.
    """
    from genrec.data.prepare import prepare
    from genrec.features.stage import embed
    from genrec.tokenizer.stage import tokenize

    run = Path(run)
    stale = {stage: "--force" for stage in STAGE_FOLDERS} if force else stale_stages(run, config)
    # Only the first stale stage has a reason of its own; every later one is stale because of it.
    stage, reason = next(iter(stale.items()), (None, "missing"))
    if config is None and not force and reason != "missing":
        raise ValueError(f"{run}/{STAGE_FOLDERS[stage]} is out of date: {reason}. Rebuild it with "
                         f"`genrec {stage} --run {run}` (and the stages after it), or `genrec pipeline --force`.")
    for stage, reason in stale.items():
        if reason != "missing":
            print(f"genrec: rebuilding {run}/{STAGE_FOLDERS[stage]} ({reason})", flush=True)
    cfg = config or (demo_pipeline_config() if demo else PipelineConfig())
    if "prepare" in stale:
        if demo:
            from genrec.data.demo import demo_source_dir

            prepare(demo_source_dir(run), run, cfg.prepare, fmt=None, name="demo")
        elif source is not None:
            prepare(source, run, cfg.prepare, fmt=fmt)
        else:
            raise FileNotFoundError(f"{run}/dataset does not exist: run `genrec prepare SOURCE --run {run}` first, "
                                    "or pass a source (data.source) / demo (data.demo true)")
    if "embed" in stale:
        embed(run, cfg.embed)
    if "tokenize" in stale:
        tokenize(run, cfg.tokenize)


def train_config_path(path: str) -> Path:
    """A training YAML as given, or, when relative and not found from here, inside the repository
    (so the default ``configs/demo.yaml`` works from any working directory)."""
    from genrec.lit.cli import CONFIG_DIR

    given = Path(path)
    if given.is_absolute() or given.exists():
        return given
    in_repo = CONFIG_DIR.parent / given
    if not in_repo.exists():
        raise FileNotFoundError(f"training config {path} not found (also looked in {CONFIG_DIR.parent}); "
                                "pass --train-config PATH to a Lightning CLI YAML such as configs/demo.yaml")
    return in_repo


def run_pipeline(source: Path | None, run: Path, config: PipelineConfig, *, fmt: str | None = None,
                 demo: bool = False) -> dict:
    from genrec.evaluate import evaluate
    from genrec.lit.cli import main as train_main

    run = Path(run)
    ensure_stages(run, source=source, demo=demo, fmt=fmt, config=config, force=config.force)
    train_main(["fit", "--config", str(train_config_path(config.train_config)), f"--data.run={run}",
                "--data.demo=false", "--evaluate=false", *config.train_args])
    return evaluate(run, config.evaluate)
