"""Prompt prefixes: the bytes that decide KV-cache affinity, their chained block hashes, and a
per-pool memory of the blocks sent there.

Facts from the llm-d / Gateway API Inference Extension picker, v1.5.0 (commit df9f8909),
``pkg/epp/framework/plugins/requestcontrol/dataproducer/approximateprefix/``:

* ``types.go``: ``defaultBlockSizeTokens = 16`` ("vLLM default is 16") and
  ``averageCharactersPerToken = 4``, so a block is 64 characters; ``defaultMaxPrefixBlocks = 256``
  ("two long requests with the same prefix up to this limit will be indistinguishable");
  ``defaultLRUCapacityPerServer = 31250`` blocks, from 500 K tokens of KV cache for Llama 3 8B
  on an 80 GB H100 (16 GB of weights, 64 GB left at about 128 KB a token);
* ``hashing.go`` (``hashPrompt``): xxhash over the prompt's bytes, cut at ``maxPrefixBlocks``
  blocks; the hash is seeded with the target model (and ``cache_salt``), and block i is
  ``hash(block i bytes, hash(i-1))``, so one hash names the whole prefix;
* ``plugin.go``: the index is updated after the pick (``PreRequest``), not by the scorer.

Here: the same 64-byte blocks, cap and model seed; xxh3-64 with the previous block's hash as the
seed (the same chaining, one call per block). GAIE hashes the JSON of the messages; we hash
``<role>content`` per message, which the simulator hashes too, so its cache and our memory agree.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable, Mapping, NamedTuple, Sequence

import xxhash

BLOCK_TOKENS = 16
CHARS_PER_TOKEN = 4
BLOCK_BYTES = BLOCK_TOKENS * CHARS_PER_TOKEN
"""Prompt prefixes are hashed in blocks of this many bytes (about 16 tokens)."""
MAX_PREFIX_BLOCKS = 256
"""Leading blocks that count for routing: 16 KB of prompt. Beyond it two prompts look alike, which
costs little (the conversation key below still tells conversations apart) and bounds the work per
request: a 100 KB prompt costs 256 hashes, not 1,600."""
PREFIX_TOKENS_PER_POOL = 500_000
"""The prompt tokens the router remembers per pool: about one H100's KV cache for an 8B model
(GAIE's sizing above). Memory is counted in tokens, so long prompts do not crowd out the count."""
PREFIX_BYTES_LIMIT = MAX_PREFIX_BLOCKS * BLOCK_BYTES

_hash = xxhash.xxh3_64_intdigest


class Prompt(NamedTuple):
    """The prompt as bytes, as far as routing needs it.

    ``data`` — ``<role>content`` of each chat message in order (or the completion prompt), UTF-8,
    possibly cut after ``PREFIX_BYTES_LIMIT`` bytes once the conversation key is complete;
    ``key_end`` — the bytes that name the *conversation*: through its first non-system message
    (every later turn repeats them; two conversations sharing a system prompt differ there);
    ``history_end`` — where the last message starts: what an earlier turn already sent;
    ``total`` — the whole prompt's length. Past the cut, offsets count characters, not bytes
    (an estimate, exact for ASCII): they size prefill work, they are never hashed.
    """

    data: bytes
    key_end: int
    history_end: int
    total: int

    @classmethod
    def of(cls, text: str | bytes) -> "Prompt":
        """A plain prompt (completions): one turn, the whole text names it."""
        data = text.encode() if isinstance(text, str) else bytes(text)
        return cls(data, len(data), 0, len(data))


def _content(c) -> str:
    if isinstance(c, str):
        return c
    if isinstance(c, list):  # OpenAI content parts: the text parts, in order
        return "".join(p["text"] for p in c if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def prompt_text(body: Mapping, limit: int | None = PREFIX_BYTES_LIMIT) -> Prompt:
    """The prompt whose prefix decides cache affinity, from a parsed OpenAI body: chat messages as
    ``<role>content`` in order, or ``prompt`` / ``input``. Encoded once, part by part, and not
    past ``limit`` bytes beyond the conversation key (a 100 KB history is not copied for 16 KB of
    blocks; later messages are only measured); ``limit=None`` for the whole prompt."""
    msgs = body.get("messages")
    if isinstance(msgs, list):
        parts: list[bytes] = []
        size, key_end, history_end, cut = 0, -1, 0, False
        for m in msgs:
            if not isinstance(m, dict):
                continue
            role = m.get("role")
            role = role if isinstance(role, str) else ""
            content = _content(m.get("content"))
            cut = cut or (limit is not None and size >= limit and key_end >= 0)
            if cut:
                n = len(role) + 2 + len(content)
            else:
                part = b"<" + role.encode() + b">" + content.encode()
                parts.append(part)
                n = len(part)
            history_end = size
            size += n
            if key_end < 0 and role != "system":
                key_end = size
        data = b"".join(parts)
        return Prompt(data, key_end if key_end >= 0 else len(data), history_end, size)
    p = body.get("prompt", body.get("input", ""))
    if isinstance(p, list):
        p = "".join(x for x in p if isinstance(x, str))
    return Prompt.of(p if isinstance(p, str) else "")


def model_seed(model: str) -> int:
    """Different models never share a block (GAIE seeds with the target model too)."""
    return _hash(model.encode())


def prefix_blocks(prompt: Prompt | str | bytes, model: str = "", max_blocks: int | None = MAX_PREFIX_BLOCKS) -> list[int]:
    """Chained hashes of the prompt's full 64-byte blocks (at most ``max_blocks``; None: all, as a
    model server caches them): block i names the whole prefix up to its end."""
    data = prompt.data if isinstance(prompt, Prompt) else prompt.encode() if isinstance(prompt, str) else prompt
    n = len(data) // BLOCK_BYTES
    if max_blocks is not None and n > max_blocks:
        n = max_blocks
    if not n:
        return []  # a prompt shorter than a block: nothing to hash (not even the model's seed)
    h, out = model_seed(model), []
    append, f = out.append, _hash
    view = memoryview(data)  # slices of a view copy nothing: ~40% less per block than bytes slices
    for i in range(0, n * BLOCK_BYTES, BLOCK_BYTES):
        h = f(view[i:i + BLOCK_BYTES], h)
        append(h)
    return out


def conversation_key(prompt: Prompt, model: str = "") -> int | None:
    """One hash of the bytes that name the conversation (see :class:`Prompt`), seeded with the
    model; None for a prompt shorter than one block (no cache worth following)."""
    if len(prompt.data) < BLOCK_BYTES:
        return None
    return _hash(memoryview(prompt.data)[:max(prompt.key_end, BLOCK_BYTES)], model_seed(model))


class PrefixMemory:
    """The blocks the router sent to one pool, sized in tokens, oldest forgotten first.

    Kept as a few generations of blocks rather than one LRU list: a dispatch adds its blocks to
    the newest generation in one C-level ``dict.update`` (no per-block Python work); once the
    generations hold the capacity, the oldest is dropped whole. A prompt's blocks always go in
    together from block 0, so a pool holding block i holds every block before it: how many leading
    blocks match is a binary search, not a walk (a 256-block prompt: 9 look-ups, not 256)."""

    GENERATIONS = 8

    __slots__ = ("capacity_tokens", "_blocks", "_gen_blocks", "_gens", "_count")

    def __init__(self, capacity_tokens: int = PREFIX_TOKENS_PER_POOL):
        self.capacity_tokens = capacity_tokens
        self._blocks = max(1, capacity_tokens // BLOCK_TOKENS)
        self._gen_blocks = max(1, self._blocks // self.GENERATIONS)
        self._gens: deque[dict[int, None]] = deque([{}])
        self._count = 0  # blocks over all generations (a block refreshed later counts twice)

    def __contains__(self, block: int) -> bool:
        return any(block in g for g in self._gens)

    def __iter__(self):
        seen: dict[int, None] = {}
        for g in self._gens:
            seen.update(g)
        return iter(seen)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @property
    def tokens(self) -> int:
        return len(self) * BLOCK_TOKENS

    def matched(self, blocks: Sequence[int]) -> int:
        """How many of the prompt's leading blocks this pool has (most likely) cached."""
        n = len(blocks)
        if not n or blocks[n - 1] in self:
            return n
        lo, hi = 0, n - 1  # blocks[lo - 1] held (or lo == 0); blocks[hi] not held
        while lo < hi:
            mid = (lo + hi) // 2
            if blocks[mid] in self:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def add(self, blocks: Sequence[int]) -> None:
        if not blocks:
            return
        gens = self._gens
        if len(gens[-1]) >= self._gen_blocks:
            gens.append({})
        newest = gens[-1]
        before = len(newest)
        newest.update(dict.fromkeys(blocks))
        self._count += len(newest) - before
        while self._count > self._blocks and len(gens) > 1:
            self._count -= len(gens.popleft())
