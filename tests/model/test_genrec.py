"""GenRec, the model object: it loads without Lightning, from a checkpoint that cannot run code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec.model.genrec import CheckpointError, GenRec, GenRecConfig, load_checkpoint
from genrec.registry import ARCHS, get_arch, resolve

LEVELS = (5, 7, 11)
N_ITEMS = 37


def _codes(seed=0):
    rng = np.random.default_rng(seed)
    rows = set()
    while len(rows) < N_ITEMS:
        rows.add(tuple(int(rng.integers(k)) for k in LEVELS))
    return np.array(sorted(rows))


def _model(arch="causal", **backbone) -> GenRec:
    torch.manual_seed(0)
    base = {"causal": dict(level_sizes=LEVELS, max_items=6, d_model=24, n_layers=2, n_heads=2, d_ff=37,
                           dropout=0.0, n_items=N_ITEMS),
            "tiger": dict(level_sizes=LEVELS, max_items=6, d_model=24, d_kv=8, d_ff=37, n_layers=2,
                          n_decoder_layers=2, n_heads=2, dropout=0.0)}[arch]
    model = GenRec(GenRecConfig(arch=arch, backbone=base | backbone, n_items=N_ITEMS, sid_checksum="abc"))
    model.set_catalogue(_codes())
    return model.eval()


class _Payload:
    """Unpickling this runs ``Path.touch(marker)``: a stand-in for a hostile checkpoint's os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_every_registered_arch_resolves():
    for name, arch in ARCHS.items():
        for ref in (arch.config, arch.model, arch.step, arch.export):
            assert callable(resolve(ref)), (name, ref)
    with pytest.raises(ValueError, match="unknown arch 'nope'"):
        get_arch("nope")


@pytest.mark.parametrize("arch", ["causal", "tiger"])
def test_save_and_from_checkpoint_round_trip(tmp_path, arch):
    model = _model(arch)
    path = tmp_path / "m.ckpt"
    model.save(path)
    loaded = GenRec.from_checkpoint(path)
    assert loaded.config.to_dict() == model.config.to_dict()
    hist = torch.as_tensor([[-1, -1, 3, 4, 5, 6], [-1, -1, -1, -1, -1, 9]])
    a, b = model.recommend(hist, k=5), loaded.recommend(hist, k=5)
    assert np.array_equal(a.items, b.items) and np.allclose(a.scores, b.scores)
    assert set(a.items.ravel()) <= set(range(N_ITEMS))          # decoding returns real items only


def test_a_hostile_checkpoint_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"genrec": {"config": {}}, "state_dict": {}, "x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load .*evil\.ckpt.*could run code"):
        GenRec.from_checkpoint(path)
    assert not marker.exists()
    # the same through the CLI entry points that take a checkpoint path, on a real run folder: one line,
    # non-zero exit, no code run
    from conftest import write_fake_run

    run = write_fake_run(tmp_path, _model())
    for argv in (["evaluate", "--run", str(run), "--checkpoint", str(path), "--systems", "genrec"],
                 ["export", "--run", str(run), "--checkpoint", str(path), "--out", str(tmp_path / "exp")]):
        proc = subprocess.run([sys.executable, "-m", "genrec.cli", *argv], capture_output=True, text=True)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr.strip().count("\n") == 0 and "refusing to load" in proc.stderr, proc.stderr
        assert not marker.exists()


def test_not_a_checkpoint_and_foreign_checkpoints_get_clear_errors(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00not a zip")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointError, match="not a genrec checkpoint"):
        GenRec.from_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_weights_that_do_not_match_the_config_are_refused(tmp_path):
    model = _model()
    path = tmp_path / "m.ckpt"
    model.save(path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["genrec"]["config"]["backbone"]["d_model"] = 32
    ckpt["genrec"]["config"]["backbone"]["n_heads"] = 4
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="weights do not match"):
        GenRec.from_checkpoint(path)


def test_config_rejects_unknown_backbone_fields():
    with pytest.raises(ValueError, match=r"unknown fields \['tiger_layers'\]"):
        GenRecConfig(arch="causal", backbone={"level_sizes": LEVELS, "tiger_layers": 2}, n_items=N_ITEMS)



@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_exact_search_equals_a_beam_that_keeps_every_prefix(arch):
    """search="exact" (threshold search) returns what a beam as wide as the catalogue returns, masks included."""
    model = _model(arch)
    hist = torch.tensor([[-1, -1, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], [-1, -1, -1, -1, -1, 9]])
    exclude = [np.array([3, 4]), np.array([]), np.array([9, 0, 1])]
    exact = model.recommend(hist, k=5, beam_width=5, exclude=exclude, search="exact")
    wide = model.recommend(hist, k=5, beam_width=N_ITEMS, exclude=exclude)
    np.testing.assert_array_equal(exact.items, wide.items)
    np.testing.assert_allclose(exact.scores, wide.scores, rtol=1e-9)
    with pytest.raises(ValueError, match="search must be one of"):
        model.recommend(hist, k=5, search="greedy")


def _brute_force_rerank(model: GenRec, hist: torch.Tensor, exclude: list[np.ndarray], k: int) -> np.ndarray:
    """Every item scored one by one: its codes' summed log-probs (teacher-forced through the head, level by
    level) plus the state's item logit; history excluded; best k by score, ties to the lower id."""
    with torch.no_grad():
        state = model.model.last_state(*model.history_inputs(hist))
        table = model.item_table()
        out = []
        for b in range(len(hist)):
            scores = {}
            for item in range(model.n_items):
                if item in set(exclude[b].tolist()):
                    continue
                s, h = 0.0, state[b:b + 1]
                for level in range(len(model.level_sizes)):
                    if level:
                        h = model.model.head.advance(level - 1, h, model.item_codes[item, level - 1:level])
                    w = (model.config.level_weights or [1.0] * len(model.level_sizes))[level]
                    s += w * float(torch.log_softmax(model.model.head.logits(level, h).double(), -1)[
                        0, model.item_codes[item, level]])
                prior = 0.0 if model.item_prior is None else float(model.item_prior[item])
                logit = model.config.item_logit_weight * float(state[b].double() @ table[item].double())
                scores[item] = s + logit + prior
            out.append(sorted(scores, key=lambda i: (-scores[i], i))[:k])
    return np.array(out)


def test_rerank_with_a_beam_over_the_whole_catalogue_is_the_brute_force_product_of_both_scores():
    """search="rerank": with a beam wide enough to hold every item, the result is every allowed item ranked
    by code log-prob + item logit, computed item by item; narrower beams return only real, allowed items."""
    model = _model("causal")
    hist = torch.tensor([[-1, -1, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], [-1, -1, -1, -1, -1, 9]])
    exclude = [np.array([3, 4]), np.array([], dtype=np.int64), np.array([9, 0, 1])]
    wide = model.recommend(hist, k=5, beam_width=N_ITEMS, exclude=exclude, search="rerank")
    np.testing.assert_array_equal(wide.items, _brute_force_rerank(model, hist, exclude, 5))
    narrow = model.recommend(hist, k=5, beam_width=6, exclude=exclude, search="rerank")
    beam = model.recommend(hist, k=6, beam_width=6, exclude=exclude)
    for row in range(len(hist)):
        assert set(narrow.items[row]) <= set(beam.items[row])             # only what the beam generated
        assert not set(narrow.items[row]) & set(exclude[row].tolist())
    with pytest.raises(ValueError, match="search 'rerank' needs the causal arch"):
        _model("tiger").recommend(hist, k=5, search="rerank")
    model.item_loss_weight = 0.0             # known to be trained without the item loss: an untrained score
    with pytest.raises(ValueError, match="trained without the item loss"):
        model.recommend(hist, k=5, search="rerank")


def test_rerank_on_a_parallel_head_scores_every_item_by_codes_plus_item_logit():
    """A parallel head has no beam to re-score: search="rerank" ranks every allowed item by its digits'
    summed log-probs plus the item logit (the hybrid score), the same as the item-by-item brute force."""
    model = _model("causal", head="parallel")
    hist = torch.tensor([[-1, -1, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], [-1, -1, -1, -1, -1, 9]])
    exclude = [np.array([3, 4]), np.array([], dtype=np.int64), np.array([9, 0, 1])]
    got = model.recommend(hist, k=7, beam_width=1, exclude=exclude, search="rerank")
    np.testing.assert_array_equal(got.items, _brute_force_rerank(model, hist, exclude, 7))
    codes_only = model.recommend(hist, k=7, exclude=exclude)
    assert not np.array_equal(got.items, codes_only.items)    # the item logit moves the ranking
    model.item_loss_weight = 0.0
    with pytest.raises(ValueError, match="trained without the item loss"):
        model.recommend(hist, k=5, search="rerank")


def test_level_weights_scale_each_digits_log_prob_in_every_search():
    """config.level_weights: an item scores sum_d w_d logp_d (+ its item logit for "rerank"), the brute force's
    weighted sum, on a parallel head (exact) and on the autoregressive one (exact search over the trie)."""
    hist = torch.tensor([[-1, -1, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], [-1, -1, -1, -1, -1, 9]])
    exclude = [np.array([3, 4]), np.array([], dtype=np.int64), np.array([9, 0, 1])]
    for head in ("parallel", "autoregressive"):
        model = _model("causal", head=head)
        model.item_loss_weight = 1.0
        plain = model.recommend(hist, k=7, beam_width=N_ITEMS, exclude=exclude, search="rerank")
        model.set_level_weights([1.0, 0.05, 30.0])
        got = model.recommend(hist, k=7, beam_width=N_ITEMS, exclude=exclude, search="rerank")   # the whole trie
        np.testing.assert_array_equal(got.items, _brute_force_rerank(model, hist, exclude, 7))
        assert not np.array_equal(got.items, plain.items)              # the weights move the ranking
    with pytest.raises(ValueError, match="finite and > 0"):
        model.set_level_weights([1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="has 2 entries; the codes have 3 digits"):
        GenRecConfig(arch="causal", backbone=model.config.backbone, n_items=N_ITEMS, level_weights=[1, 1])


def test_an_item_prior_is_added_to_every_items_rerank_score_on_both_heads():
    """GenRec.set_item_prior (bench/weights.py --popularity): item i scores codes + item logit + prior[i], the
    brute force's sum, exactly on a parallel head and over the whole trie on the autoregressive one."""
    hist = torch.tensor([[-1, -1, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], [-1, -1, -1, -1, -1, 9]])
    exclude = [np.array([3, 4]), np.array([], dtype=np.int64), np.array([9, 0, 1])]
    prior = np.linspace(-3.0, 3.0, N_ITEMS)[np.random.default_rng(0).permutation(N_ITEMS)]
    for head in ("parallel", "autoregressive"):
        model = _model("causal", head=head)
        model.item_loss_weight = 1.0
        plain = model.recommend(hist, k=7, beam_width=N_ITEMS, exclude=exclude, search="rerank")
        model.set_item_prior(prior)
        got = model.recommend(hist, k=7, beam_width=N_ITEMS, exclude=exclude, search="rerank")
        np.testing.assert_array_equal(got.items, _brute_force_rerank(model, hist, exclude, 7))
        assert not np.array_equal(got.items, plain.items)              # the prior moves the ranking
        with pytest.raises(ValueError, match="in search 'rerank' only"):
            model.recommend(hist, k=7, search="beam")
        model.set_item_prior(None)
        np.testing.assert_array_equal(model.recommend(hist, k=7, beam_width=N_ITEMS, exclude=exclude,
                                                      search="rerank").items, plain.items)
    with pytest.raises(ValueError, match="one per item"):
        model.set_item_prior(prior[:-1])
    with pytest.raises(ValueError, match="one per item"):
        model.set_item_prior(np.full(N_ITEMS, np.inf))


@pytest.mark.parametrize("head", ["parallel", "autoregressive"])
def test_rerank_with_an_untied_output_table_scores_by_its_rows_and_survives_a_checkpoint(tmp_path, head):
    """item_output "free": search "rerank" adds state . item_out_emb[item] (not the input token's row), the
    brute force's sum with that table, and a saved model decodes the same after loading."""
    hist = torch.tensor([[-1, -1, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], [-1, -1, -1, -1, -1, 9]])
    exclude = [np.array([3, 4]), np.array([], dtype=np.int64), np.array([9, 0, 1])]
    model = _model("causal", head=head, item_output="free", n_output_items=N_ITEMS)
    model.item_loss_weight = 1.0
    torch.testing.assert_close(model.item_table(), model.model.item_out_emb.weight)
    got = model.recommend(hist, k=7, beam_width=N_ITEMS, exclude=exclude, search="rerank")
    np.testing.assert_array_equal(got.items, _brute_force_rerank(model, hist, exclude, 7))
    tied = _model("causal", head=head)
    tied.item_loss_weight = 1.0
    assert not np.array_equal(got.items, tied.recommend(hist, k=7, beam_width=N_ITEMS, exclude=exclude,
                                                        search="rerank").items)
    model.save(tmp_path / "m.pt")
    loaded = GenRec.from_checkpoint(tmp_path / "m.pt")
    np.testing.assert_array_equal(loaded.recommend(hist, k=7, beam_width=N_ITEMS, exclude=exclude,
                                                   search="rerank").items, got.items)
    with pytest.raises(ValueError, match="n_output_items > 0"):
        _model("causal", item_output="free")


def _attributes(n_attributes=5, width=3, seed=0) -> np.ndarray:
    """Random attribute ids (N, width), right-padded with 0; item 0 has none."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, n_attributes + 1, size=(N_ITEMS, width))
    ids[np.arange(width)[None, :] >= rng.integers(1, width + 1, size=N_ITEMS)[:, None]] = 0
    ids[0] = 0
    return ids


def _attribute_model(**backbone) -> GenRec:
    torch.manual_seed(0)
    base = dict(level_sizes=LEVELS, max_items=6, d_model=24, n_layers=2, n_heads=2, d_ff=37, dropout=0.0,
                n_items=N_ITEMS, n_attributes=5)
    model = GenRec(GenRecConfig(arch="causal", backbone=base | backbone, n_items=N_ITEMS, sid_checksum="abc",
                                attributes_per_item=3))
    model.set_catalogue(_codes(), attributes=_attributes())
    return model.eval()


def test_an_items_token_adds_the_mean_of_its_attribute_embeddings(tmp_path):
    """data.use_attributes: item i's input vector gains mean_j attr_emb[a_ij] over its non-empty slots (none: 0),
    in the history the encoder reads and in the item table alike; the ids travel with the checkpoint."""
    model, plain = _attribute_model(), _attribute_model()
    plain.item_attributes.zero_()                 # the same weights, no item has an attribute
    attrs, emb = _attributes(), model.model.attr_emb.weight.detach()
    expected = plain.item_vectors().detach().clone()
    for i in range(N_ITEMS):
        slots = attrs[i][attrs[i] > 0]
        if len(slots):
            expected[i] += emb[torch.as_tensor(slots)].mean(0) * np.sqrt(24)
    torch.testing.assert_close(model.item_vectors(), expected)
    torch.testing.assert_close(model.item_vectors()[0], plain.item_vectors()[0])       # no attributes: unchanged
    torch.testing.assert_close(model.item_vectors(torch.tensor([4, 1])), expected[[4, 1]])
    hist = torch.tensor([[-1, -1, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    assert not torch.allclose(model.model.last_state(*model.history_inputs(hist)),
                              plain.model.last_state(*plain.history_inputs(hist)))
    model.item_loss_weight = 1.0
    want = model.recommend(hist, k=5, beam_width=N_ITEMS, exclude=[np.array([3]), np.array([1])], search="rerank")
    np.testing.assert_array_equal(want.items, _brute_force_rerank(model, hist, [np.array([3]), np.array([1])], 5))
    model.save(tmp_path / "m.pt")
    loaded = GenRec.from_checkpoint(tmp_path / "m.pt")
    np.testing.assert_array_equal(loaded.item_attributes.numpy(), attrs)
    np.testing.assert_array_equal(loaded.recommend(hist, k=5, beam_width=N_ITEMS,
                                                   exclude=[np.array([3]), np.array([1])],
                                                   search="rerank").items, want.items)
    with pytest.raises(ValueError, match="attribute ids; pass them"):
        model.set_catalogue(_codes())
    with pytest.raises(ValueError, match="both be 0 or both be > 0"):
        GenRecConfig(arch="causal", backbone=dict(level_sizes=LEVELS, n_attributes=5), n_items=N_ITEMS)


@pytest.mark.parametrize("head", ["parallel", "autoregressive"])
def test_the_item_logit_weight_scales_the_item_logit_in_rerank_and_travels_with_the_checkpoint(tmp_path, head):
    hist = torch.tensor([[-1, -1, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], [-1, -1, -1, -1, -1, 9]])
    exclude = [np.array([3, 4]), np.array([], dtype=np.int64), np.array([9, 0, 1])]
    model = _model("causal", head=head)
    model.item_loss_weight = 1.0
    plain = model.recommend(hist, k=7, beam_width=N_ITEMS, exclude=exclude, search="rerank")
    model.config.item_logit_weight = 0.001      # the random model ranks by its item logit: make the digits count
    torch.testing.assert_close(model.logit_table(), 0.001 * model.item_table())
    heavy = model.recommend(hist, k=7, beam_width=N_ITEMS, exclude=exclude, search="rerank")
    np.testing.assert_array_equal(heavy.items, _brute_force_rerank(model, hist, exclude, 7))
    assert not np.array_equal(heavy.items, plain.items)
    model.save(tmp_path / "m.pt")
    loaded = GenRec.from_checkpoint(tmp_path / "m.pt")
    assert loaded.config.item_logit_weight == 0.001
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    del ckpt["genrec"]["config"]["item_logit_weight"]               # written before the weight existed
    torch.save(ckpt, tmp_path / "old.pt")
    assert GenRec.from_checkpoint(tmp_path / "old.pt").config.item_logit_weight == 1.0
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="item_logit_weight must be"):
            GenRecConfig(arch="causal", backbone=model.config.backbone, n_items=N_ITEMS, item_logit_weight=bad)
        with pytest.raises(ValueError, match="item_logit_weight must be"):
            model.set_item_logit_weight(bad)
    model.set_item_logit_weight(1.0)            # what `genrec evaluate --item_logit_weight` calls
    np.testing.assert_array_equal(model.recommend(hist, k=7, beam_width=N_ITEMS, exclude=exclude,
                                                  search="rerank").items, plain.items)
    model.item_loss_weight = 0.0
    with pytest.raises(ValueError, match="rerank"):
        model.set_item_logit_weight(2.0)        # no trained item logit to weigh


def test_level_weights_travel_with_the_checkpoint_and_older_checkpoints_decode_unweighted(tmp_path):
    model = _model("causal", head="parallel")
    model.set_level_weights([1.0, 0.5, 0.25])
    model.save(tmp_path / "m.pt")
    assert GenRec.from_checkpoint(tmp_path / "m.pt").config.level_weights == [1.0, 0.5, 0.25]
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    del ckpt["genrec"]["config"]["level_weights"]                  # written before level weights existed
    torch.save(ckpt, tmp_path / "old.pt")
    assert GenRec.from_checkpoint(tmp_path / "old.pt").config.level_weights is None


def test_the_item_loss_weight_travels_with_the_checkpoint(tmp_path):
    model = _model("causal")
    assert model.item_loss_weight is None                       # built in memory: unknown
    model.item_loss_weight = 0.5
    model.save(tmp_path / "m.pt")
    assert GenRec.from_checkpoint(tmp_path / "m.pt").item_loss_weight == 0.5
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    ckpt["hyper_parameters"] = {"item_loss_weight": 0.0}       # a Lightning checkpoint's hparams win
    torch.save(ckpt, tmp_path / "l.ckpt")
    assert GenRec.from_checkpoint(tmp_path / "l.ckpt").item_loss_weight == 0.0


def test_evaluation_decodes_a_model_with_a_trained_item_logit_by_rerank_unless_told_otherwise():
    """EvaluateConfig's search "auto" (also `genrec evaluate`'s, bench/seeds.py's and bench/segments.py's):
    a model trained with the item loss is ranked as it was validated (code score + item logit); a model
    without one by its codes. An explicit search still wins."""
    from genrec.evaluate import EvaluateConfig, evaluate_genrec
    from genrec.data.split import EvalExamples

    model = _model("causal")
    histories = [np.array([3, 4, 5, 6]), np.array([1, 2]), np.array([9])]
    examples = EvalExamples(np.arange(3), histories, np.array([0, 1, 2]))
    hist = torch.tensor([[-1, -1, 3, 4, 5, 6], [-1, -1, -1, -1, 1, 2], [-1, -1, -1, -1, -1, 9]])[:, -model.max_items:]

    def ranked(search):
        return evaluate_genrec(model, examples, EvaluateConfig(search=search))

    k = ranked("auto").shape[1]
    model.item_loss_weight = 1.0
    assert model.default_search() == "rerank"
    np.testing.assert_array_equal(ranked("auto"), model.recommend(hist, k=k, search="rerank").items)
    np.testing.assert_array_equal(ranked("beam"), model.recommend(hist, k=k, search="beam").items)
    assert not np.array_equal(ranked("auto"), ranked("beam"))      # the two rankings tell the paths apart
    model.item_loss_weight = 0.0
    assert model.default_search() == "beam"
    np.testing.assert_array_equal(ranked("auto"), model.recommend(hist, k=k).items)
