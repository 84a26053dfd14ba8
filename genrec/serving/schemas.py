"""Request, response and error bodies of the HTTP API (pydantic; they are also the OpenAPI schema).

Every error the server sends, from a route, the middleware or the connection guard, is one
shape, :class:`ErrorBody`: ``{"error": "<what is wrong and how to fix it>", "code": "<stable
name>", "details": [{"field", "problem", "got"}]}`` (``details`` is empty unless fields were
invalid).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

# Ids are the catalogue's source ids; numbers are accepted and read as their decimal string.
ItemId = str


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True,
                              json_schema_extra={"examples": [{"history": ["B0001", "B0002"], "k": 10}]})

    history: list[ItemId] = Field(..., min_length=1,
                                  description="the user's past items, oldest first (source ids); the last "
                                              "max_items known ids are read, unknown ids are reported and skipped")
    k: StrictInt = Field(10, ge=1, description="number of items to return (1 .. min(catalogue size, server max_k))")
    exclude_history: StrictBool = Field(True, description="never recommend an item that is in the history")
    candidates: list[ItemId] | None = Field(None, min_length=1,
                                            description="optional: recommend only among these items (source ids)")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[RecommendRequest] = Field(..., min_length=1, description="independent recommendation requests")


class RecommendedItem(BaseModel):
    item_id: str = Field(description="the item's source id")
    title: str | None = Field(description="item title from the catalogue (null when unknown)")
    score: float | None = Field(description="log-probability of the item's semantic ID given the history "
                                            "(each digit's times its weight, semantic_id.level_weights in GET "
                                            "/metadata), plus the state's item logit for an export decoding "
                                            "'rerank'; higher is better; null if it underflows")


class RecommendResponse(BaseModel):
    items: list[RecommendedItem] = Field(description="best first; fewer than k when fewer items are allowed")
    unknown_history_items: list[str] = Field(description="history ids not in the catalogue (skipped)")
    unknown_candidate_items: list[str] = Field(default_factory=list,
                                               description="candidate ids not in the catalogue (skipped)")
    history_used: int = Field(description="number of history items the model read (at most max_items)")
    history_truncated: bool = Field(description="true when the known history was longer than max_items and "
                                                "only its most recent max_items items were read")
    warnings: list[str] = Field(default_factory=list, description="what was adjusted in the request, in words")


class BatchResponse(BaseModel):
    results: list[RecommendResponse]


# ---------------------------------------------------------------- items and codes (GET /items*, /codes; read by /ui)
class ItemCard(BaseModel):
    item_id: str = Field(description="the item's source id")
    title: str | None = Field(description="item title from the catalogue (null when unknown)")
    category: str | None = Field(description="the item's category (null when unknown or the export has none)")
    semantic_id: list[int] = Field(description="the item's code per digit, first digit first; "
                                               "the last is the dedup digit")
    image: str | None = Field(description="path of its thumbnail (GET /items/{item_id}/image); null when there is none")
    popularity: int | None = Field(description="training-split interactions (null when the export does not say)")


class ItemSearchResponse(BaseModel):
    items: list[ItemCard] = Field(description="matches, most popular first (item order when popularity is unknown)")
    total: int = Field(description="number of matches (items holds at most `limit` of them)")


class ItemsResponse(BaseModel):
    items: list[ItemCard] = Field(description="the known requested items, in request order")
    unknown_items: list[str] = Field(description="requested ids not in the catalogue (skipped)")


class CategoryCount(BaseModel):
    category: str
    n_items: int


class CategoriesResponse(BaseModel):
    categories: list[CategoryCount] = Field(description="every category with its item count, largest first")
    n_items_without_category: int


class CodeItem(BaseModel):
    item_id: str
    title: str | None


class CodeCategory(BaseModel):
    category: str
    n_items: int


class CodeInfo(BaseModel):
    code: int
    n_items: int = Field(description="items whose digit has this code")
    purity: float | None = Field(description="share of its items (with a category) in its most frequent category")
    top_items: list[CodeItem] = Field(description="its most popular items (training interactions), or first items")
    top_categories: list[CodeCategory] = Field(description="its most frequent categories")


class DigitCodes(BaseModel):
    digit: int = Field(description="column of the semantic ID, 0 = first")
    size: int = Field(description="codebook size of this digit")
    used: int = Field(description="codes used by at least one item")
    dedup: bool = Field(description="the dedup digit (separates items whose other digits are equal)")
    purity: float | None = Field(description="share of items in the most frequent category of their code")
    random_purity: float | None = Field(description="the same for random codes of the same sizes (mean of n_random)")
    random_purity_std: float | None
    prefix_purity: float | None = Field(description="purity of the groups of items sharing digits 0..digit")
    random_prefix_purity: float | None
    codes: list[CodeInfo] = Field(description="the used codes, by code value")


class CodesResponse(BaseModel):
    n_items: int
    level_sizes: list[int]
    n_categories: int
    n_items_with_category: int
    has_popularity: bool = Field(description="top_items are ranked by popularity (else item order)")
    n_random: int = Field(description="random code assignments behind each random_purity")
    seed: int
    digits: list[DigitCodes]


# ---------------------------------------------------------------------- errors
class ErrorDetail(BaseModel):
    field: str = Field(description="the invalid field, e.g. requests[1].k")
    problem: str = Field(description="what is wrong with it and what to send instead")
    got: str | None = Field(None, description="the value received (JSON, cut to 80 characters); null when missing")


class ErrorBody(BaseModel):
    error: str = Field(description="what is wrong and how to fix it")
    code: str = Field(description="stable machine-readable name, e.g. invalid_request, body_too_large, overloaded")
    details: list[ErrorDetail] = Field(default_factory=list, description="one entry per invalid field (else empty)")


class ApiError(Exception):
    """A request the server understood but will not answer; becomes ``status`` with an ErrorBody.

    ``headers`` go on the response, e.g. Retry-After on 503.
    """

    def __init__(self, status: int, code: str, message: str, details: Sequence[ErrorDetail] = (),
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = list(details)
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return error_json(self.code, self.message, self.details)


def error_json(code: str, message: str, details: Sequence[ErrorDetail] = ()) -> bytes:
    return ErrorBody(error=message, code=code, details=list(details)).model_dump_json().encode()


# Statuses every route can answer with (documented in OpenAPI); routes add their own.
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in {
        408: "the request head or body did not arrive within the server's timeout (connection closed)",
        414: "the URL is longer than the server reads (--max-header-bytes)",
        431: "the request headers are larger than the server reads (--max-header-bytes)",
        503: "overloaded (queue full or too many connections): retry after the Retry-After header's seconds",
    }.items()}
RECOMMEND_ERRORS: dict[int | str, dict[str, Any]] = COMMON_ERRORS | {
    status: {"model": ErrorBody, "description": text} for status, text in {
        400: "malformed JSON",
        413: "body larger than --max-body-bytes (sent at once when Content-Length says so, before any 100 Continue)",
        415: "Content-Type is not application/json",
        422: "invalid request; the message and details say what to fix",
        504: "not answered within the compute deadline (--request-timeout-s); retry later",
    }.items()}


# ---------------------------------------------------------------------- validation errors
BAD_JSON = 'request body is not valid JSON; send a JSON object such as {"history": ["ITEM_ID"], "k": 10}'

# Fix-it messages for common validation errors, by (field, pydantic error type) or error type alone.
_HINTS = {
    ("history", "too_short"): "is empty; send at least one source item id, oldest first",
    ("candidates", "too_short"): "is empty; omit candidates to rank the whole catalogue",
    ("requests", "too_short"): "is empty; send at least one request",
    ("k", "greater_than_equal"): "must be >= 1; ask for at least one item",
    ("k", "int_type"): "must be a JSON integer such as 10",
    ("exclude_history", "bool_type"): "must be true or false",
    "extra_forbidden": "unknown field; check its spelling",
    "missing": "required field is missing",
    "string_type": "must be a source item id (a string or a number)",
    "list_type": "must be a JSON list",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
}


def _field_name(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    name = ""
    for p in parts:
        name += f"[{p}]" if p.isdigit() else (f".{p}" if name else p)
    return name or "body"


def validation_error(errors: Sequence[dict[str, Any]]) -> ApiError:
    """pydantic/FastAPI validation errors -> one 400 (bad JSON) or 422 ApiError naming each field."""
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        reason = (bad_json.get("ctx") or {}).get("error", "invalid JSON")
        return ApiError(400, "invalid_json", f"{BAD_JSON} ({reason})")
    details = []
    for e in errors:
        name, kind = _field_name(e.get("loc", ())), e.get("type", "")
        last = name.rsplit(".", 1)[-1]
        got = None
        if "input" in e and kind != "missing":
            text = json.dumps(e["input"], default=str)
            got = text if len(text) <= 80 else text[:77] + "..."
        details.append(ErrorDetail(field=name, problem=_HINTS.get((last, kind)) or _HINTS.get(kind)
                                   or e.get("msg", "invalid value"), got=got))
    summary = "; ".join(f"{d.field}: {d.problem}" for d in details[:3])
    more = f" (and {len(details) - 3} more)" if len(details) > 3 else ""
    return ApiError(422, "invalid_request", f"{summary}{more} (schema: /docs)", details)
