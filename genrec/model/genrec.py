"""GenRec: the trained recommender as one ``nn.Module``, loadable without Lightning.

It holds what inference needs and nothing of training:
- the config (architecture name, backbone config, catalogue size, content width, codes checksum);
- the backbone (CausalSID or TIGER's T5, chosen through genrec.registry);
- the item -> semantic-ID table and the optional content vectors, as buffers;
- input building (history ids -> the backbone's inputs) and the decoding step.

Decoding itself (trie, beam search, exact scoring) stays in genrec.decode; the torch steps that
plug a backbone into it live in genrec.generate. Checkpoints store ``{"genrec": {"config": ...}}``
beside the weights, the way nanoGPT stores ``model_args``, and ``GenRec.from_checkpoint`` reads
them with ``torch.load(weights_only=True)``: a checkpoint cannot run code when it is loaded.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genrec.registry import get_arch, resolve

CHECKPOINT_KEY = "genrec"      # where a checkpoint keeps the model's config (next to "state_dict")
STATE_PREFIX = "genrec."       # GenRecModule holds the model as ``self.genrec``
# Autoregressive heads: trie beam search; the exact top-k over the trie; or "rerank": the beam's items
# re-scored by the item-level score the item loss trains (needs item_loss_weight > 0 in training).
# Parallel heads score every item exactly ("beam" and "exact" alike); "rerank" adds the item logit to
# every item's code score (a hybrid of semantic-ID digits and an item-id score).
SEARCHES = ("beam", "exact", "rerank")


def check_item_logit_weight(weight: float) -> float:
    """The item logit's decoding weight as a float; a ValueError unless it is finite and > 0."""
    weight = float(weight)
    if not (math.isfinite(weight) and weight > 0):
        raise ValueError(f"item_logit_weight must be a finite number > 0, got {weight}")
    return weight


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded (unsafe, foreign or inconsistent); the message says what to do."""


@dataclass
class GenRecConfig:
    arch: str = "causal"          # key of genrec.registry.ARCHS
    backbone: dict = field(default_factory=dict)  # the arch's config fields (CausalSIDConfig / TigerConfig)
    n_items: int = 0              # catalogue size (rows of the item -> code table)
    content_dim: int = 0          # width of each item's content vector (0 = no content input)
    sid_checksum: str = ""        # checksum of the semantic IDs the model was trained on (RUN/sid)
    # decoding: each digit's log-prob times its weight (None = all 1; genrec.decode.weighted), one per level,
    # from model.modality_weights (SemanticIDs.level_weights)
    level_weights: list[float] | None = None
    attributes_per_item: int = 0  # width of the item -> attribute-id table (0: the model reads no attributes)
    # decoding: search "rerank" adds this times the item logit to the (weighted) digit log-probs
    item_logit_weight: float = 1.0

    def __post_init__(self):
        arch = get_arch(self.arch)
        config_cls = resolve(arch.config)
        if not isinstance(self.backbone, config_cls):
            known = {f.name for f in fields(config_cls)}
            unknown = sorted(set(self.backbone) - known)
            if unknown:
                raise ValueError(f"backbone config for arch {self.arch!r} has unknown fields {unknown}; "
                                 f"known: {sorted(known)}")
            self.backbone = config_cls(**self.backbone)
        if self.n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {self.n_items}")
        if self.content_dim and not arch.item_inputs:
            raise ValueError(f"arch {self.arch!r} reads no per-item content vectors; set content_dim 0")
        if bool(self.attributes_per_item) != bool(getattr(self.backbone, "n_attributes", 0)):
            raise ValueError(f"attributes_per_item ({self.attributes_per_item}) and the backbone's n_attributes "
                             f"({getattr(self.backbone, 'n_attributes', 0)}) must both be 0 or both be > 0")
        self.item_logit_weight = check_item_logit_weight(self.item_logit_weight)
        if self.level_weights is not None:
            from genrec.decode.weighted import check_level_weights

            self.level_weights = list(check_level_weights(self.level_weights, len(self.level_sizes)))

    @property
    def level_sizes(self) -> tuple[int, ...]:
        return tuple(self.backbone.level_sizes)

    @property
    def max_items(self) -> int:
        return int(self.backbone.max_items)

    def to_dict(self) -> dict:
        """Plain JSON-able values only (a weights_only checkpoint holds no dataclasses)."""
        backbone = asdict(self.backbone)
        backbone["level_sizes"] = list(backbone["level_sizes"])
        return {"arch": self.arch, "backbone": backbone, "n_items": self.n_items,
                "content_dim": self.content_dim, "sid_checksum": self.sid_checksum,
                "level_weights": self.level_weights, "attributes_per_item": self.attributes_per_item,
                "item_logit_weight": self.item_logit_weight}


class GenRec(nn.Module):
    def __init__(self, config: GenRecConfig):
        super().__init__()
        self.config = config
        self.arch = config.arch
        self.model = resolve(get_arch(config.arch).model)(config.backbone)
        n, d = config.n_items, len(config.level_sizes)
        self.register_buffer("item_codes", torch.zeros(n, d, dtype=torch.long))               # (N, D)
        self.register_buffer("content", torch.zeros(n if config.content_dim else 0, config.content_dim))  # (N, F)
        a = config.attributes_per_item                                                        # (N, A), 0 = empty
        self.register_buffer("item_attributes", torch.zeros(n if a else 0, a, dtype=torch.long))
        self._trie = None
        # the item loss's weight in training (None: unknown, e.g. built in memory): 0 means the state's item
        # logit is untrained, so search "rerank" is refused
        self.item_loss_weight: float | None = None
        # (N,) score added to every item's total in search "rerank" (None: nothing); bench/weights.py
        # --popularity measures a popularity prior with it. Not stored in checkpoints or exports.
        self.item_prior: np.ndarray | None = None

    # ------------------------------------------------------------------ catalogue
    @property
    def n_items(self) -> int:
        return self.config.n_items

    @property
    def level_sizes(self) -> tuple[int, ...]:
        return self.config.level_sizes

    @property
    def max_items(self) -> int:
        return self.config.max_items

    @property
    def item_id_embedding(self) -> bool:
        return getattr(self.model, "item_emb", None) is not None

    @property
    def parallel(self) -> bool:
        """Every code level is predicted from one state, so items can be scored exactly."""
        head = getattr(self.model, "head", None)
        return bool(getattr(head, "parallel", False))

    @torch.no_grad()
    def set_catalogue(self, item_codes: np.ndarray | torch.Tensor, content: np.ndarray | None = None,
                      attributes: np.ndarray | None = None) -> None:
        """Fill the item -> code table (N, D), the content vectors (N, F) and the attribute ids (N, A) from the
        run's artifacts."""
        codes = torch.as_tensor(np.asarray(item_codes), dtype=torch.long)
        if tuple(codes.shape) != tuple(self.item_codes.shape):
            raise ValueError(f"item codes have shape {tuple(codes.shape)}; this model expects "
                             f"{tuple(self.item_codes.shape)} ({self.n_items} items x {len(self.level_sizes)} levels)")
        self.item_codes.copy_(codes)
        if self.config.content_dim:
            if content is None:
                raise ValueError(f"this model reads {self.config.content_dim}-d content vectors; pass them")
            self.content.copy_(torch.as_tensor(np.asarray(content, dtype=np.float32)))
        if self.config.attributes_per_item:
            if attributes is None or np.shape(attributes) != tuple(self.item_attributes.shape):
                raise ValueError(f"this model reads {tuple(self.item_attributes.shape)} attribute ids; pass them "
                                 f"(got {None if attributes is None else np.shape(attributes)})")
            self.item_attributes.copy_(torch.as_tensor(np.asarray(attributes), dtype=torch.long))
        self._trie = None

    @property
    def trie(self):
        if self._trie is None:
            from genrec.decode import Trie

            self._trie = Trie(self.item_codes.cpu().numpy(), self.level_sizes)
        return self._trie

    def _apply(self, fn, *args, **kwargs):
        self._trie = None     # buffers may move or change: rebuild the trie from them on next use
        return super()._apply(fn, *args, **kwargs)

    # ------------------------------------------------------------------ inputs
    def history_inputs(self, hist: torch.Tensor):
        """Item ids (b, t), left-padded with -1 -> (codes (b, t, D), valid (b, t), content (b, t, F) | None,
        item ids (b, t) | None, attribute ids (b, t, A) | None) as the causal backbone reads them."""
        valid = hist >= 0
        ids = hist.clamp(min=0)
        content = self.content[ids] if self.config.content_dim else None
        attributes = self.item_attributes[ids] if self.config.attributes_per_item else None
        return self.item_codes[ids], valid, content, (hist if self.item_id_embedding else None), attributes

    def item_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Every item's input vector (N, d), or those of ``ids`` (M,), exactly as the causal backbone reads
        them (``item_tokens``)."""
        whole = ids is None  # the whole catalogue: the buffers themselves, no gathered copies
        ids = torch.arange(self.n_items, device=self.item_codes.device) if whole else ids
        codes = self.item_codes if whole else self.item_codes[ids]
        content = (self.content if whole else self.content[ids])[None] if self.config.content_dim else None
        attributes = ((self.item_attributes if whole else self.item_attributes[ids])[None]
                      if self.config.attributes_per_item else None)
        return self.model.item_tokens(codes[None], content, ids[None] if self.item_id_embedding else None,
                                      attributes)[0]

    def item_table(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """What the item logit scores a state against (N, d), or those rows of ``ids`` (M,): the item loss in
        training and search "rerank". By the backbone's ``item_output``: ``item_vectors`` without the
        encoder's sqrt(d) input scale ("token"), a free output table ("free"), or their sum."""
        mode = getattr(self.model.cfg, "item_output", "token")
        table = None
        if mode != "token":
            out = self.model.item_out_emb.weight
            table = out if ids is None else out[ids]
        if mode != "free":
            token = self.item_vectors(ids) / math.sqrt(self.model.cfg.d_model)
            table = token if table is None else table + token
        return table

    def logit_table(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """``item_table`` times the decoding weight of the item logit (``config.item_logit_weight``): what search
        "rerank" scores a state against, and what an export ships as item_table.npy."""
        table = self.item_table(ids)
        return table if self.config.item_logit_weight == 1.0 else table * self.config.item_logit_weight

    def tiger_inputs(self, hist: torch.Tensor, users: torch.Tensor | None = None):
        """TIGER encoder tokens: D code tokens per history item, left-padded (b, t*D), plus an optional user token."""
        layout = self.model.layout
        valid = hist >= 0
        offsets = torch.as_tensor(layout.offsets, device=hist.device)
        tokens = ((self.item_codes[hist.clamp(min=0)] + offsets) * valid.unsqueeze(-1)).flatten(1)   # pad token 0
        mask = valid.repeat_interleave(len(layout.level_sizes), dim=1)
        if layout.n_user_buckets and users is not None:
            ut = torch.as_tensor(layout.user_token(users.cpu().numpy()).astype(np.int64), device=hist.device)
            tokens = torch.cat([ut[:, None], tokens], dim=1)
            mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        return tokens, mask.long()

    # ------------------------------------------------------------------ decoding
    def step(self, hist: torch.Tensor, users: torch.Tensor | None = None):
        """The genrec.decode StepFn for these histories (b, t), its log-probs weighted by ``level_weights``."""
        from genrec.decode.weighted import weighted_step

        return weighted_step(resolve(get_arch(self.arch).step)(self, hist, users), self.config.level_weights)

    def set_level_weights(self, weights: list[float] | None) -> None:
        """Decode with these per-digit weights from now on (None: all 1); stored with the model's config."""
        from genrec.decode.weighted import check_level_weights

        self.config.level_weights = (None if weights is None
                                     else list(check_level_weights(weights, len(self.level_sizes))))

    def set_item_logit_weight(self, weight: float) -> None:
        """Decode search "rerank" with ``weight`` times the item logit from now on; stored with the model's config."""
        weight = check_item_logit_weight(weight)
        self.check_rerank()
        self.config.item_logit_weight = weight

    def set_item_prior(self, prior: np.ndarray | None) -> None:
        """Add ``prior[i]`` to item i's score from now on (search "rerank" only; None: nothing)."""
        if prior is not None:
            prior = np.asarray(prior, dtype=np.float64)
            if prior.shape != (self.n_items,) or not np.isfinite(prior).all():
                raise ValueError(f"item prior must be {self.n_items} finite numbers, one per item, "
                                 f"got shape {prior.shape}")
        self.item_prior = prior

    @torch.inference_mode()
    def recommend(self, hist: torch.Tensor, *, k: int, beam_width: int = 20,
                  exclude: list[np.ndarray] | None = None, candidates: list[np.ndarray] | None = None,
                  users: torch.Tensor | None = None, search: str = "beam"):
        """Top-k real items per history row -> genrec.decode.BeamResult: exact scoring of every item for a
        parallel head; for an autoregressive head, trie-constrained beam search of width max(beam_width, k)
        (``search="beam"``) or the exact top-k over the trie (``search="exact"``: genrec.decode.threshold)."""
        from genrec.decode import candidate_mask, exclude_mask, top_items
        from genrec.decode.threshold import threshold_search

        if search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
        if self.item_prior is not None and search != "rerank":
            raise ValueError(f"an item prior is added in search 'rerank' only, not {search!r}")

        was_training = self.training
        self.eval()
        try:
            mask = exclude_mask(exclude, self.n_items) if exclude is not None else None
            if candidates is not None:
                cmask = candidate_mask(candidates, self.n_items)
                mask = cmask if mask is None else mask & cmask
            if search == "exact" and not self.parallel:
                return threshold_search(lambda: self.step(hist, users), self.trie, len(hist), k,
                                        beam_width=max(beam_width, k), item_mask=mask)[0]
            if search == "rerank":
                return (self._hybrid(hist, users, k, mask) if self.parallel
                        else self._rerank(hist, users, k, max(beam_width, k), mask))
            return top_items(self.step(hist, users), self.trie, len(hist), k, exact=self.parallel,
                             beam_width=max(beam_width, k), item_mask=mask)
        finally:
            self.train(was_training)

    def default_search(self, search: str = "auto") -> str:
        """The search to decode with: ``search`` itself, or for "auto" (evaluation's and export's default)
        "rerank" when the model's item logit was trained (item_loss_weight > 0, causal arch), else "beam"."""
        if search != "auto":
            return search
        return "rerank" if self.arch == "causal" and self.item_loss_weight else "beam"

    def check_rerank(self) -> None:
        """Raise ValueError unless search "rerank" can run on this model: a causal arch (its state has an item
        logit) and a trained item logit (item_loss_weight not 0). Evaluation, training (model.search) and
        export all ask here."""
        if self.arch != "causal":
            raise ValueError(f"search 'rerank' needs the causal arch's item-level state; arch {self.arch!r} has "
                             "none (use search 'beam' or 'exact')")
        if self.item_loss_weight == 0:
            raise ValueError("search 'rerank' scores the state's item logit, but this model was trained without the "
                             "item loss (item_loss_weight 0), so that score is untrained; use search 'beam', or "
                             "train with --model.item_loss_weight 1")

    def _rerank(self, hist, users, k: int, width: int, mask):
        """Beam search of ``width`` generates candidates through the trie; each is then scored by its
        codes' log-prob plus the state's item-level logit (h . item_table, times item_logit_weight), the product
        of the two distributions training fits (the item loss's normaliser is per request, so it drops out)."""
        from genrec.decode import rerank_search

        self.check_rerank()
        step = self.step(hist, users)
        state = step.state                         # the state before any code step: what the item loss scores

        def rows(ids: np.ndarray) -> np.ndarray:   # only the beam's items: not the whole (N, d) table per batch
            return self.logit_table(torch.as_tensor(ids, device=state.device)).float().cpu().numpy()

        prior = self.item_prior
        state = state.float().cpu().numpy()

        def scored(ids: np.ndarray) -> np.ndarray:   # the prior as one more coordinate of state . row
            table = rows(ids)
            return table if prior is None else np.concatenate([table, prior[ids, None]], axis=1)

        if prior is not None:
            state = np.concatenate([state, np.ones((len(state), 1), state.dtype)], axis=1)
        return rerank_search(step, self.trie, len(hist), k, beam_width=width, state=state,
                             item_table=scored, item_mask=mask)

    def _hybrid(self, hist, users, k: int, mask):
        """Parallel head: every item scored by its digits' summed log-probs plus the state's item logit
        (h . item_table), exactly; the item softmax's normaliser is per request, so it drops out. Dense over
        the catalogue (O(N d) per request), unlike the pruned code-only search."""
        from genrec.decode import score_catalogue

        self.check_rerank()
        step = self.step(hist, users)
        logits = (step.state.float() @ self.logit_table().float().T).double().cpu().numpy()   # (b, N)
        if self.item_prior is not None:
            logits = logits + self.item_prior
        return score_catalogue(step, self.trie, len(hist), k, item_mask=mask, item_scores=logits)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_entry(self) -> dict:
        entry = {"config": self.config.to_dict(), "arch": self.arch, "sid_checksum": self.config.sid_checksum}
        return entry if self.item_loss_weight is None else entry | {"item_loss_weight": self.item_loss_weight}

    def save(self, path: str | Path) -> None:
        """A checkpoint of the model alone (config + weights), loadable by ``from_checkpoint``."""
        state = {STATE_PREFIX + k: v for k, v in self.state_dict().items()}
        torch.save({CHECKPOINT_KEY: self.checkpoint_entry(), "state_dict": state}, path)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> "GenRec":
        """Load a training checkpoint (Lightning's .ckpt) or a ``save`` file without executing any code in it."""
        ckpt = load_checkpoint(path)
        entry = ckpt.get(CHECKPOINT_KEY) or {}
        if "config" not in entry or "state_dict" not in ckpt:
            raise CheckpointError(f"{path}: not a genrec checkpoint (no '{CHECKPOINT_KEY}.config' and 'state_dict'); "
                                  "pass a checkpoint written by `python train.py` (RUN/checkpoints/*.ckpt)")
        model = cls(GenRecConfig(**entry["config"]))
        state = {k[len(STATE_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(STATE_PREFIX)}
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as err:            # a tensor of the wrong shape
            missing, unexpected = [str(err).splitlines()[-1].strip()[:200]], []
        if missing or unexpected:
            raise CheckpointError(f"{path}: weights do not match the stored config (missing {missing[:5]}, "
                                  f"unexpected {unexpected[:5]}); re-train, or load it with the genrec version "
                                  "that wrote it")
        # Lightning checkpoints keep the training hparams; a `save` file keeps the weight in its entry
        weight = (ckpt.get("hyper_parameters") or {}).get("item_loss_weight", entry.get("item_loss_weight"))
        model.item_loss_weight = None if weight is None else float(weight)
        return model.eval()


def load_checkpoint(path: str | Path) -> dict:
    """``torch.load`` that refuses pickled code: tensors, numbers, strings and containers only.

    Lightning checkpoints of this package hold nothing else. A file that needs other Python objects
    is refused with a message instead of being unpickled, since unpickling can run arbitrary code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch names a refused object as e.g. "Unsupported global: GLOBAL posix.system"; anything else is junk.
        if "Unsupported global" not in str(err):
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({str(err).splitlines()[0][:200]}); "
                                  "is it truncated, or another kind of file?") from None
        why = next((line.strip() for line in str(err).splitlines() if "Unsupported global" in line), "")
        raise CheckpointError(f"refusing to load {path}: it holds Python objects other than tensors and plain "
                              f"containers, and unpickling them could run code ({why[:160]}). Load only "
                              "checkpoints written by genrec (`python train.py`).") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200] if str(err) else ''}); is it truncated?") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, got {type(ckpt).__name__}")
    return ckpt
