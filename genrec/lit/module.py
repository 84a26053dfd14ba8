"""GenRecModule: the thin LightningModule around a GenRec (genrec.model.genrec).

Losses, optimiser, schedule, logging and validation live here. The model object (backbone,
item -> code table, content vectors, input building, decoding step) is ``self.genrec``, which
evaluation, export and serving parity load from a checkpoint without this class.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from genrec.baselines import popularity_counts
from genrec.decode.weighted import check_modality_weights
from genrec.lit.data import ModelDims
from genrec.lit.optim import ITEM_GRADS, AdamWSparse, sparse_item_grad
from genrec.lit.sasrec import PopularitySampler, SASRecTrainConfig, sampled_softmax_loss
from genrec.metrics import DEFAULT_KS, per_example_metrics
from genrec.model.genrec import CHECKPOINT_KEY, SEARCHES, GenRec, GenRecConfig
from genrec.registry import ARCHS

ITEM_ID_INITS = ("normal", "collab")
ITEM_LOSSES = ("full", "sampled")
INIT_STD = 0.02      # CausalSID's initialisation std; a warm-started table is rescaled to it
# train/loss_per_target is smoothed over steps with this EMA decay (about the last 20 steps), so the
# logged curve reads as a trend while batches of few and of many targets alternate.
LOSS_EMA_DECAY = 0.95

# The training CLI's flat model arguments -> each architecture's backbone config (one entry per arch).
BACKBONE_ARGS = {
    "causal": lambda dims, a: dict(
        level_sizes=dims.level_sizes, max_items=dims.max_items, d_model=a["d_model"], n_layers=a["n_layers"],
        n_heads=a["n_heads"], d_ff=a["d_ff"], dropout=a["dropout"], content_dim=dims.content_dim,
        n_items=dims.n_items if a["item_id_embedding"] else 0, head=a["head"] or dims.code_head,
        item_output=a["item_output"], n_output_items=0 if a["item_output"] == "token" else dims.n_items,
        n_attributes=dims.n_attributes),
    "tiger": lambda dims, a: dict(
        level_sizes=dims.level_sizes, n_user_buckets=a["n_user_buckets"], max_items=dims.max_items,
        d_model=a["d_model"], d_ff=a["tiger_d_ff"], n_layers=a["tiger_layers"], n_decoder_layers=a["tiger_layers"],
        n_heads=a["tiger_heads"], dropout=a["tiger_dropout"]),
}


def training_window(batch) -> tuple[torch.Tensor, bool]:
    """A causal training batch as one left-padded window (b, t+1) and whether only its last position is a target.

    Causal windows come as ``(window,)``; prefix examples (``training_examples: prefix``) as
    ``(history, target, user)``, whose window is the history followed by the target.
    """
    if len(batch) == 1:
        return batch[0], False
    hist, target, _ = batch
    return torch.cat([hist, target[:, None]], dim=1), True


def batch_targets(batch, arch: str) -> int:
    """Next-item targets in one training batch (what throughput is counted in)."""
    if arch != "causal":
        return len(batch[0])
    window, last_only = training_window(batch)
    if last_only:
        return len(window)
    return int(((window[:, :-1] >= 0) & (window[:, 1:] >= 0)).sum())


class GenRecModule(L.LightningModule):
    def __init__(
        self,
        dims: ModelDims | dict | None = None,
        arch: str = "causal",
        d_model: int = 128,
        n_layers: int = 2,
        n_heads: int = 4,
        d_ff: int = 512,
        dropout: float = 0.2,
        item_id_embedding: bool = False,
        item_id_init: str = "normal",
        item_id_grad: str = "auto",
        head: str | None = None,
        tiger_layers: int = 4,
        tiger_heads: int = 6,
        tiger_d_ff: int = 1024,
        tiger_dropout: float = 0.1,
        n_user_buckets: int = 0,
        constrained_training: bool = False,
        item_loss_weight: float = 0.0,
        item_loss: str = "full",
        item_loss_negatives: int = 2048,
        item_output: str = "token",
        target_weighting: str = "equal",
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        scheduler: str = "cosine",
        beam_width: int = 20,
        search: str = "beam",
        modality_weights: dict[str, float] | None = None,
        item_logit_weight: float = 1.0,
    ):
        """
        Args:
            dims: level sizes, catalogue size and content dim; linked from the DataModule by the CLI.
            arch: "causal" (CausalSID, one token per item, fast default) or "tiger" (T5 reference).
            d_model, n_layers, n_heads, d_ff, dropout: CausalSID size.
            item_id_embedding: CausalSID also learns a per-item id embedding (hybrid input).
            item_id_init: "normal" (random, std 0.02) or "collab": a warm start of the item-id embedding from
                the run's SASRec item table (RUN/features/collab.npy, trained on the training split only),
                mapped to d_model by a fixed random orthonormal projection and scaled to the same std.
            item_id_grad: how the item-id embedding trains. "dense": AdamW over the whole table each step;
                "sparse": sparse gradients and SparseAdam, which updates only the rows a batch read, so a step
                costs the same at 10^6 items as at 10^4 (genrec.lit.optim); "auto" (default): sparse from
                genrec.lit.optim.SPARSE_ITEMS_FROM items on. Needs item_loss_weight 0 (or item_loss
                "sampled") to pay off. DDP all-reduces sparse gradients on gloo (CPU), not on NCCL: set
                "dense" for multi-GPU training.
            head: CausalSID's code head: "autoregressive" (level d conditioned on the codes before it; beam
                search) or "parallel" (all levels from one state, RPG-style; every item scored exactly).
                None (default): the head the run's codes are made for, from the sid/ manifest's method
                ("parallel" for product-quantized codes, `genrec tokenize --method pq`; else "autoregressive").
            tiger_layers, tiger_heads, tiger_d_ff, tiger_dropout: T5 size (TIGER: 4+4 layers, 6 heads, 1024, 0.1).
            n_user_buckets: TIGER's hashed user tokens (0 = none).
            constrained_training: softmax at each level only over the codes the trie allows after the true prefix.
            item_loss_weight: CausalSID only; > 0 adds this weight times an item-level cross-entropy over the
                whole catalogue, scoring each position's state against every item's input token (SASRec's
                loss, on genrec's own item tokens). Training signal only: decoding still generates codes.
            item_loss: "full" (softmax over every item: its cost grows with the catalogue) or "sampled" (the
                batch's targets plus ``item_loss_negatives`` shared negatives drawn ~ training count^0.5, as
                SASRec's ``loss: sampled``; only those items' rows are computed).
            item_loss_negatives: negatives of the sampled item loss.
            item_output: CausalSID only; what the item logit scores a state against: "token" (each item's input
                token, tied), "free" (an untied output vector per item, as SASRec's table but not shared with
                the input) or "token+free" (their sum). Not "token" needs item_loss_weight > 0 to train it.
            target_weighting: CausalSID only. "equal": every next-item target weighs the same: the summed loss
                is divided by batch_size x the mean targets per window. "batch": mean over the batch's
                own targets; with length-bucketed batches that weighs a target from a batch of short windows
                up to max_items times more than one from a batch of full windows.
            lr, weight_decay: AdamW.
            warmup_steps: linear learning-rate warmup.
            scheduler: "cosine" (decay to 10% over max_steps / estimated steps) or "constant".
            beam_width: beam width for validation/test decoding (>= 20 per the protocol).
            search: validation/test decoding, as ``genrec evaluate --search``: "beam", "exact", or "rerank"
                (the item logit added to the code score of the beam's items, or of every item for a parallel
                head: needs item_loss_weight > 0). A parallel head scores every item exactly with the first two.
            modality_weights: decoding only: each named modality's digit log-probs times this weight (e.g.
                {"text": 0.33}; the rest 1), in validation, test, `genrec evaluate` and the export alike
                (genrec.decode.weighted). Names are RUN/sid's modalities (`--modalities separate`); fused
                codes have one, "fused", which scales every digit against the item logit.
            item_logit_weight: decoding only: search "rerank" adds this times the item logit to the weighted
                digit log-probs (validation, test, `genrec evaluate` and the export alike); needs item_loss_weight > 0.
        """
        super().__init__()
        if item_loss_weight and arch != "causal":
            raise ValueError("item_loss_weight applies to arch 'causal' only")
        if head not in (None, "autoregressive") and (arch != "causal" or constrained_training):
            raise ValueError(f"head={head!r} needs arch 'causal' and constrained_training false "
                             "(no prefix to constrain on)")
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {arch!r}")
        if item_id_init not in ITEM_ID_INITS:
            raise ValueError(f"item_id_init must be one of {ITEM_ID_INITS}, got {item_id_init!r}")
        if item_id_init != "normal" and not (arch == "causal" and item_id_embedding):
            raise ValueError(f"item_id_init={item_id_init!r} needs arch 'causal' with item_id_embedding true")
        if search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
        if item_loss not in ITEM_LOSSES:
            raise ValueError(f"item_loss must be one of {ITEM_LOSSES}, got {item_loss!r}")
        if item_output != "token" and not (arch == "causal" and item_loss_weight):
            raise ValueError(f"item_output={item_output!r} is a table only the item loss trains: it needs arch "
                             "'causal' and item_loss_weight > 0 (or item_output 'token')")
        if item_loss_negatives < 1:
            raise ValueError(f"item_loss_negatives must be >= 1, got {item_loss_negatives}")
        if item_id_grad not in ITEM_GRADS:
            raise ValueError(f"item_id_grad must be one of {ITEM_GRADS}, got {item_id_grad!r}")
        if target_weighting not in ("equal", "batch"):
            raise ValueError(f"target_weighting must be equal or batch, got {target_weighting!r}")
        if scheduler not in ("cosine", "constant"):
            raise ValueError(f"scheduler must be cosine or constant, got {scheduler!r}")
        if modality_weights is not None:
            check_modality_weights(modality_weights)
        if item_logit_weight != 1.0 and not item_loss_weight:
            raise ValueError(f"item_logit_weight={item_logit_weight} weighs the item logit that the item loss trains: "
                             "it needs item_loss_weight > 0 (or item_logit_weight 1)")
        if dims is None:
            raise ValueError("dims is required: it is linked from the DataModule (data.model_dims) "
                             "by the Lightning CLI")
        if isinstance(dims, dict):
            dims = ModelDims(**dims)
        dims.level_sizes = tuple(int(k) for k in dims.level_sizes)
        if head is None and (arch != "causal" or constrained_training):
            head = "autoregressive"        # the only head TIGER and constrained training have
        self.save_hyperparameters({"dims": asdict(dims)} | {k: v for k, v in locals().items()
                                                            if k not in ("self", "dims", "__class__")})
        self.dims = dims
        self.arch = arch
        content_dim = dims.content_dim if ARCHS[arch].item_inputs else 0
        if dims.n_attributes and not ARCHS[arch].item_inputs:
            raise ValueError(f"arch {arch!r} reads no per-item inputs: set data.use_attributes false (or arch causal)")
        # Item codes (N, D) and content vectors (N, F) are filled from the DataModule at setup.
        self.genrec = GenRec(GenRecConfig(arch=arch, backbone=BACKBONE_ARGS[arch](dims, self.hparams),
                                          n_items=dims.n_items, content_dim=content_dim,
                                          sid_checksum=dims.sid_checksum,
                                          attributes_per_item=dims.attributes_per_item if dims.n_attributes else 0,
                                          item_logit_weight=float(item_logit_weight)))
        self.genrec.item_loss_weight = float(item_loss_weight)   # search "rerank" needs a trained item logit
        if search == "rerank":
            self.genrec.check_rerank()
        # Training-only: a sparse-gradient lookup changes how the table is optimised, not the model
        # (GenRec.from_checkpoint builds a plain embedding for evaluation, export and serving).
        self.sparse_item_ids = (getattr(self.model, "item_emb", None) is not None
                                and sparse_item_grad(item_id_grad, dims.n_items))
        if self.sparse_item_ids:
            self.model.item_emb.sparse = True
        self.item_sampler: PopularitySampler | None = None   # the sampled item loss's, from the training split
        self._allowed = None
        self.targets_per_batch = None    # from the DataModule at setup (target_weighting "equal")
        self.loss_per_target_ema = None  # what train/loss_per_target logs (see log_training_loss)
        self._val = {f"{m}@{k}": MeanMetric() for m in ("recall", "ndcg") for k in DEFAULT_KS}
        for name, metric in self._val.items():
            self.add_module(f"metric_{name.replace('@', '_')}", metric)

    @property
    def model(self):
        """The backbone (CausalSID or TIGER's T5)."""
        return self.genrec.model

    @property
    def item_codes(self) -> torch.Tensor:
        return self.genrec.item_codes

    @property
    def trie(self):
        return self.genrec.trie

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None:
            if tuple(dm.model_dims.level_sizes) != self.dims.level_sizes or dm.model_dims.n_items != self.dims.n_items:
                raise ValueError(f"checkpoint was trained for level sizes {self.dims.level_sizes} / "
                                 f"{self.dims.n_items} items, but {dm.run}/sid has {dm.model_dims.level_sizes} / "
                                 f"{dm.model_dims.n_items}")
            if (dm.model_dims.n_attributes, dm.model_dims.attributes_per_item) != (self.dims.n_attributes,
                                                                                 self.dims.attributes_per_item):
                raise ValueError(f"checkpoint was trained on {self.dims.n_attributes} item attributes (up to "
                                 f"{self.dims.attributes_per_item} per item), but {dm.run} with data.use_attributes "
                                 f"gives {dm.model_dims.n_attributes} (up to {dm.model_dims.attributes_per_item}); "
                                 "train with the same dataset and data.use_attributes setting")
            self.genrec.set_catalogue(dm.item_codes, dm.content if self.genrec.config.content_dim else None,
                                      dm.attributes.ids if self.genrec.config.attributes_per_item else None)
            if self.hparams.get("modality_weights"):
                self.genrec.set_level_weights(dm.sid.level_weights(self.hparams.modality_weights))
            if stage == "fit" and self.arch == "causal":
                self.targets_per_batch = dm.batch_size * dm.targets_per_window
                self._check_code_layout(dm.sid.method, dm.run)
                if self.hparams.item_loss_weight and self.hparams.item_loss == "sampled":
                    counts = popularity_counts(dm.dataset.split.train, self.dims.n_items)
                    # negatives ~ training count ** SASRec's default sample_alpha, as its sampled loss draws them
                    self.item_sampler = PopularitySampler(counts, SASRecTrainConfig.sample_alpha)
                if self.hparams.item_id_init == "collab":
                    # Before any step; resuming loads the checkpoint's weights over this afterwards.
                    self.warm_start_item_ids(dm.collab_table())
        self._allowed = None

    def _check_code_layout(self, method: str, run) -> None:
        """Warn when the head does not match the codes: it still trains, but not as designed."""
        head = self.genrec.model.cfg.head
        if (head == "parallel") != (method == "pq"):
            want = ("`genrec tokenize --method pq --modalities separate --n-levels 8`" if head == "parallel"
                    else "--model.head=parallel")
            warnings.warn(f"model.head={head!r} on {run}/sid codes from tokenize method {method!r}: the parallel head "
                          "is meant for flat product-quantized digits and the autoregressive head for coarse-to-fine "
                          f"RQ codes. Use {want}.", stacklevel=2)

    @torch.no_grad()
    def warm_start_item_ids(self, table: np.ndarray, seed: int = 0) -> None:
        """Initialise the item-id embedding (N, d) from an (N, c) item table (the SASRec one).

        A fixed random orthonormal map (c -> d) keeps the table's geometry (dot products up to one
        scale), and the result is rescaled to the std of a fresh embedding, so the warm start only
        changes where items start, not how large their id vectors are next to the code embeddings.
        """
        emb = self.model.item_emb.weight                                    # (N, d)
        table = torch.as_tensor(np.asarray(table, dtype=np.float32))
        if table.shape[0] != emb.shape[0]:
            raise ValueError(f"warm-start table has {table.shape[0]} rows but the catalogue has {emb.shape[0]} items")
        c, d = table.shape[1], emb.shape[1]
        gen = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(max(c, d), max(c, d), generator=gen))
        mapped = (table - table.mean(0)) @ q[:c, :d]                        # (N, d)
        emb.copy_(mapped * (INIT_STD / mapped.std().clamp(min=1e-12)))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The model's own config beside the weights: GenRec.from_checkpoint needs nothing else.
        checkpoint[CHECKPOINT_KEY] = self.genrec.checkpoint_entry()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resuming a fit with other training hyperparameters is allowed, but never silently."""
        if self._trainer is None or self._trainer.state.fn != "fit":
            return   # evaluation and export rebuild the module from the checkpoint's own hparams
        saved = checkpoint.get("hyper_parameters") or {}
        changed = {k: (saved[k], v) for k, v in self.hparams.items() if k != "dims" and k in saved and saved[k] != v}
        if changed:
            listed = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))
            warnings.warn(f"this checkpoint was trained with other hyperparameters than the current config ({listed}); "
                          "training continues with the current config. Pass the checkpoint's values to resume the "
                          "same run.", stacklevel=2)

    # ------------------------------------------------------------------ loss
    def allowed_tables(self) -> list[torch.Tensor]:
        """Per level: (n_prefix_nodes_d, K_d) bool table of codes the trie allows, and each item's node per level."""
        if self._allowed is None:
            codes = self.item_codes.cpu().numpy()
            nodes, tables = [], []
            prefix_ids = np.zeros(len(codes), dtype=np.int64)
            for level, k in enumerate(self.dims.level_sizes):
                n_nodes = int(prefix_ids.max()) + 1
                table = np.zeros((n_nodes, k), dtype=bool)
                table[prefix_ids, codes[:, level]] = True
                nodes.append(prefix_ids.copy())
                tables.append(table)
                _, prefix_ids = np.unique(np.stack([prefix_ids, codes[:, level]], 1), axis=0, return_inverse=True)
                prefix_ids = prefix_ids.reshape(-1)
            self._allowed = ([torch.as_tensor(t, device=self.device) for t in tables],
                             torch.as_tensor(np.stack(nodes, 1), device=self.device))
        return self._allowed

    def level_losses(self, logits: list[torch.Tensor], targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Sum over levels of the cross-entropy (``reduction`` over targets); logits [(n, K_d)], targets (n,)
        item ids."""
        codes = self.item_codes[targets]  # (n, D)
        if self.hparams.constrained_training:
            tables, item_nodes = self.allowed_tables()
            nodes = item_nodes[targets]
        total = 0.0
        for level, lg in enumerate(logits):
            if self.hparams.constrained_training:
                lg = lg.masked_fill(~tables[level][nodes[:, level]], float("-inf"))
            total = total + F.cross_entropy(lg, codes[:, level], reduction=reduction)
        return total

    def training_step(self, batch, batch_idx):
        if self.arch == "causal":
            window, last_only = training_window(batch)
            # Drop leading columns that are padding in every row (windows are left-padded).
            start = int((window[:, :-1] >= 0).any(0).to(torch.int8).argmax())
            window = window[:, start:]
            hist, targets = window[:, :-1], window[:, 1:]
            select = (hist >= 0) & (targets >= 0)
            if last_only:    # TIGER-style prefix examples: only the last position has a target
                select[:, :-1] = False
            codes, valid, content, ids, attributes = self.genrec.history_inputs(hist)
            logits, h = self.model.teacher_forced(codes, valid, self.item_codes[targets.clamp(min=0)], select,
                                                  content, ids, attributes)
            n = int(select.sum())
            # "equal": sum over targets / expected targets per full batch, so every target weighs the same
            # whichever length bucket (or short last batch) it came from; "batch": the batch's own mean.
            equal = self.hparams.target_weighting == "equal"
            if equal and self.targets_per_batch is None:
                raise RuntimeError("target_weighting='equal' needs targets_per_batch from the DataModule (set at "
                                   "setup); set it, or use target_weighting='batch' outside a Trainer")
            reduction, divisor = ("sum", self.targets_per_batch) if equal else ("mean", 1.0)
            loss = self.level_losses(logits, targets[select], reduction) / divisor
            if self.hparams.item_loss_weight:
                item_loss = self.item_level_loss(h, targets[select], reduction) / divisor
                loss = loss + self.hparams.item_loss_weight * item_loss
                if self._trainer is not None:
                    self.log("train/item_loss", item_loss, batch_size=len(h))
            per_target = loss.detach() * divisor / max(n, 1) if equal else loss.detach()   # "batch": already the mean
        else:
            hist, target, users = batch
            hist = hist[:, int((hist >= 0).any(0).to(torch.int8).argmax()):]  # drop all-padding columns
            tokens, attn = self.genrec.tiger_inputs(hist, users)
            target_tokens = self.item_codes[target] + torch.as_tensor(self.model.layout.offsets, device=self.device)
            logits = self.model(tokens, attn, target_tokens)  # (b, D, V)
            loss = self.level_losses([self.model.level_logits(logits[:, d], d) for d in range(logits.shape[1])], target)
            n = len(target)
            per_target = loss.detach()       # a mean over the batch's targets
        self.log_training_loss(loss, per_target, n)
        return loss

    def item_level_loss(self, h: torch.Tensor, targets: torch.Tensor, reduction: str) -> torch.Tensor:
        """Cross-entropy of each state (n, d) against the item table: every item, or (``item_loss: sampled``)
        the batch's targets plus shared popularity-drawn negatives."""
        if self.hparams.item_loss == "full":
            return F.cross_entropy(h @ self.genrec.item_table().T, targets, reduction=reduction)
        if self.item_sampler is None:
            raise RuntimeError("item_loss='sampled' draws negatives by training counts, set at setup from the "
                               "DataModule; call setup('fit') or set module.item_sampler")
        negatives = self.item_sampler.sample(self.hparams.item_loss_negatives).to(targets.device)
        return sampled_softmax_loss(h, targets, self.genrec.item_table, negatives, reduction=reduction)

    def log_training_loss(self, loss: torch.Tensor, per_target: torch.Tensor, n: int) -> None:
        """Logs the optimised loss as train/loss, and as train/loss_per_target the loss per next-item target
        (the batch's summed loss / its targets) smoothed by an EMA (LOSS_EMA_DECAY) over steps.

        With target_weighting "equal" the optimised loss is a sum over targets divided by the *expected*
        count, so it swings with how many targets a batch holds (on Office from 17 to 174 in one run);
        per target and smoothed it reads as a trend, and it is what the training-curve plot draws.
        """
        ema = self.loss_per_target_ema
        self.loss_per_target_ema = (per_target if ema is None
                                    else LOSS_EMA_DECAY * ema + (1 - LOSS_EMA_DECAY) * per_target)
        if self._trainer is not None:
            self.log("train/loss", loss, batch_size=n)
            self.log("train/loss_per_target", self.loss_per_target_ema, prog_bar=True, batch_size=n)

    # ------------------------------------------------------------------ evaluation
    def recommend(self, hist: torch.Tensor, k: int, exclude: list[np.ndarray] | None = None,
                  users: torch.Tensor | None = None):
        return self.genrec.recommend(hist, k=k, beam_width=self.hparams.beam_width, exclude=exclude, users=users,
                                     search=self.hparams.get("search", "beam"))

    def _eval_step(self, batch, prefix: str):
        hist, target, users = batch
        result = self.recommend(hist, k=max(DEFAULT_KS), users=users)
        # Each user's gains from genrec.metrics (what `genrec evaluate` and SASRec's validation average);
        # MeanMetric averages them over all batches (and DDP processes).
        gains = per_example_metrics(result.items, target.cpu().numpy(), DEFAULT_KS)
        for name, metric in self._val.items():
            metric.update(torch.as_tensor(gains[name], dtype=torch.float32))

    def _eval_epoch_end(self, prefix: str):
        for name, metric in self._val.items():
            self.log(f"{prefix}/{name}", metric.compute(), prog_bar=name == "ndcg@10", sync_dist=False)
            metric.reset()

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self):
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def on_test_epoch_end(self):
        self._eval_epoch_end("test")

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self):
        decay, no_decay, sparse = [], [], []
        item_emb = self.model.item_emb.weight if self.sparse_item_ids else None
        for name, p in self.named_parameters():
            if p is item_emb:
                sparse.append(p)
            else:
                (no_decay if p.ndim < 2 or "emb" in name or "bias" in name else decay).append(p)
        groups = [{"params": decay, "weight_decay": self.hparams.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        if sparse:
            opt = AdamWSparse([*groups, {"params": sparse, "sparse": True}], lr=self.hparams.lr)
        else:
            opt = torch.optim.AdamW(groups, lr=self.hparams.lr)
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 10_000
        total = int(total) if math.isfinite(total) else 10_000
        warmup = self.hparams.warmup_steps

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / max(1, warmup)
            if self.hparams.scheduler == "constant":
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
