"""The built-in demo dataset: a synthetic Amazon-style catalogue written in the 2018 raw format.

``write_demo_source(folder)`` writes, deterministically for a seed and a :class:`DemoConfig`::

    Demo_5.json.gz       review lines as in the McAuley 2018 5-core files (one per interaction)
    meta_Demo.json.gz    item metadata lines: title, brand, category path, price, description, images
    images/<asin>.png    a small product picture per item, drawn with PIL

so the demo goes through the same reader as real data. ``demo_source_dir(cache_root)`` writes it
once into ``cache_root/demo_source`` and reuses it afterwards.

The catalogue has top categories with a few leaf categories each (Outdoors/Tents, ...). A leaf
decides an item's title vocabulary, price range and picture (shape, hue and texture); items add
their own jitter. Item popularity is long-tailed (Zipf).

Users' sequences have learnable structure, so a sequential model beats popularity:
  * category affinity: every user prefers one or two top categories and mostly buys there;
  * complements: each item has complement items in the next leaf of its top category, preferring
    the same brand (a tent, then a sleeping bag of that brand), and the next purchase is often one;
  * brand loyalty: inside a category a user tends to stay with the first brand bought there.
Nobody buys an item twice, and each user's review times are distinct days in chronological order.

Item 5-core is reached by a post-pass, not by construction: after all sequences are drawn, every
item seen fewer than ``min_item_count`` times is inserted into the histories of users who prefer
its category (other users only when too few do), right after one of its complement sources when
the user has one and at a random earlier position otherwise. It never goes into a user's last two
positions, so the leave-one-out targets always come from the generative process. On the default
config the post-pass adds about 6% of the interactions.
Users are 5-core by construction (every sequence has at least ``min_seq_len`` items).
"""

from __future__ import annotations

import colorsys
import gzip
import io
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from genrec.io import temp_folder_beside

DEMO_CATEGORY = "Demo"
REVIEWS_FILE = f"{DEMO_CATEGORY}_5.json.gz"
META_FILE = f"meta_{DEMO_CATEGORY}.json.gz"
IMAGES_DIR = "images"
DEMO_SOURCE_DIR = "demo_source"
# Written last into a cached copy; its content (seed, config, version) says whether the copy is reusable.
MARKER_FILE = ".genrec_demo.json"
# Bump when the generator's output changes for the same seed and config, to invalidate cached copies.
GENERATOR_VERSION = 1


# ----------------------------------------------------------------------------------------------
# Catalogue vocabulary. Leaves of one top category are listed in complement order (a cycle):
# the complement of an item lies in the next leaf of its top category.


@dataclass(frozen=True)
class _Leaf:
    name: str                       # leaf category, third element of the category path
    nouns: tuple[str, ...]          # product nouns; a title ends in one of them
    adjectives: tuple[str, ...]     # leaf-specific title adjectives (shared vocabulary within the leaf)
    price: tuple[float, float]      # (low, high) price range in dollars
    use: str                        # what it is for, used in the description


@dataclass(frozen=True)
class _Top:
    name: str
    leaves: tuple[_Leaf, ...]


_TOPS: tuple[_Top, ...] = (
    _Top("Kitchen", (
        _Leaf("Knives", ("Chef Knife", "Santoku Knife", "Paring Knife"),
              ("Forged", "High-Carbon", "Razor-Sharp", "Full-Tang"), (15, 120), "slicing and dicing"),
        _Leaf("Cutting Boards", ("Cutting Board", "Chopping Block", "Carving Board"),
              ("Bamboo", "End-Grain", "Reversible", "Non-Slip"), (12, 60), "everyday meal prep"),
        _Leaf("Cookware", ("Skillet", "Saucepan", "Dutch Oven"),
              ("Nonstick", "Cast-Iron", "Tri-Ply", "Induction-Ready"), (25, 180), "searing, simmering and baking"),
    )),
    _Top("Outdoors", (
        _Leaf("Tents", ("Dome Tent", "Backpacking Tent", "Cabin Tent"),
              ("Waterproof", "Ultralight", "2-Person", "Freestanding"), (60, 400), "camping trips in any weather"),
        _Leaf("Sleeping Bags", ("Sleeping Bag", "Mummy Bag", "Camping Quilt"),
              ("Down", "20-Degree", "Compressible", "Three-Season"), (40, 250), "warm nights outdoors"),
        _Leaf("Lanterns", ("Camping Lantern", "Headlamp", "Tent Light"),
              ("Rechargeable", "LED", "Dimmable", "Weatherproof"), (12, 70), "lighting up the campsite"),
    )),
    _Top("Office", (
        _Leaf("Pens", ("Gel Pen", "Ballpoint Pen", "Fountain Pen"),
              ("Fine-Point", "Smooth-Writing", "Refillable", "Quick-Dry"), (5, 45), "notes, letters and sketches"),
        _Leaf("Notebooks", ("Notebook", "Journal", "Planner"),
              ("Dotted", "Hardcover", "Lay-Flat", "Acid-Free"), (6, 35), "journaling and planning"),
        _Leaf("Desk Organizers", ("Desk Organizer", "File Sorter", "Pen Holder"),
              ("Mesh", "Stackable", "Compact", "Multi-Compartment"), (10, 50), "a tidy workspace"),
    )),
    _Top("Beauty", (
        _Leaf("Shampoo", ("Shampoo", "Clarifying Shampoo", "Volumizing Shampoo"),
              ("Sulfate-Free", "Argan Oil", "Moisturizing", "Color-Safe"), (6, 40), "clean, healthy hair"),
        _Leaf("Conditioner", ("Conditioner", "Leave-In Conditioner", "Hair Mask"),
              ("Repairing", "Keratin", "Detangling", "Hydrating"), (6, 40), "soft, smooth hair"),
        _Leaf("Hair Dryers", ("Hair Dryer", "Blow Dryer", "Travel Dryer"),
              ("Ionic", "Ceramic", "Lightweight", "Fast-Drying"), (25, 200), "quick salon-style drying"),
    )),
    _Top("Sports", (
        _Leaf("Yoga Mats", ("Yoga Mat", "Exercise Mat", "Travel Mat"),
              ("Non-Slip", "Extra-Thick", "Eco-Friendly", "Cushioned"), (15, 90), "yoga, pilates and stretching"),
        _Leaf("Dumbbells", ("Dumbbell Set", "Adjustable Dumbbell", "Kettlebell"),
              ("Rubber-Coated", "Hex", "Chrome", "Space-Saving"), (20, 300), "strength training at home"),
        _Leaf("Water Bottles", ("Water Bottle", "Sports Bottle", "Insulated Tumbler"),
              ("Leak-Proof", "BPA-Free", "Vacuum-Insulated", "Stainless"), (8, 45), "staying hydrated during workouts"),
    )),
    _Top("Electronics", (
        _Leaf("Headphones", ("Headphones", "Earbuds", "Headset"),
              ("Wireless", "Noise-Cancelling", "Bluetooth", "Over-Ear"), (20, 350), "music and calls on the go"),
        _Leaf("Chargers", ("USB Charger", "Wall Charger", "Power Bank"),
              ("Fast-Charging", "Dual-Port", "Portable", "GaN"), (10, 80), "keeping devices powered"),
        _Leaf("Cables", ("USB-C Cable", "Charging Cable", "HDMI Cable"),
              ("Braided", "6-Foot", "High-Speed", "Tangle-Free"), (6, 30), "connecting and charging devices"),
    )),
    _Top("Garden", (
        _Leaf("Hoses", ("Garden Hose", "Expandable Hose", "Soaker Hose"),
              ("Kink-Free", "50-Foot", "Heavy-Duty", "Flexible"), (20, 90), "watering lawns and beds"),
        _Leaf("Planters", ("Planter", "Flower Pot", "Raised Bed"),
              ("Ceramic", "Self-Watering", "Drainage", "Weather-Resistant"), (10, 120), "growing flowers and herbs"),
        _Leaf("Pruners", ("Pruning Shears", "Loppers", "Hedge Shears"),
              ("Bypass", "Titanium-Coated", "Ergonomic", "Anvil"), (12, 70), "trimming shrubs and branches"),
    )),
    _Top("Pets", (
        _Leaf("Dog Beds", ("Dog Bed", "Pet Bed", "Orthopedic Bed"),
              ("Memory-Foam", "Washable", "Bolster", "Calming"), (25, 150), "restful sleep for dogs"),
        _Leaf("Leashes", ("Dog Leash", "Retractable Leash", "Dog Harness"),
              ("Reflective", "Padded", "No-Pull", "Tough"), (10, 45), "safe daily walks"),
        _Leaf("Pet Bowls", ("Pet Bowl", "Slow Feeder", "Water Fountain"),
              ("Stainless-Steel", "Non-Skid", "Elevated", "Spill-Proof"), (8, 50), "mess-free feeding"),
    )),
    _Top("Toys", (
        _Leaf("Building Blocks", ("Building Set", "Block Set", "Construction Kit"),
              ("Creative", "500-Piece", "STEM", "Classic"), (15, 120), "creative building play"),
        _Leaf("Puzzles", ("Jigsaw Puzzle", "3D Puzzle", "Puzzle Box"),
              ("1000-Piece", "Challenging", "Panoramic", "Family"), (10, 40), "relaxing puzzle nights"),
        _Leaf("Plush Toys", ("Plush Toy", "Stuffed Animal", "Teddy Bear"),
              ("Huggable", "Soft", "Giant", "Cuddly"), (10, 60), "cuddles and bedtime"),
    )),
    _Top("Tools", (
        _Leaf("Drills", ("Cordless Drill", "Hammer Drill", "Drill Driver"),
              ("20V", "Brushless", "Compact", "Variable-Speed"), (50, 250), "drilling and driving screws"),
        _Leaf("Drill Bits", ("Drill Bit Set", "Masonry Bits", "Twist Bits"),
              ("Titanium", "Cobalt", "29-Piece", "Hex-Shank"), (12, 60), "drilling wood, metal and masonry"),
        _Leaf("Tool Boxes", ("Tool Box", "Tool Bag", "Rolling Chest"),
              ("Steel", "Water-Resistant", "Modular", "Lockable"), (20, 200), "organizing tools on the job"),
    )),
)

# Adjectives any title may carry, on top of the leaf's own.
_GENERIC_ADJECTIVES = ("Premium", "Professional", "Classic", "Deluxe", "Essential", "Everyday")
# Share of titles that get a generic adjective in front of the leaf adjectives.
_P_GENERIC_ADJECTIVE = 0.5
_LEAF_ADJECTIVES_PER_TITLE = 2     # leaf adjectives in a title (and in its description)
_MODEL_NUMBERS = (100, 1000)       # model number range [low, high) after the brand initials
_BENEFITS = (
    "Built to last with quality materials.", "Backed by a one-year warranty.",
    "Easy to clean and simple to store.", "Thoughtfully designed for daily use.",
    "A great gift for friends and family.", "Tested for durability and comfort.",
)
# Brand names are prefix + suffix pairs drawn without replacement.
_BRAND_PREFIXES = ("Trail", "North", "Iron", "Blue", "Summit", "Copper", "Oak", "Bright", "Pine", "Silver",
                   "Stone", "River", "Maple", "Nova", "Clear", "Red", "Swift", "Urban", "Golden", "Cedar")
_BRAND_SUFFIXES = ("craft", "line", "works", "co", "forge", "wise", "gear", "haus", "field", "point", "ware", "nest")
_FIRST_NAMES = ("Alex", "Maria", "John", "Priya", "Chen", "Fatima", "Liam", "Sofia", "Noah", "Emma", "Omar",
                "Yuki", "Lucas", "Ana", "David", "Grace", "Mateo", "Olivia", "Ivan", "Zara", "Ethan", "Mia")
_ID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
_REVIEWER_ID_LEN = 13   # characters after the leading "A", as in the 2018 files
_ASIN_LEN = 8           # characters after the leading "B0"
_RATING_PROBS = (0.04, 0.05, 0.09, 0.20, 0.62)  # P(overall = 1..5), Amazon-like skew toward 5
_P_VERIFIED = 0.9       # share of reviews marked "verified"
_STAR_WORDS = ("One Star", "Two Stars", "Three Stars", "Four Stars", "Five Stars")  # default summaries
# Draws of an item the user has not bought yet, before falling back to the most popular unbought item.
_MAX_DRAW_TRIES = 20

# Picture styles: a leaf gets shape SHAPES[l % 6], texture TEXTURES[(l // 6) % 5] and a hue from l,
# so the 30 leaves of the default catalogue have 30 distinct (shape, texture) pairs.
_SHAPES = ("circle", "square", "triangle", "diamond", "hexagon", "star")
_TEXTURES = ("solid", "hstripes", "dstripes", "dots", "checker")
_GOLDEN = 0.618033988749895  # hue step between consecutive leaves: spreads hues evenly
_SUPERSAMPLE = 2             # draw at 2x and downsample, for anti-aliased edges
# Item-level jitter ranges at image_jitter = 1 (scaled by DemoConfig.image_jitter).
_JIT_SCALE = (0.62, 0.82)    # shape radius as a fraction of half the image side
_JIT_ROTATION_DEG = 30.0     # +- rotation
_JIT_OFFSET = 0.08           # +- centre offset as a fraction of the image side
_JIT_HUE = 0.03              # +- hue shift
_JIT_ASPECT = (0.85, 1.0)    # x/y aspect ratio of the shape
_PATTERN_PERIOD = (0.10, 0.16)  # texture period as a fraction of the image side
_CIRCLE_VERTICES = 48        # polygon resolution of a circle
_STAR_POINTS = 5             # points of the star shape
_STAR_INNER_RADIUS = 0.45    # inner/outer radius of the star
_DIAMOND_SQUASH = 0.6        # width/height of the diamond, so it differs from a rotated square
# (saturation, value) of the colours; the accent uses the complementary hue so textures stand out.
_FG_SV, _ACCENT_SV, _EDGE_SV, _BG_SV = (0.75, 0.9), (0.35, 0.98), (0.85, 0.4), (0.12, 0.96)


# ----------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class DemoConfig:
    n_items: int = 2000                  # catalogue size (every item gets >= min_item_count reviews)
    n_users: int = 3000                  # number of users (reviewers)
    n_top_categories: int = 10           # top categories taken from the built-in vocabulary (max 10)
    leaves_per_top: int = 3              # leaf categories per top category (max 3)
    brands_per_top: int = 6              # brands competing inside each top category
    mean_seq_len: float = 9.0            # mean drawn sequence length (the 5-core post-pass adds a little)
    min_seq_len: int = 5                 # shortest user sequence (user 5-core)
    max_seq_len: int = 40                # longest drawn user sequence
    min_item_count: int = 5              # every item is reviewed at least this often (item 5-core)
    popularity_exponent: float = 1.0     # Zipf exponent of item popularity (0 = uniform)
    p_second_category: float = 0.5       # share of users with two preferred top categories instead of one
    primary_category_share: float = 0.7  # weight of a two-category user's first category
    p_complement: float = 0.5            # chance that the next item is a complement of the last one
    n_complements: int = 2               # complements per item (in the next leaf, same brand if possible)
    complement_decay: float = 0.4        # weight ratio between consecutive complements of an item
    p_brand_loyalty: float = 0.5         # chance to stay with the brand first bought in that category
    p_explore: float = 0.16              # share of non-complement draws taken from global popularity
    mean_gap_days: float = 20.0          # mean number of days between a user's consecutive reviews
    first_day: str = "2012-01-01"        # earliest review date (ISO)
    last_day: str = "2018-09-30"         # latest review date (ISO)
    image_size: int = 64                 # side of the square product pictures in pixels
    image_jitter: float = 1.0            # scales item-level picture variation; 0 = one picture per leaf

    def __post_init__(self) -> None:
        def need(ok: bool, field: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"DemoConfig.{field}={getattr(self, field)!r}: expected {expected}.")

        need(1 <= self.n_top_categories <= len(_TOPS), "n_top_categories", f"1..{len(_TOPS)}")
        max_leaves = min(len(t.leaves) for t in _TOPS)
        need(1 <= self.leaves_per_top <= max_leaves, "leaves_per_top", f"1..{max_leaves}")
        n_brands = len(_BRAND_PREFIXES) * len(_BRAND_SUFFIXES)
        need(1 <= self.brands_per_top and self.brands_per_top * self.n_top_categories <= n_brands,
             "brands_per_top", f">= 1 and brands_per_top * n_top_categories <= {n_brands} (the brand name pool)")
        n_leaves = self.n_top_categories * self.leaves_per_top
        need(self.n_items >= max(n_leaves, self.max_seq_len + 1), "n_items",
             f">= max(#leaves = {n_leaves}, max_seq_len + 1 = {self.max_seq_len + 1}) so every leaf has an item "
             "and the longest user can buy distinct items; raise n_items or lower the other two")
        need(self.min_seq_len >= 3, "min_seq_len", ">= 3 (leave-one-out needs train, valid and test items)")
        need(self.max_seq_len >= self.min_seq_len, "max_seq_len", f">= min_seq_len ({self.min_seq_len})")
        need(self.min_seq_len < self.mean_seq_len <= self.max_seq_len, "mean_seq_len",
             f"in (min_seq_len, max_seq_len] = ({self.min_seq_len}, {self.max_seq_len}]")
        need(self.min_item_count >= 1, "min_item_count", ">= 1")
        need(self.n_users >= self.min_item_count + 1, "n_users",
             f">= min_item_count + 1 ({self.min_item_count + 1}) so every item can reach min_item_count users")
        need(self.popularity_exponent >= 0, "popularity_exponent", ">= 0")
        for name in ("p_second_category", "primary_category_share", "p_complement", "p_brand_loyalty",
                     "p_explore", "image_jitter"):
            need(0.0 <= getattr(self, name) <= 1.0, name, "a value in [0, 1]")
        need(self.n_complements >= 1, "n_complements", ">= 1")
        need(0.0 < self.complement_decay <= 1.0, "complement_decay", "a value in (0, 1]")
        need(self.mean_gap_days >= 1.0, "mean_gap_days", ">= 1 (reviews of one user fall on distinct days)")
        for name in ("first_day", "last_day"):
            try:
                date.fromisoformat(getattr(self, name))
            except ValueError:
                need(False, name, "an ISO date like 2014-01-31")
        need(date.fromisoformat(self.first_day) < date.fromisoformat(self.last_day), "last_day",
             f"a date after first_day ({self.first_day})")
        need(16 <= self.image_size <= 512, "image_size", "16..512 pixels")


# ----------------------------------------------------------------------------------------------
# Catalogue


@dataclass
class _Catalogue:
    leaves: list[tuple[int, _Leaf]]   # (top index, leaf) per global leaf index
    item_leaf: np.ndarray             # (n_items,) global leaf index
    item_top: np.ndarray              # (n_items,) top category index
    item_brand: np.ndarray            # (n_items,) global brand index
    brands: list[str]                 # global brand names; brand b belongs to top b // brands_per_top
    popularity: np.ndarray            # (n_items,) Zipf weights, unnormalised
    complements: list[np.ndarray]     # per item, its complement item ids, best first
    asins: list[str]
    meta: list[dict]                  # per item, the meta JSON object (without images)


def _random_ids(rng: np.random.Generator, n: int, prefix: str, length: int) -> list[str]:
    """``n`` distinct ids like prefix + ``length`` uppercase alphanumerics (order follows the rng)."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        for row in _ID_ALPHABET[rng.integers(0, len(_ID_ALPHABET), size=(n - len(ids), length))]:
            s = prefix + "".join(row)
            if s not in seen:
                seen.add(s)
                ids.append(s)
    return ids


def _soft_lower(phrase: str) -> str:
    """Lower-case words for running text but keep acronyms and codes: "USB-C Cable" -> "USB-C cable"."""
    def word(w: str) -> str:
        return "-".join(p.lower() if len(p) > 1 and p[1:].islower() else p for p in w.split("-"))
    return " ".join(word(w) for w in phrase.split(" "))


def _make_catalogue(rng: np.random.Generator, cfg: DemoConfig) -> _Catalogue:
    tops = _TOPS[: cfg.n_top_categories]
    leaves = [(t, leaf) for t, top in enumerate(tops) for leaf in top.leaves[: cfg.leaves_per_top]]
    n = cfg.n_items
    # Spread items evenly over leaves (sizes differ by at most one), in a shuffled item order.
    item_leaf = rng.permutation(np.arange(n) % len(leaves))
    item_top = np.array([leaves[l][0] for l in item_leaf], dtype=np.int64)

    pairs = [p + s for p in _BRAND_PREFIXES for s in _BRAND_SUFFIXES]
    brands = [pairs[i] for i in rng.choice(len(pairs), size=len(tops) * cfg.brands_per_top, replace=False)]
    item_brand = item_top * cfg.brands_per_top + rng.integers(0, cfg.brands_per_top, size=n)

    ranks = rng.permutation(n) + 1
    popularity = 1.0 / ranks.astype(np.float64) ** cfg.popularity_exponent

    # Complements: items of the next leaf in the same top category, the same brand first.
    by_leaf = [np.flatnonzero(item_leaf == l) for l in range(len(leaves))]
    complements = []
    for i in range(n):
        l = int(item_leaf[i])
        nxt = (l // cfg.leaves_per_top) * cfg.leaves_per_top + (l % cfg.leaves_per_top + 1) % cfg.leaves_per_top
        pool = by_leaf[nxt][by_leaf[nxt] != i]
        same = pool[item_brand[pool] == item_brand[i]]
        other = pool[item_brand[pool] != item_brand[i]]
        order = np.concatenate([rng.permutation(same), rng.permutation(other)])
        complements.append(order[: cfg.n_complements])

    asins = _random_ids(rng, n, "B0", _ASIN_LEN)
    meta = []
    for i in range(n):
        t, leaf = leaves[item_leaf[i]]
        brand = brands[item_brand[i]]
        noun = leaf.nouns[rng.integers(len(leaf.nouns))]
        picked = rng.choice(len(leaf.adjectives), size=_LEAF_ADJECTIVES_PER_TITLE, replace=False)
        adjs = [leaf.adjectives[j] for j in sorted(picked)]
        if rng.random() < _P_GENERIC_ADJECTIVE:
            adjs.insert(0, _GENERIC_ADJECTIVES[rng.integers(len(_GENERIC_ADJECTIVES))])
        model = f"{brand[:2].upper()}-{rng.integers(*_MODEL_NUMBERS)}"
        lo, hi = leaf.price
        price = math.floor(math.exp(rng.uniform(math.log(lo), math.log(hi)))) + 0.99
        described = ", ".join(_soft_lower(a) for a in adjs[-_LEAF_ADJECTIVES_PER_TITLE:])
        description = (f"This {described} {_soft_lower(noun)} from {brand} is made for {leaf.use}. "
                       f"{_BENEFITS[rng.integers(len(_BENEFITS))]}")
        meta.append({
            "asin": asins[i],
            "title": f"{brand} {' '.join(adjs)} {noun}, {model}",
            "brand": brand,
            "category": [DEMO_CATEGORY, tops[t].name, leaf.name],
            "price": f"${price:.2f}",
            "description": [description],
        })
    return _Catalogue(leaves, item_leaf, item_top, item_brand, brands, popularity, complements, asins, meta)


# ----------------------------------------------------------------------------------------------
# Sequences


class _Sampler:
    """Draw from a fixed item set with fixed weights in O(log n) per draw."""

    def __init__(self, items: np.ndarray, weights: np.ndarray):
        self.items = items
        self.cum = np.cumsum(weights)

    def draw(self, rng: np.random.Generator) -> int:
        j = int(np.searchsorted(self.cum, rng.random() * self.cum[-1], side="right"))
        return int(self.items[min(j, len(self.items) - 1)])


@dataclass
class _Users:
    sequences: list[list[int]]     # per user, chronological item ids
    n_inserted: int                # interactions added by the item 5-core post-pass


def _draw_sequences(rng: np.random.Generator, cfg: DemoConfig, cat: _Catalogue) -> _Users:
    n_tops = cfg.n_top_categories
    everyone = _Sampler(np.arange(cfg.n_items), cat.popularity)
    in_top = [_Sampler(idx, cat.popularity[idx]) for idx in (np.flatnonzero(cat.item_top == t) for t in range(n_tops))]
    in_brand = {}
    for b in range(len(cat.brands)):
        idx = np.flatnonzero(cat.item_brand == b)
        if len(idx):
            in_brand[b] = _Sampler(idx, cat.popularity[idx])
    comp_weights = cfg.complement_decay ** np.arange(cfg.n_complements)
    by_popularity = np.argsort(-cat.popularity, kind="stable")

    # Extra length beyond the minimum is geometric, so lengths are long-tailed with the right mean.
    p_geo = 1.0 / (cfg.mean_seq_len - cfg.min_seq_len + 1.0)
    lengths = np.minimum(cfg.min_seq_len + rng.geometric(p_geo, size=cfg.n_users) - 1, cfg.max_seq_len)

    sequences, preferred = [], []
    for u in range(cfg.n_users):
        k = 2 if (n_tops > 1 and rng.random() < cfg.p_second_category) else 1
        prefs = [int(t) for t in rng.choice(n_tops, size=k, replace=False)]
        pref_w = np.array([cfg.primary_category_share, 1.0 - cfg.primary_category_share])[:k]
        pref_cum = np.cumsum(pref_w / pref_w.sum())
        loyal: dict[int, int] = {}
        seq: list[int] = []
        seen: set[int] = set()
        for _ in range(int(lengths[u])):
            item = -1
            for _try in range(_MAX_DRAW_TRIES):
                if seq and rng.random() < cfg.p_complement:
                    comps = cat.complements[seq[-1]]
                    w = comp_weights[: len(comps)]
                    j = int(np.searchsorted(np.cumsum(w), rng.random() * w.sum(), side="right"))
                    cand = int(comps[min(j, len(comps) - 1)])
                elif rng.random() < cfg.p_explore:
                    cand = everyone.draw(rng)
                else:
                    t = prefs[min(int(np.searchsorted(pref_cum, rng.random(), side="right")), k - 1)]
                    if t in loyal and rng.random() < cfg.p_brand_loyalty:
                        cand = in_brand[loyal[t]].draw(rng)
                    else:
                        cand = in_top[t].draw(rng)
                if cand not in seen:
                    item = cand
                    break
            if item < 0:  # everything tried was bought already: take the most popular unseen item
                item = int(next(i for i in by_popularity if int(i) not in seen))
            seq.append(item)
            seen.add(item)
            loyal.setdefault(int(cat.item_top[item]), int(cat.item_brand[item]))
        sequences.append(seq)
        preferred.append(prefs)

    n_inserted = _item_core_post_pass(rng, cfg, cat, sequences, preferred)
    return _Users(sequences, n_inserted)


def _item_core_post_pass(rng: np.random.Generator, cfg: DemoConfig, cat: _Catalogue,
                         sequences: list[list[int]], preferred: list[list[int]]) -> int:
    """Insert rare items into more histories until each has ``min_item_count`` users; returns #insertions."""
    counts = np.bincount(np.concatenate([np.asarray(s) for s in sequences]), minlength=cfg.n_items)
    sources: dict[int, set[int]] = {}  # item -> items that list it as a complement
    for i, comps in enumerate(cat.complements):
        for c in comps:
            sources.setdefault(int(c), set()).add(i)
    bought = [set(s) for s in sequences]
    fans_of = [[u for u in range(cfg.n_users) if t in preferred[u]] for t in range(cfg.n_top_categories)]
    n_inserted = 0
    for i in (int(x) for x in np.flatnonzero(counts < cfg.min_item_count)):
        need = int(cfg.min_item_count - counts[i])
        src = sources.get(i, set())

        # Preference order: fans of the item's category holding a complement source (the insertion then
        # follows the complement structure), other fans, then anyone; random order within each group.
        groups: list[list[int]] = [[], []]
        for u in fans_of[cat.item_top[i]]:
            if i not in bought[u]:  # group 0: holds a complement source of i where i may be inserted
                groups[int(src.isdisjoint(sequences[u][:-2]))].append(u)
        chosen = [u for g in groups for u in (g[j] for j in rng.permutation(len(g)))][:need]
        if len(chosen) < need:  # rare: too few fans (tiny configs)
            rest = [u for u in range(cfg.n_users) if i not in bought[u] and int(cat.item_top[i]) not in preferred[u]]
            chosen += [rest[j] for j in rng.permutation(len(rest))[: need - len(chosen)]]
        for u in chosen:
            seq = sequences[u]
            last_ok = len(seq) - 2  # insert before the last two items: evaluation targets stay generative
            after = [p + 1 for p in range(last_ok) if seq[p] in src]
            pos = after[0] if after else int(rng.integers(0, last_ok + 1))
            seq.insert(pos, i)
            bought[u].add(i)
            n_inserted += 1
    return n_inserted


# ----------------------------------------------------------------------------------------------
# Images


def _leaf_style(leaf_index: int, top_index: int) -> tuple[str, str, float, float]:
    """(shape, texture, foreground hue, background hue) of a leaf's pictures."""
    shape = _SHAPES[leaf_index % len(_SHAPES)]
    texture = _TEXTURES[(leaf_index // len(_SHAPES)) % len(_TEXTURES)]
    return shape, texture, (leaf_index * _GOLDEN) % 1.0, (top_index * _GOLDEN + 0.5) % 1.0


def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices (v, 2) of a shape inscribed in the unit circle."""
    if shape == "circle":
        a = np.linspace(0, 2 * np.pi, _CIRCLE_VERTICES, endpoint=False)
        return np.stack([np.cos(a), np.sin(a)], 1)
    if shape == "star":
        a = np.linspace(0, 2 * np.pi, 2 * _STAR_POINTS, endpoint=False) - np.pi / 2
        r = np.where(np.arange(2 * _STAR_POINTS) % 2 == 0, 1.0, _STAR_INNER_RADIUS)
        return np.stack([r * np.cos(a), r * np.sin(a)], 1)
    sides, start, squash = {"square": (4, np.pi / 4, 1.0), "triangle": (3, -np.pi / 2, 1.0),
                            "diamond": (4, 0.0, _DIAMOND_SQUASH), "hexagon": (6, 0.0, 1.0)}[shape]
    a = start + np.linspace(0, 2 * np.pi, sides, endpoint=False)
    return np.stack([squash * np.cos(a), np.sin(a)], 1)


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def _draw_image(style: tuple[str, str, float, float], jitter: np.ndarray, size: int) -> Image.Image:
    """One product picture. ``jitter`` is (7,) uniforms in [0, 1): scale, rotation, dx, dy, hue, aspect, period."""
    shape, texture, hue, bg_hue = style
    big = size * _SUPERSAMPLE
    j_scale, j_rot, j_dx, j_dy, j_hue, j_aspect, j_period = jitter
    radius = 0.5 * big * (_JIT_SCALE[0] + (_JIT_SCALE[1] - _JIT_SCALE[0]) * j_scale)
    angle = math.radians(_JIT_ROTATION_DEG * (2 * j_rot - 1))
    centre = big / 2 + big * _JIT_OFFSET * (2 * np.array([j_dx, j_dy]) - 1)
    aspect = _JIT_ASPECT[0] + (_JIT_ASPECT[1] - _JIT_ASPECT[0]) * j_aspect
    hue = hue + _JIT_HUE * (2 * j_hue - 1)
    period = max(4, round(big * (_PATTERN_PERIOD[0] + (_PATTERN_PERIOD[1] - _PATTERN_PERIOD[0]) * j_period)))

    pts = _unit_polygon(shape) * np.array([aspect, 1.0])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    pts = pts @ rot.T * radius + centre
    poly = [tuple(p) for p in pts.tolist()]

    fg, accent, edge = _rgb(hue, *_FG_SV), _rgb(hue + 0.5, *_ACCENT_SV), _rgb(hue, *_EDGE_SV)
    canvas = Image.new("RGB", (big, big), _rgb(bg_hue, *_BG_SV))
    fill = Image.new("RGB", (big, big), fg)
    pen = ImageDraw.Draw(fill)
    half = period // 2
    if texture == "hstripes":
        for y in range(0, big, period):
            pen.rectangle([0, y, big, y + half - 1], fill=accent)
    elif texture == "dstripes":
        for x in range(-big, big, period):
            pen.line([(x, big), (x + big, 0)], fill=accent, width=max(1, half - 1))
    elif texture == "dots":
        for y in range(half // 2, big, period):
            for x in range(half // 2, big, period):
                pen.ellipse([x, y, x + half, y + half], fill=accent)
    elif texture == "checker":
        for y in range(0, big, half):
            for x in range((y // half % 2) * half, big, 2 * half):
                pen.rectangle([x, y, x + half - 1, y + half - 1], fill=accent)
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).polygon(poly, fill=255)
    canvas.paste(fill, (0, 0), mask)
    ImageDraw.Draw(canvas).polygon(poly, outline=edge, width=_SUPERSAMPLE * 2)
    return canvas.resize((size, size), Image.Resampling.BOX)  # exact 2x2 averaging for the integer factor


# ----------------------------------------------------------------------------------------------
# Writing


def _gzip_lines(path: Path, lines: list[str]) -> None:
    """Gzip with mtime 0 and no embedded file name, so equal content gives equal bytes."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(("\n".join(lines) + "\n").encode("utf-8"))


def _review_lines(rng: np.random.Generator, cfg: DemoConfig, cat: _Catalogue, users: _Users) -> list[str]:
    first = date.fromisoformat(cfg.first_day).toordinal()
    last = date.fromisoformat(cfg.last_day).toordinal()
    reviewer_ids = _random_ids(rng, cfg.n_users, "A", _REVIEWER_ID_LEN)
    p_gap = 1.0 / cfg.mean_gap_days  # gaps are geometric (>= 1 day), so one user's days are distinct
    rows = []
    for u, seq in enumerate(users.sequences):
        name = f"{_FIRST_NAMES[rng.integers(len(_FIRST_NAMES))]} {_ID_ALPHABET[rng.integers(26)]}."
        offsets = np.concatenate([[0], np.cumsum(rng.geometric(p_gap, size=len(seq) - 1))])
        start = first + int(rng.integers(0, max(1, last - first - int(offsets[-1]) + 1)))
        ratings = rng.choice(len(_RATING_PROBS), size=len(seq), p=_RATING_PROBS) + 1
        verified = rng.random(len(seq)) < _P_VERIFIED
        for k, item in enumerate(seq):
            day = date.fromordinal(start + int(offsets[k]))
            unix = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())
            rows.append((cat.asins[item], unix, {
                "overall": float(ratings[k]),
                "verified": bool(verified[k]),
                "reviewTime": f"{day.month:02d} {day.day}, {day.year}",
                "reviewerID": reviewer_ids[u],
                "asin": cat.asins[item],
                "reviewerName": name,
                "summary": _STAR_WORDS[ratings[k] - 1],
                "unixReviewTime": unix,
            }))
    # Like the McAuley files, lines are grouped by item, not by user: the reader must sort by time.
    rows.sort(key=lambda r: (r[0], r[1], r[2]["reviewerID"]))
    return [json.dumps(r[2]) for r in rows]


def _write(folder: Path, seed: int, cfg: DemoConfig) -> None:
    """Write the whole source into the existing empty ``folder``."""
    cat_ss, user_ss, review_ss, image_ss = np.random.SeedSequence(seed).spawn(4)
    # Independent streams: e.g. changing n_users leaves the catalogue and the pictures unchanged.
    cat = _make_catalogue(np.random.default_rng(cat_ss), cfg)
    users = _draw_sequences(np.random.default_rng(user_ss), cfg, cat)
    _gzip_lines(folder / REVIEWS_FILE, _review_lines(np.random.default_rng(review_ss), cfg, cat, users))

    image_rel = [f"{IMAGES_DIR}/{a}.png" for a in cat.asins]
    meta_lines = []
    for i in np.argsort(cat.asins, kind="stable"):
        obj = dict(cat.meta[i], imageURLHighRes=[image_rel[i]], imageURL=[image_rel[i]])
        meta_lines.append(json.dumps(obj))
    _gzip_lines(folder / META_FILE, meta_lines)

    (folder / IMAGES_DIR).mkdir()
    jitter = np.random.default_rng(image_ss).random((cfg.n_items, 7)) * cfg.image_jitter + 0.5 * (1 - cfg.image_jitter)
    styles = [_leaf_style(l, t) for l, (t, _) in enumerate(cat.leaves)]
    for i in tqdm(range(cfg.n_items), desc="demo images", unit="img", leave=False, mininterval=1.0):
        img = _draw_image(styles[cat.item_leaf[i]], jitter[i], cfg.image_size)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        (folder / image_rel[i]).write_bytes(buf.getvalue())


def write_demo_source(folder: str | os.PathLike, *, seed: int = 0, config: DemoConfig = DemoConfig()) -> Path:
    """Write the demo source (2018 raw format) into ``folder``, which must not exist or be empty.

    The folder is built beside the target and renamed into place, so an interrupted run leaves
    nothing half-written. The same seed and config always give byte-identical files.
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder} already exists and is not an empty folder; delete it or choose another path.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder_beside(folder)
    try:
        _write(tmp, seed, config)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def _marker(seed: int, config: DemoConfig) -> dict:
    return {"generator_version": GENERATOR_VERSION, "seed": seed, "config": asdict(config)}


def _is_complete(folder: Path, marker: dict) -> bool:
    try:
        return json.loads((folder / MARKER_FILE).read_text(encoding="utf-8")) == marker
    except (OSError, json.JSONDecodeError):
        return False


def demo_source_dir(cache_root: str | os.PathLike, *, seed: int = 0, config: DemoConfig = DemoConfig()) -> Path:
    """``cache_root/demo_source``, written once (atomically) and reused while seed and config match."""
    cache_root = Path(cache_root)
    target = cache_root / DEMO_SOURCE_DIR
    marker = _marker(seed, config)
    if _is_complete(target, marker):
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder_beside(target)
    try:
        _write(tmp, seed, config)
        (tmp / MARKER_FILE).write_text(json.dumps(marker, sort_keys=True) + "\n", encoding="utf-8")
        if target.exists():  # a stale copy (other seed/config/version, or interrupted by hand)
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished first; its copy is as good as ours when the marker matches.
            if not _is_complete(target, marker):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target
