"""results.json -> PNG plots beside it. Runs with .venv-bench's Python (it has matplotlib):
``.venv-bench/bin/python bench/plots.py bench/results/results.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _bar(ax, labels, values, title, ylabel, highlight="fleet_router"):
    colors = ["tab:blue" if highlight in lbl else "tab:gray" for lbl in labels]
    bars = ax.bar(range(len(labels)), [v or 0 for v in values], color=colors)
    ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    for b, v in zip(bars, values):
        if v is not None:
            ax.annotate(f"{v:.3g}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                        fontsize=7)


def throughput(out: dict, path: Path) -> None:
    """Per workload: req/s (top row) and CPU µs per request (bottom row) of every target."""
    ws = out["throughput"]["workloads"]
    fig, axes = plt.subplots(2, len(ws), figsize=(5.2 * len(ws), 8), squeeze=False)
    for i, (wname, w) in enumerate(ws.items()):
        names = list(w["targets"])
        label = f"{wname} ({w['connections']} conn.)"
        _bar(axes[0][i], names, [w["targets"][n].get("rps") for n in names], f"req/s, {label}", "req/s")
        axes[0][i].set_yscale("log")
        peers = [n for n in names if n != "direct"]
        _bar(axes[1][i], peers, [w["targets"][n].get("cpu_us_per_request") for n in peers],
             f"CPU µs per request, {label}", "µs")
        axes[1][i].set_yscale("log")  # LiteLLM costs ~100x the others
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def latency(out: dict, path: Path) -> None:
    lat = out["latency"]
    modes = lat["modes"]
    fig, axes = plt.subplots(1, len(modes), figsize=(6.5 * len(modes), 4.4), squeeze=False)
    for i, (mode, m) in enumerate(modes.items()):
        names = [n for n in m["targets"] if n != "direct"]
        _bar(axes[0][i], names, [m["targets"][n].get("added_p99_ms") for n in names],
             f"added p99 at {lat['rate']:g} req/s, {mode}", "ms")
        axes[0][i].set_yscale("symlog", linthresh=1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def routing(out: dict, path: Path) -> None:
    rows = out["routing"]["rows"]
    names = list(rows)
    short = [n.replace("fleet_router ", "fr ").replace("NVIDIA-only fleet (3x H100, fleet_router prefix-affinity)",
                                                        "NVIDIA-only 3xH100") for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    _bar(axes[0], short, [rows[n]["ttft_p95_ms"] for n in names], "TTFT p95 (lower is better)", "ms", "fr ")
    _bar(axes[1], short, [(rows[n]["hit_rate"] or 0) * 100 for n in names],
         f"prefix-cache hit rate (best possible {out['routing']['best_possible_hit_rate'] * 100:.1f}%)", "%", "fr ")
    _bar(axes[2], short, [rows[n]["usd_per_mtok"] * 1000 for n in names], "cost per million tokens (x1000)", "$",
         "fr ")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def failover(out: dict, path: Path) -> None:
    f = out["failover"]
    series = f.get("timeline") or []
    fig, ax = plt.subplots(figsize=(8, 3.6))
    if series:
        ax.plot([p[0] for p in series], [p[1] for p in series], ".", markersize=2, label="latency")
        lost = [p for p in series if not p[2]]
        if lost:
            ax.plot([p[0] for p in lost], [p[1] for p in lost], "rx", label="lost")
    if f.get("kill_at_s") is not None:
        ax.axvline(f["kill_at_s"], color="red", linestyle="--", label="backend killed")
    ax.set_xlabel("s since start")
    ax.set_ylabel("ms")
    ax.set_yscale("log")
    ax.set_title(f"failover: {f['lost']} lost of {f['requests']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(results: str) -> int:
    path = Path(results)
    out = json.loads(path.read_text())
    made = []
    for key, fn in (("throughput", throughput), ("latency", latency), ("routing", routing), ("failover", failover)):
        if out.get(key):
            target = path.parent / f"{key}.png"
            fn(out, target)
            made.append(target.name)
    print("plots:", ", ".join(made) or "none")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
