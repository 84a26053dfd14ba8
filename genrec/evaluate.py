"""`genrec evaluate`: genrec vs SASRec vs popularity on one split, same metric functions.

Protocol (DESIGN.md): leave-one-out, histories truncated to max_items, ranking over the
full catalogue, Recall/NDCG@5/10/20, constrained beam width >= 20. Writes RUN/metrics.json
(one object per system) and prints markdown tables.

Each system also gets beyond-accuracy figures at k = 10 and 20 (``systems.NAME.beyond``, from
genrec.metrics.beyond_accuracy): catalogue coverage, novelty, intra-list diversity, average
recommendation popularity, and Recall/NDCG per target-popularity bucket and on cold targets.
Popularity is each item's interaction count in the training split. Diversity is by category when
the items have categories (RUN/dataset/items.parquet), else by cosine distance of the run's text
features (RUN/features/text.npy); ``beyond_protocol.diversity`` records which.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from genrec.config import to_dict
from genrec.data.dataset import load_dataset
from genrec.data.split import EvalExamples
from genrec.decode.weighted import check_modality_weights
from genrec.io import MANIFEST, ArtifactError, input_checksums, package_versions, write_json_atomic
from genrec.lit.batching import user_subset
from genrec.model.genrec import SEARCHES, check_item_logit_weight
from genrec.metrics import (
    BEYOND_KS,
    COLD_BELOW,
    DEFAULT_KS,
    POPULARITY_EDGES,
    beyond_accuracy,
    bucket_labels,
    category_multi_hot,
    invalid_rate,
    ranking_metrics,
)

SYSTEMS = ("genrec", "sasrec", "popularity")
SASREC_DIR = "baselines/sasrec"
SASREC_EVAL_BATCH = 1024   # users per SASRec scoring batch: (batch, n_items) float scores stay well under 1 GB
# Diversity is by category only when at least this share of items carries an informative category
# (below it too many pairs would be skipped for the figure to speak for the lists); else by text.
CATEGORY_MIN_COVERAGE = 0.9


@dataclass
class EvaluateConfig:
    split: str = "test"             # test | valid
    checkpoint: str = "best"        # best | last | a path to a .ckpt
    beam_width: int = 20            # constrained beam width (>= max K = 20 per the protocol)
    search: str = "auto"            # autoregressive heads: "beam" search of beam_width; "exact" top-k over the
                                    # trie (a beam pass, then every prefix the k-th item's score allows); or
                                    # "rerank": the beam's items re-scored by the item logit (item-loss models;
                                    # a parallel head adds it to every item's exact score); "auto": "rerank" for
                                    # a model trained with an item loss, else "beam"
    modality_weights: dict[str, float] | None = None  # decode with these per-modality digit weights, e.g.
                                    # '{text: 0.33}' ({} = none); None: the model's own (its model.modality_weights)
    item_logit_weight: float | None = None  # search "rerank": decode with this times the item logit; None: the
                                    # model's own (its model.item_logit_weight)
    batch_size: int = 256           # histories decoded at once
    exclude_history: bool = False   # drop each user's history items from every system's ranking
    systems: tuple[str, ...] = SYSTEMS  # which systems to evaluate
    max_users: int | None = None    # evaluate a fixed random subset of users (None = all; use only for smoke runs)
    seed: int = 0                   # seed for the user subset
    output: str = "metrics.json"    # written inside the run folder

    def __post_init__(self):
        if self.split not in ("test", "valid"):
            raise ValueError(f"split must be 'test' or 'valid', got {self.split!r}")
        if self.search not in ("auto", *SEARCHES):
            raise ValueError(f"search must be one of {('auto', *SEARCHES)}, got {self.search!r}")
        if self.modality_weights is not None:
            check_modality_weights(self.modality_weights)
        if self.item_logit_weight is not None:
            self.item_logit_weight = check_item_logit_weight(self.item_logit_weight)
        if self.beam_width < max(DEFAULT_KS):
            raise ValueError(f"beam_width must be >= {max(DEFAULT_KS)} (the largest K), got {self.beam_width}")
        self.systems = tuple(self.systems)
        bad = set(self.systems) - set(SYSTEMS)
        if bad:
            raise ValueError(f"unknown systems {sorted(bad)}; choose from {SYSTEMS}")


def find_checkpoint(run: Path, which: str) -> Path:
    if which not in ("best", "last"):
        path = Path(which)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        return path
    ckpt_dir = Path(run) / "checkpoints"
    path = ckpt_dir / f"{which}.ckpt"
    if not path.exists():
        found = sorted(p.name for p in ckpt_dir.glob("*.ckpt")) if ckpt_dir.exists() else []
        raise FileNotFoundError(f"{path} not found (checkpoints there: {found or 'none'}); train first: "
                                f"`python train.py fit --config CONFIG --data.run {run}`")
    return path


def load_genrec(run: Path, which: str = "best"):
    """Load the trained GenRec (no Lightning, no code execution) and check it matches RUN/sid."""
    from genrec.model.genrec import GenRec
    from genrec.tokenizer.semantic_ids import load_semantic_ids

    path = find_checkpoint(run, which)
    model = GenRec.from_checkpoint(path)
    sid = load_semantic_ids(run)
    trained_on = model.config.sid_checksum
    if trained_on and trained_on != sid.checksum:
        raise ArtifactError(f"{path} was trained on semantic IDs {trained_on[:12]}… but {run}/sid is "
                            f"{sid.checksum[:12]}…; re-train after re-tokenizing.")
    return model, path


def subset(examples: EvalExamples, max_users: int | None, seed: int) -> EvalExamples:
    """A fixed random subset of ``max_users`` examples (all when None): the users training validates on
    with the same seed (genrec.lit.batching.user_subset)."""
    idx = user_subset(len(examples), max_users, seed)
    if len(idx) == len(examples):
        return examples
    return EvalExamples(examples.user_ids[idx], [examples.histories[i] for i in idx], examples.targets[idx])


def evaluate_genrec(model, examples: EvalExamples, cfg: EvaluateConfig) -> np.ndarray:
    """Top-max(K) items per example from a GenRec, reading each history's last ``model.max_items`` items."""
    from genrec.data.split import left_pad

    k, max_items = max(DEFAULT_KS), model.max_items
    search = model.default_search(cfg.search)
    ranked = np.full((len(examples), k), -1, dtype=np.int64)
    for start in tqdm(range(0, len(examples), cfg.batch_size), desc="genrec decoding", unit="batch"):
        stop = min(start + cfg.batch_size, len(examples))
        hist = torch.as_tensor(left_pad(examples.histories[start:stop], max_items))
        exclude = examples.histories[start:stop] if cfg.exclude_history else None
        users = torch.as_tensor(examples.user_ids[start:stop])
        result = model.recommend(hist, k=k, beam_width=cfg.beam_width, exclude=exclude, users=users,
                                 search=search)
        ranked[start:stop] = result.items
    return ranked


def sasrec_baseline(run: Path, dataset) -> tuple:
    """The run's SASRec and the history window it reads: the dataset's ``max_items``, as genrec's.

    It is trained on the training split only: the one `genrec embed` trained for the collaborative
    features (RUN/features/sasrec/), else RUN/baselines/sasrec/, else one trained now.
    """
    from genrec.features.collab import CHECKPOINT, load_sasrec_with_config, train_sasrec
    from genrec.lit.sasrec import SASRecTrainConfig

    for folder in (Path(run) / "features" / "sasrec", Path(run) / SASREC_DIR):
        if (folder / CHECKPOINT).exists():
            model, _ = load_sasrec_with_config(folder / CHECKPOINT)
            if model.config.max_len < dataset.max_items:
                raise ArtifactError(f"{folder / CHECKPOINT} reads at most {model.config.max_len} history items but "
                                    f"the dataset's protocol length is {dataset.max_items}; re-run `genrec embed "
                                    f"--run {run}` (or delete {folder}) so SASRec is trained for it")
            return model, dataset.max_items
    print(f"no SASRec checkpoint in {run}; training the baseline now (training split only)")
    return train_sasrec(dataset, SASRecTrainConfig(), out_dir=Path(run) / SASREC_DIR).model, dataset.max_items


def diversity_features(run: Path, dataset) -> tuple[np.ndarray | None, str | None, dict]:
    """What intra-list diversity compares items by: ``(item_features, measure, record)``.

    Categories (genrec.metrics.category_multi_hot) when at least CATEGORY_MIN_COVERAGE of the items
    carry one, else the cosine distance of RUN/features/text.npy (rows the features mask marks as
    missing are left out), else nothing. ``record`` is what metrics.json stores about the choice.
    """
    hot, dropped = category_multi_hot(dataset.items["categories"].to_list())
    with_category = float(hot.any(axis=1).mean()) if dataset.n_items else 0.0
    record = {"items_with_category": round(with_category, 4)}
    if with_category >= CATEGORY_MIN_COVERAGE:
        return hot, "category", record | {
            "measure": "category", "source": "dataset/items.parquet categories",
            "rule": "1 if two items share no category, else 0", "categories_dropped_as_universal": dropped}
    features = run / "features"
    text = (json.loads((features / MANIFEST).read_text()).get("modalities", {}).get("text")
            if (features / MANIFEST).exists() else None)
    if not text or not (features / text.get("file", "text.npy")).exists():
        return None, None, record | {"measure": None, "why": "items have too few categories and the run has "
                                                               "no features/text.npy"}
    vectors = np.load(features / text.get("file", "text.npy"))
    if vectors.shape[0] != dataset.n_items:
        raise ArtifactError(f"{features / text.get('file', 'text.npy')} has {vectors.shape[0]} rows but the dataset "
                            f"has {dataset.n_items} items; re-run `genrec embed --run {run}`")
    if text.get("mask_file") and (features / text["mask_file"]).exists():
        vectors = np.where(np.load(features / text["mask_file"])[:, None], vectors, 0.0)   # zero rows are skipped
    return vectors, "cosine", record | {"measure": "cosine", "source": f"features/{text.get('file', 'text.npy')}",
                                        "rule": "1 - cosine similarity of the items' text embeddings"}


def evaluate(run: str | Path, config: EvaluateConfig = EvaluateConfig()) -> dict:
    from genrec.baselines import popularity_counts

    run = Path(run)
    dataset = load_dataset(run)
    split = dataset.split
    examples = subset(split.test if config.split == "test" else split.valid, config.max_users, config.seed)
    train_counts = popularity_counts(split.train, dataset.n_items)
    item_features, measure, diversity_record = diversity_features(run, dataset)
    results: dict[str, dict] = {}
    for system in config.systems:
        print(f"evaluate: {system} on {len(examples)} users ({config.split} split)", flush=True)
        t0 = time.perf_counter()
        if system == "popularity":
            from genrec.baselines import popularity_ranked

            ranked = popularity_ranked(train_counts, examples.histories,
                                       max(DEFAULT_KS), exclude_history=config.exclude_history)
            extra = {}
        elif system == "sasrec":
            from genrec.lit.sasrec import evaluate_sasrec

            model, max_items = sasrec_baseline(run, dataset)
            t0 = time.perf_counter()  # time the ranking, not the (one-off) training
            ranked, _ = evaluate_sasrec(model, examples, dataset.n_items, max_items, SASREC_EVAL_BATCH,
                                        exclude_history=config.exclude_history, progress=True)
            extra = {"max_items": max_items}
        else:
            model, ckpt = load_genrec(run, config.checkpoint)
            if config.modality_weights is not None:
                from genrec.tokenizer.semantic_ids import load_semantic_ids

                model.set_level_weights(load_semantic_ids(run).level_weights(config.modality_weights))
            search = model.default_search(config.search)
            if config.item_logit_weight is not None:
                if search != "rerank":
                    raise ValueError(f"item_logit_weight weighs the item logit of search 'rerank', but this model "
                                     f"decodes with search {search!r}; drop item_logit_weight or pass search rerank")
                model.set_item_logit_weight(config.item_logit_weight)
            ranked = evaluate_genrec(model, examples, config)
            extra = {"checkpoint": str(ckpt), "beam_width": config.beam_width, "arch": model.arch,
                     "max_items": model.max_items, "level_weights": model.config.level_weights,
                     "decoding": "exact" if model.parallel or search == "exact" else search,
                     "search": "catalogue" if model.parallel else search}
            if search == "rerank":
                extra["item_logit_weight"] = model.config.item_logit_weight
        seconds = time.perf_counter() - t0
        metrics = ranking_metrics(ranked, examples.targets)
        results[system] = metrics | {
            # Share of returned slots that are not real items (-1 = no item); 0 by construction for
            # the constrained beam search and for the score-based baselines.
            "invalid_rate": invalid_rate(ranked, dataset.n_items),
            "n_users": len(examples), "seconds": round(seconds, 3), **extra,
            "beyond": beyond_accuracy(ranked, examples.targets, train_counts, item_features=item_features,
                                      measure=measure, ks=BEYOND_KS),
        }
        print(f"evaluate: {system} done in {seconds:.1f} s", flush=True)
    protocol = dataset.manifest.get("split") or {"kind": "leave_one_out"}   # how prepare split the data
    # The shape every stage's manifest has (stage, inputs, config, versions, created), then the results.
    read = [run / "dataset" / MANIFEST, run / "sid" / MANIFEST] + ([Path(ckpt)] if "genrec" in results else [])
    out = {"stage": "evaluate", "inputs": input_checksums(run, [p for p in read if p.exists()]),
           "config": to_dict(config), "versions": package_versions(),
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "split": config.split, "protocol": protocol, "dataset": dataset.name, "n_items": dataset.n_items,
           "max_items": dataset.max_items, "systems": results,
           "beyond_protocol": {
               "ks": list(BEYOND_KS), "popularity": "interactions per item in the training split",
               "novelty": "mean -log2(share of training interactions) of the listed items; an item never seen in "
                          "training counts as seen once",
               "popularity_edges": list(POPULARITY_EDGES), "buckets": bucket_labels(POPULARITY_EDGES),
               "cold_targets": f"targets with fewer than {COLD_BELOW} training interactions",
               "diversity": diversity_record}}
    write_json_atomic(run / config.output, out)
    print(markdown_table(results, title=f"{dataset.name} — {config.split} split ({protocol['kind']}), "
                                        f"{len(examples)} users, full ranking over {dataset.n_items} items"))
    print()
    print(beyond_table(results, title="beyond accuracy (diversity by " + (
        {"category": "category", "cosine": "cosine distance of features/text.npy"}.get(measure)
        or "nothing: too few categories and no text features") + ")"))
    print()
    print(slices_table(results, title="by how often the target occurs in the training split"))
    print(f"wrote {run / config.output}")
    return out


def markdown_table(results: dict[str, dict], title: str = "") -> str:
    cols = [f"recall@{k}" for k in DEFAULT_KS] + [f"ndcg@{k}" for k in DEFAULT_KS] + ["invalid_rate", "seconds"]
    lines = [f"**{title}**", ""] if title else []
    lines.append("| system | " + " | ".join(cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for name, m in results.items():
        cells = [f"{m[c]:.4f}" if c != "seconds" else f"{m[c]:.1f}" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


BEYOND_COLUMNS = ("coverage", "novelty", "diversity", "avg_popularity")


def _cell(value, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def beyond_table(results: dict[str, dict], title: str = "") -> str:
    """Coverage, novelty (bits), intra-list diversity and average recommendation popularity per system at each k."""
    cols = [f"{name}@{k}" for name in BEYOND_COLUMNS for k in BEYOND_KS]
    lines = [f"**{title}**", ""] if title else []
    lines += ["| system | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, m in results.items():
        beyond = m.get("beyond")
        if beyond:
            cells = [_cell(beyond.get(c), 1 if c.startswith("avg_popularity") else 4) for c in cols]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bucket_order(labels) -> list[str]:
    """Bucket labels from low to high popularity ("never", "1-4", "5-19", "20+"): metrics.json keeps keys
    sorted as strings, which puts "20+" before "5-19"."""
    return sorted(labels, key=lambda label: 0 if label == "never" else int(label.split("-")[0].rstrip("+")))


def slices_table(results: dict[str, dict], title: str = "") -> str:
    """Recall/NDCG per target-popularity bucket and on cold targets, one row per (slice, system)."""
    cols = [f"{m}@{k}" for m in ("recall", "ndcg") for k in BEYOND_KS]
    lines = [f"**{title}**", ""] if title else []
    lines += ["| target seen in training | users | system | " + " | ".join(cols) + " |",
              "|---|---|---|" + "---|" * len(cols)]
    first = next((m["beyond"] for m in results.values() if m.get("beyond")), None)
    if first is None:
        return "\n".join(lines)
    slices = [(label, ("by_target_popularity", label)) for label in bucket_order(first["by_target_popularity"])]
    slices.append((f"cold (< {COLD_BELOW})", ("cold_targets",)))
    for label, path in slices:
        for name, m in results.items():
            row = m.get("beyond") or {}
            for key in path:
                row = row.get(key, {})
            if not row:
                continue
            users = f"{row['n_users']} ({row['share']:.0%})"
            if not row["n_users"]:      # the same targets for every system: one row says the slice is empty
                lines.append(f"| {label} | {users} | all | " + " | ".join("—" for _ in cols) + " |")
                break
            lines.append(f"| {label} | {users} | {name} | " + " | ".join(_cell(row.get(c)) for c in cols) + " |")
    return "\n".join(lines)
