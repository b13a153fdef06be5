"""The whole surface a vLLM user calls, through the router against the simulator: every proxied
path reaches a pool with its body forwarded byte for byte, routed by the body's ``model`` (a form
field for audio), and the features that live in the body (``n``, tools, logprobs,
``stream_options.include_usage``) arrive and come back untouched."""

from __future__ import annotations

import hashlib
import json

import openai
import pytest

from fleet_router.openai_api import ENDPOINTS, MultipartError, form_fields
from fleetproc import HOST, KEY, fleet, pool, three_vendor_fleet  # noqa: F401 - fixtures
from test_router_e2e import http

AUTH = {"Authorization": f"Bearer {KEY}"}

# One valid request per proxied path: adding a path to the router without a case here fails below.
PATH_BODIES = {
    "/v1/chat/completions": {"model": "llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    "/v1/completions": {"model": "llama", "prompt": "Once", "max_tokens": 2},
    "/v1/embeddings": {"model": "phi", "input": ["a", "b"]},
    "/v1/responses": {"model": "llama", "input": "hi", "max_output_tokens": 2},
    "/v1/rerank": {"model": "phi", "query": "red fox", "documents": ["a red fox", "blue sea"]},
    "/rerank": {"model": "phi", "query": "red fox", "documents": ["a red fox", "blue sea"]},
    "/v2/rerank": {"model": "phi", "query": "red fox", "documents": ["a red fox", "blue sea"]},
    "/v1/score": {"model": "phi", "text_1": "red fox", "text_2": ["a red fox", "blue sea"]},
    "/score": {"model": "phi", "text_1": "red fox", "text_2": ["a red fox", "blue sea"]},
    "/tokenize": {"model": "llama", "prompt": "hello world"},
    "/detokenize": {"model": "llama", "tokens": [1819043176]},
    "/v1/audio/transcriptions": "multipart",
    "/v1/audio/translations": "multipart",
}


def multipart(fields: list[tuple[str, str | tuple[str, bytes]]], boundary: str = "fleet-boundary-7") -> tuple[bytes, str]:
    """A multipart/form-data body in the order given (file fields as (filename, bytes))."""
    out = b""
    for name, value in fields:
        out += f"--{boundary}\r\n".encode()
        if isinstance(value, tuple):
            out += (f'Content-Disposition: form-data; name="{name}"; filename="{value[0]}"\r\n'
                    "Content-Type: audio/wav\r\n\r\n").encode() + value[1] + b"\r\n"
        else:
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(fleet_, path: str, body) -> tuple:
    """POST ``body`` (a dict as JSON, or the string "multipart" for a small audio upload); returns the
    reply and the exact bytes sent."""
    if body == "multipart":
        content, ctype = multipart([("file", ("clip.wav", b"RIFF" + bytes(500))), ("model", "llama")])
    else:
        content, ctype = json.dumps(body).encode(), "application/json"
    r = http("POST", f"http://{HOST}:{fleet_.port}{path}", headers={**AUTH, "Content-Type": ctype}, content=content)
    return r, content


def test_every_proxied_path_has_a_case():
    assert set(PATH_BODIES) == set(ENDPOINTS)


@pytest.mark.parametrize("path", list(PATH_BODIES))
def test_every_path_reaches_a_pool_with_its_body_untouched(three_vendor_fleet, path):
    r, sent = post(three_vendor_fleet, path, PATH_BODIES[path])
    assert r.status_code == 200, r.text
    assert r.headers["x-fleet-pool"] in {"nvidia", "amd", "tpu"}
    # The simulator hashes the body it received: the router forwarded the client's bytes as sent.
    assert r.headers["x-sim-body-sha256"] == hashlib.sha256(sent).hexdigest()


def test_responses_api_plain_and_streamed(three_vendor_fleet):
    c = three_vendor_fleet.client()
    raw = c.responses.with_raw_response.create(model="llama", input="Say hi", max_output_tokens=3)
    assert raw.parse().output_text == "tok0 tok1 tok2" and raw.headers["x-fleet-pool"]
    events = list(c.responses.create(model="llama", input=[{"role": "user", "content": "Say hi"}],
                                     max_output_tokens=3, stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta").split() == ["tok0", "tok1", "tok2"]
    assert events[-1].response.usage.output_tokens == 3


def test_models_retrieve_answers_one_model_or_404(three_vendor_fleet):
    c = three_vendor_fleet.client()
    assert c.models.retrieve("phi").id == "phi"
    with pytest.raises(openai.NotFoundError) as e:
        c.models.retrieve("gpt-9")
    assert e.value.body["code"] == "model_not_found"
    assert http("GET", f"http://{HOST}:{three_vendor_fleet.port}/v1/models/phi").status_code == 401  # no key


def test_rerank_score_tokenize_detokenize_answer_in_vllms_shape(three_vendor_fleet):
    r, _ = post(three_vendor_fleet, "/v1/rerank", {"model": "phi", "query": "red fox", "top_n": 1,
                                                   "documents": ["blue sea", "the red fox", "fox"]})
    assert [x["index"] for x in r.json()["results"]] == [1]
    r, _ = post(three_vendor_fleet, "/v1/score", {"model": "phi", "text_1": "red fox", "text_2": ["red fox", "sea"]})
    assert [d["score"] for d in r.json()["data"]] == [1.0, 0.0]
    tok, _ = post(three_vendor_fleet, "/tokenize", {"model": "llama", "prompt": "héllo wörld"})
    back, _ = post(three_vendor_fleet, "/detokenize", {"model": "llama", "tokens": tok.json()["tokens"]})
    assert tok.json()["count"] == len(tok.json()["tokens"]) and back.json()["prompt"] == "héllo wörld"


def test_transcription_through_the_openai_client(three_vendor_fleet):
    c = three_vendor_fleet.client()
    raw = c.audio.transcriptions.with_raw_response.create(model="llama", file=("speech.wav", bytes(64000)))
    assert raw.parse().text == "64000 bytes of audio from speech.wav" and raw.headers["x-fleet-pool"]


def test_multipart_model_after_a_large_file_and_streamed(three_vendor_fleet):
    """The model field after 1 MB of audio is still found; ``stream=true`` passes the stream through."""
    audio = bytes(range(256)) * 4096
    content, ctype = multipart([("file", ("big.wav", audio)), ("stream", "true"), ("model", "phi")])
    r = http("POST", f"http://{HOST}:{three_vendor_fleet.port}/v1/audio/transcriptions",
             headers={**AUTH, "Content-Type": ctype}, content=content)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream") and r.text.rstrip().endswith("data: [DONE]")
    text = "".join(json.loads(line[6:])["choices"][0]["delta"]["content"] for line in r.text.splitlines()
                   if line.startswith("data: {"))
    assert text.split() == [str(len(audio)), "bytes", "of", "audio", "from", "big.wav"]
    assert r.headers["x-sim-body-sha256"] == hashlib.sha256(content).hexdigest()


def test_n_tools_logprobs_and_include_usage_pass_through(three_vendor_fleet):
    c = three_vendor_fleet.client()
    msgs = [{"role": "user", "content": "weather?"}]
    two = c.chat.completions.create(model="llama", messages=msgs, max_tokens=2, n=2, logprobs=True)
    assert [ch.index for ch in two.choices] == [0, 1]
    assert [t.token for t in two.choices[0].logprobs.content] == ["tok0 ", "tok1 "]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    called = c.chat.completions.create(model="llama", messages=msgs, max_tokens=2, tools=tools)
    assert called.choices[0].finish_reason == "tool_calls"
    assert called.choices[0].message.tool_calls[0].function.name == "get_weather"
    with_usage = list(c.chat.completions.create(model="llama", messages=msgs, max_tokens=2, stream=True,
                                                stream_options={"include_usage": True}))
    assert with_usage[-1].usage.completion_tokens == 2 and not with_usage[-1].choices
    without = list(c.chat.completions.create(model="llama", messages=msgs, max_tokens=2, stream=True))
    assert all(ch.usage is None for ch in without)


MULTI = "/v1/audio/transcriptions"
BAD = [
    ("multipart-without-boundary", MULTI, b"x", "multipart/form-data", 415, "unsupported_media_type"),
    ("json-to-audio", MULTI, b"{}", "application/json", 415, "unsupported_media_type"),
    ("multipart-cut-short", MULTI, multipart([("model", "llama")])[0][:-20],
     multipart([])[1], 400, "invalid_multipart"),
    ("multipart-other-boundary", MULTI, multipart([("model", "llama")], "aaa")[0], multipart([], "bbb")[1], 400,
     "invalid_multipart"),
    # Two models served: the router cannot pick one for a body without ``model``.
    ("audio-without-model", MULTI, *multipart([("file", ("a.wav", b"1"))]), 400, "missing_model"),
    ("tokenize-without-model", "/tokenize", b'{"prompt": "x"}', "application/json", 400, "missing_model"),
    ("responses-without-input", "/v1/responses", b'{"model": "llama"}', "application/json", 400, "missing_input"),
    ("rerank-unknown-model", "/v1/rerank", b'{"model": "gpt-9", "query": "q", "documents": []}', "application/json",
     404, "model_not_found"),
]


@pytest.mark.parametrize("case,path,content,ctype,status,code", BAD, ids=[b[0] for b in BAD])
def test_bad_surface_requests_are_clear_4xx(three_vendor_fleet, case, path, content, ctype, status, code):
    r = http("POST", f"http://{HOST}:{three_vendor_fleet.port}{path}", headers={**AUTH, "Content-Type": ctype},
             content=content)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_one_model_fleet_fills_in_an_omitted_model_and_ids_may_hold_slashes(fleet):
    """vLLM lets tokenize, rerank, score and audio omit ``model``; with one model served, so does
    the router. Hugging Face ids hold a slash: ``models.retrieve`` still finds them."""
    model = "org/tiny-7b"
    url = fleet.start_sim("only", "fast", (model,))
    fleet.start_router({"pools": [pool("only", url, "nvidia", 1.0, models=(model,))]})
    r, sent = post(fleet, "/tokenize", {"prompt": "abcd"})
    assert r.status_code == 200 and r.json()["tokens"] == [int.from_bytes(b"abcd", "little")]
    content, ctype = multipart([("file", ("a.wav", bytes(10)))])
    r = http("POST", f"http://{HOST}:{fleet.port}{MULTI}", headers={**AUTH, "Content-Type": ctype}, content=content)
    assert r.status_code == 200 and r.json()["text"] == "10 bytes of audio from a.wav"
    assert fleet.client().models.retrieve(model).id == model


# --- the multipart scan on its own ----------------------------------------------------------------

def test_form_fields_finds_small_fields_and_skips_files():
    body, _ = multipart([("file", ("m.wav", b'name="model"\r\n\r\nfake')), ("model", "llama"), ("stream", "true"),
                         ("language", "en")])
    assert form_fields(body, "fleet-boundary-7", frozenset({"model", "stream"})) == {"model": "llama",
                                                                                     "stream": "true"}


def test_form_fields_ignores_a_file_part_named_model():
    body, _ = multipart([("model", ("model.bin", b"llama"))])
    assert form_fields(body, "fleet-boundary-7", frozenset({"model"})) == {}


@pytest.mark.parametrize("body", [b"", b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nx",
                                  b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nx\r\n--b"[:-5],
                                  b"--b\r\nno header end"])
def test_form_fields_rejects_broken_bodies(body):
    with pytest.raises(MultipartError):
        form_fields(body, "b", frozenset({"model"}))
