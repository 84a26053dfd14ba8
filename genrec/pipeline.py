"""`genrec pipeline`: prepare -> embed -> tokenize -> train -> evaluate in one command.

``ensure_stages`` is also what the training DataModule calls, so `python train.py` on a
fresh run folder builds whatever earlier stage output is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from genrec.data.prepare import PrepareConfig
from genrec.evaluate import EvaluateConfig
from genrec.features.stage import EmbedConfig
from genrec.tokenizer.stage import TokenizeConfig


@dataclass
class PipelineConfig:
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    train_config: str = "configs/demo.yaml"  # Lightning CLI YAML for the train stage (data.run is overridden)
    train_args: list[str] = field(default_factory=list)  # extra Lightning CLI flags, e.g. --trainer.max_epochs=5
    force: bool = False          # re-run stages whose output already exists


def demo_pipeline_config() -> PipelineConfig:
    """Defaults for the built-in demo: its pictures are 64 px, so the image encoder reads them at
    128 px instead of 224 (about 3x less compute, no detail lost)."""
    cfg = PipelineConfig()
    cfg.embed.image.image_size = 128
    return cfg


def ensure_stages(run: Path, *, source: Path | None = None, demo: bool = False, fmt: str | None = None,
                  config: PipelineConfig | None = None, force: bool = False) -> None:
    """Run prepare / embed / tokenize for ``run`` where their output is missing (or all, with force)."""
    from genrec.data.prepare import prepare
    from genrec.features.stage import embed
    from genrec.tokenizer.stage import tokenize

    cfg = config or (demo_pipeline_config() if demo else PipelineConfig())
    run = Path(run)
    if force or not (run / "dataset" / "manifest.json").exists():
        if demo:
            from genrec.data.demo import demo_source_dir

            prepare(demo_source_dir(run), run, cfg.prepare, fmt=None, name="demo")
        elif source is not None:
            prepare(source, run, cfg.prepare, fmt=fmt)
        else:
            raise FileNotFoundError(f"{run}/dataset does not exist: run `genrec prepare SOURCE --run {run}` first, "
                                    "or pass a source (data.source) / demo (data.demo true)")
    if force or not (run / "features" / "manifest.json").exists():
        embed(run, cfg.embed)
    if force or not (run / "sid" / "manifest.json").exists():
        tokenize(run, cfg.tokenize)


def run_pipeline(source: Path | None, run: Path, config: PipelineConfig, *, fmt: str | None = None,
                 demo: bool = False) -> dict:
    from genrec.evaluate import evaluate
    from genrec.lit.cli import main as train_main

    run = Path(run)
    ensure_stages(run, source=source, demo=demo, fmt=fmt, config=config, force=config.force)
    train_main(["fit", "--config", config.train_config, f"--data.run={run}", "--data.demo=false",
                "--evaluate=false", *config.train_args])
    return evaluate(run, config.evaluate)
