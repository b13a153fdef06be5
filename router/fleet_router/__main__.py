"""``python -m fleet_router --config PATH``: run the router."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from fleet_router.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet_router", description="OpenAI-compatible multi-vendor router")
    parser.add_argument("--config", required=True, help="YAML config (see fleet_router.config.RouterConfig)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(message)s", stream=sys.stderr)
    try:
        config = load_config(args.config)
    except (ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    from fleet_router.server import serve

    return asyncio.run(serve(config, args.config))


if __name__ == "__main__":
    raise SystemExit(main())
