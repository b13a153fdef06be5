"""The offline tools: run the real Pulumi program under mocks and read what it declares.

``plan`` (record every resource and Kubernetes object), ``diff`` (a PR review between two git
refs), ``cost``, ``demo`` (the pools as simulators plus the router on loopback) and the policy
evaluation, all behind one CLI: ``python -m fleetctl`` (``python -m fleet`` is the same command).

This layer sits above everything else: it may import the domain (``fleet``), ``program``,
``stacks``, ``components`` and ``policies``; none of those imports it (``pyproject.toml``'s
import contracts say so, and ``make test`` checks them).
"""
