"""deploy/k8s: every manifest passes the Kubernetes schemas (kubernetes-validate, strict),
and the pieces fit together and fit the server: probes, ports, labels, drain timing,
VADNET_* settings that `vadnet serve` accepts, the GPU variant's resources."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from vadnet.service import config as config_mod

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
# Native gRPC probes are GA since 1.27: the oldest version the manifests must load on.
VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
IMAGE_UID = 10001  # USER in /Dockerfile
PRESTOP_MARGIN_S = 5  # time for the kubelet to kill after the drain's own end


def _docs() -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(K8S.rglob("*.yaml")):
        out += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return out


DOCS = _docs()


def _kind(kind: str) -> list[dict]:
    return [d for _, d in DOCS if d["kind"] == kind]


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def _server_config(env: dict[str, str]):
    """What `vadnet serve` makes of these VADNET_* variables (InvalidInputError if bad)."""
    import argparse

    unknown = {k for k in env if k.startswith("VADNET_")} - {
        config_mod.ENV_PREFIX + f.upper() for f in config_mod.ServerConfig.__dataclass_fields__
    }
    assert not unknown, f"`vadnet serve` has no setting {sorted(unknown)}"
    parser = argparse.ArgumentParser()
    config_mod.add_arguments(parser, env={**env, "VADNET_HOST": "0.0.0.0"})
    return config_mod.from_args(parser.parse_args([]))


def test_the_expected_resources_exist():
    kinds = sorted((d["kind"], d["metadata"]["name"]) for _, d in DOCS)
    assert kinds == [
        ("Deployment", "vadnet"),
        ("Deployment", "vadnet-gpu"),
        ("HorizontalPodAutoscaler", "vadnet"),
        ("HorizontalPodAutoscaler", "vadnet-gpu"),
        ("PodDisruptionBudget", "vadnet"),
        ("PodDisruptionBudget", "vadnet-gpu"),
        ("Service", "vadnet"),
        ("Service", "vadnet-headless"),
    ]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path,doc", DOCS, ids=lambda v: v.name if isinstance(v, Path) else "")
def test_manifest_matches_the_kubernetes_schema(path, doc, version):
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{path.relative_to(ROOT)} {doc['kind']} on {version}: {e.message}")


def test_validation_rejects_a_broken_manifest():
    """The schema check above is not vacuous: a misspelt field fails it."""
    doc = yaml.safe_load((K8S / "deployment.yaml").read_text())
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grcp"] = {"port": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)


@pytest.mark.parametrize("dep", _kind("Deployment"), ids=lambda d: d["metadata"]["name"])
def test_deployment_probes_ports_drain_and_settings(dep):
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    (c,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    cfg = _server_config(_env(c))
    assert ports == {"grpc": cfg.port, "metrics": cfg.metrics_port}
    # Native gRPC probes on the server's port: grpc.health.v1 says NOT_SERVING while the
    # model loads and from the start of a drain.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == cfg.port, probe
    assert c["readinessProbe"]["grpc"].get("service", "") in ("", "vadnet.v1.VoiceActivity")
    # The kubelet must not SIGKILL before the drain ends on its own.
    prestop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert prestop[0] == "sleep"
    needed = float(prestop[1]) + cfg.drain_grace_s + PRESTOP_MARGIN_S
    assert pod["terminationGracePeriodSeconds"] >= needed
    # A read-only root needs a writable /tmp.
    if c["securityContext"].get("readOnlyRootFilesystem"):
        assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}
    gpus = c["resources"].get("limits", {}).get("nvidia.com/gpu")
    # The cpu image (torch's CPU-only build) cannot use a GPU: GPU pods need the -cuda tag.
    if labels["vadnet/variant"] == "gpu":
        assert int(gpus) >= 1 and cfg.device.startswith("cuda")
        assert c["image"].endswith("-cuda"), c["image"]
    else:
        assert gpus is None and cfg.device == "cpu"
        assert not c["image"].endswith("-cuda"), c["image"]


def _selects(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


def test_services_reach_every_deployment_on_its_named_ports():
    deployments = _kind("Deployment")
    services = {s["metadata"]["name"]: s for s in _kind("Service")}
    assert services["vadnet-headless"]["spec"]["clusterIP"] == "None"
    for svc in services.values():
        for dep in deployments:
            assert _selects(svc["spec"]["selector"], dep["spec"]["template"]["metadata"]["labels"])
            (c,) = dep["spec"]["template"]["spec"]["containers"]
            names = {p["name"] for p in c["ports"]}
            assert {p["targetPort"] for p in svc["spec"]["ports"]} <= names


def test_each_hpa_and_pdb_targets_exactly_one_deployment():
    deployments = {d["metadata"]["name"]: d for d in _kind("Deployment")}
    for hpa in _kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["name"] in deployments
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        # CPU utilisation needs a CPU request on the pods it scales.
        pod = deployments[ref["name"]]["spec"]["template"]["spec"]
        assert all("cpu" in c["resources"]["requests"] for c in pod["containers"])
    for pdb in _kind("PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        hits = [
            n
            for n, d in deployments.items()
            if _selects(selector, d["spec"]["template"]["metadata"]["labels"])
        ]
        assert hits == [pdb["metadata"]["name"]]
