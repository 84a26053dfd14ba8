"""Train the generative recommender with Lightning's CLI.

    python train.py                                     # demo: build the demo run, train, evaluate
    python train.py fit --config configs/text_rich.yaml --source ../shared/data/Office --data.run runs/office
    python train.py fit --config configs/text_rich.yaml --data.run runs/office --ckpt_path last   # resume
    python train.py --help
"""

import sys

INTRO = """\
genrec: a generative recommender. Every item gets a semantic ID, a short tuple of codes learned from
its text (and images and co-purchases, where the data has them); a small transformer reads a user's
history and generates the next item's codes, and a beam search over the catalogue's codes turns them
into real items. It is compared with SASRec and popularity on the same split and metrics.

  python train.py
      No arguments: the demo. Builds runs/demo from a built-in synthetic catalogue (prepare, embed,
      tokenize), trains for a few minutes on CPU and prints genrec vs SASRec vs popularity.

  python train.py fit --config configs/text_rich.yaml --source ../shared/data/Office --data.run runs/office
      Real data: --source builds the run's missing stages from a source folder first (with the config's
      `stages:` settings), --data.run is the run folder (stages, checkpoints/, logs/, metrics.json).
      Add --ckpt_path last to resume an interrupted fit.

  One config per kind of data (configs/):
      text_rich.yaml    Amazon categories with real titles and timestamps (Office, Scientific)
      sparse.yaml       sparse S3-Rec-style Amazon 2014 data (Beauty, Sports_and_Outdoors)
      multimodal.yaml   text plus precomputed image features (Scientific_DeCoRec_mm)

  genrec's own flags: --source DIR, --demo true, --stages {...}, --evaluate true, --patience N.
  The other stages have their own commands: `genrec --help`.
"""

# Lightning's subcommands (LightningCLI.subcommands(); a test keeps this list in step with it).
SUBCOMMANDS = {
    "fit": "train, validating every epoch (what the configs are for)",
    "validate": "one pass over the validation split (--ckpt_path best|last|PATH)",
    "test": "one pass over the test split (--ckpt_path best|last|PATH)",
    "predict": "Lightning's predict loop; genrec does not use it (see `genrec evaluate`, `genrec export`)",
}


def lightning_help(prog: str = "python train.py") -> str:
    """Lightning's top-level usage and subcommands, written out so `--help` needs neither torch nor Lightning."""
    rows = "\n".join(f"  {name:<10}{text}" for name, text in SUBCOMMANDS.items())
    return (f"usage: {prog} [-h] [-c CONFIG] [--print_config[=flags]] {{{','.join(SUBCOMMANDS)}}} ...\n\n"
            f"Lightning subcommands:\n{rows}\n\n"
            f"  {prog} SUBCOMMAND --help lists every option of a subcommand (Lightning's full help;\n"
            f"  it loads torch, so it takes a few seconds). -c/--config reads a YAML; --print_config\n"
            f"  prints the resolved configuration and exits.\n")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["-h"], ["--help"]):      # the fast path: no torch import for the overview
        print(INTRO)
        print(lightning_help())
        return
    from genrec.pipeline import train_main

    train_main(argv)


if __name__ == "__main__":
    main()
