"""Shutdown arithmetic: how long each of the fleet's pods may take to stop, in one place.

Every number here follows from one spec field, ``router.request_timeout_s`` (the longest request
the router allows). A pod that is stopped mid-request must finish it, so:

* Kubernetes removes a terminating pod from EndpointSlices at the same time as it signals it, and
  kube-proxy, gateways and the endpoint picker apply that seconds later (Kubernetes docs, "Pod
  Lifecycle: Termination of Pods"). So a stopping pod keeps serving :data:`PRE_STOP_S` first.
* It then drains what is in flight, which may last the whole request timeout, plus
  :data:`DRAIN_SLACK_S`.
* The gateway's own route timeout is longer than the router's, so the router times out first and
  answers with its own error rather than the gateway cutting it.

The router's generated ``shutdown`` config (fleet.routerconfig) and the pods' termination grace
(components/router.py, model_server.py, inference_pool.py) all read these functions.
Pure: no Pulumi, no I/O.
"""

from __future__ import annotations

PRE_STOP_S = 10
"""Serving after SIGTERM while the pod leaves EndpointSlices (the model servers' preStop sleep and
the router's ``shutdown.pre_stop_s``)."""
DRAIN_SLACK_S = 15
"""Termination grace beyond the longest request a pod may be serving."""
EXIT_MARGIN_S = 5
"""Left of the router's grace after its drain, to close connections and exit before SIGKILL."""


def router_termination_grace_s(request_timeout_s: float) -> int:
    """``terminationGracePeriodSeconds`` of the router's pods: the longest request plus slack."""
    return int(request_timeout_s) + DRAIN_SLACK_S


def router_shutdown(request_timeout_s: float) -> dict[str, float]:
    """The router's ``shutdown`` config: pre-stop grace, then a drain that ends before the pod's grace."""
    grace = router_termination_grace_s(request_timeout_s)
    return {"pre_stop_s": float(PRE_STOP_S), "drain_s": float(grace - PRE_STOP_S - EXIT_MARGIN_S)}


def server_termination_grace_s(request_timeout_s: float) -> int:
    """Grace for a model server (and its picker) to finish the longest request the router allows,
    after its preStop sleep."""
    return int(request_timeout_s) + PRE_STOP_S + DRAIN_SLACK_S


def router_route_timeout(request_timeout_s: float) -> str:
    """The router's HTTPRoute request timeout: longer than the router's own, so the router answers."""
    return f"{int(request_timeout_s) + DRAIN_SLACK_S}s"


def pool_route_timeout(request_timeout_s: float) -> str:
    """A pool's HTTPRoute request timeout: longer than the router's route, so the router times out first."""
    return f"{int(request_timeout_s) + 2 * DRAIN_SLACK_S}s"
