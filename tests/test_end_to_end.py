"""The whole pipeline on a small demo catalogue: prepare -> embed -> tokenize -> train -> evaluate.

One module-scoped run is shared by the end-to-end check, resume-after-kill and the
two-process DDP run, so the suite pays for the expensive stages once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genrec.data.demo import DemoConfig, write_demo_source
from genrec.data.prepare import PrepareConfig, prepare
from genrec.evaluate import EvaluateConfig, evaluate
from genrec.features.image import ImageConfig
from genrec.features.stage import EmbedConfig, embed
from genrec.lit.sasrec import SASRecTrainConfig
from genrec.tokenizer.config import RQVAEMethodConfig
from genrec.tokenizer.semantic_ids import load_semantic_ids
from genrec.tokenizer.stage import TokenizeConfig, tokenize

REPO = Path(__file__).resolve().parents[1]
SMALL_DEMO = DemoConfig(n_items=240, n_users=700, n_top_categories=4, brands_per_top=3)


def _train(run: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "train.py", "fit", "--config", "configs/demo.yaml", f"--data.run={run}",
           "--demo=false", "--evaluate=false", "--trainer.enable_progress_bar=false",
           "--model.d_model=48", "--model.n_heads=2", "--model.d_ff=96", "--data.batch_size=64", "--model.lr=0.01",
           *extra]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                         env=os.environ | {"PYTHONHASHSEED": "0"})
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    source = write_demo_source(root / "source", seed=0, config=SMALL_DEMO)
    run = root / "run"
    prepare(source, run, PrepareConfig(progress=False), name="small-demo")
    embed(run, EmbedConfig(image=ImageConfig(enabled=False), sasrec=SASRecTrainConfig(max_epochs=15, patience=3,
                                                                                       progress_bar=False),
                           cache_dir=str(root / "cache"), progress=False))
    tokenize(run, TokenizeConfig(n_levels=2, codebook_size=32, rqvae=RQVAEMethodConfig(epochs=20, min_steps=200)))
    return run


def test_pipeline_beats_popularity_by_a_clear_margin(small_run):
    log = _train(small_run, "--trainer.max_epochs=25")
    # a plain line per epoch reaches a captured (non-TTY) stdout; Lightning's tips and no-device banners do not
    assert re.search(r"^epoch 1/25  step \d+  train/loss_per_target \d+\.\d{4}  val/ndcg@10 0\.\d{4}  elapsed ",
                     log.stdout, re.M), log.stdout[-2000:]
    assert "Tip:" not in log.stdout + log.stderr and "available: False" not in log.stdout + log.stderr
    assert (small_run / "checkpoints" / "best.ckpt").exists()
    assert (small_run / "plots" / "training_curve.png").exists()
    trained = json.loads((small_run / "checkpoints" / "manifest.json").read_text())
    assert trained["stage"] == "train" and set(trained["files"]) >= {"best.ckpt", "last.ckpt"}
    assert set(trained["inputs"]) >= {"dataset/manifest.json", "sid/manifest.json"}
    out = evaluate(small_run, EvaluateConfig(split="test"))
    saved = json.loads((small_run / "metrics.json").read_text())
    assert saved["stage"] == "evaluate" and "checkpoints/best.ckpt" in saved["inputs"]
    assert "genrec" not in saved and set(saved["systems"]) == {"genrec", "sasrec", "popularity"}   # each once
    for system in ("genrec", "sasrec", "popularity"):
        for key in ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20", "invalid_rate",
                    "n_users", "seconds"):
            assert key in saved["systems"][system], (system, key)
    for system in ("genrec", "sasrec", "popularity"):
        beyond = saved["systems"][system]["beyond"]
        for k in (10, 20):
            assert 0 < beyond[f"coverage@{k}"] <= 1 and beyond[f"novelty@{k}"] > 0 and beyond[f"avg_popularity@{k}"] > 0
            assert 0 <= beyond[f"diversity@{k}"] <= 1                  # the demo's items have categories
        assert beyond["diversity_measure"] == "category"
        buckets = beyond["by_target_popularity"]
        assert set(buckets) == {"never", "1-4", "5-19", "20+"}
        assert sum(b["n_users"] for b in buckets.values()) == saved["systems"][system]["n_users"]
        assert beyond["cold_targets"]["n_users"] == buckets["never"]["n_users"] + buckets["1-4"]["n_users"]
    assert saved["beyond_protocol"]["diversity"]["categories_dropped_as_universal"] == ["Demo"]
    g, pop = out["systems"]["genrec"], out["systems"]["popularity"]
    print(f"\nsmall demo test NDCG@10: genrec {g['ndcg@10']:.4f}  sasrec {out['systems']['sasrec']['ndcg@10']:.4f}  "
          f"popularity {pop['ndcg@10']:.4f}")
    assert g["invalid_rate"] == 0.0
    assert g["ndcg@10"] > 2 * pop["ndcg@10"] and g["ndcg@10"] - pop["ndcg@10"] > 0.05


def test_resume_after_an_interrupted_fit(small_run, tmp_path):
    """Kill-like stop after 2 epochs, then --ckpt_path last continues from epoch 2 instead of restarting.

    With the sparse item-id update (what catalogues from genrec.lit.optim.SPARSE_ITEMS_FROM items train
    with), so its two-optimiser state goes through a real Lightning checkpoint and back."""
    import shutil

    import torch

    run = tmp_path / "run"
    shutil.copytree(small_run, run, ignore=shutil.ignore_patterns("checkpoints", "logs", "metrics.json"))
    _train(run, "--trainer.max_epochs=2", "--model.item_id_grad=sparse")
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["genrec"]["sid_checksum"]
    assert "hyper_parameters" in last and last["hyper_parameters"]["arch"] == "causal"
    assert set(last["optimizer_states"][0]) == {"dense", "sparse"}
    _train(run, "--trainer.max_epochs=3", "--ckpt_path=last", "--model.item_id_grad=sparse")
    resumed = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["epoch"] == last["epoch"] + 1   # continued, not restarted
    assert resumed["global_step"] > last["global_step"]


def test_two_process_ddp_on_cpu(small_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run, ignore=shutil.ignore_patterns("checkpoints", "logs", "metrics.json"))
    out = _train(run, "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.max_epochs=1",
                 "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1")
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert "distributed_backend=gloo" in out.stdout + out.stderr or "gloo" in (out.stdout + out.stderr).lower()


def test_pq_codes_with_parallel_head_score_every_item_exactly(small_run, tmp_path):
    """RPG-style variant end to end: product-quantized codes, a parallel head, exact catalogue scoring."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run, ignore=shutil.ignore_patterns("checkpoints", "logs", "metrics.json", "sid"))
    report = tokenize(run, TokenizeConfig(method="pq", modalities="separate", n_levels=4, codebook_size=16))
    assert load_semantic_ids(run).modalities == ["collab", "text"]
    assert len(report["level_sizes"]) == 9 and report["level_sizes"][:8] == [16] * 8   # 2 x 4 digits + dedup level
    # the text digits weighted as configs/sparse.yaml can (model.modality_weights): the YAML-style flag reaches
    # the checkpoint, and evaluation decodes with it unless told otherwise
    _train(run, "--trainer.max_epochs=25", "--model.head=parallel", "--model.modality_weights={text: 0.5}")
    out = evaluate(run, EvaluateConfig(split="test"))
    g, pop = out["systems"]["genrec"], out["systems"]["popularity"]
    print(f"\nsmall demo, pq + parallel head, test NDCG@10: genrec {g['ndcg@10']:.4f}  popularity {pop['ndcg@10']:.4f}")
    assert g["decoding"] == "exact" and g["invalid_rate"] == 0.0
    assert g["ndcg@10"] > 2 * pop["ndcg@10"] and g["ndcg@10"] - pop["ndcg@10"] > 0.05
    assert g["level_weights"] == [1.0] * 4 + [0.5] * 4 + [1.0]
    plain = evaluate(run, EvaluateConfig(split="test", systems=("genrec",), modality_weights={},
                                         output="plain.json"))["systems"]["genrec"]
    assert plain["level_weights"] is None and plain["ndcg@10"] != g["ndcg@10"]


def test_temporal_split_end_to_end(small_run, tmp_path):
    """`genrec prepare --split temporal`: every later stage learns only from events before the validation
    cut, and evaluation scores exactly the users the split gives a test target."""
    from genrec.data.dataset import load_dataset
    from genrec.data.split import training_items

    run = tmp_path / "run"
    manifest = prepare(small_run.parent / "source", run, PrepareConfig(split="temporal", progress=False))
    split = load_dataset(run).split
    assert manifest["split"]["n_test_users"] == len(split.test) > 0
    embed(run, EmbedConfig(image=ImageConfig(enabled=False), sasrec=SASRecTrainConfig(max_epochs=5, progress_bar=False),
                           cache_dir=str(small_run.parent / "cache"), progress=False))
    collab = json.loads((run / "features" / "manifest.json").read_text())["modalities"]["collab"]
    in_training = np.zeros(manifest["n_items"], dtype=bool)
    in_training[training_items(split)] = True
    # SASRec learned from the training windows only: items first bought after the cut get no learned
    # row (embed marks them missing), and users whose history starts after it give no transitions.
    mask_file = run / "features" / collab.get("mask_file", "absent")
    assert np.array_equal(np.load(mask_file) if mask_file.exists() else np.ones_like(in_training), in_training)
    assert collab["n_users_without_transitions"] == sum(len(s) < 2 for s in split.train) > 0
    tokenize(run, TokenizeConfig(n_levels=2, codebook_size=32, rqvae=RQVAEMethodConfig(epochs=5, min_steps=50)))
    _train(run, "--trainer.max_epochs=3")
    out = evaluate(run, EvaluateConfig(split="test"))
    assert out["protocol"]["kind"] == "temporal"
    systems = out["systems"]
    assert {s: systems[s]["n_users"] for s in systems} == {s: len(split.test) for s in systems}
    assert systems["genrec"]["invalid_rate"] == 0.0


def test_item_attributes_and_an_untied_output_table_end_to_end(small_run, tmp_path):
    """`--data.use_attributes true --model.item_output token+free` through the training CLI: the checkpoint
    holds the demo items' category and brand ids and the free table, evaluation decodes it by rerank,
    and the export serves what torch ranks."""
    import shutil

    import torch

    from genrec.data.attributes import attribute_table
    from genrec.data.dataset import load_dataset
    from genrec.export.onnx import ExportConfig, export_module
    from genrec.model.genrec import GenRec
    from genrec.serving.runtime import ExportRuntime

    run = tmp_path / "run"
    shutil.copytree(small_run, run, ignore=shutil.ignore_patterns("checkpoints", "logs", "metrics.json"))
    _train(run, "--trainer.max_epochs=3", "--data.use_attributes=true", "--model.item_id_embedding=true",
           "--model.item_loss_weight=1", "--model.item_output=token+free", "--model.search=rerank")
    model = GenRec.from_checkpoint(run / "checkpoints" / "best.ckpt")
    table = attribute_table(load_dataset(run).items)
    assert table.n_attributes > 0 and table.items_without == 0          # every demo item has a category
    np.testing.assert_array_equal(model.item_attributes.numpy(), table.ids)
    from genrec.catalog.featurizer import AddItemsAssets
    assert AddItemsAssets.from_run(run).attributes == table.vocab      # what `genrec export` ships for add-items
    assert model.model.item_out_emb.weight.shape[0] == model.n_items
    out = evaluate(run, EvaluateConfig(split="test", systems=("genrec",)))["systems"]["genrec"]
    assert out["decoding"] == "rerank" and out["invalid_rate"] == 0.0 and out["ndcg@10"] > 0
    assert out["item_logit_weight"] == 1.0
    heavy = evaluate(run, EvaluateConfig(split="test", systems=("genrec",), item_logit_weight=5.0,
                                         output="w5.json"))["systems"]["genrec"]      # `genrec evaluate` override
    assert heavy["item_logit_weight"] == 5.0 and heavy["invalid_rate"] == 0.0
    with pytest.raises(ValueError, match="decodes with search 'beam'"):
        evaluate(run, EvaluateConfig(split="test", systems=("genrec",), search="beam", item_logit_weight=5.0))
    export_module(model, tmp_path / "export", ExportConfig(search="rerank", add_items=False))
    runtime = ExportRuntime(tmp_path / "export")
    histories = [[1, 2, 3], [40, 41], [7]]
    got = runtime.recommend(histories, 10, exclude_history=False)
    hist = torch.tensor([[-1] * (model.max_items - len(h)) + h for h in histories])
    want = model.recommend(hist, k=10, search="rerank")
    np.testing.assert_array_equal(got.items, want.items)
