"""The simulator's output is a function of the request: a stream cut after k tokens and continued
elsewhere (vLLM's ``continue_final_message``, or a completions prompt ending in the generated text)
yields exactly the text of the uninterrupted stream. What the migration tests rely on."""

from __future__ import annotations

from fleetproc import HOST, fleet  # noqa: F401 - fixtures
from sse import post_stream

CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "count for me"}]


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_chat_continuation_on_another_server_completes_the_same_text(fleet):
    a, b = _port(fleet.start_sim("a", "fast")), _port(fleet.start_sim("b", "amd-mi300x"))
    whole = post_stream(HOST, a, "/v1/chat/completions", {"model": "m1", "messages": CHAT, "max_tokens": 40,
                                                          "stream": True})
    assert whole.done and whole.finish_reasons() == ["length"]
    text = whole.text()
    partial = "".join(text.split(" ")[i] + " " for i in range(13))
    rest = post_stream(HOST, b, "/v1/chat/completions", {
        "model": "m1", "messages": CHAT + [{"role": "assistant", "content": partial}], "max_tokens": 27,
        "stream": True, "continue_final_message": True, "add_generation_prompt": False})
    assert rest.done and partial + rest.text() == text
    # the same request again, on the other server: the same text
    again = post_stream(HOST, b, "/v1/chat/completions", {"model": "m1", "messages": CHAT, "max_tokens": 40,
                                                          "stream": True})
    assert again.text() == text


def test_completions_prompt_ending_in_generated_text_is_continued(fleet):
    a = _port(fleet.start_sim("a", "fast"))
    prompt = "an earlier tok0 in the prompt, then: "
    whole = post_stream(HOST, a, "/v1/completions", {"model": "m1", "prompt": prompt, "max_tokens": 120,
                                                     "stream": True})
    text = whole.text()
    cut = len(" ".join(text.split(" ")[:101])) + 1  # past token 97, where the numbering wraps
    rest = post_stream(HOST, a, "/v1/completions", {"model": "m1", "prompt": prompt + text[:cut],
                                                    "max_tokens": 19, "stream": True})
    assert text[:cut] + rest.text() == text and len(text.split()) == 120


def test_vllm_refuses_continue_with_a_generation_prompt_and_an_old_server_refuses_continue(fleet):
    a = _port(fleet.start_sim("a", "fast"))
    old = _port(fleet.start_sim("old", "fast", ("m1",), "--no-continue"))
    msgs = CHAT + [{"role": "assistant", "content": "tok0 "}]
    both = post_stream(HOST, a, "/v1/chat/completions", {"model": "m1", "messages": msgs, "stream": True,
                                                         "continue_final_message": True})
    assert both.status == 400 and "add_generation_prompt" in both.events[0]["error"]["message"]
    refused = post_stream(HOST, old, "/v1/chat/completions", {
        "model": "m1", "messages": msgs, "stream": True, "continue_final_message": True,
        "add_generation_prompt": False})
    assert refused.status == 400 and "continue_final_message" in refused.events[0]["error"]["message"]


def test_die_after_tokens_cuts_the_stream_and_the_server_is_gone(fleet):
    a = _port(fleet.start_sim("a", "fast", ("m1",), "--die-after-tokens", "7"))
    s = post_stream(HOST, a, "/v1/chat/completions", {"model": "m1", "messages": CHAT, "max_tokens": 50,
                                                      "stream": True})
    assert s.cut and not s.finish_reasons() and len(s.text().split()) == 7
    assert fleet.sims["a"][1].wait(timeout=10) == 3


# --- --time-scale: the benchmarks' slow pools ------------------------------------------------------

def test_time_scale_stretches_the_modelled_times_and_refuses_a_non_positive_factor(fleet):
    import subprocess
    import sys
    import time

    from fleet_router.sim import PROFILES

    # 20 tokens at nvidia-h100's 2.2 ms each: 44 ms modelled, 1.76 s at x40. A sleep never ends early,
    # so the scaled stream cannot take less (the prompt is shorter than a block: no prefill to speak of).
    port = _port(fleet.start_sim("slow", "nvidia-h100", ("m1",), "--time-scale", "40"))
    t0 = time.perf_counter()
    s = post_stream(HOST, port, "/v1/chat/completions", {"model": "m1", "messages": CHAT, "max_tokens": 20,
                                                         "stream": True})
    took = time.perf_counter() - t0
    assert s.done and len(s.text().split()) == 20
    assert took >= 19 * PROFILES["nvidia-h100"].ms_per_output_token * 40 / 1000

    bad = subprocess.run([sys.executable, "-m", "fleet_router.sim", "--port", "1", "--model", "m1",
                          "--time-scale", "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--time-scale must be positive" in bad.stderr
