"""The `genrec` console script: one subcommand per pipeline stage.

Each subcommand is a thin wrapper: it builds the stage's typed config from flags (and an
optional YAML file) and calls one function. Only the chosen stage's module is imported, so
`genrec --help` is fast.

A stage that writes into a run folder holds the folder's lock (:func:`genrec.io.run_lock`) while it
runs. Errors a user can fix (bad input, a missing or locked artifact, a wrong flag) are printed as one
line, ``genrec STAGE: error: ...``, with exit code 2; anything else is a bug and keeps its traceback.
``genrec --debug STAGE ...`` or ``GENREC_DEBUG=1`` shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from genrec.config import add_config_args, config_from_args

DEFAULT_DEMO_RUN = Path("runs/demo")
EXIT_USER_ERROR = 2       # a message the user can act on (argparse uses 2 for usage errors too)
EXIT_INTERRUPTED = 130    # Ctrl-C, as a shell reports SIGINT
DEBUG_ENV = "GENREC_DEBUG"
PACKAGE_DIR = Path(__file__).resolve().parent


class UsageError(ValueError):
    """A flag combination the command cannot run with; the message says which flags to give."""


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    build: Callable[[argparse.ArgumentParser], None]   # adds the stage's flags
    run: Callable[[argparse.Namespace], int]           # runs it; returns the exit code


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too (the usage is one `--help` away)."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _locked(a: argparse.Namespace, run: Path | None = None, create: bool = False):
    """The run folder's lock for this command (see genrec.io.run_lock); only the stages that start a run
    (prepare, pipeline) create its folder."""
    from genrec.io import run_lock

    return run_lock(run if run is not None else a.run, a.command, create=create)


def _run_arg(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--run", type=Path, required=required, default=None,
                   help="run folder: earlier stages' outputs are read from it and this stage writes into it"
                        + ("" if required else f" (required with SOURCE; {DEFAULT_DEMO_RUN} with --demo)"))


def _source_or_demo(a: argparse.Namespace, command: str) -> None:
    """Exactly one of SOURCE and --demo; a real source needs its own --run, so it never lands in the demo's folder."""
    if a.demo == (a.source is not None):
        raise UsageError("give either a SOURCE folder or --demo (exactly one)")
    if a.run is None:
        if not a.demo:
            raise UsageError(f"--run RUN is required with a SOURCE folder, e.g. "
                             f"`genrec {command} {a.source} --run runs/{Path(a.source).name.lower()}`")
        a.run = DEFAULT_DEMO_RUN


def _yaml_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None,
                   help="YAML file with this stage's config fields (flags override it)")


# ---------------------------------------------------------------- prepare
def _build_prepare(p: argparse.ArgumentParser) -> None:
    from genrec.data.prepare import FORMATS, PrepareConfig

    p.add_argument("source", nargs="?", type=Path, help="folder with the source files (format auto-detected)")
    p.add_argument("--demo", action="store_true", help="generate the built-in demo dataset and prepare it")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default=None, help="override format detection")
    p.add_argument("--name", default=None, help="dataset name recorded in the manifest (default: source folder name)")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="skip malformed source lines instead of stopping; skipped lines are counted and reported")
    _run_arg(p, required=False)
    _yaml_arg(p)
    add_config_args(p, PrepareConfig)


def _run_prepare(a: argparse.Namespace) -> int:
    from genrec.data.prepare import PrepareConfig, prepare

    _source_or_demo(a, "prepare")
    config = config_from_args(PrepareConfig, a, a.config)
    if a.skip_bad_lines:
        config.on_error = "skip"
    with _locked(a, create=True):
        source, name = a.source, a.name
        if a.demo:
            from genrec.data.demo import demo_source_dir

            source, name = demo_source_dir(Path(a.run)), name or "demo"
        prepare(source, a.run, config, fmt=a.fmt, name=name)
    return 0


# ---------------------------------------------------------------- embed / tokenize
def _build_embed(p: argparse.ArgumentParser) -> None:
    from genrec.features.stage import EmbedConfig

    _run_arg(p)
    _yaml_arg(p)
    add_config_args(p, EmbedConfig)


def _run_embed(a: argparse.Namespace) -> int:
    from genrec.features.stage import EmbedConfig, embed

    config = config_from_args(EmbedConfig, a, a.config)
    with _locked(a):
        embed(a.run, config)
    return 0


def _build_tokenize(p: argparse.ArgumentParser) -> None:
    from genrec.tokenizer.stage import TokenizeConfig

    _run_arg(p)
    _yaml_arg(p)
    add_config_args(p, TokenizeConfig)


def _run_tokenize(a: argparse.Namespace) -> int:
    from genrec.tokenizer.stage import TokenizeConfig, tokenize

    config = config_from_args(TokenizeConfig, a, a.config)
    with _locked(a):
        tokenize(a.run, config)
    return 0


# ---------------------------------------------------------------- train / evaluate
def _build_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("lightning_args", nargs=argparse.REMAINDER,
                   help="arguments for the Lightning CLI, e.g. "
                        "`fit --config configs/sparse.yaml --data.run runs/beauty`; see `python train.py --help`")


def _run_train(a: argparse.Namespace) -> int:
    from genrec.pipeline import train_main

    train_main(a.lightning_args, prog="genrec train")
    return 0


def _build_evaluate(p: argparse.ArgumentParser) -> None:
    from genrec.evaluate import EvaluateConfig

    _run_arg(p)
    _yaml_arg(p)
    add_config_args(p, EvaluateConfig)


def _run_evaluate(a: argparse.Namespace) -> int:
    from genrec.evaluate import EvaluateConfig, evaluate

    config = config_from_args(EvaluateConfig, a, a.config)
    with _locked(a):
        evaluate(a.run, config)
    return 0


# ---------------------------------------------------------------- export / serve
def _build_export(p: argparse.ArgumentParser) -> None:
    from genrec.export.onnx import ExportConfig

    _run_arg(p)
    p.add_argument("--out", type=Path, required=True, help="export folder to write, e.g. export/beauty")
    _yaml_arg(p)
    add_config_args(p, ExportConfig)


def _run_export(a: argparse.Namespace) -> int:
    from genrec.export.onnx import ExportConfig, export

    config = config_from_args(ExportConfig, a, a.config)
    with _locked(a):   # the run is read while it is exported; nothing may rewrite it meanwhile
        export(a.run, a.out, config)
    return 0


def _build_serve(p: argparse.ArgumentParser) -> None:
    from genrec.serving.app import add_serve_args

    add_serve_args(p)


def _run_serve(a: argparse.Namespace) -> int:
    from genrec.serving.app import serve_from_args

    serve_from_args(a)
    return 0


def _build_add_items(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", type=Path, help="the new items: a .jsonl file, one item per line (an Amazon 2023 meta "
                                             "line works as is), or an LC-Rec <Cat>.item.json; see docs/data.md")
    p.add_argument("--export", type=Path, required=True, help="export folder written by `genrec export`")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, default=None, help="write the new export to this folder")
    where.add_argument("--in-place", action="store_true",
                       help="replace --export atomically (a server started with --watch, or sent SIGHUP, picks it up)")
    p.add_argument("--skip-existing", action="store_true",
                   help="skip items already in the export (they are counted) instead of stopping")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--no-parity-check", action="store_true", help="skip the ONNX-vs-torch check of the new export")
    p.add_argument("--run", type=Path, default=None,
                   help="the run the export came from: a new item takes the SASRec-table rows and id embeddings of "
                        "its nearest items by text (else the mean of all items)")
    p.add_argument("--neighbours", type=int, default=10, help="nearest catalogue items a new item borrows from (--run)")


def _run_add_items(a: argparse.Namespace) -> int:
    from genrec.catalog.add import AddItemsConfig, add_items
    from genrec.io import run_lock

    config = AddItemsConfig(skip_existing=a.skip_existing, overwrite=a.overwrite,
                            parity_check=False if a.no_parity_check else None, run=a.run, neighbours=a.neighbours)
    export = Path(a.export)
    # A lock folder beside the export (not inside it: an in-place add replaces the folder), so two adds to
    # one export cannot both start from the same items and lose one's additions.
    with run_lock(export.parent / f".{export.name}.add-items", a.command):
        add_items(export, a.source, None if a.in_place else a.out, config)
    return 0


# ---------------------------------------------------------------- pipeline / report
def _build_pipeline(p: argparse.ArgumentParser) -> None:
    from genrec.data.prepare import FORMATS
    from genrec.pipeline import PipelineConfig

    p.add_argument("source", nargs="?", type=Path, help="source folder (omit with --demo)")
    p.add_argument("--demo", action="store_true", help="run on the built-in demo dataset")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default=None, help="override format detection")
    _run_arg(p, required=False)
    _yaml_arg(p)
    add_config_args(p, PipelineConfig)


def _run_pipeline(a: argparse.Namespace) -> int:
    from genrec.pipeline import DEMO_OVERRIDES, PipelineConfig, run_pipeline

    _source_or_demo(a, "pipeline")
    config = config_from_args(PipelineConfig, a, a.config, base=DEMO_OVERRIDES if a.demo else None)
    with _locked(a, create=True):
        run_pipeline(a.source, a.run, config, fmt=a.fmt, demo=a.demo)
    return 0


def _build_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="run folder to summarise")
    p.add_argument("--out", type=Path, default=None, help="markdown file to write (default RUN_DIR/report.md)")


def _run_report(a: argparse.Namespace) -> int:
    from genrec.report import write_report

    with _locked(a, a.run_dir):
        write_report(a.run_dir, a.out)
    return 0


def _build_explain(p: argparse.ArgumentParser) -> None:
    from genrec.explain import ExplainConfig

    _run_arg(p)
    p.add_argument("--out", type=Path, default=None, help="HTML file to write (default RUN/explain.html); "
                                                          "the per-code data goes beside it as .json")
    _yaml_arg(p)
    add_config_args(p, ExplainConfig)


def _run_explain(a: argparse.Namespace) -> int:
    from genrec.explain import ExplainConfig, explain

    config = config_from_args(ExplainConfig, a, a.config)
    with _locked(a):
        explain(a.run, config, a.out)
    return 0


STAGES = [
    Stage("prepare", "raw Amazon/benchmark files -> RUN/dataset (items, sequences, manifest)",
          _build_prepare, _run_prepare),
    Stage("embed", "RUN/dataset -> RUN/features: text, image, collaborative (SASRec) and fused vectors",
          _build_embed, _run_embed),
    Stage("tokenize", "RUN/features -> RUN/sid: semantic IDs (RQ-VAE or PQ), dedup level, usage report",
          _build_tokenize, _run_tokenize),
    Stage("train", "RUN/dataset + RUN/sid -> RUN/checkpoints (Lightning CLI; same as python train.py)",
          _build_train, _run_train),
    Stage("evaluate", "checkpoint -> RUN/metrics.json: genrec vs SASRec vs popularity, full ranking",
          _build_evaluate, _run_evaluate),
    Stage("export", "checkpoint -> ONNX export folder (encoder, decoder step, trie tables, manifest)",
          _build_export, _run_export),
    Stage("serve", "serve an export folder over HTTP with onnxruntime (same as python serve.py)",
          _build_serve, _run_serve),
    Stage("add-items", "new items -> an export folder, without retraining (codes from the frozen tokenizer)",
          _build_add_items, _run_add_items),
    Stage("pipeline", "prepare -> embed -> tokenize -> train -> evaluate in one command",
          _build_pipeline, _run_pipeline),
    Stage("report", "turn a run folder into a markdown report with plots", _build_report, _run_report),
    Stage("explain", "RUN/sid + RUN/dataset -> RUN/explain.html: what each code holds, purity, item map",
          _build_explain, _run_explain),
]


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {s.name:<9} {s.summary}" for s in STAGES)
    return _Parser(
        prog="genrec",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="genrec: generative recommendation with semantic IDs.\n\nstages:\n" + lines
        + "\n\nRun `genrec STAGE --help` for a stage's options. `genrec --debug STAGE ...` (or "
        f"{DEBUG_ENV}=1) shows the traceback of an error.",
        usage="genrec [--debug] STAGE [options]",
    )


def _user_error(e: BaseException) -> bool:
    """An error whose message tells the user what to fix: a file system problem, an error class of
    genrec's own (DataFormatError, ArtifactError, FeatureError, ...), or a ValueError genrec raised about
    a config value or input. A ValueError from inside a library, and any other error, is a bug in genrec
    and keeps its traceback."""
    if isinstance(e, OSError) or type(e).__module__.split(".")[0] == "genrec":
        return True
    frames = traceback.extract_tb(e.__traceback__)
    return (isinstance(e, ValueError) and bool(frames)
            and Path(frames[-1].filename).resolve().is_relative_to(PACKAGE_DIR))


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", str(text).strip())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if argv[:1] == ["--debug"]:
        debug, argv = True, argv[1:]
    top = _top_parser()
    top.add_argument("--version", action="version", version=f"genrec {__import__('genrec').__version__}")
    stages = {s.name: s for s in STAGES}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in stages:
        if argv and argv[0] not in ("-h", "--help", "--version"):
            print(f"genrec: error: unknown stage {argv[0]!r}; choose one of {', '.join(stages)} "
                  "(see `genrec --help`)", file=sys.stderr)
            return EXIT_USER_ERROR
        top.parse_args(argv or ["--help"])
        return 0
    stage = stages[argv[0]]
    parser = _Parser(prog=f"genrec {stage.name}", description=stage.summary)
    stage.build(parser)
    args = parser.parse_args(argv[1:])
    args.command = shlex.join(["genrec", *argv])   # recorded in the run lock, named when another command waits
    try:
        return stage.run(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"genrec {stage.name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if debug or not _user_error(e):
            raise
        print(f"genrec {stage.name}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
