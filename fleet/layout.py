"""Where things live inside every cluster: namespaces, ports and the labels that join the layers.

The platform, inference, router and network-policy layers all read these, so a namespace or a
port is named once. The flow test (tests/test_network_policies.py) reads the rendered manifests,
not this module, so a mismatch between layers shows up there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from types import MappingProxyType

# --- namespaces the project owns (each gets a default-deny NetworkPolicy) -----------------------
NS_CERT_MANAGER = "cert-manager"
NS_ISTIO = "istio-system"
NS_KSERVE = "kserve"
NS_KEDA = "keda"
NS_MONITORING = "monitoring"
NS_GPU_OPERATORS = "gpu-operators"
NS_GATEWAY = "fleet-gateway"
NS_INFERENCE = "fleet-inference"
NS_ROUTER = "fleet-router"

# --- ports -----------------------------------------------------------------------------------------
VLLM_PORT = 8000  # vLLM's OpenAI server and /metrics (seed 003)
EPP_EXTPROC_PORT = 9002  # endpoint picker ext-proc gRPC (seed 001)
EPP_HEALTH_PORT = 9003  # endpoint picker gRPC health
EPP_METRICS_PORT = 9090  # endpoint picker /metrics (seed 003)
ROUTER_PORT = 8080  # router's OpenAI API
ROUTER_ADMIN_PORT = 9091  # router's /metrics and admin; never reachable from outside monitoring
ROUTER_STORE_PORT = 6379  # the router's shared limit store (Redis); reachable from the router only
GATEWAY_HTTPS_PORT = 443
GATEWAY_HTTP_PORT = 80

# --- labels ----------------------------------------------------------------------------------------
APP = "app.kubernetes.io/name"
COMPONENT = "app.kubernetes.io/component"
PART_OF = "app.kubernetes.io/part-of"
MANAGED_BY = "app.kubernetes.io/managed-by"
PART_OF_VALUE = "inference-fleet"
INFERENCE_SERVING = "llm-d.ai/inferenceServing"  # the label InferencePools select on (seed 001)
MODEL_LABEL = "inference-fleet.io/model"
POOL_LABEL = "inference-fleet.io/pool"
VENDOR_LABEL = "inference-fleet.io/vendor"

COMMON_LABELS = MappingProxyType({PART_OF: PART_OF_VALUE, MANAGED_BY: "pulumi"})

# --- who is who: pod labels each layer puts on its pods, and the flow test relies on -----------
# model servers (NS_INFERENCE): APP=vllm (or fleet-sim in dev), COMPONENT=model-server,
#   INFERENCE_SERVING="true", MODEL_LABEL, POOL_LABEL, VENDOR_LABEL
# endpoint pickers (NS_INFERENCE): APP=epp, COMPONENT=endpoint-picker, POOL_LABEL
# gateway pods (NS_GATEWAY): GATEWAY_NAME_LABEL=<gateway name> (Istio's deployed gateways carry it)
# router (NS_ROUTER): APP=fleet-router, COMPONENT=router
# router's limit store (NS_ROUTER): APP=redis, COMPONENT=router-store
# prometheus (NS_MONITORING): APP=prometheus
COMPONENT_MODEL_SERVER = "model-server"
COMPONENT_EPP = "endpoint-picker"
COMPONENT_ROUTER = "router"
COMPONENT_ROUTER_STORE = "router-store"
APP_VLLM = "vllm"
APP_SIM = "fleet-sim"
APP_EPP = "epp"
APP_ROUTER = "fleet-router"
APP_REDIS = "redis"
ROUTER_STORE_NAME = "fleet-router-store"
"""The store's Service (and StatefulSet): the router config's ``store.url`` names it."""
APP_PROMETHEUS = "prometheus"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
GATEWAY_NAME = "inference-gateway"

# --- trust -----------------------------------------------------------------------------------------
# On a cert-manager `ca` Issuer the program makes (components/gateway.py): the SHA-256 fingerprint
# of its CA certificate, so `fleet verify` can check that whoever calls the gateways it signs for
# trusts that very CA (the Secret holding it is masked in a plan).
CA_SHA256_ANNOTATION = "inference-fleet.io/ca-sha256"


def pem_certificate_sha256s(pem: str) -> list[str]:
    """SHA-256 fingerprints (hex of the DER bytes, as ``openssl x509 -fingerprint -sha256``) of the
    certificates in a PEM text, in order; text that is no PEM certificate yields none."""
    out = []
    for body in re.findall(r"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", pem or "", re.S):
        try:
            der = base64.b64decode("".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            continue
        out.append(hashlib.sha256(der).hexdigest())
    return out
