"""The typed OpenAI request: which paths exist, the error shape, and reading and checking a body.

No routing and no I/O beyond reading the request body through :mod:`fleet_router.httpio`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import orjson

from fleet_router import httpio

@dataclass(frozen=True)
class Endpoint:
    """A POST path proxied to a pool, routed by the body's ``model``: what the router checks in the
    body before routing (the backend checks everything else and its errors pass back verbatim)."""

    #: ``"json"`` or ``"multipart"`` (``multipart/form-data``: ``model`` is a form field).
    body: str = "json"
    #: ``(field, accepted types, missing-code)``: fields the request is meaningless without.
    required: tuple[tuple[str, tuple[type, ...], str], ...] = ()
    #: vLLM's own server lets these omit ``model`` (then it means the one model it serves); the
    #: router does the same when the fleet serves exactly one model, else asks for it.
    model_optional: bool = False


_LIST_OR_STR = (str, list)
#: The surface a vLLM user calls. Paths and optional ``model`` checked against vLLM's routers and
#: protocol models (vllm-project/vllm, vllm/entrypoints/: pooling/score/api_router.py serves
#: /score, /v1/score, /rerank, /v1/rerank, /v2/rerank; pooling/score/protocol.py, the tokenize
#: protocol and the speech-to-text TranscriptionRequest have ``model: str | None = None``;
#: /v1/responses is the Responses API, ``input`` required).
ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": Endpoint(required=(("messages", (list,), "missing_messages"),)),
    "/v1/completions": Endpoint(required=(("prompt", _LIST_OR_STR, "missing_prompt"),)),
    "/v1/embeddings": Endpoint(required=(("input", _LIST_OR_STR, "missing_input"),)),
    "/v1/responses": Endpoint(required=(("input", _LIST_OR_STR, "missing_input"),)),
    **{p: Endpoint(model_optional=True) for p in ("/v1/rerank", "/rerank", "/v2/rerank", "/v1/score", "/score",
                                                    "/tokenize", "/detokenize")},
    **{p: Endpoint(body="multipart", model_optional=True)
       for p in ("/v1/audio/transcriptions", "/v1/audio/translations")},
}
#: POST paths proxied to a pool (routed by the body's ``model``).
INFERENCE_PATHS = tuple(ENDPOINTS)
#: ``GET /v1/models/{id}``: answered by the router from what the pools serve.
MODEL_PREFIX = "/v1/models/"


def error(status: int, message: str, type_: str, code: str | None = None, param: str | None = None,
          headers: dict | None = None) -> httpio.Response:
    """An error in OpenAI's shape."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return httpio.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                           headers=headers)


def http_error(status: int, message: str, code: str) -> httpio.Response:
    """An error the HTTP edge raises itself (unknown path, wrong method)."""
    return error(status, message, "invalid_request_error", code)


class InferenceRequest(NamedTuple):
    """A checked inference request: the body as sent (forwarded untouched) and as parsed (for a
    multipart body: only its small form fields, never the file). A NamedTuple: built once per
    request, and a frozen dataclass's ``object.__setattr__`` per field cost several times as much."""

    path: str
    target: str  # the path and query string, as sent to the backend
    raw: bytes
    body: dict
    model: str
    content_type: str = "application/json"

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True


class MultipartError(ValueError):
    pass


_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.I)
_DISPOSITION = re.compile(rb'^content-disposition:([^\r\n]*)', re.I | re.M)
_NAME = re.compile(rb'(?:^|;)\s*name="([^"]*)"')
_FILENAME = re.compile(rb'(?:^|;)\s*filename\*?=')
#: Form fields the router reads (``model`` to route, ``stream`` to pass a stream through); a value
#: longer than this is not one of them.
_FIELD_MAX = 4096


def form_fields(raw: bytes, boundary: str, names: frozenset[str]) -> dict[str, str]:
    """The named non-file fields of a ``multipart/form-data`` body (RFC 7578), found by scanning for
    the boundary in the bytes already read: the parts are never copied, only each part's header
    and the few small values asked for are sliced out. Raises :class:`MultipartError` on a body
    that is not multipart with this boundary."""
    delim = b"--" + boundary.encode("latin-1")
    out: dict[str, str] = {}
    pos = raw.find(delim)
    if pos < 0:
        raise MultipartError("the body does not contain its boundary")
    while True:
        pos += len(delim)
        if raw.startswith(b"--", pos):  # the close delimiter
            return out
        head_start = raw.find(b"\r\n", pos)
        head_end = raw.find(b"\r\n\r\n", pos)
        if head_start < 0 or head_end < 0:
            raise MultipartError("a part has no header end")
        nxt = raw.find(b"\r\n" + delim, head_end + 4)
        if nxt < 0:
            raise MultipartError("the body ends before its close delimiter")
        head = raw[head_start + 2:head_end]
        d = _DISPOSITION.search(head)
        if d is not None and not _FILENAME.search(d.group(1)):
            name = _NAME.search(d.group(1))
            if name is not None and name.group(1).decode("utf-8", "replace") in names and nxt - head_end - 4 <= _FIELD_MAX:
                try:
                    out[name.group(1).decode()] = raw[head_end + 4:nxt].decode("utf-8")
                except UnicodeDecodeError:
                    raise MultipartError(f"form field {name.group(1)!r} is not UTF-8") from None
        pos = nxt + 2


def _fallback_model(endpoint: Endpoint, served: list[str], path: str) -> str | httpio.Response:
    if endpoint.model_optional and len(served) == 1:
        return served[0]
    return error(400, "`model` is required and must be a string" + (
        f" (this fleet serves {len(served)} models, so the router cannot choose for you)."
        if endpoint.model_optional else "."), "invalid_request_error", "missing_model", "model")


def _head_problem(request: httpio.Request, endpoint: Endpoint, limit: int) -> httpio.Response | None:
    """The 415 / 413 the request's head alone earns (its body is then never read)."""
    ctype_header = request.headers.get("Content-Type", "")
    ctype = ctype_header.split(";")[0].strip().lower()
    if endpoint.body == "multipart":
        if ctype != "multipart/form-data" or _BOUNDARY.search(ctype_header) is None:
            return error(415, "Send this request as `multipart/form-data` (with its boundary), the audio "
                         "file in the `file` field.", "invalid_request_error", "unsupported_media_type")
    elif ctype != "application/json":
        return error(415, "Send the request body as JSON with `Content-Type: application/json`.",
                     "invalid_request_error", "unsupported_media_type")
    if request.content_length is not None and request.content_length > limit:
        return error(413, f"Request body is larger than {limit} bytes.", "invalid_request_error",
                     "request_too_large")
    return None


async def read_inference(request: httpio.Request, max_body_bytes: int,
                         served: Callable[[], list[str]] = list) -> InferenceRequest | httpio.Response:
    """The request's body, checked for what the path needs; or the 4xx that says what is wrong.
    ``served``: the models the fleet serves (for the paths where vLLM lets ``model`` be omitted)."""
    path = request.path
    endpoint = ENDPOINTS[path]
    limit = max_body_bytes
    problem = _head_problem(request, endpoint, limit)
    if problem is not None:
        return problem
    try:
        raw = await httpio.read_body(request, limit)
    except httpio.BodyTimeout:
        return error(408, "The request body stopped arriving.", "invalid_request_error", "request_timeout")
    except httpio.BodyError:
        return error(400, "Could not read the request body.", "invalid_request_error", "bad_body")
    return check_inference(request, raw, limit, served)


def inference_now(request: httpio.Request, max_body_bytes: int,
                  served: Callable[[], list[str]] = list) -> InferenceRequest | httpio.Response | None:
    """:func:`read_inference` for a request whose body is all here (``request.body_now()``), with
    no await; None if it is not (then ``read_inference`` reads it)."""
    raw = request.body_now()
    if raw is None:
        return None
    return _head_problem(request, ENDPOINTS[request.path], max_body_bytes) or check_inference(
        request, raw, max_body_bytes, served)


def check_inference(request: httpio.Request, raw: bytes, limit: int,
                    served: Callable[[], list[str]] = list) -> InferenceRequest | httpio.Response:
    """The body read (``raw``, at most ``limit + 1`` bytes), checked for what the path needs."""
    path = request.path
    endpoint = ENDPOINTS[path]
    if len(raw) > limit:
        return error(413, f"Request body is larger than {limit} bytes.", "invalid_request_error",
                     "request_too_large")
    if endpoint.body == "multipart":
        ctype_header = request.headers.get("Content-Type", "")
        boundary = _BOUNDARY.search(ctype_header)
        try:
            fields = form_fields(raw, boundary.group(1) or boundary.group(2), frozenset(("model", "stream")))
        except MultipartError as e:
            return error(400, f"Request body is not valid multipart/form-data: {e}.", "invalid_request_error",
                         "invalid_multipart")
        stream = fields.get("stream", "false").strip().lower()
        if stream not in ("true", "false"):
            return error(400, "`stream` must be true or false.", "invalid_request_error", "invalid_stream", "stream")
        body = {"stream": stream == "true"}
        model = fields.get("model") or _fallback_model(endpoint, served(), path)
        if not isinstance(model, str):
            return model
        body["model"] = model
        return InferenceRequest(path=path, target=request.target, raw=raw, body=body, model=model,
                                content_type=ctype_header)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return error(400, f"Request body is not valid JSON: {e}.", "invalid_request_error", "invalid_json")
    if not isinstance(body, dict):
        return error(400, "Request body must be a JSON object.", "invalid_request_error", "invalid_json")
    model = body.get("model")
    if model is None and endpoint.model_optional:
        model = _fallback_model(endpoint, served(), path)
        if not isinstance(model, str):
            return model
    elif not isinstance(model, str) or not model:
        return error(400, "`model` is required and must be a string.", "invalid_request_error",
                     "missing_model", "model")
    for field, types, code in endpoint.required:
        if not isinstance(body.get(field), types):
            kinds = " or ".join("a list" if t is list else "a string" for t in types)
            return error(400, f"`{field}` is required and must be {kinds}.", "invalid_request_error", code, field)
    if "stream" in body and not isinstance(body["stream"], bool):
        return error(400, "`stream` must be true or false.", "invalid_request_error", "invalid_stream", "stream")
    return InferenceRequest(path, request.target, raw, body, model)


def model_list(cards: Mapping[str, Mapping], now: int) -> dict:
    """``GET /v1/models`` in OpenAI's shape; ``cards``: model id -> what the backends' cards add
    (vLLM's ``root``, ``parent``, ``max_model_len``: :data:`fleet_router.discovery.CARD_FIELDS`)."""
    return {"object": "list", "data": [model_card(m, now, extra) for m, extra in cards.items()]}


def model_card(model_id: str, now: int, extra: Mapping | None = None) -> dict:
    """One model in OpenAI's shape (``GET /v1/models/{id}`` answers it alone)."""
    return {"id": model_id, "object": "model", "created": now, "owned_by": "inference-fleet", **(extra or {})}
