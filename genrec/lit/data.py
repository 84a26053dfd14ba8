"""DataModule for the generative recommender: training windows, eval histories, semantic IDs.

It reads RUN/dataset and RUN/sid (and RUN/features/fused.npy when the model uses content
vectors, and the items' attributes when it uses those); it never builds them (the entry point
does, see genrec.pipeline.train_main).
Everything the model's shape depends on comes from those manifests, exposed as ``model_dims``
and linked into the model by the Lightning CLI: the protocol's history length from the
dataset manifest, the code levels and the tokenizer method from the sid manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset as TorchDataset

from genrec.data.split import EvalExamples, left_pad
# The toolkit shared with SASRec; imported here too, where callers have always found them.
from genrec.lit.batching import LengthBucketBatchSampler, causal_windows, prefix_examples, user_subset


BATCHING = ("bucket", "random")


class ArrayDataset(TorchDataset):
    def __init__(self, *arrays: np.ndarray):
        self.arrays = [torch.as_tensor(a) for a in arrays]

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, i):
        return tuple(a[i] for a in self.arrays)


CODE_HEADS = {"pq": "parallel"}   # tokenizer method -> the code head it is made for (default: autoregressive)


@dataclass
class ModelDims:
    """What the model's shape depends on, read from the run's manifests."""

    level_sizes: tuple[int, ...]
    n_items: int
    content_dim: int
    sid_checksum: str
    max_items: int = 20            # the protocol's history length (dataset manifest)
    code_head: str = "autoregressive"  # the head the sid/ codes are made for: "parallel" for flat PQ digits
    n_attributes: int = 0          # attribute vocabulary (use_attributes; genrec.data.attributes), 0 = none
    attributes_per_item: int = 0   # the most attributes of one item (width of the id table)


class SIDDataModule(L.LightningDataModule):
    def __init__(
        self,
        run: str = "runs/demo",
        batch_size: int = 256,
        eval_batch_size: int = 512,
        training_examples: str = "auto",
        batching: str = "bucket",
        use_content: bool = False,
        use_attributes: bool = False,
        val_max_users: int | None = None,
        seed: int = 0,
    ):
        """
        Args:
            run: run folder holding dataset/ and sid/ (and features/ when use_content). The history
                length per example is the dataset's ``max_items`` (`genrec prepare --max-items`).
            batch_size: training batch size.
            eval_batch_size: users per validation/test batch.
            training_examples: "causal" (every position of a window in one pass; CausalSID only), "prefix"
                (TIGER's sliding window of all prefixes, one target per example; either model) or "auto"
                (causal for CausalSID, prefix for TIGER).
            batching: "bucket": batches of similar-length windows (least padding, fastest epochs);
                "random": plain shuffled batches. A bucketed batch holds only short or only long
                histories, so its gradient is biased toward one regime; random batches cost more padding
                compute (docs/design.md has the measured trade-off).
            use_content: also feed each item's fused content vector (RUN/features/fused.npy).
            use_attributes: also feed each item's attributes (its S3-Rec attribute ids, categories and brand
                in RUN/dataset/items.parquet) as the mean of learned attribute embeddings (CausalSID only).
            val_max_users: evaluate validation on a fixed random subset of this many users (None = all).
            seed: seed for the validation subset.
        """
        super().__init__()
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
        if training_examples not in ("auto", "causal", "prefix"):
            raise ValueError(f"training_examples must be auto, causal or prefix, got {training_examples!r}")
        self.run = Path(run)
        from genrec.data.dataset import load_dataset
        from genrec.tokenizer.semantic_ids import load_semantic_ids

        self.dataset = load_dataset(self.run)
        self.sid = load_semantic_ids(self.run)
        if self.sid.n_items != self.dataset.n_items:
            raise ValueError(f"{self.run}/sid has {self.sid.n_items} items but the dataset has {self.dataset.n_items}; "
                             "re-run `genrec tokenize --run RUN` after `genrec embed`.")
        self.content = None
        if use_content:
            path = self.run / "features" / "fused.npy"
            if not path.exists():
                raise FileNotFoundError(f"{path} not found; run `genrec embed --run {self.run}` "
                                        "or set use_content false")
            self.content = np.load(path).astype(np.float32)
        self.attributes = None
        if use_attributes:
            from genrec.data.attributes import attribute_table

            self.attributes = attribute_table(self.dataset.items)
            if not self.attributes.n_attributes:
                raise ValueError(f"{self.run}/dataset/items.parquet: no item has attributes, categories or a brand; "
                                 "set data.use_attributes false")
        self.max_items = self.dataset.max_items
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.training_examples = training_examples
        self.batching = batching
        self.val_max_users = val_max_users
        self.seed = seed
        self.model_dims = ModelDims(
            level_sizes=tuple(int(k) for k in self.sid.level_sizes),
            n_items=self.dataset.n_items,
            content_dim=0 if self.content is None else int(self.content.shape[1]),
            sid_checksum=self.sid.checksum,
            max_items=self.max_items,
            code_head=CODE_HEADS.get(self.sid.method, "autoregressive"),
            n_attributes=0 if self.attributes is None else self.attributes.n_attributes,
            attributes_per_item=0 if self.attributes is None else int(self.attributes.ids.shape[1]),
        )

    @property
    def item_codes(self) -> np.ndarray:
        return self.sid.codes

    @property
    def targets_per_window(self) -> float:
        """Mean next-item targets per training example (the model's loss normaliser): one per prefix
        example, the mean number of transitions per causal window."""
        if self.example_mode() == "prefix":
            return 1.0
        windows = causal_windows(self.dataset.split.train, self.max_items)
        return float((windows >= 0).sum(1).clip(min=1).mean() - 1) if len(windows) else 1.0

    def collab_table(self) -> np.ndarray:
        """The run's SASRec item table (N, c) from RUN/features/collab.npy (trained on the training split)."""
        path = self.run / "features" / "collab.npy"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: model.item_id_init=collab warm-starts from the SASRec table "
                                    f"that `genrec embed --run {self.run}` writes (embed.collab true)")
        return np.load(path)

    def example_mode(self) -> str:
        """"causal" or "prefix": how training examples are cut for the attached model."""
        arch = getattr(getattr(self.trainer, "lightning_module", None), "arch", "causal")
        if self.training_examples == "causal" and arch == "tiger":
            raise ValueError("data.training_examples=causal needs model.arch=causal: TIGER's encoder-decoder "
                             "trains on prefix examples; use training_examples auto or prefix")
        if self.training_examples != "auto":
            return self.training_examples
        return "prefix" if arch == "tiger" else "causal"

    def train_dataloader(self) -> DataLoader:
        train = self.dataset.split.train
        if self.example_mode() == "causal":
            arrays = (causal_windows(train, self.max_items),)
        else:
            arrays = prefix_examples(train, self.max_items)
        lengths = (arrays[0] >= 0).sum(1)
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = LengthBucketBatchSampler(lengths, self.batch_size, seed=self.seed, rank=rank, world_size=world,
                                           bucket=self.batching == "bucket")
        return DataLoader(ArrayDataset(*arrays), batch_sampler=sampler)

    def eval_arrays(self, examples: EvalExamples, max_users: int | None = None):
        idx = user_subset(len(examples), max_users, self.seed)
        hist = left_pad([examples.histories[i] for i in idx], self.max_items)
        return hist, examples.targets[idx], examples.user_ids[idx]

    def _eval_loader(self, examples: EvalExamples, max_users: int | None) -> DataLoader:
        return DataLoader(ArrayDataset(*self.eval_arrays(examples, max_users)), batch_size=self.eval_batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.dataset.split.valid, self.val_max_users)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.dataset.split.test, None)
