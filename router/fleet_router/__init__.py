"""fleet_router: an OpenAI-compatible router across clouds and accelerator vendors.

Layers, from the inside out:

* :mod:`fleet_router.config` — the YAML config as a pydantic model (the IaC generates it);
* :mod:`fleet_router.core` — routing as pure functions over plain data (no I/O);
* :mod:`fleet_router.metrics` — Prometheus exposition, seed 000's metric names;
* :mod:`fleet_router.server` — the thin HTTP layer (aiohttp): proxying, failover, auth, limits;
* :mod:`fleet_router.sim` — a simulated vLLM server for tests, demos and benchmarks.
"""

__version__ = "0.1.0"
