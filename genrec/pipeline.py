"""`genrec pipeline`: prepare -> embed -> tokenize -> train -> evaluate in one command.

``ensure_stages`` is also what the training DataModule calls, so `python train.py` on a
fresh run folder builds whatever earlier stage output is missing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
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


# Config fields that change how a stage runs but not what it writes: a difference is no reason to rebuild.
OUTPUT_NEUTRAL_FIELDS = frozenset({"progress", "cache_dir", "use_cache", "num_threads"})


def _config_change(stored: dict | None, wanted: dict, prefix: str = "") -> str | None:
    """The first (dotted) config field that differs between a stage's manifest and the requested config."""
    stored = stored or {}
    for key in sorted((set(stored) | set(wanted)) - OUTPUT_NEUTRAL_FIELDS):
        old, new = stored.get(key), wanted.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            return _config_change(old, new, f"{prefix}{key}.")
        return f"{prefix}{key}: {old!r} -> {new!r}"
    return None


def _stage_settings(config: PipelineConfig) -> dict[str, dict]:
    """Each stage's config as its manifest stores it."""
    from genrec.io import as_manifest_json

    return {"prepare": as_manifest_json(asdict(config.prepare)), "embed": as_manifest_json(asdict(config.embed)),
            "tokenize": as_manifest_json(config.tokenize.to_dict())}


def _with_defaults(stored: dict, defaults: dict) -> dict:
    """A stored stage config with the fields added since it was written at their default values
    (so a new option does not make every existing run look changed)."""
    out = dict(stored)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _with_defaults(out[key], value)
    return out


def stale_stages(run: Path, config: PipelineConfig | None = None) -> dict[str, str]:
    """Why each existing stage of ``run`` must be rebuilt: ``{stage: reason}`` (missing stages are listed too).

    Every stage is judged the same way from its manifest (:func:`genrec.io.write_manifest`): it is stale
    when a file it read (``inputs``: earlier stages' files, source files, imported matrices) no longer
    matches the checksum it recorded, or, when ``config`` is given, when its stored ``config`` differs
    from it. A stage after a stale one is stale too, since it is rebuilt from the new output.
    """
    from genrec.io import changed_input

    run = Path(run)
    wanted = {} if config is None else _stage_settings(config)
    defaults = _stage_settings(PipelineConfig())
    reasons: dict[str, str] = {}
    for stage, folder in STAGE_FOLDERS.items():
        path = run / folder / "manifest.json"
        manifest = json.loads(path.read_text()) if path.exists() else None
        if manifest is None:
            reasons[stage] = "missing"
        elif reasons:     # an earlier stage is rebuilt, so this one's input changes
            reasons[stage] = f"{next(iter(reasons))} is rebuilt"
        elif change := changed_input(run, manifest.get("inputs") or {}):
            reasons[stage] = f"{change} since {folder}/ was built"
        elif stage in wanted and (change := _config_change(
                _with_defaults(manifest.get("config") or {}, defaults[stage]), wanted[stage])):
            reasons[stage] = f"config changed ({change})"
    return reasons


def ensure_stages(run: Path, *, source: Path | None = None, demo: bool = False, fmt: str | None = None,
                  config: PipelineConfig | None = None, force: bool = False,
                  missing_config: PipelineConfig | dict | str | Path | None = None) -> None:
    """Run prepare / embed / tokenize for ``run`` where their output is missing or stale (or all, with force).

    With an explicit ``config`` (``genrec pipeline``), a stage built with other settings is rebuilt,
    and so is everything after it. Without one (``python train.py``), existing stages are kept as
    they are, but one whose input changed is an error, because training on semantic IDs of other
    features would be silently wrong; missing stages are then built with ``missing_config``
    (``--stages``: a training YAML's ``stages:`` mapping, or a YAML path read only when a stage is
    missing), else with the
    package (or demo) defaults.
    """
    from genrec.io import run_lock

    run = Path(run)
    if not force and not stale_stages(run, config):
        return   # nothing to write, so no lock: DDP ranks may all check a finished run at once
    with run_lock(run):   # re-entrant: `genrec pipeline` already holds it
        _ensure_stages(run, source, demo, fmt, config, force, missing_config)


def _ensure_stages(run: Path, source: Path | None, demo: bool, fmt: str | None, config: PipelineConfig | None,
                   force: bool, missing_config: PipelineConfig | str | Path | None) -> None:
    from genrec.data.prepare import prepare
    from genrec.features.stage import embed
    from genrec.tokenizer.stage import tokenize

    # (checked again under the lock: another command may have built or changed a stage meanwhile)
    stale = {stage: "--force" for stage in STAGE_FOLDERS} if force else stale_stages(run, config)
    # Only the first stale stage has a reason of its own; every later one is stale because of it.
    stage, reason = next(iter(stale.items()), (None, "missing"))
    if config is None and not force and reason != "missing":
        source_arg = " SOURCE" if stage == "prepare" else ""
        raise ValueError(f"{run}/{STAGE_FOLDERS[stage]} is out of date: {reason}. Rebuild it with "
                         f"`genrec {stage}{source_arg} --run {run}` (and the stages after it), or "
                         "`genrec pipeline --force`.")
    for stage, reason in stale.items():
        if reason != "missing":
            print(f"genrec: rebuilding {run}/{STAGE_FOLDERS[stage]} ({reason})", flush=True)
    if isinstance(missing_config, (str, Path)) and stale:
        missing_config = load_stage_config(missing_config)
    elif isinstance(missing_config, dict):      # a training YAML's inline `stages:` section
        missing_config = stage_config_from_dict(missing_config)
    cfg = config or missing_config or (demo_pipeline_config() if demo else PipelineConfig())
    if "prepare" in stale:
        if demo:
            from genrec.data.demo import demo_source_dir

            prepare(demo_source_dir(run), run, cfg.prepare, fmt=None, name="demo")
        elif source is not None:
            prepare(source, run, cfg.prepare, fmt=fmt)
        else:
            raise FileNotFoundError(f"{run}/dataset does not exist: run `genrec prepare SOURCE --run {run}` first, "
                                    "or pass --source SOURCE / --demo true to python train.py")
    if "embed" in stale:
        embed(run, cfg.embed)
    if "tokenize" in stale:
        tokenize(run, cfg.tokenize)


def repo_path(path: str | Path, what: str) -> Path:
    """A config-file path as given, or, when relative and not found from here, inside the repository
    (so ``configs/...`` and ``../shared/data/...`` in checked-in configs work from any working directory)."""
    from genrec.lit.cli import CONFIG_DIR

    given = Path(path).expanduser()
    if given.is_absolute() or given.exists():
        return given
    in_repo = CONFIG_DIR.parent / given
    if not in_repo.exists():
        raise FileNotFoundError(f"{what} {path} not found (also looked in {CONFIG_DIR.parent}); fix the path")
    return in_repo


def train_config_path(path: str) -> Path:
    """A training YAML (``PipelineConfig.train_config``), resolved by :func:`repo_path`."""
    try:
        return repo_path(path, "training config")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}: pass --train-config PATH to a Lightning CLI YAML "
                                "such as configs/demo.yaml") from None


def stage_config_from_dict(raw: dict) -> PipelineConfig:
    """The prepare / embed / tokenize sections of a stage-config mapping (other keys, such as
    ``train_config``, are ignored), with precomputed-feature paths resolved by :func:`repo_path`."""
    import copy

    from genrec.config import from_dict

    raw = copy.deepcopy(raw)
    for pre in (raw.get("embed") or {}).get("precomputed", []):
        for key in ("path", "row_map"):
            if key in pre and pre[key] != "item_id":
                pre[key] = str(repo_path(pre[key], f"precomputed feature {key}").resolve())
    return from_dict(PipelineConfig, {k: v for k, v in raw.items() if k in STAGE_FOLDERS})


def load_stage_config(path: str | Path) -> PipelineConfig:
    """The ``stages:`` section of a training YAML such as ``configs/sparse.yaml`` (or a YAML that holds
    only the prepare / embed / tokenize sections), see :func:`stage_config_from_dict`."""
    from genrec.config import load_yaml

    raw = load_yaml(repo_path(path, "stage config"))
    return stage_config_from_dict(raw.get("stages", raw) or {})


def train_main(args: list[str] | None = None, prog: str = "python train.py"):
    """The training entry point (`python train.py`, `genrec train`): the Lightning CLI, with the run's
    missing stages built first (``--demo``, ``--source``, ``--stages``)."""
    from genrec.lit.cli import main

    return main(args, prog=prog, build_stages=ensure_stages)


def train_run(run: Path, train_config: str, extra_args: list[str] = ()):
    """Fit with the Lightning CLI on ``run``'s existing stages: the training YAML with data.run set to
    ``run``, no stage building and no built-in evaluation (the caller evaluates). Returns the CLI."""
    from genrec.lit.cli import main

    return main(["fit", "--config", str(train_config_path(train_config)), f"--data.run={run}",
                 "--demo=false", "--evaluate=false", *extra_args])


def run_pipeline(source: Path | None, run: Path, config: PipelineConfig, *, fmt: str | None = None,
                 demo: bool = False) -> dict:
    from genrec.evaluate import evaluate

    run = Path(run)
    ensure_stages(run, source=source, demo=demo, fmt=fmt, config=config, force=config.force)
    cli = train_run(run, config.train_config, config.train_args)
    trained = cli.model.hparams.get("search", "beam")
    # evaluate as validation decoded (model.search) unless the evaluate section chose a search itself
    cfg = config.evaluate if config.evaluate.search != "auto" else replace(config.evaluate, search=trained)
    return evaluate(run, cfg)
