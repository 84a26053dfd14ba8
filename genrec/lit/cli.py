"""The training CLI (`python train.py`, `genrec train`): Lightning's CLI over GenRecModule + SIDDataModule.

With no arguments it trains on the built-in demo dataset and then prints the evaluation table.
It never runs the earlier stages itself: an entry point that wants missing stages built passes
``build_stages`` (genrec.pipeline.train_main passes genrec.pipeline.ensure_stages), so the
dependency runs pipeline -> lit and never back.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Callable, Optional

from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger

from genrec.lit.callbacks import EpochLog, Throughput, TrainingCurvePlot, quiet_lightning
from genrec.lit.data import SIDDataModule
from genrec.lit.module import GenRecModule

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DEMO_ARGS = ["fit", "--config", str(CONFIG_DIR / "demo.yaml")]
MONITOR = "val/ndcg@10"
DESCRIPTION = ("genrec's training command: Lightning's CLI over GenRecModule + SIDDataModule. No arguments trains "
               "the demo; `python train.py --help` shows the configs and genrec's flags.")


class GenRecCLI(LightningCLI):
    def add_arguments_to_parser(self, parser):
        # The model's vocabulary and sizes come from the run's sid/ manifest, never from a flag.
        parser.link_arguments("data.model_dims", "model.dims", apply_on="instantiate")
        # How missing run stages are built before training (by the entry point's build_stages).
        parser.add_argument("--demo", type=bool, default=False,
                            help="build the run's missing stages from the built-in demo dataset first")
        parser.add_argument("--source", type=Optional[str], default=None,
                            help="build the run's missing stages from this source folder first")
        parser.add_argument("--stages", type=Optional[dict], default=None,
                            help="prepare / embed / tokenize settings that missing stages are built with (the "
                                 "`stages:` section of configs/*.yaml); stages that exist are kept. None: the "
                                 "package defaults")
        parser.add_argument("--evaluate", type=bool, default=False,
                            help="after fit, run `genrec evaluate` on the test split (genrec vs SASRec vs popularity)")
        parser.add_argument("--patience", type=int, default=3, help="early-stopping patience in validation rounds")

    def parse_arguments(self, parser, args):
        # main() always passes the arguments it chose (argv, the demo's or a caller's), so Lightning's
        # "both args and command line arguments" warning would fire on every run and tell nothing.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            super().parse_arguments(parser, args)

    def __init__(self, *args, build_stages: Callable | None = None, **kwargs):
        self.build_stages = build_stages
        super().__init__(*args, **kwargs)

    def before_instantiate_classes(self) -> None:
        cfg = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        if self.build_stages is None or self.subcommand not in ("fit", "validate", "test"):
            return
        source = cfg.get("source")
        self.build_stages(Path(cfg["data"]["run"]), source=Path(source) if source else None,
                          demo=bool(cfg.get("demo")), missing_config=cfg.get("stages"))

    def instantiate_trainer(self, **kwargs):
        run = Path(self.datamodule.run)
        cfg = self.config.get(self.subcommand, self.config)
        kwargs.setdefault("default_root_dir", str(run))
        # The length-bucketing batch sampler shards itself across DDP processes.
        kwargs["use_distributed_sampler"] = False
        if not kwargs.get("logger") or kwargs.get("logger") is True:
            kwargs["logger"] = CSVLogger(save_dir=str(run), name="logs")
        callbacks = list(kwargs.get("callbacks") or [])
        callbacks += [
            ModelCheckpoint(dirpath=str(run / "checkpoints"), filename="best", monitor=MONITOR, mode="max",
                            auto_insert_metric_name=False, enable_version_counter=False),
            # A second, unmonitored checkpoint rewritten every epoch: Lightning's save_last only
            # refreshes when the monitored metric improves, which is not enough to resume after a kill.
            ModelCheckpoint(dirpath=str(run / "checkpoints"), filename="last", monitor=None, save_top_k=1,
                            enable_version_counter=False),
            EarlyStopping(monitor=MONITOR, mode="max", patience=int(cfg.get("patience", 3))),
            Throughput(),
            EpochLog(),
            TrainingCurvePlot(),
        ]
        kwargs["callbacks"] = callbacks
        return super().instantiate_trainer(**kwargs)

    def after_fit(self):
        cfg = self.config.get(self.subcommand, self.config)
        if self.trainer.global_rank == 0:
            self.write_manifest(cfg)
        if cfg.get("evaluate") and self.trainer.global_rank == 0:
            from genrec.evaluate import EvaluateConfig, evaluate

            hp = self.model.hparams
            evaluate(self.datamodule.run, EvaluateConfig(beam_width=hp.beam_width, search=hp.get("search", "beam")))


    def write_manifest(self, cfg) -> None:
        """RUN/checkpoints/manifest.json in the shape every stage writes: what training read, its config,
        the checkpoints' checksums and how the fit ended."""
        from genrec.io import MANIFEST, input_checksums, write_manifest

        run = Path(self.datamodule.run)
        folder = run / "checkpoints"
        read = [run / stage / MANIFEST for stage in ("dataset", "sid", "features")]
        files = [p.name for p in sorted(folder.glob("*.ckpt"))]
        score = self.trainer.checkpoint_callback.best_model_score if self.trainer.checkpoint_callback else None
        write_manifest(folder, "train", files=files, inputs=input_checksums(run, [p for p in read if p.exists()]),
                       # the parsed CLI config; config-file paths and other objects as their strings
                       config=json.loads(json.dumps(cfg.as_dict(), default=str)),
                       epochs=int(self.trainer.current_epoch), global_step=int(self.trainer.global_step),
                       best_val_ndcg10=None if score is None else float(score))


def main(args: list[str] | None = None, prog: str = "python train.py",
         build_stages: Callable | None = None) -> GenRecCLI:
    args = list(sys.argv[1:] if args is None else args)
    quiet_lightning()
    if not args:
        print(f"genrec: no arguments: training on the built-in demo dataset ({' '.join(DEMO_ARGS)})")
        args = DEMO_ARGS
    return GenRecCLI(GenRecModule, SIDDataModule, args=args, save_config_kwargs={"overwrite": True},
                     seed_everything_default=0, parser_kwargs={"prog": prog, "description": DESCRIPTION},
                     build_stages=build_stages)
