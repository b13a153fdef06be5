"""``python -m fleet``: kept as the short name of the offline tools' CLI (``python -m fleetctl``).

The one import from the domain package up into the tools layer, allowed by name in the import
contracts (``pyproject.toml``): the domain modules themselves never import the tools."""

from fleetctl.cli import run

run()
