"""Topologies: each module composes components into one stack shape and returns its outputs.

``fleet.spec.FleetSpec.topology`` names the module; ``__main__.py`` imports it and calls
``build(spec, secrets) -> dict[str, Output]``.
"""
