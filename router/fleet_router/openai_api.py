"""The typed OpenAI request: which paths exist, the error shape, and reading and checking a body.

No routing and no I/O beyond reading the request body through :mod:`fleet_router.httpio`.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from fleet_router import httpio

#: POST paths proxied to a pool (routed by the body's ``model``).
INFERENCE_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


def error(status: int, message: str, type_: str, code: str | None = None, param: str | None = None,
          headers: dict | None = None) -> httpio.Response:
    """An error in OpenAI's shape."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return httpio.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                           headers=headers)


def http_error(status: int, message: str, code: str) -> httpio.Response:
    """An error the HTTP edge raises itself (unknown path, wrong method)."""
    return error(status, message, "invalid_request_error", code)


@dataclass(frozen=True)
class InferenceRequest:
    """A checked inference request: the body as sent (forwarded untouched) and as parsed."""

    path: str
    target: str  # the path and query string, as sent to the backend
    raw: bytes
    body: dict
    model: str

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True


async def read_inference(request: httpio.Request, max_body_bytes: int) -> InferenceRequest | httpio.Response:
    """The request's JSON body, checked for what the path needs; or the 4xx that says what is wrong."""
    ctype = request.headers.get("Content-Type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        return error(415, "Send the request body as JSON with `Content-Type: application/json`.",
                     "invalid_request_error", "unsupported_media_type")
    limit = max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return error(413, f"Request body is larger than {limit} bytes.", "invalid_request_error",
                     "request_too_large")
    try:
        raw = await httpio.read_body(request, limit)
    except httpio.BodyTimeout:
        return error(408, "The request body stopped arriving.", "invalid_request_error", "request_timeout")
    except httpio.BodyError:
        return error(400, "Could not read the request body.", "invalid_request_error", "bad_body")
    if len(raw) > limit:
        return error(413, f"Request body is larger than {limit} bytes.", "invalid_request_error",
                     "request_too_large")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return error(400, f"Request body is not valid JSON: {e}.", "invalid_request_error", "invalid_json")
    if not isinstance(body, dict):
        return error(400, "Request body must be a JSON object.", "invalid_request_error", "invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error(400, "`model` is required and must be a string.", "invalid_request_error",
                     "missing_model", "model")
    path = request.path
    if path == "/v1/chat/completions" and not isinstance(body.get("messages"), list):
        return error(400, "`messages` is required and must be a list.", "invalid_request_error",
                     "missing_messages", "messages")
    if path == "/v1/completions" and not isinstance(body.get("prompt"), (str, list)):
        return error(400, "`prompt` is required.", "invalid_request_error", "missing_prompt", "prompt")
    if path == "/v1/embeddings" and not isinstance(body.get("input"), (str, list)):
        return error(400, "`input` is required.", "invalid_request_error", "missing_input", "input")
    if "stream" in body and not isinstance(body["stream"], bool):
        return error(400, "`stream` must be true or false.", "invalid_request_error", "invalid_stream", "stream")
    return InferenceRequest(path=path, target=request.target, raw=raw, body=body, model=model)


def model_list(ids: list[str], now: int) -> dict:
    """``GET /v1/models`` in OpenAI's shape."""
    return {"object": "list", "data": [
        {"id": m, "object": "model", "created": now, "owned_by": "inference-fleet"} for m in ids]}
