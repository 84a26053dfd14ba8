"""ONNX export: parity with torch eager, exactness of the served top-k, folder integrity, atomicity."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genrec.export import ExportConfig, export_module
from genrec.export import layout
from genrec.export.parity import compare, random_histories
from genrec.io import ArtifactError, sha256_file, write_manifest
from genrec.serving.runtime import ExportRuntime, RuntimeConfig, left_pad

from tiny import LEVELS, MAX_ITEMS, N_ITEMS, item_codes, source_ids, tiny_module, titles

TOL = 1e-4   # the parity bound for scores and logits


def _assert_parity(result):
    assert result.same_items, "ONNX top-k items differ from torch eager"
    assert result.inf_pattern_equal
    assert result.max_score_diff < TOL
    assert result.max_logit_diff < TOL
    assert result.max_state_diff < TOL


# ---------------------------------------------------------------------- parity
@pytest.mark.parametrize("lengths", [
    [1],                                   # batch 1, a single-item history (mostly padding)
    [MAX_ITEMS],                           # batch 1, a full window
    [2, MAX_ITEMS + 5, 4],                 # batch 3, one history longer than max_items (truncated)
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 3, 5, 6, 1, 2, 9],   # batch 17
])
def test_onnx_matches_torch_eager(tiny_export, lengths):
    folder, module = tiny_export
    runtime = ExportRuntime(folder)
    histories = random_histories(N_ITEMS, lengths, seed=len(lengths))
    _assert_parity(compare(module, runtime, histories, k=10, beam_width=20))


def test_parity_check_detects_a_changed_weight(tiny_export):
    """The comparison is not vacuous: a model that differs from the export fails it."""
    folder, module = tiny_export
    runtime = ExportRuntime(folder)
    changed = tiny_module()
    with torch.no_grad():
        changed.model.head.bias[2][3] += 0.5       # one code of one level
    result = compare(changed, runtime, random_histories(N_ITEMS, [3, 5], seed=1), k=10, beam_width=20)
    assert result.max_logit_diff > 0.4
    assert result.max_state_diff < TOL              # the encoder is untouched


def test_score_tolerance_grows_with_the_levels_summed_into_a_score():
    """A score sums one log-prob per level, so its bound is tolerance x levels; log-probs keep the tolerance."""
    from genrec.export.parity import ParityResult

    def result(score_diff, logit_diff=5e-5, n_levels=4):
        return ParityResult(n_histories=1, same_items=True, max_score_diff=score_diff, max_logit_diff=logit_diff,
                            max_state_diff=0.0, inf_pattern_equal=True, n_levels=n_levels)

    assert result(1.06e-4).ok(1e-4)                  # 4 levels of ~3e-5 rounding each: a valid export
    assert not result(1.06e-4, n_levels=1).ok(1e-4)
    assert not result(4.1e-4).ok(1e-4)
    assert not result(1e-5, logit_diff=1.1e-4).ok(1e-4)


def test_export_time_parity_is_recorded(tiny_export):
    folder, _ = tiny_export
    parity = json.loads((folder / "manifest.json").read_text())["parity"]
    assert parity["same_items"] and parity["inf_pattern_equal"]
    assert parity["max_logit_diff"] < TOL and parity["n_histories"] == sum(parity["batch_sizes"])


@pytest.mark.parametrize("lengths", [[MAX_ITEMS], [2, MAX_ITEMS + 5, 4, 1, 3]])
def test_tiger_onnx_matches_torch_eager(tiger_export, lengths):
    """TIGER's T5: the exported step (tensor key/value cache, cross-attention shared per request) against
    the eager TigerStep, which re-runs transformers' T5 on the whole prefix without a cache."""
    folder, module = tiger_export
    runtime = ExportRuntime(folder)
    histories = random_histories(N_ITEMS, lengths, seed=10 + len(lengths))
    _assert_parity(compare(module, runtime, histories, k=10, beam_width=20))


def _exact_log_probs(module, history: list[int]) -> np.ndarray:
    """log p(item's codes | history) for every item (N,), by teacher-forcing all items through the eager model."""
    with torch.no_grad():
        hist = torch.as_tensor(left_pad([history], MAX_ITEMS))
        targets = module.item_codes                                                      # (N, D)
        if module.arch == "causal":
            codes, valid, content, _, _ = module.genrec.history_inputs(hist)
            h = module.model.last_state(codes, valid, content).expand(N_ITEMS, -1)       # (N, d)
            logits = module.model.head.teacher_forced(h, targets)
        else:
            tokens, attn = module.genrec.tiger_inputs(hist)
            offsets = torch.as_tensor(module.model.layout.offsets)
            out = module.model(tokens.expand(N_ITEMS, -1), attn.expand(N_ITEMS, -1), targets + offsets)
            logits = [module.model.level_logits(out[:, d], d) for d in range(len(LEVELS))]
        return sum(F.log_softmax(lg, -1).gather(1, targets[:, [d]])[:, 0] for d, lg in enumerate(logits)).numpy()


@pytest.mark.parametrize("which", ["tiny_export", "tiger_export", "parallel_export"])
def test_served_top_k_is_the_exact_ranking(which, request):
    """With beam width >= the catalogue nothing is pruned, so the search must return the exact top-k of
    log p(codes | history), computed here by teacher-forcing every item's codes through the eager model;
    history exclusion and candidate lists must act as filters on that ranking."""
    folder, module = request.getfixturevalue(which)
    runtime = ExportRuntime(folder)
    assert runtime.one_call == (which == "parallel_export")          # only a parallel head fuses its levels
    history = [4, 30, 11, 5, 17]
    exact = _exact_log_probs(module, history)
    order = np.lexsort((np.arange(N_ITEMS), -exact))                                      # score desc, id asc

    res = runtime.recommend([history], 10, exclude_history=False, beam_width=N_ITEMS)
    assert res.items[0].tolist() == order[:10].tolist()
    np.testing.assert_allclose(res.scores[0], exact[order[:10]], atol=TOL)

    res = runtime.recommend([history], 10, exclude_history=True, beam_width=N_ITEMS)
    assert res.items[0].tolist() == [i for i in order if i not in history][:10]

    candidates = [0, 5, 9, 17, 22, 36]
    res = runtime.recommend([history], 6, exclude_history=True, candidates=[candidates], beam_width=N_ITEMS)
    allowed = [i for i in order if i in candidates and i not in history]                # 5 and 17 excluded
    assert res.items[0, : len(allowed)].tolist() == allowed and (res.items[0, len(allowed):] == -1).all()


@pytest.mark.parametrize("lengths", [[1], [2, MAX_ITEMS + 5, 4, 1, 3, 6, 6, 2]])
def test_parallel_head_onnx_matches_torch_eager(parallel_export, lengths, monkeypatch):
    """The parallel head exports through the same step signature; both sides score every item exactly."""
    import genrec.decode.exhaustive as exhaustive

    monkeypatch.setattr(exhaustive, "beam_search",
                        lambda *a, **k: pytest.fail("the parallel head must not beam-search"))
    folder, module = parallel_export
    runtime = ExportRuntime(folder)
    assert runtime.exact and json.loads((folder / "manifest.json").read_text())["decoding"] == "exact"
    histories = random_histories(N_ITEMS, lengths, seed=20 + len(lengths))
    _assert_parity(compare(module, runtime, histories, k=10, beam_width=20))
    with pytest.raises(ValueError, match="re-run `genrec export`"):   # a beam-search model against an exact export
        compare(tiny_module(), runtime, histories, k=10, beam_width=20)


def test_a_parallel_export_decodes_from_one_encoder_call(parallel_export, monkeypatch):
    """encoder.onnx returns every level's log-probs (level_log_probs); they are decoder_step.onnx's, level by
    level, and serving reads them without running decoder_step.onnx."""
    folder, _ = parallel_export
    runtime = ExportRuntime(folder)
    assert runtime.one_call
    histories = random_histories(N_ITEMS, [1, 3, MAX_ITEMS + 2], seed=7)
    encoded = runtime.encode(histories)
    fused = encoded["level_log_probs"]
    assert fused.shape == (len(histories), len(LEVELS), max(LEVELS))
    for level, k in enumerate(LEVELS):
        stepped, _ = runtime.decoder_step.run(None, {"state": encoded["state"],
                                                     "last_code": np.zeros(len(histories), np.int64),
                                                     "level": np.array(level, dtype=np.int64)})
        np.testing.assert_allclose(fused[:, level, :k], stepped[:, :k], atol=1e-5)
        assert np.isneginf(fused[:, level, k:]).all()
    want = runtime.recommend(histories, 10)

    class NoStep:
        def run(self, *args, **kwargs):
            raise AssertionError("a parallel export must not run decoder_step.onnx per level")

    monkeypatch.setattr(runtime, "decoder_step", NoStep())
    got = runtime.recommend(histories, 10)
    np.testing.assert_array_equal(got.items, want.items)


def test_a_parallel_export_can_be_served_by_trie_beam_search(parallel_export, monkeypatch):
    """RuntimeConfig(decoding="beam") (serve.py --decoding beam) runs trie beam search over a parallel export's
    level log-probs: with the beam as wide as the catalogue it is the exact ranking; narrower, it returns
    only real items, never one from the history."""
    import genrec.decode.exhaustive as exhaustive

    folder, _ = parallel_export
    exact = ExportRuntime(folder)
    beam = ExportRuntime(folder, RuntimeConfig(decoding="beam"))
    assert exact.exact and not beam.exact
    assert exact.metadata()["search"] == "exact" and beam.metadata()["search"] == "beam"
    histories = random_histories(N_ITEMS, [1, 4, MAX_ITEMS + 3], seed=11)
    want = exact.recommend(histories, 10)
    monkeypatch.setattr(exhaustive, "pruned_search",
                        lambda *a, **k: pytest.fail("beam decoding must not score every item"))
    wide = beam.recommend(histories, 10, beam_width=N_ITEMS)
    np.testing.assert_array_equal(wide.items, want.items)
    np.testing.assert_allclose(wide.scores, want.scores, atol=TOL)
    narrow = beam.recommend(histories, 5, beam_width=5)
    for row, hist in enumerate(histories):
        got = narrow.items[row][narrow.items[row] >= 0]
        assert len(got) and (got < N_ITEMS).all() and not set(got.tolist()) & set(hist)
    with pytest.raises(ValueError, match="decoding must be one of"):
        RuntimeConfig(decoding="greedy")


def test_the_default_export_search_follows_the_trained_item_logit(tmp_path):
    """ExportConfig's search "auto": a model trained with an item loss (configs/sparse.yaml's hybrid) is served
    with its item logit, as `genrec evaluate` measured it; one without is served from its codes alone."""
    hybrid = export_module(tiny_module(head="parallel", item_loss_weight=1.0), tmp_path / "hybrid",
                           ExportConfig(add_items=False), source_ids=source_ids())
    codes_only = export_module(tiny_module(head="parallel"), tmp_path / "codes", ExportConfig(add_items=False),
                               source_ids=source_ids())
    assert (hybrid["decoding"], codes_only["decoding"]) == ("rerank", "exact")


@pytest.mark.parametrize("item_output, attributes, weight", [("token", False, 1.0), ("free", False, 1.0),
                                                              ("token+free", True, 4.0)])
def test_a_parallel_rerank_export_serves_the_torch_hybrid_ranking(tmp_path, item_output, attributes, weight):
    """search "rerank" on a parallel head: the server adds the item logit to every item's code score, as
    GenRec.recommend does in torch (parity checked at export and here), history exclusion included; with an
    untied output table (item_output "free") item_table.npy holds that table's rows, item attributes are
    folded into the exported item vectors, and the item logit's decoding weight into item_table.npy."""
    module = tiny_module(head="parallel", item_loss_weight=1.0, item_output=item_output, attributes=attributes,
                         item_logit_weight=weight)
    folder = tmp_path / "parallel-rerank"
    export_module(module, folder, ExportConfig(search="rerank"), source_ids=source_ids(), titles=titles())
    runtime = ExportRuntime(folder)
    assert runtime.decoding == "rerank" and runtime.exact
    histories = random_histories(N_ITEMS, [1, 4, MAX_ITEMS + 3], seed=41)
    _assert_parity(compare(module, runtime, histories, k=10, beam_width=20))
    hist = torch.as_tensor(left_pad(histories, MAX_ITEMS))
    want = module.genrec.recommend(hist, k=10, exclude=[np.array(h) for h in histories], search="rerank")
    got = runtime.recommend(histories, 10, exclude_history=True)
    np.testing.assert_array_equal(got.items, want.items)
    codes_only = module.genrec.recommend(hist, k=10, exclude=[np.array(h) for h in histories])
    assert not np.array_equal(got.items, codes_only.items)


@pytest.mark.parametrize("head", ["parallel", "autoregressive"])
def test_an_export_decodes_with_the_models_level_weights(tmp_path, head):
    """model.modality_weights -> config.level_weights -> manifest "level_weights": the server weights each digit's
    log-prob as GenRec.recommend does (parity checked at export and here); a bad entry is refused at load."""
    module = tiny_module(head=head, item_loss_weight=1.0)
    weights = [round(0.3 + 0.4 * d, 2) for d in range(len(LEVELS))]
    module.genrec.set_level_weights(weights)
    folder = tmp_path / head
    manifest = export_module(module, folder, ExportConfig(search="rerank", add_items=False), source_ids=source_ids())
    runtime = ExportRuntime(folder)
    assert (manifest["level_weights"] == list(runtime.level_weights)
            == runtime.metadata()["semantic_id"]["level_weights"] == weights)
    histories = random_histories(N_ITEMS, [1, 4, MAX_ITEMS + 3], seed=43)
    _assert_parity(compare(module, runtime, histories, k=10, beam_width=20))
    hist = torch.as_tensor(left_pad(histories, MAX_ITEMS))
    want = module.genrec.recommend(hist, k=10, beam_width=20, search="rerank")
    got = runtime.recommend(histories, 10, exclude_history=False)
    np.testing.assert_array_equal(got.items, want.items)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-4)
    bad = json.loads((folder / "manifest.json").read_text()) | {"level_weights": [1.0, -1.0] + weights[2:]}
    (folder / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(ArtifactError, match="level_weights must be finite and > 0"):
        ExportRuntime(folder)


@pytest.mark.parametrize("lengths", [[1], [2, MAX_ITEMS + 5, 4, 1, 3, 6, 6, 2]])
def test_rerank_export_matches_torch_eager(rerank_export, lengths):
    """search "rerank": the server re-scores the beam from item_table.npy as GenRec.recommend does in torch."""
    folder, module = rerank_export
    runtime = ExportRuntime(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert runtime.decoding == manifest["decoding"] == "rerank" and layout.ITEM_TABLE_FILE in manifest["files"]
    assert runtime.metadata()["decoding"] == "rerank"
    histories = random_histories(N_ITEMS, lengths, seed=30 + len(lengths))
    _assert_parity(compare(module, runtime, histories, k=10, beam_width=20))
    # the re-scoring changes the order: the plain beam's top 10 is not what the reranked export serves
    beam = module.genrec.recommend(torch.as_tensor(left_pad(histories, MAX_ITEMS)), k=10, beam_width=20)
    assert not np.array_equal(beam.items, runtime.recommend(histories, 10, exclude_history=False).items)


def test_rerank_export_with_history_exclusion_serves_the_torch_ranking(rerank_export):
    folder, module = rerank_export
    runtime = ExportRuntime(folder)
    histories = [[4, 30, 11, 5, 17], [3]]
    want = module.genrec.recommend(torch.as_tensor(left_pad(histories, MAX_ITEMS)), k=10, beam_width=20,
                                   exclude=[np.array(h) for h in histories], search="rerank")
    got = runtime.recommend(histories, 10, exclude_history=True)
    np.testing.assert_array_equal(got.items, want.items)
    assert not set(got.items[0]) & set(histories[0])


def test_rerank_is_refused_for_heads_it_cannot_rerank(tmp_path):
    with pytest.raises(ValueError, match="search must be one of"):
        ExportConfig(search="exact")
    with pytest.raises(ValueError, match="trained without the item loss"):
        export_module(tiny_module(), tmp_path / "x", ExportConfig(search="rerank"), source_ids=source_ids(),
                      titles=titles())
    assert not (tmp_path / "x").exists()


def test_a_rerank_manifest_without_its_table_is_refused(rerank_export, tmp_path):
    folder, _ = rerank_export
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"][layout.ITEM_TABLE_FILE]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="decoding 'rerank' needs item_table.npy"):
        ExportRuntime(copy)


# ---------------------------------------------------------------------- folder, manifest, integrity
def test_folder_layout_and_manifest(tiny_export):
    folder, module = tiny_export
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(p.name for p in folder.iterdir()) == sorted([*layout.EXPORT_FILES, "manifest.json"])
    assert set(manifest["files"]) == set(layout.EXPORT_FILES)
    assert all(manifest["files"][name] == sha256_file(folder / name) for name in layout.EXPORT_FILES)
    assert manifest["stage"] == "export" and manifest["arch"] == "causal" and manifest["opset"] == 18
    assert manifest["level_sizes"] == list(LEVELS) and manifest["k_max"] == 11 and manifest["max_items"] == MAX_ITEMS
    assert manifest["n_items"] == N_ITEMS and manifest["versions"]["onnxruntime"]
    step = manifest["graphs"]["decoder_step"]
    assert [i["name"] for i in step["inputs"]] == ["state", "last_code", "level"]
    assert step["outputs"][0] == {"name": "log_probs", "shape": ["rows", 11], "dtype": "float32"}
    assert np.array_equal(np.load(folder / layout.CODES_FILE), item_codes())
    items = json.loads((folder / layout.ITEMS_FILE).read_text())
    assert items["source_id"] == source_ids() and items["title"] == titles()
    leftovers = [p.name for p in folder.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], f"temporary folders left behind: {leftovers}"


@pytest.mark.parametrize("victim", [layout.DECODER_STEP_FILE, layout.ITEMS_FILE, "trie_order.npy"])
def test_missing_file_is_named(tiny_export, tmp_path, victim):
    folder = shutil.copytree(tiny_export[0], tmp_path / "copy")
    (folder / victim).unlink()
    with pytest.raises(ArtifactError, match=f"{victim}.*missing"):
        ExportRuntime(folder)


@pytest.mark.parametrize("victim", [layout.ENCODER_FILE, layout.ITEMS_FILE, layout.CODES_FILE])
def test_modified_file_is_named(tiny_export, tmp_path, victim):
    folder = shutil.copytree(tiny_export[0], tmp_path / "copy")
    with open(folder / victim, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match=f"{victim}: checksum mismatch"):
        ExportRuntime(folder)


def test_missing_manifest_and_wrong_folder(tiny_export, tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        ExportRuntime(tmp_path / "nowhere")
    folder = shutil.copytree(tiny_export[0], tmp_path / "copy")
    (folder / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="manifest.json not found"):
        ExportRuntime(folder)


def test_tables_from_another_export_are_rejected(tiny_export, tmp_path):
    """Consistent checksums are not enough: codes.npy must agree with the trie tables."""
    folder = shutil.copytree(tiny_export[0], tmp_path / "copy")
    codes = np.load(folder / layout.CODES_FILE)
    np.save(folder / layout.CODES_FILE, codes[::-1].copy())
    manifest = json.loads((folder / "manifest.json").read_text())
    fields = {k: v for k, v in manifest.items() if k not in ("stage", "created", "versions", "files")}
    write_manifest(folder, "export", files=list(manifest["files"]), **fields)
    with pytest.raises(ArtifactError, match="codes.npy: trie tables are not in lexicographic order.*re-run"):
        ExportRuntime(folder)


# ---------------------------------------------------------------------- export stage behaviour
def _fake_run(tmp_path, module):
    """A run folder with dataset/, sid/ and checkpoints/best.ckpt, as the earlier stages write them."""
    from conftest import write_fake_run

    return write_fake_run(tmp_path, module, source_ids=source_ids(), titles=titles())


def test_cli_export_from_run_with_content_id_embedding_legacy_and_int8(tmp_path):
    """`genrec export` from a run folder: the hybrid model (content vectors + id embedding, folded into
    the encoder's item table), the legacy exporter, item metadata from the dataset, and the int8 rule."""
    from genrec.cli import main

    module = tiny_module(seed=3, content_dim=5, item_id_embedding=True)
    run = _fake_run(tmp_path, module)
    out = tmp_path / "export" / "hybrid"
    assert main(["export", "--run", str(run), "--out", str(out), "--exporter", "legacy", "--int8", "true"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["exporter"] == "legacy" and manifest["model"]["content_dim"] == 5
    assert manifest["model"]["item_id_embedding"] is True
    assert manifest["source"]["checkpoint_sha256"] == sha256_file(run / "checkpoints" / "best.ckpt")
    runtime = ExportRuntime(out)
    assert runtime.titles[3] == "Product 3" and runtime.titles[7] is None and runtime.source_ids[0] == "SKU-000"
    histories = random_histories(N_ITEMS, [1, 4, MAX_ITEMS + 2, 2], seed=5)
    result = compare(module, runtime, histories, k=10, beam_width=20)
    int8 = manifest["int8"]
    assert int8["kept"] in (True, False) and int8["reason"]
    if int8["kept"]:   # quantized weights may be published only with an unchanged top-k
        assert result.same_items
    else:              # otherwise the float graphs stay, with full parity
        _assert_parity(result)


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    import genrec.export.onnx as export_onnx

    def broken(*args, **kwargs):
        raise RuntimeError("parity failed (simulated)")

    monkeypatch.setattr(export_onnx, "_verify", broken)
    out = tmp_path / "exports" / "x"
    with pytest.raises(RuntimeError, match="simulated"):
        export_module(tiny_module(), out, ExportConfig(exporter="legacy"))
    assert not out.exists() and list((tmp_path / "exports").iterdir()) == []


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not an export folder"):
        export_module(tiny_module(), out, ExportConfig(exporter="legacy", parity_check=False))
    assert (out / "notes.txt").read_text() == "keep me"


def test_tiger_with_user_tokens_is_refused_clearly(tmp_path):
    module = tiny_module(arch="tiger", n_user_buckets=5)
    with pytest.raises(NotImplementedError, match="user token.*n_user_buckets=0"):
        export_module(module, tmp_path / "t", ExportConfig())
    assert not (tmp_path / "t").exists()


def test_tiger_manifest_describes_the_cache(tiger_export):
    manifest = json.loads((tiger_export[0] / "manifest.json").read_text())
    assert manifest["arch"] == "tiger" and manifest["model"]["n_decoder_layers"] == 2
    step = manifest["graphs"]["decoder_step"]
    assert [i["name"] for i in step["inputs"]] == list(layout.TIGER_STEP_INPUTS)
    assert step["inputs"][2]["shape"] == [2, "batch", "beams", 2, len(LEVELS), 64]      # (L, b, w, h, D, d_kv)
    assert manifest["graphs"]["encoder"]["source_tokens"] == MAX_ITEMS * len(LEVELS)


def test_config_validation():
    with pytest.raises(ValueError, match="exporter must be one of"):
        ExportConfig(exporter="jit")
    with pytest.raises(ValueError, match="opset"):
        ExportConfig(opset=9)


def test_cli_export_help(capsys):
    from genrec.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--out" in text and "--exporter" in text and "--int8" in text


def test_the_server_reads_only_its_own_format_version(tiny_export, tmp_path):
    """An export of another format version, or one missing the "decoding" field, is refused with the fix."""
    folder, _ = tiny_export
    assert ExportRuntime(folder).exact is False
    for version, drop in ((layout.FORMAT_VERSION - 1, None), (99, None), (layout.FORMAT_VERSION, "decoding")):
        copy = tmp_path / f"v{version}-{drop}"
        shutil.copytree(folder, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["format_version"] = version
        if drop:
            manifest.pop(drop)
        (copy / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ArtifactError, match="re-export|re-run `genrec export`"):
            ExportRuntime(copy)


def test_an_exact_decoding_export_ships_its_posting_lists(parallel_export, tiny_export):
    """The parallel head's export carries the per-digit posting lists (checksummed, memory-mapped on load);
    a beam-search export does not need them."""
    from genrec.decode.postings import POSTING_FILES

    folder, _ = parallel_export
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(POSTING_FILES.values()) <= set(manifest["files"])
    assert all((folder / name).exists() for name in POSTING_FILES.values())
    beam_folder, _ = tiny_export
    assert not set(POSTING_FILES.values()) & set(json.loads((beam_folder / "manifest.json").read_text())["files"])
