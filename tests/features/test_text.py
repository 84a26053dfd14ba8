"""Text features: template rendering, the real MiniLM encoder, the content-hash cache, demo quality."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from genrec.features.cache import EmbeddingCache
from genrec.features.text import (
    BUNDLED_TEXT_MODEL, TextConfig, TextEncoder, TextModelError, item_texts, render_text, resolve_text_model,
)

SHORT = TextConfig(max_length=32)  # the bundled model; short max_length keeps the tests fast


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(SHORT)


# ---------------------------------------------------------------- rendering


def test_render_full_row():
    row = {"title": "Gel Pen", "brand": "Acme", "categories": ["Office", "Pens"], "price": 3.5,
           "description": "Smooth\n  ink."}
    assert render_text(row, TextConfig()) == (
        "Gel Pen. Brand: Acme. Categories: Office > Pens. Price: 3.50. Smooth ink."
    )


FULL = {"title": "Gel Pen", "brand": "Acme", "categories": ["Pens"], "price": 2.0, "description": "Nice."}
WITHOUT = {  # the rendering of FULL with one field missing, worked out by hand
    "brand": "Gel Pen. Categories: Pens. Price: 2.00. Nice.",
    "categories": "Gel Pen. Brand: Acme. Price: 2.00. Nice.",
    "price": "Gel Pen. Brand: Acme. Categories: Pens. Nice.",
    "description": "Gel Pen. Brand: Acme. Categories: Pens. Price: 2.00.",
}


@pytest.mark.parametrize("field,missing", [
    ("brand", None), ("brand", ""), ("brand", "   "), ("categories", None), ("categories", []),
    ("categories", [None, " "]), ("price", None), ("price", float("nan")), ("description", None),
])
def test_missing_fields_are_left_out_never_none(field, missing):
    text = render_text({**FULL, field: missing}, TextConfig())
    assert text == WITHOUT[field]
    assert "None" not in text and "nan" not in text


def test_custom_template_and_separators():
    cfg = TextConfig(template=("{brand}", "{title}", "in {categories}"), joiner=" | ", category_sep="/")
    row = {"title": "Tent", "brand": None, "categories": ["Outdoors", "Tents"], "price": None, "description": None}
    assert render_text(row, cfg) == "Tent | in Outdoors/Tents"


@pytest.mark.parametrize("part", ["{title} {brand}", "{colour}", "no field", "{title"])
def test_template_part_needs_exactly_one_known_field(part):
    with pytest.raises(ValueError, match="template part"):
        TextConfig(template=("{title}", part))


def test_item_texts_tolerates_absent_columns():
    items = pl.DataFrame({"item_id": [0, 1], "title": ["A", None]})
    assert item_texts(items, TextConfig()) == ["A.", ""]


# ---------------------------------------------------------------- encoder


def test_embeddings_normalised_and_deterministic(encoder):
    texts = ["a blue ballpoint pen", "a black gel pen", "stainless steel frying pan"]
    a, stats = encoder.encode(texts, progress=False)
    b, _ = TextEncoder(SHORT).encode(texts, progress=False)  # a fresh model instance
    assert a.shape == (3, 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, b)
    assert stats.n_encoded == 3 and stats.n_cached == 0
    # The encoder means something: two pens are closer to each other than to a pan.
    sim = a @ a.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[1, 2] + 0.2


def test_padding_does_not_change_the_embedding(encoder):
    """Mean pooling uses the attention mask: batching a text beside a long one leaves it unchanged."""
    short = "stapler"
    long = "heavy duty desktop stapler with staple remover and two thousand staples for the office " * 2
    alone = encoder.encode_batch([short])
    padded = encoder.encode_batch([short, long])[:1]
    np.testing.assert_allclose(alone, padded, atol=1e-5)


def test_duplicate_texts_are_encoded_once(encoder):
    out, stats = encoder.encode(["pen", "pan", "pen", "pen"], progress=False)
    assert stats.n_unique == 2 and stats.n_encoded == 2
    np.testing.assert_array_equal(out[0], out[2])


def test_cache_rerun_does_no_work(tmp_path, monkeypatch):
    calls = []
    original = TextEncoder.encode_batch

    def counting(self, texts):
        calls.append(len(texts))
        return original(self, texts)

    monkeypatch.setattr(TextEncoder, "encode_batch", counting)
    cfg = TextConfig(max_length=32, batch_size=2)
    texts = ["red tent", "blue tent", "green tent", "chef knife", "gel pen"]

    enc1 = TextEncoder(cfg)
    first, s1 = enc1.encode(texts, EmbeddingCache(tmp_path, "text", enc1.namespace), progress=False)
    assert sum(calls) == 5 and len(calls) == 3 and s1.n_encoded == 5

    calls.clear()
    enc2 = TextEncoder(cfg)  # a new process would build a new encoder too
    again, s2 = enc2.encode(texts, EmbeddingCache(tmp_path, "text", enc2.namespace), progress=False)
    assert calls == [] and s2.n_cached == 5 and s2.n_encoded == 0
    np.testing.assert_array_equal(first, again)

    # One changed text costs exactly one encoding.
    _, s3 = enc2.encode(texts[:4] + ["fountain pen"], EmbeddingCache(tmp_path, "text", enc2.namespace), progress=False)
    assert calls == [1] and s3.n_cached == 4

    # A different max_length is a different embedding: new namespace, nothing reused.
    enc3 = TextEncoder(TextConfig(max_length=16, batch_size=8))
    assert enc3.namespace != enc2.namespace
    calls.clear()
    enc3.encode(texts, EmbeddingCache(tmp_path, "text", enc3.namespace), progress=False)
    assert sum(calls) == 5


def test_unknown_hub_name_fails_clearly_offline():
    with pytest.raises(TextModelError, match="not a local folder") as err:
        resolve_text_model("someone/not-a-real-model-xyz", local_files_only=True)
    assert BUNDLED_TEXT_MODEL in str(err.value)


def test_local_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(TextModelError, match="config.json"):
        resolve_text_model(str(tmp_path))


def test_local_path_is_same_model_as_bundled(encoder):
    """Configuring the bundled folder by path gives the same model fingerprint and vectors."""
    by_path = TextEncoder(TextConfig(model=str(encoder.folder), max_length=32))
    assert by_path.fingerprint == encoder.fingerprint
    np.testing.assert_array_equal(by_path.encode_batch(["desk lamp"]), encoder.encode_batch(["desk lamp"]))


# ---------------------------------------------------------------- demo quality


def test_demo_same_leaf_category_is_closer_in_text_space(demo_dataset, category_separation):
    encoder = TextEncoder(TextConfig())
    texts = item_texts(demo_dataset.items, TextConfig())
    intra, inter = category_separation(
        demo_dataset, 4, lambda idx: encoder.encode([texts[i] for i in idx], progress=False)[0]
    )
    print(f"demo text cosine: same leaf {intra:.3f}, different leaf {inter:.3f}")
    assert intra > inter + 0.2
