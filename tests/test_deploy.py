"""The deployment files (issue 12 item 5) agree with the code. No container engine runs
here, so what cannot run is checked by what can: every YAML file parses; every config
the files hand a node (the image's TOML, the compose TOML, the Kubernetes ConfigMap, and
the MIRROR_* variables beside them) loads with `mirror.config.load`, so each key exists
in the schema; the port, the data dir and the user agree between the Dockerfile, the
configs and the manifests; the health check, probes and scrape path name routes the
daemon serves; the compose nodes and the StatefulSet's pods list each other by the names
their Services give them; every file a compose service mounts exists.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mirror import config
from mirror.app import build_app

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
# Written by the metrics work of the same issue; checked once they are there.
METRICS_FILES = {DEPLOY / "prometheus" / "alerts.yml", DEPLOY / "grafana" / "model-mirror.json"}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        instruction, _, args = (pending + line).strip().partition(" ")
        out.append((instruction.upper(), args.strip()))
        pending = ""
    return out


def one(instructions: list[tuple[str, str]], name: str) -> str:
    found = [args for instr, args in instructions if instr == name]
    assert len(found) == 1, (name, found)
    return found[0]


def load_toml(text: str, tmp_path: Path, env: dict[str, str] | None = None) -> config.Config:
    """The config a node gets from this TOML and these variables. Every MIRROR_* variable
    must name a key (load alone only warns about a table that does not exist)."""
    env = env or {}
    ours = [k for k in env if k.startswith("MIRROR_") and k not in config._ENV_IGNORED]
    assert sum(map(len, config._env_overrides(env).values())) == len(ours), ours
    path = tmp_path / "deploy.toml"
    path.write_text(text)
    return config.load(path, env=env)


def app_paths() -> set[str]:
    """Every path the daemon's application routes (built, not started: no node opens)."""
    app = build_app(config.load(None, env={}))
    return {r.canonical for r in app.router.resources()}


def yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


IMAGE_CONFIG = config.load(DEPLOY / "container.toml", env={})


def test_every_yaml_file_parses() -> None:
    files = sorted(p for ext in ("*.yml", "*.yaml") for p in DEPLOY.rglob(ext))
    assert len(files) >= 9, files
    for path in files:
        assert yaml_docs(path), path


# --- the image ---------------------------------------------------------------------------------


def test_dockerfile_small_non_root_volume_port_and_config() -> None:
    instr = dockerfile()
    froms = [args for i, args in instr if i == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS build")  # multi-stage: no build tools in the image
    base = one([i for i in instr if i[0] == "ARG"], "ARG")
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11-slim(-\w+)?", base)
    user = one(instr, "USER")
    assert re.fullmatch(r"[1-9]\d{3,}:[1-9]\d{3,}", user), user  # numeric and not root
    assert one(instr, "EXPOSE") == str(IMAGE_CONFIG.server.port) == "8090"
    assert IMAGE_CONFIG.server.host == "0.0.0.0"
    assert one(instr, "VOLUME") == f'["{IMAGE_CONFIG.store.data_dir}"]'
    last = max(i for i, (name, _args) in enumerate(instr) if name == "FROM")
    run = one(instr[last:], "RUN")  # the image's own stage
    assert "--mount=type=bind,from=build" in run and "--no-cache-dir" in run  # no wheels or pip cache kept
    assert f"install -d -o {user.split(':')[0]} -g {user.split(':')[1]}" in run and run.endswith(IMAGE_CONFIG.store.data_dir)
    env = dict(kv.split("=", 1) for kv in re.findall(r"\S+=\S+", one(instr, "ENV")))
    copies = dict(reversed(args.split()) for i, args in instr if i == "COPY" and args.startswith("deploy/"))
    assert copies[env["MIRROR_CONFIG"]] == "deploy/container.toml"
    assert one(instr, "ENTRYPOINT") == '["mirror"]' and one(instr, "CMD") == '["serve"]'
    # The build context is the repository root; the ignore file lets in what the stages copy.
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for src in ["pyproject.toml", "README.md", "mirror/", *copies.values()]:
        assert f"!{src}" in ignore, src


def test_healthcheck_uses_the_images_python_on_a_real_route() -> None:
    instr = dockerfile()
    check = one(instr, "HEALTHCHECK")
    cmd = yaml.safe_load(check.split(" CMD ", 1)[1])  # the exec form is a JSON list
    assert cmd[0] == "python" and "curl" not in check  # python is in the base image; curl is not
    copies = dict(reversed(args.split()) for i, args in instr if i == "COPY" and args.startswith("deploy/"))
    script = ROOT / copies[cmd[1]]
    assert script == DEPLOY / "healthcheck.py"
    paths = re.findall(r'"[^"]*(/\w+)"', script.read_text())
    assert paths == ["/healthz"] and "/healthz" in app_paths()


# --- compose -----------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml_docs(DEPLOY / "compose.yml")[0]


def node_config(service: dict[str, Any], tmp_path: Path) -> config.Config:
    """The config a compose node runs with: the TOML mounted over the image's, and its
    environment (load fails on any key the schema lacks)."""
    mounted = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"] if v.startswith("./")}
    toml = (DEPLOY / mounted["/etc/model-mirror/config.toml"]).read_text()
    return load_toml(toml, tmp_path, {k: str(v) for k, v in service.get("environment", {}).items()})


def test_compose_nodes_peer_with_each_other(tmp_path: Path) -> None:
    services = compose()["services"]
    nodes = sorted(name for name in services if name.startswith("node-"))
    assert nodes == ["node-0", "node-1", "node-2"]
    configs = {n: node_config(services[n], tmp_path) for n in nodes}
    for name, cfg in configs.items():
        others = {f"http://{o}:{configs[o].server.port}" for o in nodes if o != name}
        assert others <= set(cfg.peers.nodes), (name, cfg.peers.nodes)
        assert cfg.peers.advertise_url == f"http://{name}:{cfg.server.port}"
        assert cfg.server.host == "0.0.0.0"
        published = [p.split(":")[1] for p in services[name]["ports"]]
        assert published == [str(cfg.server.port)]
        # Its own named volume on the data dir.
        data = [v for v in services[name]["volumes"] if v.endswith(f":{cfg.store.data_dir}")]
        assert data == [f"{name}:{cfg.store.data_dir}"] and name in compose()["volumes"]
        assert services[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"
        # Archive packs in the MinIO service, each node under its own prefix.
        assert cfg.archive.url == f"s3://mirror-archive/{name}" and cfg.s3.endpoint == "http://minio:9000"
        assert services[name]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
        assert "mirror-archive" in services["minio-init"]["entrypoint"][-1] and "minio" in services
    # The init service trusts every node's key on every other node, and makes the tokens
    # Prometheus reads.
    init = services["init"]
    script = (DEPLOY / [v for v in init["volumes"] if v.endswith(":/init.sh:ro")][0][2:].split(":")[0]).read_text()
    for n in nodes:
        assert f"{n}:/data/{n}" in init["volumes"]
    assert "mirror keys show --data-dir /data/node-$i" in script and 'mirror keys trust "$key"' in script
    assert "mirror token create --role auditor" in script and "token=/tokens/node-$i" in script
    assert "tokens:/tokens" in init["volumes"]


def test_compose_mounts_exist_and_prometheus_scrapes_every_node(tmp_path: Path) -> None:
    doc = compose()
    services = doc["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                path = (DEPLOY / source).resolve()
                if path in METRICS_FILES and not path.exists():
                    continue  # checked below, once the metrics work has written it
                assert path.exists(), (name, volume)
            else:
                assert source in doc["volumes"], (name, volume)
    prom = services["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prom["volumes"]}
    conf = yaml_docs(DEPLOY / mounts["/etc/prometheus/prometheus.yml"][2:])[0]
    assert conf["rule_files"] == ["/etc/prometheus/alerts.yml"] and mounts["/etc/prometheus/alerts.yml"] == "./prometheus/alerts.yml"
    jobs = [j for j in conf["scrape_configs"] if j["job_name"].startswith("model-mirror")]
    targets = {t for j in jobs for sc in j["static_configs"] for t in sc["targets"]}
    nodes = {n: node_config(services[n], tmp_path) for n in services if n.startswith("node-")}
    assert targets == {f"{n}:{cfg.server.port}" for n, cfg in nodes.items()}
    for job in jobs:
        node = job["static_configs"][0]["targets"][0].split(":")[0]
        # The token of that node, from the volume the init service fills.
        assert job["authorization"]["credentials_file"] == f"/etc/prometheus/tokens/{node}"
        assert {"target_label": "job", "replacement": "model-mirror"} in job["relabel_configs"]
    assert mounts["/etc/prometheus/tokens"] == "tokens" and "tokens:/tokens" in services["init"]["volumes"]
    paths = app_paths()
    metrics_path = {j["metrics_path"] for j in jobs}
    assert metrics_path == {"/metrics"}
    if "/metrics" not in paths:
        pytest.skip("/metrics is not routed yet (the metrics work of issue 12 adds it)")


def test_prometheus_config_passes_promtool() -> None:
    """Prometheus' own check of the scrape config (syntax: the files it names exist only
    inside the container). .ci/run installs promtool (Debian's `prometheus` package)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    proc = subprocess.run([promtool, "check", "config", "--syntax-only", str(DEPLOY / "prometheus" / "prometheus.yml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr


def test_grafana_is_provisioned_with_the_dashboard() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    provisioning = DEPLOY / mounts["/etc/grafana/provisioning"][2:]
    source = yaml_docs(provisioning / "datasources" / "prometheus.yml")[0]["datasources"][0]
    assert source["url"] == "http://prometheus:9090" and source["uid"] == "prometheus"
    provider = yaml_docs(provisioning / "dashboards" / "model-mirror.yml")[0]["providers"][0]
    dashboard = [target for target, src in mounts.items() if src == "./grafana/model-mirror.json"]
    assert dashboard == [f"{provider['options']['path']}/model-mirror.json"]
    missing = [p for p in METRICS_FILES if not p.exists()]
    if missing:
        pytest.skip(f"{', '.join(str(p.relative_to(ROOT)) for p in missing)}: written by the metrics work of issue 12")


# --- Kubernetes --------------------------------------------------------------------------------


def k8s() -> dict[tuple[str, str], Any]:
    kust = yaml_docs(DEPLOY / "k8s" / "kustomization.yaml")[0]
    out = {}
    for name in kust["resources"]:
        for doc in yaml_docs(DEPLOY / "k8s" / name):
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def test_k8s_statefulset_services_probes_and_config(tmp_path: Path) -> None:
    objs = k8s()
    sts = objs[("StatefulSet", "mirror")]
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    headless = objs[("Service", spec["serviceName"])]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    service = objs[("Service", "mirror")]
    for svc in (headless, service):
        assert svc["spec"]["selector"].items() <= labels.items()
    pdb = objs[("PodDisruptionBudget", "mirror")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items() and pdb["spec"]["maxUnavailable"] == 1

    (container,) = pod["containers"]
    cm = objs[("ConfigMap", [v for v in pod["volumes"] if v["name"] == "config"][0]["configMap"]["name"])]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    image_env = dict(kv.split("=", 1) for kv in re.findall(r"\S+=\S+", one(dockerfile(), "ENV")))
    assert f"{mounts['config']}/config.toml" == image_env["MIRROR_CONFIG"]
    env = {e["name"]: e.get("value", "0" * 64) for e in container["env"] if e["name"].startswith("MIRROR_")}
    replicas, name = spec["replicas"], sts["metadata"]["name"]
    for i in range(replicas):  # each pod's config, its own name in the $(POD_NAME) places
        pod_env = {k: v.replace("$(POD_NAME)", f"{name}-{i}") for k, v in env.items()}
        cfg = load_toml(cm["data"]["config.toml"], tmp_path, pod_env)
        port = cfg.server.port
        assert cfg.peers.nodes == tuple(f"http://{name}-{j}.{headless['metadata']['name']}:{port}" for j in range(replicas))
        assert cfg.peers.advertise_url == cfg.peers.nodes[i]
    assert cfg.server.log_format == "json" and cfg.store.data_dir == mounts["data"] == IMAGE_CONFIG.store.data_dir
    assert [t["metadata"]["name"] for t in spec["volumeClaimTemplates"]] == ["data"]  # a volume per node
    (http,) = container["ports"]
    assert http["containerPort"] == port and http["name"] == "http"
    for svc in (headless, service):
        assert svc["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http"}]

    routes = app_paths()
    probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "liveness", "readiness")}
    assert {k: p["path"] for k, p in probes.items()} == {"startup": "/healthz", "liveness": "/healthz", "readiness": "/readyz"}
    assert all(p["port"] == "http" and p["path"] in routes for p in probes.values())

    uid = int(one(dockerfile(), "USER").split(":")[0])
    sec = pod["securityContext"]
    assert sec["runAsNonRoot"] is True and sec["runAsUser"] == uid and sec["fsGroup"] == uid
    for c in [*pod["initContainers"], container]:
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    # The key each pod installs, and the trust list, come from the Secret make-keys.sh prints.
    trust = [e for e in container["env"] if e["name"] == "MIRROR_PEERS_TRUST"][0]["valueFrom"]["secretKeyRef"]
    keys = [v for v in pod["volumes"] if v["name"] == "keys"][0]["secret"]["secretName"]
    assert trust["name"] == keys == "mirror-keys"
    script = (DEPLOY / "k8s" / "make-keys.sh").read_text()
    assert "name: mirror-keys" in script and "trust:" in script and 'mirror-$i.key' in script
    assert '"/keys/$POD_NAME.key" /data/keys/node.key' in pod["initContainers"][0]["command"][-1]
