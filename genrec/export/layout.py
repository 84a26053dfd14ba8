"""The export folder contract, shared by the exporter (torch) and the server (no torch).

stdlib only: the torch-free serving path imports this module, so it must never import
torch, onnx or anything from genrec.export.onnx. export/README.md documents the same
layout for humans; keep the two in sync.
"""

from __future__ import annotations

from genrec.decode.trie import TRIE_FILES

STAGE = "export"                 # manifest "stage" of an export folder
FORMAT_VERSION = 7               # bump when the folder layout, a graph signature or a manifest field changes
                                 # (4: the trie reads codes.npy; no separate trie_item_codes.npy copy;
                                 # 5: the posting lists are kept per pair of digits, not per digit;
                                 # 6: a parallel head's encoder.onnx also returns level_log_probs;
                                 # 7: manifest "level_weights", per-digit weights a 6-reader would ignore)
ENCODER_FILE = "encoder.onnx"
DECODER_STEP_FILE = "decoder_step.onnx"
# (n_items, D) int64: item id -> semantic ID (row i is item i); "codes.npy", the file the trie reads too
CODES_FILE = TRIE_FILES["item_codes"]
ITEMS_FILE = "items.json"        # {"source_id": [...], "title": [...]}: item id -> metadata
# decoding "rerank" only: (n_items, d_model) float32, what each item's state logit is scored against
# (GenRec.item_table); the server memory-maps it and reads only the beam's rows
ITEM_TABLE_FILE = "item_table.npy"
DECODINGS = ("exact", "beam", "rerank")  # manifest "decoding": parallel head / trie beam / beam + item rerank
SUPPORTED_ARCHS = ("causal", "tiger")   # archs `genrec export` writes and the server loads
# A graph's initializers of at least this size (the (n_items, d) item table) are stored as ONNX external
# data in "<graph>.onnx.data" beside it, which onnxruntime memory-maps: workers share the pages.
EXTERNAL_DATA_BYTES = 4 << 20
EXTERNAL_DATA_SUFFIX = ".data"

# Every file an export folder holds besides manifest.json (the manifest lists their sha256).
EXPORT_FILES = (ENCODER_FILE, DECODER_STEP_FILE, ITEMS_FILE, *sorted(TRIE_FILES.values()))   # CODES_FILE among them

# Graph signatures for arch "causal". Dimension names are symbolic; numbers are fixed.
#   encoder.onnx       history (batch, max_items) int64, item ids left-padded with -1
#                      -> state (batch, d_model) float32: the decoding state after the history
#                      -> level_log_probs (batch, D, k_max) float32, parallel heads only: every level's
#                         log-probs from that state (-inf beyond K_level), what decoder_step returns per level
#   decoder_step.onnx  state (rows, d_model) float32  the parent beams' states (already gathered)
#                      last_code (rows,) int64       code chosen at level-1 (ignored at level 0; send 0)
#                      level () int64                 the level being decoded, 0 .. D-1
#                      -> log_probs (rows, k_max) float32, -inf beyond K_level
#                      -> new_state (rows, d_model) float32: the state after appending last_code
CAUSAL_ENCODER_INPUTS = ("history",)
CAUSAL_ENCODER_OUTPUTS = ("state",)
PARALLEL_ENCODER_OUTPUTS = ("state", "level_log_probs")
CAUSAL_STEP_INPUTS = ("state", "last_code", "level")
CAUSAL_STEP_OUTPUTS = ("log_probs", "new_state")

# Graph signatures for arch "tiger" (T5). L = decoder layers, h = heads, dk = d_kv, s = source tokens.
#   encoder.onnx       history (batch, max_items) int64, item ids left-padded with -1
#                      -> cross_keys, cross_values (L, batch, h, s, dk) float32: every decoder layer's
#                         cross-attention keys/values, computed once per request and shared by its beams
#                      -> encoder_bias (batch, s) float32: 0 for item tokens, float32 min for padding
#   decoder_step.onnx  last_code (batch, beams) int64 code chosen at level-1 (ignored at level 0)
#                      level () int64
#                      self_keys, self_values (L, batch, beams, h, D, dk) float32: the self-attention
#                         key/value cache (slot j holds decoder position j; slots >= level are ignored)
#                      cross_keys, cross_values, encoder_bias: as the encoder returned them
#                      -> log_probs (batch, beams, k_max) float32, -inf beyond K_level
#                      -> new_self_keys, new_self_values: the cache with slot `level` written
TIGER_ENCODER_INPUTS = ("history",)
TIGER_ENCODER_OUTPUTS = ("cross_keys", "cross_values", "encoder_bias")
TIGER_STEP_INPUTS = ("last_code", "level", "self_keys", "self_values", "cross_keys", "cross_values", "encoder_bias")
TIGER_STEP_OUTPUTS = ("log_probs", "new_self_keys", "new_self_values")
