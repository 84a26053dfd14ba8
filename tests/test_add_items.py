"""`genrec add-items`: new items get codes from the frozen tokenizer and are served, old items are untouched."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from addable import ATTRIBUTE_VOCAB, NEW_ITEMS, build_addable_export, write_jsonl
from conftest import one_torch_thread
from genrec.catalog.add import AddItemsConfig, add_items
from genrec.catalog.featurizer import Featurizer, read_new_items
from genrec.cli import main
from genrec.io import ArtifactError, read_manifest
from genrec.serving.runtime import ExportRuntime

torch_single_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder, module = build_addable_export(tmp_path_factory.mktemp("add") / "base")
    return folder, module


@pytest.fixture(scope="module")
def added(base, tmp_path_factory):
    """(base folder, new folder, source file): the four NEW_ITEMS added into a new folder."""
    tmp = tmp_path_factory.mktemp("added")
    source = write_jsonl(tmp / "new.jsonl", NEW_ITEMS)
    add_items(base[0], source, tmp / "grown")
    return base[0], tmp / "grown", source


def test_new_items_get_codes_and_old_items_keep_theirs(added):
    old, new, _ = added
    manifest = read_manifest(new, "export", verify=True)           # every checksum matches its file
    assert manifest["n_items"] == 41
    old_codes, new_codes = np.load(old / "codes.npy"), np.load(new / "codes.npy")
    np.testing.assert_array_equal(new_codes[:37], old_codes)
    assert len({tuple(r) for r in new_codes}) == 41                 # unique, so every item is decodable
    sizes = manifest["level_sizes"]
    assert (new_codes[37:] < np.array(sizes)).all() and (new_codes[37:] >= 0).all()
    items = json.loads((new / "items.json").read_text())
    assert items["source_id"][37:] == ["NEW-1", "NEW-2", "NEW-3", "NEW-4"]
    assert items["title"][38] == "recycled notebook pack"
    meta = json.loads((new / "items_meta.json").read_text())
    assert meta["popularity"][37:] == [0, 0, 0, 0] and meta["category"][37:39] == ["Tools", "Paper"]
    info = manifest["source"]["added_items"][-1]
    assert info["n_added"] == 4 and info["n_skipped_existing"] == 0 and info["first_new_item_id"] == 37
    assert info["modalities"]["text"] == {"present": 3, "filled_with_mean": 1}    # NEW-4 has no text
    assert read_manifest(old, "export", verify=True)["n_items"] == 37               # the base is untouched


def test_new_items_are_served(added, base):
    old, new, _ = added
    runtime, before = ExportRuntime(new), ExportRuntime(old)
    new_ids = list(range(37, 41))
    # Restricted to the new items, the exact scorer ranks exactly them.
    result = runtime.recommend([[0, 5, 9]], 4, candidates=[new_ids])
    assert sorted(result.items[0].tolist()) == new_ids
    # A history of new items is read too (their rows are in the encoder's item table).
    assert runtime.recommend([[37, 38]], 3).items.shape == (1, 3)
    # Old items score as before: the graphs changed only by the appended rows.
    hist = [[1, 2, 3], [30]]
    old_top = before.recommend(hist, 5, exclude_history=False)
    new_top = runtime.recommend(hist, 5, exclude_history=False, candidates=[list(range(37))] * 2)
    np.testing.assert_array_equal(old_top.items, new_top.items)
    np.testing.assert_allclose(old_top.scores, new_top.scores, atol=1e-4)


def test_grown_model_rows(added, base):
    """New content rows are the featurizer's fused vectors; new id-embedding rows the mean of the trained ones."""
    from genrec.model.genrec import GenRec

    old, new, source = added
    grown = GenRec.from_checkpoint(new / "add_items" / "model.pt")
    module = base[1].genrec
    emb = module.model.item_emb.weight.detach()
    torch.testing.assert_close(grown.model.item_emb.weight[:37], emb)
    torch.testing.assert_close(grown.model.item_emb.weight[37:], emb.mean(0, keepdim=True).expand(4, -1))
    feat = Featurizer.load(old)
    raw, masks, _ = feat.embed(read_new_items(source), [source.parent])
    np.testing.assert_allclose(grown.content[37:].numpy(), feat.fuse(raw, masks), atol=1e-5)
    np.testing.assert_array_equal(grown.item_codes.numpy(), np.load(new / "codes.npy"))


def test_a_free_output_table_and_attributes_grow_with_the_catalogue():
    """item_output "free": a new item's output row is the mean trained row (or its neighbours' mean), as its
    id-embedding row; old items keep their item vectors and output rows."""
    from genrec.catalog.add import grow_model
    from tiny import N_ITEMS, item_codes, tiny_module

    model = tiny_module(head="parallel", item_id_embedding=True, item_loss_weight=1.0, item_output="free",
                        attributes=True).genrec
    codes = item_codes()
    nearest = np.array([[3, 5], [-1, -1]])
    grown = grow_model(model, codes[:2], np.zeros((2, 0), np.float32), nearest, np.array([[2, 4, 0], [0, 0, 0]]))
    out = model.model.item_out_emb.weight.detach()
    assert grown.config.backbone.n_output_items == N_ITEMS + 2
    torch.testing.assert_close(grown.model.item_out_emb.weight[:N_ITEMS], out)
    torch.testing.assert_close(grown.model.item_out_emb.weight[N_ITEMS], out[[3, 5]].mean(0))
    torch.testing.assert_close(grown.model.item_out_emb.weight[N_ITEMS + 1], out.mean(0))
    torch.testing.assert_close(grown.item_table()[:N_ITEMS], model.item_table())
    # item attributes: the old items keep theirs, the new ones get the ids they were given
    torch.testing.assert_close(grown.item_attributes[:N_ITEMS], model.item_attributes)
    assert grown.item_attributes[N_ITEMS:].tolist() == [[2, 4, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match=r"new_attributes must be \(2, 3\)"):
        grow_model(model, codes[:2], np.zeros((2, 0), np.float32), nearest, np.zeros((2, 2), np.int64))
    torch.testing.assert_close(grown.item_vectors()[:N_ITEMS], model.item_vectors())


def test_new_items_tags_map_into_the_shipped_attribute_vocabulary(tmp_path, capsys):
    """A model that reads item attributes: the export ships its vocabulary, a new item's categories and brand
    map into it (unknown tags left out, counted), the grown export keeps it, and the new items are served."""
    from genrec.model.genrec import GenRec

    folder, module = build_addable_export(tmp_path / "base", attributes=ATTRIBUTE_VOCAB)
    assert read_manifest(folder, "export")["add_items"]["attributes"] == "add_items/attributes.json"
    rows = [{"source_id": "NEW-A", "title": "stapler", "brand": "Acme", "categories": ["Office", "Garden", "Tools"]},
            {"source_id": "NEW-B", "title": "paper", "store": "Leaf", "categories": "Office, Paper"},
            {"source_id": "NEW-C", "title": "pen"}]
    manifest = add_items(folder, write_jsonl(tmp_path / "new.jsonl", rows), tmp_path / "grown")
    grown = GenRec.from_checkpoint(tmp_path / "grown" / "add_items" / "model.pt")
    torch.testing.assert_close(grown.item_attributes[:37], module.genrec.item_attributes)
    # vocabulary ids: brand:Acme 1, brand:Leaf 2, category:Office 3, category:Paper 4, category:Tools 5
    assert grown.item_attributes[37:].tolist() == [[3, 5, 1], [3, 4, 2], [0, 0, 0]]
    fill = manifest["source"]["added_items"][-1]["attributes_fill"]
    assert fill == {"vocabulary": 5, "items_with_tags": 2, "unknown_tags": 1, "tags_over_width": 0}
    assert "attributes: 2 with known tags, 1 unknown tags left out" in capsys.readouterr().out
    assert manifest["add_items"]["attributes"] == "add_items/attributes.json"      # a second add can map too
    assert ExportRuntime(tmp_path / "grown").recommend([[37, 38]], 3).items.shape == (1, 3)
    # an export without the vocabulary (or with one that does not fit the model) still adds, with no tags
    old = build_addable_export(tmp_path / "old", attributes=ATTRIBUTE_VOCAB[:4])[0]
    assert "reads 5" in read_manifest(old, "export")["add_items"]["attributes_missing"]
    manifest = add_items(old, tmp_path / "new.jsonl", tmp_path / "grown_old")
    assert manifest["source"]["added_items"][-1]["attributes_fill"].startswith("none: new items get no attribute")
    grown = GenRec.from_checkpoint(tmp_path / "grown_old" / "add_items" / "model.pt")
    assert (grown.item_attributes[37:] == 0).all()


def test_featurizer_round_trip_keeps_modality_order(base, tmp_path):
    feat = Featurizer.load(base[0])
    assert list(feat.modalities) == ["text", "collab"]                  # fused order, not the JSON's sorted keys
    files = feat.save(tmp_path)
    again = Featurizer.load(tmp_path)
    assert list(again.modalities) == ["text", "collab"] and set(files) >= {"add_items/featurizer.json"}
    x = {"text": np.random.default_rng(0).normal(size=(3, 384)), "collab": np.zeros((3, 5))}
    m = {"text": np.ones(3, bool), "collab": np.zeros(3, bool)}
    np.testing.assert_array_equal(feat.fuse(x, m), again.fuse(x, m))


def test_featurizer_from_run_reproduces_fused(tmp_path):
    """Featurizer.from_run re-fuses a run's matrices from its statistics (PCA-whitened, weights, a mask) and
    refuses a features folder whose fused.npy no longer matches them."""
    from genrec.features.fuse import FuseConfig, fuse
    from genrec.io import save_npy_atomic, write_manifest
    from genrec.tokenizer.semantic_ids import write_semantic_ids

    rng = np.random.default_rng(3)
    text, collab = rng.normal(size=(29, 11)), rng.normal(size=(29, 7))
    mask = np.ones(29, bool)
    mask[[4, 17]] = False
    collab[~mask] = collab[mask].mean(0)
    cfg = FuseConfig(weights={"collab": 0.3}, pca_dim=6, whiten=True)
    res = fuse({"text": text, "collab": collab}, {"text": None, "collab": mask}, cfg)
    feats = tmp_path / "run" / "features"
    feats.mkdir(parents=True)
    save_npy_atomic(feats / "text.npy", text.astype(np.float32))
    save_npy_atomic(feats / "collab.npy", collab.astype(np.float32))
    save_npy_atomic(feats / "collab_mask.npy", mask)
    save_npy_atomic(feats / "fused.npy", res.fused)
    write_manifest(feats, "embed", files=["text.npy", "collab.npy", "collab_mask.npy", "fused.npy"],
                   config={"fuse": {"eps": cfg.eps}},
                   modalities={"text": {"file": "text.npy", "source": "precomputed"},
                               "collab": {"file": "collab.npy", "source": "sasrec"}},
                   fused={"file": "fused.npy", "dim": 6, "blocks": {k: list(v) for k, v in res.blocks.items()},
                          **res.info}, n_items=29)
    write_semantic_ids(tmp_path / "run" / "sid", np.c_[np.arange(29) % 5, np.arange(29) // 5], (5, 7), extra_files=[],
                       modalities=["fused"])
    feat = Featurizer.from_run(tmp_path / "run")
    assert list(feat.modalities) == ["text", "collab"] and feat.modalities["collab"]["weight"] == pytest.approx(0.3)
    assert {m["new_items"] for m in feat.modalities.values()} == {"mean"}     # neither is an encoder we can rerun
    np.testing.assert_allclose(feat.fuse({"text": text, "collab": collab}, {"text": np.ones(29, bool), "collab": mask}),
                               res.fused, atol=1e-5)
    save_npy_atomic(feats / "fused.npy", res.fused[::-1].copy())
    with pytest.raises(ArtifactError, match="re-fusing"):
        Featurizer.from_run(tmp_path / "run")


def test_existing_items_are_an_error_or_skipped_with_a_count(added, tmp_path):
    _, new, _ = added
    source = write_jsonl(tmp_path / "again.jsonl", [NEW_ITEMS[0], {"source_id": "NEW-5", "title": "paper clips"}])
    with pytest.raises(ValueError, match=r"1 of 2 items are already in .*NEW-1.*--skip-existing"):
        add_items(new, source, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    manifest = add_items(new, source, tmp_path / "out", AddItemsConfig(skip_existing=True, parity_check=False))
    assert manifest["n_items"] == 42
    assert manifest["source"]["added_items"][-1]["n_skipped_existing"] == 1
    assert len(manifest["source"]["added_items"]) == 2        # the history of additions is kept


def test_in_place_add_replaces_the_folder_atomically(added, tmp_path):
    _, grown, _ = added
    folder = tmp_path / "live"
    shutil.copytree(grown, folder)
    source = write_jsonl(tmp_path / "more.jsonl", [{"source_id": "NEW-9", "title": "label maker"}])
    add_items(folder, source, None, AddItemsConfig(parity_check=False))
    assert read_manifest(folder, "export", verify=True)["n_items"] == 42
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live", "more.jsonl"]    # no temporary folder left


def test_a_failed_add_leaves_nothing_behind(added, tmp_path, monkeypatch):
    import genrec.export.onnx as onnx

    _, grown, _ = added
    folder = tmp_path / "live"
    shutil.copytree(grown, folder)
    before = (folder / "manifest.json").read_bytes()
    source = write_jsonl(tmp_path / "more.jsonl", [{"source_id": "NEW-9", "title": "label maker"}])

    def broken(*args, **kwargs):
        raise RuntimeError("ONNX parity check failed (simulated)")
    monkeypatch.setattr(onnx, "_verify", broken)
    for out in (None, tmp_path / "elsewhere"):
        with pytest.raises(RuntimeError, match="simulated"):
            add_items(folder, source, out)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["live", "more.jsonl"]
        assert (folder / "manifest.json").read_bytes() == before
    read_manifest(folder, "export", verify=True)


def test_exports_without_add_items_support_say_how_to_fix(tiny_export, base, tmp_path, capsys):
    """An export of an in-memory model (tiny_export), or from before add-items, has no add_items entry."""
    source = write_jsonl(tmp_path / "new.jsonl", NEW_ITEMS[:1])
    assert main(["add-items", "--export", str(tiny_export[0]), str(source), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "this export predates add-items" in err and "genrec export --run RUN" in err
    partial = tmp_path / "partial"                     # a run without features/: the manifest says what is missing
    shutil.copytree(base[0], partial)
    manifest = json.loads((partial / "manifest.json").read_text())
    manifest["add_items"] = {"model": "add_items/model.pt", "missing": ["featurizer"]}
    (partial / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="no featurizer .* `genrec export --run RUN"):
        add_items(partial, source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("line, expected", [
    ('{"title": "no id"}', r"line 2: field 'source_id' \(or parent_asin / asin / item_id\) is missing"),
    ("not json", r"line 2: expected one JSON object per line"),
    ('{"source_id": "A", "title": "again"}', r"line 2: item 'A' appears twice"),
])
def test_bad_source_lines_are_one_clear_line(base, tmp_path, capsys, line, expected):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"source_id": "A", "title": "ok"}\n' + line + "\n")
    assert main(["add-items", "--export", str(base[0]), str(source), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(source) in err
    import re
    assert re.search(expected, err), err
    assert not (tmp_path / "out").exists()


def test_source_formats(tmp_path):
    """An LC-Rec item table and Amazon 2023 meta lines (parent_asin, store, images) read into one frame."""
    (tmp_path / "Office.item.json").write_text(json.dumps({
        "12": {"title": "Stapler", "description": "", "brand": "Acme", "categories": "Office, Tools"}}))
    lc = read_new_items(tmp_path / "Office.item.json")
    assert lc.row(0, named=True) | {"image": None} == {
        "source_id": "12", "title": "Stapler", "description": None, "brand": "Acme", "categories": ["Office", "Tools"],
        "price": None, "image": None, "attributes": None}
    meta = write_jsonl(tmp_path / "meta_Office.jsonl", [{
        "parent_asin": "B01", "title": "Pen", "store": "Inky", "categories": ["Office", "Pens"], "price": 2.5,
        "description": ["Blue", "ink"], "images": [{"large": "https://example.com/p.jpg"}]}])
    row = read_new_items(meta).row(0, named=True)
    assert (row["source_id"], row["brand"], row["description"], row["price"]) == ("B01", "Inky", "Blue ink", 2.5)
    assert row["image"] == "https://example.com/p.jpg"
    with pytest.raises(ValueError, match="unknown SOURCE format"):
        read_new_items(write_jsonl(tmp_path / "items.csv", []))


def test_add_items_help():
    with pytest.raises(SystemExit) as e:
        main(["add-items", "--help"])
    assert e.value.code == 0
    with pytest.raises(SystemExit) as e:
        main(["add-items", "x.jsonl", "--export", "e"])      # neither --out nor --in-place
    assert e.value.code == 2


def test_cli_in_place_add(added, tmp_path, capsys):
    """`genrec add-items --in-place` through the console entry point; a second identical add is refused."""
    _, grown, _ = added
    folder = tmp_path / "exports" / "live"
    shutil.copytree(grown, folder)
    source = write_jsonl(tmp_path / "more.jsonl", [{"source_id": "NEW-7", "title": "desk organiser"}])
    args = ["add-items", "--export", str(folder), str(source), "--in-place", "--no-parity-check"]
    assert main(args) == 0
    assert "added 1 items" in capsys.readouterr().out
    assert json.loads((folder / "items.json").read_text())["source_id"][-1] == "NEW-7"
    # the lock lives beside the export (an in-place add replaces the folder), and no temporary folder is left
    assert sorted(p.name for p in folder.parent.iterdir()) == [".live.add-items", "live"]
    assert main(args) == 2
    assert "1 of 1 items are already in" in capsys.readouterr().err


def test_text_neighbours_fill_what_a_new_item_lacks(base, tmp_path):
    """With run=RUN, a new item takes the mean SASRec row and id embedding of its nearest items by text."""
    from addable import COLLAB_DIM, catalogue_titles
    from genrec.features.text import TextEncoder
    from genrec.model.genrec import GenRec

    folder, module = base
    feat = Featurizer.load(folder)
    encoder = TextEncoder(feat_text_config(feat))
    titles = catalogue_titles()
    has = np.array([t is not None for t in titles])
    text = np.zeros((len(titles), encoder.dim), np.float32)
    text[has], _ = encoder.encode([t for t in titles if t], progress=False)
    collab = np.random.default_rng(5).normal(size=(len(titles), COLLAB_DIM)).astype(np.float32)
    run = tmp_path / "run"
    (run / "features").mkdir(parents=True)
    np.save(run / "features" / "text.npy", text)
    np.save(run / "features" / "text_mask.npy", has)
    np.save(run / "features" / "collab.npy", collab)
    (run / "features" / "manifest.json").write_text(json.dumps({"modalities": {
        "text": {"file": "text.npy", "mask_file": "text_mask.npy"}, "collab": {"file": "collab.npy"}}}))

    source = write_jsonl(tmp_path / "new.jsonl", NEW_ITEMS)
    manifest = add_items(folder, source, tmp_path / "grown", AddItemsConfig(run=run, neighbours=3))
    grown = GenRec.from_checkpoint(tmp_path / "grown" / "add_items" / "model.pt")
    emb = module.genrec.model.item_emb.weight.detach()

    raw, masks, _ = feat.embed(read_new_items(source), [source.parent])
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)                     # noqa: E731
    sims = unit(raw["text"][:3].astype(np.float32)) @ unit(np.where(has[:, None], text, 1.0)).T
    sims[:, ~has] = -np.inf
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :3]
    assert all(n in (0, 13, 26) for n in nearest[0][:2])                # "stapler" titles are nearest to a stapler
    torch.testing.assert_close(grown.model.item_emb.weight[37:40], emb[torch.as_tensor(nearest)].mean(1))
    torch.testing.assert_close(grown.model.item_emb.weight[40], emb.mean(0))  # NEW-4 has no text: the mean row
    fill = manifest["source"]["added_items"][-1]
    assert fill["modalities"]["collab"]["from_3_text_neighbours"] == 3
    assert fill["modalities"]["collab"]["filled_with_mean"] == 1
    raw["collab"][:3] = collab[nearest].mean(1)
    masks["collab"][:3] = True
    np.testing.assert_allclose(grown.content[37:].numpy(), feat.fuse(raw, masks), atol=1e-4)


def feat_text_config(feat):
    from genrec.features.text import TextConfig

    return TextConfig(**{k: v for k, v in feat.text.items() if k != "fingerprint"})
