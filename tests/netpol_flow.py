"""The NetworkPolicy evaluator the flow tests use: the verifier's own (fleetctl/verify/netpol.py)."""

from fleetctl.verify.netpol import INTERNET_IP, Cluster, External, Pod, workload_pods  # noqa: F401
