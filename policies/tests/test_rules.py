"""Every rule on a compliant and a non-compliant resource, through the SDK's own argument types,
so no rule can pass vacuously."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
from pulumi_policy import (PolicyCustomTimeouts, PolicyProviderResource, PolicyResource, PolicyResourceOptions,
                           ResourceValidationArgs, ResourceValidationPolicy, StackValidationArgs)

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from policies.rules import ALL  # noqa: E402

RULES = {p.name: p for p in ALL}
OPTS = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
PROVIDER = PolicyProviderResource("pulumi:providers:kubernetes", {}, "urn:provider", "k8s")


def violations(policy_name: str, resource_type: str, props: dict, config: dict | None = None) -> list[str]:
    policy = RULES[policy_name]
    assert isinstance(policy, ResourceValidationPolicy)
    out: list[str] = []
    args = ResourceValidationArgs(resource_type, props, "urn:x", "x", OPTS, PROVIDER, config or {})
    policy.validate(args, lambda msg, urn=None: out.append(msg))
    return out


def stack_violations(policy_name: str, resources: list[tuple[str, dict]], config: dict | None = None) -> list[str]:
    policy = RULES[policy_name]
    out: list[str] = []
    prs = [PolicyResource(t, p, f"urn:{i}", f"r{i}", OPTS, PROVIDER, None, [], {}) for i, (t, p) in enumerate(resources)]
    policy.validate(StackValidationArgs(prs, config or {}), lambda msg, urn=None: out.append(msg))
    return out


DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def deployment(component="model-server", **container) -> dict:
    c = {"name": "main", "image": "docker.io/vllm/vllm-openai:v0.11.0@sha256:" + "a" * 64,
         "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "allowPrivilegeEscalation": False,
                             "privileged": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
         "startupProbe": {"httpGet": {"path": "/health", "port": 8000}},
         "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}},
         "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]}
    c.update(container)
    labels = {"app.kubernetes.io/component": component, "inference-fleet.io/pool": "h100",
              "llm-d.ai/inferenceServing": "true"}
    return {"metadata": {"name": "d", "namespace": "fleet-inference"},
            "spec": {"replicas": 2, "template": {"metadata": {"labels": labels},
                                                 "spec": {"containers": [c], "volumes": []}}}}


def with_(obj: dict, path: str, value) -> dict:
    obj = copy.deepcopy(obj)
    target = obj
    parts = path.split(".")
    for p in parts[:-1]:
        target = target[int(p)] if p.isdigit() else target[p]
    target[parts[-1]] = value
    return obj


CONTAINER = "spec.template.spec.containers.0"
GKE_POOL = "gcp:container/nodePool:NodePool"
ACC = {"inference-fleet.io/accelerator": "h100"}


def gke_pool(spot=True, min_nodes=0, max_nodes=2, machine="a3-highgpu-8g", labels=ACC, topo=None) -> dict:
    p = {"nodeConfig": {"machineType": machine, "spot": spot, "labels": dict(labels)},
         "autoscaling": {"totalMinNodeCount": min_nodes, "totalMaxNodeCount": max_nodes}}
    if topo:
        p["placementPolicy"] = {"type": "COMPACT", "tpuTopology": topo}
    return p


# (rule, resource type, compliant props, non-compliant props, words in the finding)
CASES = [
    ("no-privileged-containers", DEPLOYMENT, deployment(),
     with_(deployment(), f"{CONTAINER}.securityContext.privileged", True), "privileged"),
    ("no-privileged-containers", DEPLOYMENT, deployment(),
     with_(deployment(), f"{CONTAINER}.securityContext.capabilities", {"drop": []}), "drop ALL"),
    ("run-as-non-root", DEPLOYMENT, deployment(),
     with_(deployment(), f"{CONTAINER}.securityContext.runAsUser", 0), "as root"),
    ("no-host-access", DEPLOYMENT, deployment(),
     with_(deployment(), "spec.template.spec.volumes", [{"name": "h", "hostPath": {"path": "/"}}]), "hostPath"),
    ("no-host-access", DEPLOYMENT, deployment(),
     with_(deployment(), "spec.template.spec.hostNetwork", True), "hostNetwork"),
    ("read-only-root-filesystem", DEPLOYMENT, deployment(),
     with_(deployment(), f"{CONTAINER}.securityContext.readOnlyRootFilesystem", False), "writable root"),
    ("images-pinned", DEPLOYMENT, deployment(), with_(deployment(), f"{CONTAINER}.image", "vllm/vllm-openai:latest"),
     "moving tag"),
    ("images-pinned", DEPLOYMENT, deployment(), with_(deployment(), f"{CONTAINER}.image", "vllm/vllm-openai"),
     "no tag"),
    ("no-secret-env-literals", DEPLOYMENT, deployment(),
     with_(deployment(), f"{CONTAINER}.env", [{"name": "HF_TOKEN", "value": "hf_abc"}]), "HF_TOKEN"),
    ("no-secrets-in-configmaps", "kubernetes:core/v1:ConfigMap", {"data": {"config.yaml": "x"}},
     {"data": {"api_key": "sk-1"}}, "api_key"),
    ("router-requires-api-keys", "kubernetes:core/v1:ConfigMap",
     {"data": {"config.yaml": "auth: {api_key_hashes_file: /keys/sha256}\npools:\n- {name: h100, cloud: aws}\n"}},
     {"data": {"config.yaml": "auth: {api_key_hashes_file: null}\npools:\n- {name: h100, cloud: aws}\n"}},
     "without API keys"),
    ("router-requires-api-keys", "kubernetes:core/v1:ConfigMap",
     {"data": {"config.yaml": "auth: {api_key_hashes: [abc]}\npools:\n- {name: h100, cloud: gcp}\n"}},
     {"data": {"config.yaml": "pools:\n- {name: h100, cloud: gcp}\n- {name: sim, cloud: local}\n"}},
     "gcp pools without API keys"),
    ("gateways-terminate-tls", "kubernetes:gateway.networking.k8s.io/v1:Gateway",
     {"spec": {"listeners": [{"protocol": "HTTPS", "port": 443, "tls": {"mode": "Terminate",
                                                                       "certificateRefs": [{"name": "tls"}]}}]}},
     {"spec": {"listeners": [{"protocol": "HTTP", "port": 80}]}}, "HTTPS"),
    ("registries-private", "aws:ecr/repository:Repository",
     {"imageScanningConfiguration": {"scanOnPush": True}, "imageTagMutability": "IMMUTABLE"},
     {"imageTagMutability": "MUTABLE"}, "scan"),
    ("registries-private", "azure-native:containerregistry:Registry", {"adminUserEnabled": False},
     {"adminUserEnabled": True}, "admin user"),
    ("registries-private", "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember",
     {"member": "serviceAccount:nodes@p.iam.gserviceaccount.com"}, {"member": "allUsers"}, "public"),
    ("cluster-workload-identity", "gcp:container/cluster:Cluster",
     {"workloadIdentityConfig": {"workloadPool": "p.svc.id.goog"}, "privateClusterConfig": {"enablePrivateNodes": True}},
     {"privateClusterConfig": {"enablePrivateNodes": True}}, "Workload Identity"),
    ("cluster-workload-identity", "aws:eks/cluster:Cluster", {"vpcConfig": {"endpointPrivateAccess": True}},
     {"vpcConfig": {"endpointPrivateAccess": False}}, "privately"),
    ("cluster-workload-identity", "azure-native:containerservice:ManagedCluster",
     {"oidcIssuerProfile": {"enabled": True}, "securityProfile": {"workloadIdentity": {"enabled": True}}},
     {"oidcIssuerProfile": {"enabled": True}}, "workload identity"),
    ("accelerator-pools-spot-or-zero", GKE_POOL, gke_pool(spot=False, min_nodes=0),
     gke_pool(spot=False, min_nodes=8), "no reserved reason"),
    ("accelerator-pools-spot-or-zero", GKE_POOL,
     gke_pool(spot=False, min_nodes=1, labels={**ACC, "inference-fleet.io/reserved-reason": "steady-traffic"}),
     gke_pool(spot=False, min_nodes=1), "reserved"),
    ("accelerator-pools-spot-or-zero", "aws:eks/nodeGroup:NodeGroup",
     {"capacityType": "SPOT", "scalingConfig": {"minSize": 1, "maxSize": 2}, "labels": ACC,
      "instanceTypes": ["p5.48xlarge"]},
     {"capacityType": "ON_DEMAND", "scalingConfig": {"minSize": 1, "maxSize": 2}, "labels": ACC,
      "instanceTypes": ["p5.48xlarge"]}, "on-demand"),
    ("accelerator-pools-spot-or-zero", "azure-native:containerservice:AgentPool",
     {"scaleSetPriority": "Spot", "minCount": 1, "maxCount": 2, "nodeLabels": {"inference-fleet.io/accelerator": "mi300x"},
      "vmSize": "Standard_ND96isr_MI300X_v5"},
     {"scaleSetPriority": "Regular", "minCount": 1, "maxCount": 2,
      "nodeLabels": {"inference-fleet.io/accelerator": "mi300x"}, "vmSize": "Standard_ND96isr_MI300X_v5"}, "on-demand"),
    ("pool-monthly-cost-ceiling", GKE_POOL, gke_pool(max_nodes=2), gke_pool(spot=False, max_nodes=8), "ceiling"),
    ("pool-monthly-cost-ceiling", GKE_POOL, gke_pool(max_nodes=2), gke_pool(machine="a9-imaginary"),
     "not in the catalog"),
    ("tpu-topology-matches-machine", GKE_POOL,
     gke_pool(machine="ct6e-standard-4t", labels={"inference-fleet.io/accelerator": "tpu-v6e"}, topo="2x2"),
     gke_pool(machine="ct6e-standard-4t", labels={"inference-fleet.io/accelerator": "tpu-v6e"}, topo="2x4"),
     "2x2 slice"),
    ("model-server-probes", DEPLOYMENT, deployment(), with_(deployment(), f"{CONTAINER}.startupProbe", None),
     "startupProbe"),
    ("charts-and-crds-pinned", "kubernetes:helm.sh/v3:Release", {"chart": "keda", "version": "2.17.2"},
     {"chart": "keda", "version": "^2.17"}, "exact version"),
    ("charts-and-crds-pinned", "kubernetes:yaml/v2:ConfigFile",
     {"file": "https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.3.0/standard-install.yaml"},
     {"file": "https://raw.githubusercontent.com/x/y/main/install.yaml"}, "not pinned"),
]


@pytest.mark.parametrize("rule,rtype,good,bad,words", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule_passes_compliant_and_flags_non_compliant(rule, rtype, good, bad, words):
    assert violations(rule, rtype, good) == []
    found = violations(rule, rtype, bad)
    assert found and any(words in f for f in found), found


def test_pool_ceiling_is_configurable():
    pool = gke_pool(max_nodes=2)  # 2 x $16/h spot = ~$23k a month
    assert violations("pool-monthly-cost-ceiling", GKE_POOL, pool, {"maxUsd": 10_000})
    assert not violations("pool-monthly-cost-ceiling", GKE_POOL, pool, {"maxUsd": 30_000})


NS = "kubernetes:core/v1:Namespace"
NP = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
DENY = {"metadata": {"name": "default-deny-all", "namespace": "a"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}


def test_default_deny_in_every_namespace():
    ns = [(NS, {"metadata": {"name": "a"}}), (NS, {"metadata": {"name": "b"}})]
    deny_b = with_(DENY, "metadata.namespace", "b")
    assert stack_violations("default-deny-every-namespace", ns + [(NP, DENY), (NP, deny_b)]) == []
    found = stack_violations("default-deny-every-namespace", ns + [(NP, DENY)])
    assert found == ["namespace 'b' has no default-deny NetworkPolicy"]
    allow_all = with_(deny_b, "spec.ingress", [{}])
    assert stack_violations("default-deny-every-namespace", ns + [(NP, DENY), (NP, allow_all)])


def test_eks_needs_an_oidc_provider():
    eks = ("aws:eks/cluster:Cluster", {})
    assert stack_violations("eks-irsa", [eks, ("aws:iam/openIdConnectProvider:OpenIdConnectProvider", {})]) == []
    assert stack_violations("eks-irsa", [eks])


def test_stack_cost_ceiling():
    pools = [(GKE_POOL, gke_pool(max_nodes=4)), (GKE_POOL, gke_pool(max_nodes=4))]  # ~$93k at spot
    assert stack_violations("stack-monthly-cost-ceiling", pools, {"maxUsd": 100_000}) == []
    assert stack_violations("stack-monthly-cost-ceiling", pools, {"maxUsd": 50_000})


def test_router_high_availability():
    router = deployment(component="router")
    router = with_(router, "spec.template.spec.topologySpreadConstraints", [{"maxSkew": 1}])
    pdb = ("kubernetes:policy/v1:PodDisruptionBudget",
           {"spec": {"selector": {"matchLabels": {"app.kubernetes.io/component": "router"}}}})
    assert stack_violations("router-highly-available", [(DEPLOYMENT, router), pdb]) == []
    assert any("PodDisruptionBudget" in v for v in stack_violations("router-highly-available", [(DEPLOYMENT, router)]))
    one = with_(router, "spec.replicas", 1)
    assert any("fewer than 2" in v for v in stack_violations("router-highly-available", [(DEPLOYMENT, one), pdb]))


def test_every_served_model_needs_a_route():
    pool = ("kubernetes:inference.networking.k8s.io/v1:InferencePool",
            {"metadata": {"name": "h100"}, "spec": {"selector": {"matchLabels": {"inference-fleet.io/pool": "h100"}}}})
    route = ("kubernetes:gateway.networking.k8s.io/v1:HTTPRoute",
             {"spec": {"rules": [{"backendRefs": [{"kind": "InferencePool", "name": "h100"}]}]}})
    server = (DEPLOYMENT, deployment())
    assert stack_violations("served-models-routed", [server, pool, route]) == []
    assert stack_violations("served-models-routed", [server, pool])


def test_every_rule_has_a_description_level_and_remediation():
    for p in ALL:
        assert p.description and p.enforcement_level is not None and p.remediation_steps, p.name
    tested = {c[0] for c in CASES} | {"default-deny-every-namespace", "eks-irsa", "stack-monthly-cost-ceiling",
                                      "router-highly-available", "served-models-routed"}
    assert tested == set(RULES), set(RULES) - tested
