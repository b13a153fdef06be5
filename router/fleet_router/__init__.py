"""fleet_router: an OpenAI-compatible router across clouds and accelerator vendors.

Layers, from the inside out:

* :mod:`fleet_router.config` — the YAML config as a pydantic model (the IaC generates it);
* :mod:`fleet_router.core` — routing as pure functions over plain data (no I/O);
* :mod:`fleet_router.metrics` — Prometheus exposition, seed 000's metric names;
* :mod:`fleet_router.admission` — API keys, rate limits, which routing headers count;
* :mod:`fleet_router.openai_api` — the typed OpenAI request: paths, body reading and checks, error shape;
* :mod:`fleet_router.discovery` — the pools' model lists and scraped load metrics;
* :mod:`fleet_router.proxy` — attempts, failover, streaming pass-through, accounting;
* :mod:`fleet_router.forwarding` — which request headers reach the backend (hop-by-hop, X-Forwarded-For);
* :mod:`fleet_router.upstream` — the backend HTTP/1.1 client (asyncio protocols + httptools);
* :mod:`fleet_router.httpio` — the client-facing HTTP server, the only module that knows its framework;
* :mod:`fleet_router.server` — the wiring: config, reload, lifecycle and drain (:func:`~fleet_router.server.serve`);
* :mod:`fleet_router.sim` — a simulated vLLM server for tests, demos and benchmarks.
"""

__version__ = "0.1.0"
