"""deploy/manifests and the example Redis Cluster: valid, least-privilege, hardened, coherent.

Every document is validated against the Kubernetes OpenAPI schemas that the
``kubernetes-validate`` wheel ships (offline, strict: unknown fields are errors), on the
oldest API version we support (1.32: StatefulSet PVC retention is GA there) and the newest
shipped. The Role must equal :func:`controller.platform.kubernetes_rbac.role_rules` for the
ConfigMap's config, and :data:`~controller.platform.kubernetes_rbac.RBAC_RULES` must equal
the Kubernetes API calls in ``controller/platform/kubernetes``, both ways (nothing granted
that is never called, nothing called that is not granted). The
ConfigMap's config passes ``slotpilot validate``; names, ports and paths that must agree
across files (Secret, ConfigMap, Service, image entrypoint, config) are checked to agree.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from controller.cli import build_parser
from controller.config import load_config
from controller.platform.kubernetes_rbac import (
    RBAC_RULES,
    call_rule,
    missing_rule_message,
    role_rules,
    targets_of,
)

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "manifests"
EXAMPLE = ROOT / "deploy" / "examples" / "redis-cluster"
PLATFORM = ROOT / "controller" / "platform" / "kubernetes"
K8S_VERSIONS = ("1.32.0", "1.37.0")
CONFIG_PATH = "/etc/slotpilot/config.yaml"

Doc = dict[str, Any]


def _documents(directory: Path) -> Iterator[tuple[Path, Doc]]:
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"
            yield path, doc


ALL = [(p, d) for directory in (MANIFESTS, EXAMPLE) for p, d in _documents(directory)]
RESOURCES = [(p, d) for p, d in ALL if d.get("kind") != "Kustomization"]


def _one(kind: str, directory: Path = MANIFESTS) -> Doc:
    (doc,) = [d for p, d in RESOURCES if d["kind"] == kind and p.parent == directory]
    return doc


def _container(workload: Doc) -> Doc:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: Doc = containers[0]
    return result


def _env(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


# -- every manifest --------------------------------------------------------------------------


def test_the_expected_manifests_exist() -> None:
    kinds = sorted(d["kind"] for p, d in RESOURCES if p.parent == MANIFESTS)
    assert kinds == sorted(["ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment",
                            "Service", "PodDisruptionBudget", "ValidatingAdmissionPolicy",
                            "ValidatingAdmissionPolicyBinding"])  # fmt: skip
    example = sorted(d["kind"] for p, d in RESOURCES if p.parent == EXAMPLE)
    assert example == ["Job", "Service", "StatefulSet"]


RESOURCE_IDS = [f"{p.name}:{d['kind']}" for p, d in RESOURCES]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("path", "doc"), RESOURCES, ids=RESOURCE_IDS)
def test_manifest_validates_against_kubernetes_schema(path: Path, doc: Doc, version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_schema_validation_can_fail() -> None:
    """The validator is not a no-op: a wrong type and an unknown field are both refused."""
    deployment = yaml.safe_load(yaml.safe_dump(_one("Deployment")))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)
    role = yaml.safe_load(yaml.safe_dump(_one("Role")))
    role["rules"][0]["verb"] = ["get"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(role, K8S_VERSIONS[-1], strict=True)


def test_manifests_are_namespace_agnostic() -> None:
    """Applied with ``-n NAMESPACE`` (or kustomize's ``namespace:``) anywhere."""
    for path, doc in RESOURCES:
        assert "namespace" not in doc["metadata"], f"{path.name}: {doc['kind']} names a namespace"
    for subject in _one("RoleBinding")["subjects"]:
        assert "namespace" not in subject


@pytest.mark.parametrize("directory", [MANIFESTS, EXAMPLE], ids=["manifests", "example"])
def test_kustomization_lists_every_manifest(directory: Path) -> None:
    (kustomization,) = [d for p, d in ALL if d["kind"] == "Kustomization" and p.parent == directory]
    files = sorted(p.name for p in directory.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files
    assert "namespace" not in kustomization


# -- RBAC ------------------------------------------------------------------------------------


def test_role_has_no_wildcards_and_is_namespaced() -> None:
    role = _one("Role")
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(key, []), f"wildcard in {key}: {rule}"
        assert "nonResourceURLs" not in rule
        if "resourceNames" in rule:  # these verbs cannot be narrowed by name
            assert not {"create", "list", "watch", "deletecollection"} & set(rule["verbs"])
    assert not [d for _, d in RESOURCES if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def _config() -> Doc:
    return dict(yaml.safe_load(_one("ConfigMap")["data"]["config.yaml"]))


def test_role_is_role_rules_of_the_configmaps_config() -> None:
    """The Role is role_rules() for the shipped config: its named rules name the
    ConfigMap's StatefulSet and Lease (and consumers, when it has any)."""
    assert _one("Role")["rules"] == role_rules(targets_of(_config()))
    named = {
        (tuple(r["resources"]), tuple(r.get("resourceNames", ()))) for r in _one("Role")["rules"]
    }
    assert (("statefulsets/scale",), ("redis-cluster",)) in named
    assert (("leases",), ("slotpilot",)) in named


def test_rbac_rules_are_the_least_the_operator_needs() -> None:
    """No Secrets, no pod exec, no create/delete of workloads, no watch: scale, annotate,
    list what is needed."""
    pairs: dict[tuple[str, str], set[str]] = {}
    for r in RBAC_RULES:
        pairs.setdefault((r.api_group, r.resource), set()).update(r.verbs)
    assert not any(res in ("secrets", "pods/exec", "configmaps") for _, res in pairs)
    assert (
        pairs[("apps", "statefulsets")] == pairs[("apps", "statefulsets/scale")] == {"get", "patch"}
    )
    assert pairs[("apps", "deployments/scale")] == {"get", "patch"}
    assert not any("watch" in verbs or ("update" in verbs and res.endswith("/scale"))
                   for (_, res), verbs in pairs.items())  # fmt: skip
    assert all(r.why for r in RBAC_RULES)
    names = {r.names for r in RBAC_RULES if r.names is not None}
    assert names == {"lease", "statefulset", "consumers"}


def test_missing_rule_message_names_the_rule_and_the_real_files() -> None:
    msg = missing_rule_message("apps", "statefulsets/scale", "patch", "cache")
    assert "apiGroups: [apps], resources: [statefulsets/scale], verbs: [patch]" in msg
    assert "resourceNames including cache" in msg and "scale subresource" in msg
    for path in ("deploy/manifests/role.yaml", "helm/slotpilot/templates/role.yaml"):
        assert path in msg and (ROOT / path).is_file()
    msg = missing_rule_message("", "secrets", "get")
    assert 'apiGroups: [""], resources: [secrets], verbs: [get]' in msg and "used to" not in msg


def test_rolebinding_binds_the_role_to_the_deployments_serviceaccount() -> None:
    binding, role, account = _one("RoleBinding"), _one("Role"), _one("ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"],
    }  # fmt: skip
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"]}]
    pod = _one("Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


def api_calls(source: str) -> set[tuple[str, str, str]]:
    """(group, resource, verb) of every ``kubernetes`` client method named in the code
    (:func:`~controller.platform.kubernetes_rbac.call_rule`, the mapping the operator's
    403 messages use); a list method handed to ``stream(...)`` (a watch) needs ``watch``
    as well."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: set[tuple[str, str, str]] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        call = parents.get(node)
        args = call.args if isinstance(call, ast.Call) else []
        strings = [a.value for a in args
                   if isinstance(a, ast.Constant) and isinstance(a.value, str)]  # fmt: skip
        rule = call_rule(node.attr, strings)
        if rule is None:
            continue
        found.add(rule)
        if isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "stream":
            found.add((rule[0], rule[1], "watch"))
    return found


def test_api_call_scanner_reads_the_calls() -> None:
    source = (
        "a.call('x', api.apps.patch_namespaced_stateful_set_scale, n, ns)\n"
        "w.stream(api.core.list_namespaced_pod, ns)\n"
        "a.call('y', api.custom.list_namespaced_custom_object, 'keda.sh', 'v1alpha1', ns,"
        " 'scaledobjects')\n"
        "a.call('z', api.coordination.replace_namespaced_lease, n, ns, body)\n"
        "read = {'StatefulSet': api.apps.read_namespaced_stateful_set}.get(kind)\n"
    )  # fmt: skip
    assert api_calls(source) == {
        ("apps", "statefulsets/scale", "patch"), ("", "pods", "list"), ("", "pods", "watch"),
        ("keda.sh", "scaledobjects", "list"), ("coordination.k8s.io", "leases", "update"),
        ("apps", "statefulsets", "get"),
    }  # fmt: skip


def _platform_calls() -> set[tuple[str, str, str]]:
    files = sorted(PLATFORM.glob("*.py")) if PLATFORM.is_dir() else []
    if not files:
        pytest.skip("controller/platform/kubernetes is not in this tree yet")
    calls = set().union(*(api_calls(f.read_text(encoding="utf-8")) for f in files))
    assert calls, "no Kubernetes API call found: the scanner no longer reads the platform"
    return calls


def test_every_api_call_of_the_platform_is_granted() -> None:
    """Used ⊆ granted: a call the Role does not grant is a 403 in production."""
    missing = [c for c in sorted(_platform_calls()) if not any(r.grants(*c) for r in RBAC_RULES)]
    assert not missing, "\n".join(missing_rule_message(*c) for c in missing)


def test_every_granted_verb_is_called_by_the_platform() -> None:
    """Granted ⊆ used: a verb the code never calls is attack surface for nothing."""
    calls = _platform_calls()
    unused = [(r.api_group, r.resource, verb) for r in RBAC_RULES for verb in r.verbs
              if (r.api_group, r.resource, verb) not in calls]  # fmt: skip
    assert not unused, f"granted but never called (drop them from RBAC_RULES): {unused}"


# -- the Deployment --------------------------------------------------------------------------


def test_deployment_is_hardened() -> None:
    deployment = _one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert deployment["spec"]["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in sc or sc["privileged"] is False
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert "memory" in container["resources"]["limits"]
    assert ":" in container["image"] and not container["image"].endswith(":latest")


def test_deployment_user_matches_the_image_user() -> None:
    """The manifest's numeric uid is the one the Dockerfile creates (USER uid:gid)."""
    user = next(ln.split()[1] for ln in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
                if ln.startswith("USER "))  # fmt: skip
    uid, _, gid = user.partition(":")
    sc = _container(_one("Deployment"))["securityContext"]
    assert (str(sc["runAsUser"]), str(sc["runAsGroup"])) == (uid, gid)


def test_deployment_probes_and_ports() -> None:
    container = _container(_one("Deployment"))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    service = _one("Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    pod_labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert _one("Deployment")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_deployment_args_make_a_valid_run_command_on_every_interface() -> None:
    """The image's entrypoint plus the Deployment's args, parsed by the real CLI grammar."""
    container = _container(_one("Deployment"))
    assert "command" not in container, "the image's ENTRYPOINT (slotpilot run --config ...)"
    entry = ["run", "--config", CONFIG_PATH]
    args = build_parser().parse_args(entry + container["args"])
    assert (args.command, args.config, args.host) == ("run", CONFIG_PATH, "0.0.0.0")


def test_deployment_downward_api_and_password_secret() -> None:
    env = _env(_container(_one("Deployment")))
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    password_env = _config()["cluster"]["password_env"]
    ref = env[password_env]["valueFrom"]["secretKeyRef"]
    assert "value" not in env[password_env]
    # the same Secret the example cluster reads its requirepass from
    example_env = _env(_container(_one("StatefulSet", EXAMPLE)))
    assert example_env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == ref
    assert not [d for _, d in RESOURCES if d["kind"] == "Secret"], "no Secret in git"


def test_deployment_mounts_config_and_tmp() -> None:
    deployment = _one("Deployment")
    pod, container = deployment["spec"]["template"]["spec"], _container(deployment)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"] is not None
    config_dir, config_file = os.path.split(CONFIG_PATH)
    mount = mounts[config_dir]
    assert mount["readOnly"] is True
    source = volumes[mount["name"]]["configMap"]
    assert source["name"] == _one("ConfigMap")["metadata"]["name"]
    assert source["items"] == [{"key": config_file, "path": config_file}]
    assert _config()["shards"]["state_dir"].startswith("/tmp/"), "the only writable path"


def test_pod_disruption_budget() -> None:
    pdb = _one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


# -- the controller's config -----------------------------------------------------------------


def _config() -> Doc:
    data = _one("ConfigMap")["data"]
    assert set(data) == {"config.yaml"}
    config: Doc = yaml.safe_load(data["config.yaml"])
    return config


def test_configmap_config_passes_slotpilot_validate(tmp_path: Path) -> None:
    """As ``run`` would see it in the pod: the password variable set (from the Secret)."""
    path = tmp_path / "config.yaml"
    path.write_text(_one("ConfigMap")["data"]["config.yaml"], encoding="utf-8")
    cli = [sys.executable, "-c", "from controller.cli import main; raise SystemExit(main())"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLOTPILOT_")}
    ok = subprocess.run([*cli, "validate", str(path)], capture_output=True, text=True,
                        env={**env, "REDIS_PASSWORD": "from-the-secret"}, timeout=60)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("ok:")
    env.pop("REDIS_PASSWORD", None)
    unset = subprocess.run([*cli, "validate", str(path)], capture_output=True, text=True,
                           env=env, timeout=60)  # fmt: skip
    # away from the pod the variable is not set: a warning, not an error (run refuses it)
    assert unset.returncode == 0, unset.stdout
    assert unset.stdout.startswith("warning: cluster.password_env:") and "REDIS_PASSWORD" in (
        unset.stdout
    )
    run = subprocess.run([*cli, "plan", "--config", str(path)], capture_output=True, text=True,
                         env=env, timeout=60)  # fmt: skip
    assert run.returncode == 2 and "REDIS_PASSWORD" in run.stdout + run.stderr


@pytest.mark.parametrize(
    ("shipped", "holder"),
    [("deploy/manifests/configmap.yaml", "ConfigMap slotpilot-config, key config.yaml"),
     ("helm/slotpilot/values.yaml", "Helm values, .config")],
)  # fmt: skip
def test_validate_takes_the_configmap_and_the_chart_values_as_shipped(
    shipped: str, holder: str, tmp_path: Path
) -> None:
    cli = [sys.executable, "-c", "from controller.cli import main; raise SystemExit(main())"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLOTPILOT_")}
    env.pop("REDIS_PASSWORD", None)
    ok = subprocess.run([*cli, "validate", str(ROOT / shipped)], capture_output=True,
                        text=True, env=env, timeout=60)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"ok: {ROOT / shipped} ({holder})" in ok.stdout
    assert "Extra inputs" not in ok.stdout
    # a mistake inside is still named by its path in the config
    doc = yaml.safe_load((ROOT / shipped).read_text())
    if "data" in doc:
        inner = yaml.safe_load(doc["data"]["config.yaml"])
        inner["probe"] = {"interval_seconds": -1}
        doc["data"]["config.yaml"] = yaml.safe_dump(inner)
    else:
        doc["config"]["probe"]["interval_seconds"] = -1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    refused = subprocess.run([*cli, "validate", str(bad)], capture_output=True, text=True,
                             env=env, timeout=60)  # fmt: skip
    assert refused.returncode == 2 and "probe.interval_seconds" in refused.stdout


def test_validate_names_a_configmap_without_a_config(tmp_path: Path) -> None:
    cli = [sys.executable, "-c", "from controller.cli import main; raise SystemExit(main())"]
    path = tmp_path / "cm.yaml"
    path.write_text("kind: ConfigMap\nmetadata: {name: other}\ndata: {a: '1', b: '2'}\n")
    out = subprocess.run([*cli, "validate", str(path)], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 2 and "ConfigMap other has no config.yaml key (a, b)" in out.stdout


def test_configmap_config_points_at_the_example_cluster(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(_one("ConfigMap")["data"]["config.yaml"], encoding="utf-8")
    cfg = load_config(path)
    statefulset, service = _one("StatefulSet", EXAMPLE), _one("Service", EXAMPLE)
    name, replicas = statefulset["metadata"]["name"], _initial_size()
    port = {p["name"]: p["containerPort"] for p in _container(statefulset)["ports"]}["redis"]
    pods = {f"{name}-{i}.{service['metadata']['name']}:{port}" for i in range(replicas)}
    assert cfg.cluster.seeds and set(cfg.cluster.seeds) <= pods
    shards = replicas // (1 + cfg.shards.replicas_per_shard)
    assert shards * (1 + cfg.shards.replicas_per_shard) == replicas
    assert cfg.shards.min_shards <= shards <= cfg.shards.max_shards
    assert cfg.http.port == 8080 and cfg.cluster.password is None


# -- the example Redis/Valkey Cluster --------------------------------------------------------


def _initial_size() -> int:
    """The example's first size: what the bootstrap Job forms (the StatefulSet itself
    declares none, so applying it again never resets what the operator scaled to)."""
    env = {k: v.get("value") for k, v in _env(_container(_one("Job", EXAMPLE))).items()}
    return int(env["NODES"] or 0)


def test_example_statefulset_is_a_cluster_slotpilot_can_manage() -> None:
    statefulset, service = _one("StatefulSet", EXAMPLE), _one("Service", EXAMPLE)
    spec, container = statefulset["spec"], _container(statefulset)
    assert re.fullmatch(r"valkey/valkey:\d+\.\d+\.\d+", container["image"])
    script = "\n".join(container["command"] + container["args"])
    assert "cluster-enabled yes" in script
    assert "cluster-announce-ip ${POD_IP}" in script
    env = _env(container)
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert "--requirepass" not in script and "-a " not in script, "password never on argv"
    assert 'requirepass "${REDIS_PASSWORD}"' in script
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"redis": 6379, "cluster-bus": 16379}
    # the operator owns the count (an apply never resets it) and deletes claims itself
    assert "replicas" not in spec
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert term["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    assert spec["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_bootstrap_job_targets_the_statefulset() -> None:
    job, statefulset = _one("Job", EXAMPLE), _one("StatefulSet", EXAMPLE)
    container = _container(job)
    env = {k: v.get("value") for k, v in _env(container).items()}
    assert container["image"] == _container(statefulset)["image"]
    assert env["STATEFULSET"] == statefulset["metadata"]["name"]
    assert env["SERVICE"] == statefulset["spec"]["serviceName"]
    assert int(env["NODES"] or 0) == _initial_size()
    assert f"--replicas {_initial_size()}" in (EXAMPLE / "statefulset.yaml").read_text()
    assert int(env["REPLICAS_PER_SHARD"] or 0) == _config()["shards"]["replicas_per_shard"]
    assert int(env["WAIT_TRIES"] or 0) * int(env["WAIT_SECONDS"] or 0) > 0, "bounded waits"
    script = container["args"][0]
    assert "--cluster create" in script and "--cluster-yes" in script
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    selector = statefulset["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= pod_labels.items(), "the Job's pod is no cluster member"
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")
    assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["activeDeadlineSeconds"] > 0


def test_bootstrap_script_is_valid_posix_sh() -> None:
    script = _container(_one("Job", EXAMPLE))["args"][0]
    proc = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
