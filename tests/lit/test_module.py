"""CausalSID and TIGER: masking, padding, and decoding-with-state == teacher forcing."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from genrec.data.split import left_pad
from genrec.decode import Trie, beam_search, greedy_decode
from genrec.lit.batching import LengthBucketBatchSampler, causal_windows, prefix_examples
from genrec.lit.data import ModelDims
from genrec.lit.module import GenRecModule
from genrec.model.layout import TokenLayout

LEVELS = (5, 7, 11, 3)  # odd sizes so a transposed or offset index fails loudly
N_ITEMS = 37


def _codes(n=N_ITEMS, seed=0):
    rng = np.random.default_rng(seed)
    seen, rows = set(), []
    while len(rows) < n:
        t = tuple(int(rng.integers(k)) for k in LEVELS)
        if t not in seen:
            seen.add(t), rows.append(t)
    return np.array(rows)


def _module(arch="causal", **kw):
    torch.manual_seed(0)
    m = GenRecModule(dims=ModelDims(LEVELS, N_ITEMS, 0, "test", max_items=6), arch=arch, d_model=24, n_layers=2,
                     n_heads=2, d_ff=37, dropout=0.0, tiger_layers=2, tiger_heads=2, tiger_d_ff=37, **kw)
    m.item_codes.copy_(torch.as_tensor(_codes()))
    m.targets_per_batch = 8.0     # what setup() takes from the DataModule (batch_size x targets per window)
    return m.eval()


def test_layout_offsets_are_disjoint():
    lay = TokenLayout(LEVELS, n_user_buckets=4)
    tokens = lay.to_tokens(_codes())
    assert tokens.min() == 3 and tokens.max() < lay.user_offset
    for d in range(len(LEVELS)):
        assert tokens[:, d].min() >= lay.offsets[d] and tokens[:, d].max() < lay.offsets[d] + LEVELS[d]
    u = lay.user_token(np.arange(100))
    assert u.min() >= lay.user_offset and u.max() < lay.vocab_size


def test_windows_cover_every_transition_once():
    seqs = [np.arange(10), np.array([3, 4]), np.array([7])]
    w = causal_windows(seqs, max_items=4)
    n_targets = int(((w[:, :-1] >= 0) & (w[:, 1:] >= 0)).sum())
    assert n_targets == 9 + 1
    h, t, u = prefix_examples(seqs, max_items=4)
    assert len(t) == 10 and list(h[0]) == [-1, -1, -1, 0] and t[0] == 1
    assert list(u) == [0] * 9 + [1]                                     # each prefix keeps its user


def test_tiger_trains_the_user_token_it_reads_at_evaluation():
    m = _module("tiger", n_user_buckets=7)
    batch = tuple(torch.as_tensor(a) for a in prefix_examples([np.arange(8), np.arange(20, 26)], max_items=6))
    m.train()
    loss = m.training_step(batch, 0)
    other_users = m.training_step((batch[0], batch[1], batch[2] + 1), 0)
    assert not torch.allclose(loss, other_users)
    loss.backward()
    tokens = torch.as_tensor(m.model.layout.user_token(batch[2].numpy()).astype(np.int64))
    grads = [p.grad for name, p in m.named_parameters()
             if p.grad is not None and p.shape[0] == m.model.layout.vocab_size]
    assert grads and any(g[tokens].abs().sum() > 0 for g in grads)   # the user tokens' embeddings learn


def test_bucket_sampler_is_a_deterministic_permutation():
    lengths = np.random.default_rng(1).integers(1, 20, size=101)
    a = list(LengthBucketBatchSampler(lengths, 8, seed=3))
    b = list(LengthBucketBatchSampler(lengths, 8, seed=3))
    assert a == b
    assert sorted(i for batch in a for i in batch) == list(range(101))


def test_random_batching_mixes_lengths_and_bucketing_does_not():
    lengths = np.arange(512) % 16 + 1            # 16 lengths, 32 windows each
    batching = {bucket: list(LengthBucketBatchSampler(lengths, 32, seed=0, pool_batches=16, bucket=bucket))
                for bucket in (True, False)}
    for batches in batching.values():
        assert sorted(i for batch in batches for i in batch) == list(range(512))
    # One pool holds the whole epoch, so every bucketed batch is exactly one length.
    assert all(len(set(lengths[b])) == 1 for b in batching[True])
    assert all(len(set(lengths[b])) > 4 for b in batching[False])
    assert batching[False] == list(LengthBucketBatchSampler(lengths, 32, seed=0, pool_batches=16, bucket=False))


def test_datamodule_rejects_unknown_batching(tmp_path):
    from genrec.lit.data import SIDDataModule

    with pytest.raises(ValueError, match="batching must be one of"):
        SIDDataModule(run=str(tmp_path), batching="sorted")


def test_causal_position_ignores_future_and_padding():
    m = _module()
    hist = torch.tensor([[4, 9, 2, 30, 11, 5]])
    codes, valid, content, _, _ = m.genrec.history_inputs(hist)
    h = m.model.encode(codes, valid)
    changed = hist.clone()
    changed[0, -1] = 17
    h2 = m.model.encode(*m.genrec.history_inputs(changed)[:2])
    assert torch.allclose(h[0, :-1], h2[0, :-1], atol=1e-6)   # earlier positions never see the last item
    short = torch.tensor([[-1, -1, -1, 30, 11, 5]])
    # Training drops all-padding leading columns; the last state must not change when it does.
    assert torch.allclose(m.model.last_state(*m.genrec.history_inputs(short)[:2]),
                          m.model.last_state(*m.genrec.history_inputs(short[:, 3:])[:2]), atol=1e-6)
    assert torch.isfinite(m.model.encode(*m.genrec.history_inputs(short)[:2])).all()  # padded rows give no NaN


@pytest.mark.parametrize("arch, head", [("causal", "autoregressive"), ("causal", "parallel"),
                                        ("tiger", "autoregressive")])
def test_step_decoding_equals_teacher_forcing(arch, head):
    """Scores from incremental decoding (state carried between steps) or, for the parallel head, exact
    catalogue scoring == one teacher-forced pass."""
    m = _module(arch, head=head)
    hist = torch.tensor([[4, 9, 2, 30, 11, 5], [-1, -1, -1, 1, 2, 3]])
    trie = Trie(m.item_codes.numpy(), LEVELS)
    res = m.recommend(hist, k=5)
    codes = m.item_codes[torch.as_tensor(res.items)]              # (b, k, D)
    with torch.no_grad():
        for row in range(len(hist)):
            for j in range(3):
                target = codes[row, j]
                if m.arch == "causal":
                    c, v, _, _, _ = m.genrec.history_inputs(hist[row: row + 1])
                    logits = m.model(c, v, target[None, None].expand(1, hist.shape[1], -1).clone(),
                                     torch.zeros(1, hist.shape[1], dtype=torch.bool).index_fill_(
                                         1, torch.tensor([hist.shape[1] - 1]), True))
                    logits = [lg[0] for lg in logits]
                else:
                    tokens, attn = m.genrec.tiger_inputs(hist[row: row + 1])
                    off = torch.as_tensor(m.model.layout.offsets)
                    full = m.model(tokens, attn, (target + off)[None])[0]
                    logits = [m.model.level_logits(full[d], d) for d in range(len(LEVELS))]
                score = sum(torch.log_softmax(lg, -1)[target[d]] for d, lg in enumerate(logits))
                assert abs(float(score) - res.scores[row, j]) < 1e-4
    assert set(res.items.ravel()) <= set(range(N_ITEMS))


def test_beam_one_is_greedy_and_outputs_are_real_items():
    m = _module()
    hist = torch.as_tensor(left_pad([np.array([1, 2, 3]), np.array([5]), np.array([8, 9, 10, 11, 12, 13, 14])], 6))

    trie = Trie(m.item_codes.numpy(), LEVELS)
    b1 = beam_search(m.genrec.step(hist), trie, batch_size=3, beam_width=1, k=1)
    g = greedy_decode(m.genrec.step(hist), trie, batch_size=3)
    assert np.array_equal(b1.items, g.items)
    wide = m.recommend(hist, k=N_ITEMS)            # beam wider than the catalogue's continuations
    assert (np.sort(wide.items, axis=1) == np.arange(N_ITEMS)).all()


def test_constrained_training_masks_impossible_codes():
    m = _module(constrained_training=True)
    tables, nodes = m.allowed_tables()
    assert tables[0].shape == (1, LEVELS[0])
    codes = m.item_codes.numpy()
    for level in range(1, len(LEVELS)):
        allowed = tables[level][nodes[:, level]].numpy()       # (N, K) for each item's true prefix
        assert allowed[np.arange(N_ITEMS), codes[:, level]].all()
        # every allowed code at an item's prefix is the code of some item sharing that prefix
        for i in range(N_ITEMS):
            same = (codes[:, :level] == codes[i, :level]).all(1)
            assert set(np.flatnonzero(allowed[i])) == set(codes[same, level])
    window = torch.as_tensor(causal_windows([np.arange(10), np.arange(20, 30)], 6))
    m.train()
    loss = m.training_step((window,), 0)
    assert torch.isfinite(loss)
    loss.backward()


def test_bucket_sampler_shards_disjointly_across_ddp_ranks():
    lengths = np.random.default_rng(2).integers(1, 20, size=203)
    ranks = [list(LengthBucketBatchSampler(lengths, 8, seed=5, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(LengthBucketBatchSampler(lengths, 8, world_size=2))
    seen = [set(i for b in batches for i in b) for batches in ranks]
    assert not seen[0] & seen[1]


def test_item_level_loss_is_sasrecs_cross_entropy_over_the_item_tokens():
    window = torch.as_tensor(causal_windows([np.arange(10), np.arange(20, 30)], 6))
    plain, aux = _module(item_id_embedding=True), _module(item_id_embedding=True, item_loss_weight=0.5)
    plain.train(), aux.train()
    torch.manual_seed(1)
    base = plain.training_step((window,), 0)
    torch.manual_seed(1)
    total = aux.training_step((window,), 0)
    # the item table is the encoder's own input tokens (codes + id embedding), unscaled
    table = aux.genrec.item_table()
    ids = torch.arange(N_ITEMS)[None]
    expected = aux.model.item_tokens(aux.item_codes[None], None, ids)[0] / np.sqrt(24)
    assert torch.allclose(table, expected)
    assert total.item() > base.item()          # same weights and dropout (0): the extra term is positive
    total.backward()
    assert aux.model.item_emb.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="causal"):
        _module(arch="tiger", item_loss_weight=0.5)


@pytest.mark.parametrize("item_output", ["free", "token+free"])
def test_an_untied_item_output_table_is_what_the_item_loss_scores_and_trains(item_output):
    """item_output "free": the item logit's rows are their own table, not the input tokens; "token+free": the
    tokens plus that table. The item loss's gradient reaches the free table and the sampled loss reads the
    same rows as the full one."""
    window = torch.as_tensor(causal_windows([np.arange(10), np.arange(20, 30)], 6))
    module = _module(item_id_embedding=True, item_loss_weight=0.5, item_output=item_output)
    free = module.model.item_out_emb.weight
    token = module.model.item_tokens(module.item_codes[None], None, torch.arange(N_ITEMS)[None])[0] / np.sqrt(24)
    expected = free if item_output == "free" else free + token
    torch.testing.assert_close(module.genrec.item_table(), expected)
    ids = torch.tensor([3, 0, 36, 3])
    torch.testing.assert_close(module.genrec.item_table(ids), expected[ids])
    module.train()
    module.training_step((window,), 0).backward()
    assert free.grad.abs().sum() > 0
    # an embedding: no weight decay, as the item-id table
    decayed = module.configure_optimizers()["optimizer"].param_groups[0]["params"]
    assert not any(p is free for p in decayed)
    with pytest.raises(ValueError, match="item_loss_weight > 0"):
        _module(item_output=item_output)                      # nothing would train the table
    with pytest.raises(ValueError, match="item_output must be one of"):
        _module(item_loss_weight=0.5, item_output="tied")
    with pytest.raises(ValueError, match="item_logit_weight=5"):
        _module(item_logit_weight=5)                           # no item logit to weigh
    assert _module(item_loss_weight=0.5, item_logit_weight=5).genrec.config.item_logit_weight == 5.0


def test_the_attribute_embedding_trains_and_its_padding_row_stays_zero():
    """data.use_attributes: the item tokens read the attribute table, the loss reaches the attribute
    embedding, and the empty slot's row gets no gradient (it stays 0 after a step)."""
    from tiny import item_attributes

    window = torch.as_tensor(causal_windows([np.arange(10), np.arange(20, 30)], 6))
    torch.manual_seed(0)
    m = GenRecModule(dims=ModelDims(LEVELS, N_ITEMS, 0, "test", max_items=6, n_attributes=5, attributes_per_item=3),
                     d_model=24, n_layers=2, n_heads=2, d_ff=37, dropout=0.0, item_loss_weight=0.5)
    m.genrec.set_catalogue(_codes(), attributes=item_attributes())
    m.targets_per_batch = 8.0
    m.train()
    opt = m.configure_optimizers()["optimizer"]
    m.training_step((window,), 0).backward()
    emb = m.model.attr_emb.weight
    assert emb.grad[1:].abs().sum() > 0 and emb.grad[0].abs().sum() == 0
    opt.step()
    assert emb[0].abs().sum() == 0
    with pytest.raises(ValueError, match="use_attributes false"):
        GenRecModule(dims=ModelDims(LEVELS, N_ITEMS, 0, "test", n_attributes=5, attributes_per_item=3), arch="tiger")


def test_validation_decodes_with_the_configured_search():
    """model.search "rerank" reaches GenRec.recommend (what validation and the post-fit evaluation use), and
    is refused without the item loss that trains the score it re-ranks by."""
    hist = torch.as_tensor(left_pad([np.array([1, 2, 3]), np.array([5])], 6))
    rerank = _module(item_id_embedding=True, item_loss_weight=1.0, search="rerank")
    want = rerank.genrec.recommend(hist, k=20, beam_width=20, search="rerank")
    np.testing.assert_array_equal(rerank.recommend(hist, k=20).items, want.items)
    beam = _module(item_id_embedding=True, item_loss_weight=1.0)
    assert not np.array_equal(beam.recommend(hist, k=20).items, want.items)
    with pytest.raises(ValueError, match="item_loss_weight"):
        _module(search="rerank")
    with pytest.raises(ValueError, match="search must be one of"):
        _module(search="greedy")


def test_sampled_item_loss_with_every_item_as_negative_is_the_full_one():
    """item_loss="sampled" computes only the candidates' rows; given every item it is the full softmax."""
    from types import SimpleNamespace

    window = torch.as_tensor(causal_windows([np.arange(10), np.arange(20, 30)], 6))
    full = _module(item_id_embedding=True, item_loss_weight=0.5)
    sampled = _module(item_id_embedding=True, item_loss_weight=0.5, item_loss="sampled")
    ids = torch.tensor([3, 0, 36, 3])
    torch.testing.assert_close(sampled.genrec.item_table(ids), sampled.genrec.item_table()[ids])
    with pytest.raises(RuntimeError, match="setup"):
        sampled.training_step((window,), 0)
    sampled.item_sampler = SimpleNamespace(sample=lambda k: torch.arange(N_ITEMS))   # every item, once
    full.train(), sampled.train()
    torch.testing.assert_close(sampled.training_step((window,), 0), full.training_step((window,), 0))
    with pytest.raises(ValueError, match="item_loss"):
        _module(item_loss="approx")


def test_parallel_head_ranks_every_item_by_its_exact_log_prob(monkeypatch):
    """The parallel head's scores are sum_d log p_d(code_d | h): rank all items by that, compare top-k."""
    import genrec.decode.exhaustive as exhaustive

    m = _module(head="parallel")
    with torch.no_grad():
        for p in m.model.head.parameters():
            p.normal_(0.0, 0.5)                        # peaked log-probs: no near-ties in the top-k
    monkeypatch.setattr(exhaustive, "beam_search",
                        lambda *a, **k: pytest.fail("the parallel head must not beam-search"))
    hist = torch.as_tensor(left_pad([np.array([1, 2, 3]), np.array([5]), np.array([8, 9, 10, 11, 12, 13, 14])], 6))
    res = m.recommend(hist, k=10, exclude=[np.array([1, 2, 3]), np.array([]), np.array([0])])
    with torch.no_grad():
        h = m.model.last_state(*m.genrec.history_inputs(hist)[:3])
        logp = [torch.log_softmax(m.model.head.logits(d, h), -1) for d in range(len(LEVELS))]
        codes = m.item_codes
        every = sum(lp[:, codes[:, d]] for d, lp in enumerate(logp))       # (b, N)
        every[0, [1, 2, 3]] = -float("inf")
        every[2, 0] = -float("inf")
    assert res.items.tolist() == every.topk(10, dim=1).indices.tolist()
    assert m.model.head.parallel and torch.equal(m.model.head.advance(0, h, torch.zeros(3, dtype=torch.long)), h)


def test_parallel_head_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="constrained_training"):
        _module(head="parallel", constrained_training=True)
    with pytest.raises(ValueError, match="arch 'causal'"):
        _module("tiger", head="parallel")
    with pytest.raises(ValueError, match="head must be one of"):
        _module(head="sideways")


def test_equal_target_weighting_does_not_favour_short_windows():
    """Length buckets make batches of 3 short windows (2 targets) and of 3 full ones (6 targets each).
    "equal" divides each batch's summed loss by batch_size x mean targets per window, so a target weighs
    the same in both; "batch" (the batch's own mean) gives a short-window target 3x the weight."""
    short = torch.as_tensor(causal_windows([np.array([1, 2, 3])] * 3, 6))          # 3 windows, 2 targets each
    full = torch.as_tensor(causal_windows([np.arange(4, 11)] * 3, 6))              # 3 windows, 6 targets each
    m = _module()
    m.train()
    m.targets_per_batch = 3 * 4.0                      # batch_size 3 x the dataset's mean targets per window
    per_target = {}
    for name, window in (("short", short), ("full", full)):
        hist, targets = window[:, :-1], window[:, 1:]
        select = (hist >= 0) & (targets >= 0)
        codes, valid, content, ids, _ = m.genrec.history_inputs(hist)
        logits, _ = m.model.teacher_forced(codes, valid, m.item_codes[targets.clamp(min=0)], select, content, None)
        summed = m.level_losses(logits, targets[select], "sum")
        assert torch.allclose(m.training_step((window,), 0), summed / (3 * 4.0))   # equal weighting
        per_target[name] = summed / int(select.sum())
    batch = _module(target_weighting="batch")
    batch.train()
    batch.targets_per_batch = 3 * 4.0
    assert torch.allclose(batch.training_step((short,), 0), per_target["short"])    # its own mean
    with pytest.raises(ValueError, match="target_weighting"):
        _module(target_weighting="sometimes")
    m.targets_per_batch = None                          # no DataModule: refuse rather than silently fall back
    with pytest.raises(RuntimeError, match="targets_per_batch"):
        m.training_step((short,), 0)


def test_a_head_that_does_not_match_the_codes_is_warned_about():
    import warnings

    with pytest.warns(UserWarning, match="tokenize --method pq"):
        _module(head="parallel")._check_code_layout("rqvae", "runs/x")
    with pytest.warns(UserWarning, match="--model.head=parallel"):
        _module()._check_code_layout("pq", "runs/x")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _module(head="parallel")._check_code_layout("pq", "runs/x")
        _module()._check_code_layout("rqkmeans", "runs/x")


def test_modality_weights_become_the_models_level_weights_at_setup(monkeypatch, tmp_path):
    """model.modality_weights names modalities; setup resolves them against the run's sid/ (which digits are
    whose) into GenRec's level_weights, which validation decodes with and the checkpoint carries."""
    from genrec.tokenizer.semantic_ids import load_semantic_ids, write_semantic_ids

    codes = _codes()
    write_semantic_ids(tmp_path, codes, LEVELS, extra_files=[], n_levels=1, modalities=["collab", "text", "image"],
                       method="pq")
    sid = load_semantic_ids(tmp_path)
    m = _module(head="parallel", modality_weights={"text": 0.25, "image": 2.0})
    dm = SimpleNamespace(model_dims=ModelDims(LEVELS, N_ITEMS, 0, "test"), item_codes=codes,
                         content=None, sid=sid, run=tmp_path)
    monkeypatch.setattr(m, "_trainer", SimpleNamespace(datamodule=dm))
    m.setup("validate")
    assert m.genrec.config.level_weights == [1.0, 0.25, 2.0, 1.0]
    assert m.genrec.checkpoint_entry()["config"]["level_weights"] == [1.0, 0.25, 2.0, 1.0]
    with pytest.raises(ValueError, match=r"modality_weights\['text'\] must be a finite number > 0"):
        _module(modality_weights={"text": 0})
    for unset in (None, {}):                                  # nothing named: decode with the plain sum
        plain = _module(head="parallel", modality_weights=unset)
        monkeypatch.setattr(plain, "_trainer", SimpleNamespace(datamodule=dm))
        plain.setup("validate")
        assert plain.genrec.config.level_weights is None
    wrong = _module(head="parallel", modality_weights={"audio": 0.5})
    monkeypatch.setattr(wrong, "_trainer", SimpleNamespace(datamodule=dm))
    with pytest.raises(ValueError, match=r"names \['audio'\], but .* has digits for \['collab', 'text', 'image'\]"):
        wrong.setup("validate")


def test_resuming_a_fit_with_changed_hyperparameters_warns(monkeypatch):
    m = _module(target_weighting="equal", lr=1e-3)
    monkeypatch.setattr(m, "_trainer", SimpleNamespace(state=SimpleNamespace(fn="fit")))
    saved = dict(m.hparams) | {"lr": 5e-3, "target_weighting": "batch"}
    with pytest.warns(UserWarning, match=r"lr: 0.005 -> 0.001, target_weighting: 'batch' -> 'equal'"):
        m.on_load_checkpoint({"hyper_parameters": saved})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.on_load_checkpoint({"hyper_parameters": dict(m.hparams)})          # same config: silent
        monkeypatch.setattr(m, "_trainer", None)
        m.on_load_checkpoint({"hyper_parameters": saved})                    # load_from_checkpoint: silent


def test_prefix_examples_train_the_causal_model_on_minus_log_p_of_the_next_item():
    """training_examples=prefix on CausalSID: each (history, target) example's loss is -log p(target | history),
    the same score the decoder gives that item (one target per example, at the last position only)."""
    from genrec.lit.module import batch_targets

    m = _module(target_weighting="batch")
    hist = torch.as_tensor(left_pad([np.array([4, 9, 2]), np.array([30, 11, 5, 7, 1])], 6))
    ranked = m.recommend(hist, k=N_ITEMS)                            # every item with its exact log-prob
    targets = torch.tensor([int(ranked.items[0, 3]), int(ranked.items[1, 10])])
    expected = -(ranked.scores[0, 3] + ranked.scores[1, 10]) / 2
    batch = (hist, targets, torch.tensor([0, 1]))
    with torch.no_grad():
        assert float(m.training_step(batch, 0)) == pytest.approx(expected, abs=1e-4)
    assert batch_targets(batch, "causal") == 2
    assert batch_targets((torch.as_tensor(causal_windows([np.arange(5)], 6)),), "causal") == 4


def test_tiger_refuses_causal_training_examples():
    from genrec.lit.data import SIDDataModule

    dm = SIDDataModule.__new__(SIDDataModule)       # only the example-mode logic, no run folder needed
    dm.training_examples, dm.trainer = "causal", SimpleNamespace(lightning_module=SimpleNamespace(arch="tiger"))
    with pytest.raises(ValueError, match="training_examples=causal needs model.arch=causal"):
        dm.example_mode()
    dm.training_examples = "auto"
    assert dm.example_mode() == "prefix"


def test_item_ids_warm_started_from_a_table_keep_its_geometry():
    m = _module(item_id_embedding=True, item_id_init="collab")
    table = np.random.default_rng(2).normal(size=(N_ITEMS, 5)) * 3.0 + 1.0
    m.warm_start_item_ids(table)
    emb = m.model.item_emb.weight.detach().double().numpy()
    assert emb.std() == pytest.approx(0.02, rel=1e-3)                 # the scale of a fresh embedding
    centred = table - table.mean(0)
    gram, gram_emb = centred @ centred.T, emb @ emb.T                  # dot products kept up to one scale
    assert np.allclose(gram_emb / gram_emb[0, 0], gram / gram[0, 0], atol=1e-4)
    with pytest.raises(ValueError, match="warm-start table has 36 rows"):
        m.warm_start_item_ids(table[:-1])
    with pytest.raises(ValueError, match="needs arch 'causal' with item_id_embedding true"):
        _module(item_id_init="collab")


def test_validation_metrics_are_genrec_metrics(monkeypatch):
    """_eval_step averages genrec.metrics' per-user gains: the logged metrics are ranking_metrics of all batches.
    Against the former hand-written float32 torch NDCG they agree to float32 rounding (1/log2(r+1) at ranks
    4, 17 and 18 was 1 ulp off in float32; recall is exact)."""
    from genrec.metrics import DEFAULT_KS, ranking_metrics

    rng = np.random.default_rng(4)
    n, k = 203, max(DEFAULT_KS)
    ranked = np.stack([rng.permutation(N_ITEMS)[:k] for _ in range(n)])
    targets = np.where(rng.random(n) < 0.8, ranked[np.arange(n), rng.integers(0, k, n)], -5)   # every rank, some misses
    m = _module()
    batches = [slice(0, 64), slice(64, 150), slice(150, n)]
    served = iter(ranked[b] for b in batches)
    monkeypatch.setattr(m, "recommend", lambda hist, k, users=None: SimpleNamespace(items=next(served)))
    for b in batches:
        m._eval_step((torch.zeros(b.stop - b.start, 6, dtype=torch.long), torch.as_tensor(targets[b]), None), "val")
    logged = {name: float(metric.compute()) for name, metric in m._val.items()}
    expected = ranking_metrics(ranked, targets)
    assert logged.keys() == expected.keys()
    assert logged == pytest.approx(expected, rel=1e-6)

    # the former computation in _eval_step, kept as the reference
    hits = ranked == targets[:, None]
    ranks = torch.as_tensor(np.where(hits.any(1), hits.argmax(1) + 1, 0), dtype=torch.float32)
    for name, value in logged.items():
        kind, k = name.split("@")
        hit = (ranks > 0) & (ranks <= int(k))
        old = hit.float() if kind == "recall" else torch.where(hit, 1.0 / torch.log2(ranks + 1.0), 0.0)
        assert value == (float(old.mean()) if kind == "recall" else pytest.approx(float(old.mean()), rel=1e-6))
