"""The container and Kubernetes files, checked as contracts (no container engine exists here).

They are parsed, not run. First, each is valid against the published schema of its format
(``tests/manifest_schemas.py`` says where each comes from): the Compose files against the Compose
Specification, the RayCluster against the KubeRay operator's CRD, every other Kubernetes object
against the Kubernetes API; a misspelt field or a wrong type fails, as it would on
``docker compose`` or ``kubectl apply``. Then, what no schema knows: every service the API needs
exists, the environment they set names real fields of ``service.settings.Settings`` and parses into
it, versions agree with ``pyproject.toml``, images are pinned, health checks and start order are
declared, and secrets come from outside the repository.
"""

from __future__ import annotations

import copy
import functools
import operator
import os
import re
import shlex
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from manifest_schemas import (
    KUBERAY_CRD,
    compose_validator,
    crd_validator,
    kubernetes_errors,
    kubernetes_versions,
    schema_errors,
)
from packaging.specifiers import SpecifierSet
from sqlalchemy.engine import make_url

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "cluster" / "k8s"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
GEONAS_ROLES = ("ray-head", "ray-worker", "api")
# A value standing in for each secret the user puts in .env.
FAKE_SECRETS = {"POSTGRES_PASSWORD": "pw-from-env", "RAY_AUTH_TOKEN": "token-from-env"}
# The manifests must apply on the oldest and the newest Kubernetes whose API schemas we have.
KUBERNETES_VERSIONS = (kubernetes_versions()[0], kubernetes_versions()[-1])


# --- helpers -------------------------------------------------------------------------------


def ray_pin() -> str:
    for requirement in PYPROJECT["project"]["dependencies"]:
        match = re.fullmatch(r"ray(\[[^\]]*\])?==(?P<version>[\w.]+)", requirement)
        if match:
            return match["version"]
    raise AssertionError("pyproject.toml must pin ray with ==")


def dotenv_example() -> dict[str, str]:
    """.env.example's variables, commented-out optional ones included (value '')."""
    found = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            value = "" if line.lstrip().startswith("#") else match[2]
            found.setdefault(match[1], value)
    return found


INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, as `docker compose` resolves them."""

    def replace(match: re.Match) -> str:
        current = env.get(match["name"], "")
        if match["op"] in (":-", "-"):
            return current or match["arg"]
        if match["op"] in (":?", "?") and not current:
            raise ValueError(f"{match['name']} is required: {match['arg']}")
        return current

    return INTERPOLATION.sub(replace, value.replace("$$", "\0")).replace("\0", "$")


def resolved(node, env: dict[str, str]):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: resolved(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [resolved(value, env) for value in node]
    return node


def user_env() -> dict[str, str]:
    """What a user's .env holds after following .env.example: its defaults plus the secrets."""
    return {**{k: v for k, v in dotenv_example().items() if v}, **FAKE_SECRETS}


@pytest.fixture(scope="module")
def compose_raw() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def compose(compose_raw) -> dict:
    return resolved(compose_raw, user_env())


def settings_from(env: dict[str, str | None]) -> Settings:
    """Build Settings exactly as the container would: from its environment, no .env file."""
    present = {k: v for k, v in env.items() if v is not None}
    unknown = [
        k for k in present if k.startswith("GEONAS_") and k.removeprefix("GEONAS_").lower() not in Settings.model_fields
    ]
    assert not unknown, f"not fields of service.settings.Settings: {unknown}"
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith("GEONAS_") or k == "RAY_ADDRESS"]:
            del os.environ[key]
        os.environ.update({k: str(v) for k, v in present.items()})
        return Settings(_env_file=None)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def dockerfile_args() -> dict[str, str]:
    text = (ROOT / "cluster" / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))


def image_tag(image: str) -> str:
    name = image.rsplit("/", 1)[-1]
    assert ":" in name and "@" not in name or "@sha256:" in image, f"image {image!r} is not pinned"
    return name.split(":", 1)[1] if ":" in name else ""


def load_k8s(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def k8s_objects() -> dict[tuple[str, str], dict]:
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_k8s(path.name):
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def pod_specs(doc: dict) -> list[dict]:
    if doc["kind"] == "RayCluster":
        groups = [doc["spec"]["headGroupSpec"], *doc["spec"].get("workerGroupSpecs", [])]
        return [group["template"]["spec"] for group in groups]
    if doc["kind"] == "Deployment":
        return [doc["spec"]["template"]["spec"]]
    return []


def with_key_renamed(doc: dict, path: tuple, new_key: str) -> dict:
    """A copy of ``doc`` with the field at ``path`` renamed (a typo); ``doc`` itself is left alone."""
    edited = copy.deepcopy(doc)
    *parents, old_key = path
    parent = functools.reduce(operator.getitem, parents, edited)
    parent[new_key] = parent.pop(old_key)
    return edited


def with_value(doc: dict, path: tuple, value) -> dict:
    """A copy of ``doc`` with ``value`` at ``path``; ``doc`` itself is left alone."""
    edited = copy.deepcopy(doc)
    *parents, key = path
    functools.reduce(operator.getitem, parents, edited)[key] = value
    return edited


# --- the image -------------------------------------------------------------------------------


def test_dockerfile_pins_python_and_ray_to_pyproject():
    args = dockerfile_args()
    assert args["RAY_VERSION"] == ray_pin()
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["PYTHON_VERSION"]), "pin the Python patch version"
    assert args["PYTHON_VERSION"] in SpecifierSet(PYPROJECT["project"]["requires-python"])
    base = re.search(r"^FROM (\S+)", (ROOT / "cluster" / "Dockerfile").read_text(), flags=re.M)[1]
    assert base.replace("${PYTHON_VERSION}", args["PYTHON_VERSION"]) == (
        f"python:{args['PYTHON_VERSION']}-slim-bookworm"
    )


def test_dockerfile_installs_the_whole_project_as_a_non_root_user():
    text = (ROOT / "cluster" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", text, flags=re.M))
    packages = {p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"packages not copied into the image: {packages - copied}"
    assert re.search(r'^RUN pip install \. "ray\[[^\]]+\]==\$\{RAY_VERSION\}"', text, flags=re.M)
    users = re.findall(r"^USER (\S+)$", text, flags=re.M)
    assert users and users[-1] not in ("root", "0"), "the image must end as a non-root user"
    assert re.search(r"useradd --uid 1000 .*\b" + re.escape(users[-1]) + r"\b", text)


def test_dockerfile_has_a_cpu_and_a_cuda_variant():
    text = (ROOT / "cluster" / "Dockerfile").read_text()
    assert dockerfile_args()["VARIANT"] == "cpu"
    assert '"$VARIANT" = "cpu"' in text and '"$VARIANT" = "cuda"' in text
    # Anything else fails the build rather than silently building one of the two.
    assert "exit 1" in text


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build():
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for entry in (".env", ".git", ".venv", ".geonas"):
        assert entry in ignored
    assert "!.env.example" in ignored


# --- docker compose --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["docker-compose.yml", "cluster/compose.gpu.yml"])
def test_compose_files_follow_the_compose_specification(name):
    # Checked as `docker compose` checks them: after interpolating the user's .env.
    document = resolved(yaml.safe_load((ROOT / name).read_text()), user_env())
    assert schema_errors(compose_validator(), document) == []


def test_the_compose_check_rejects_what_docker_compose_rejects(compose):
    def errors(document):
        return "\n".join(schema_errors(compose_validator(), document))

    assert errors(compose) == ""
    # A misspelt field: Compose knows no `retry` (it is `retries`), nor a service's `depend_on`.
    assert "'retry'" in errors(with_key_renamed(compose, ("services", "api", "healthcheck", "retries"), "retry"))
    assert "'depend_on'" in errors(with_key_renamed(compose, ("services", "api", "depends_on"), "depend_on"))
    # A wrong type, and a value the specification does not have.
    assert "is not of type 'array'" in errors(with_value(compose, ("services", "api", "ports"), 8000))
    condition = ("services", "api", "depends_on", "postgres", "condition")
    assert "/services/api/depends_on" in errors(with_value(compose, condition, "service_up"))


def test_compose_has_every_service_the_api_needs(compose):
    assert set(compose["services"]) >= {"ray-head", "ray-worker", "api", "postgres"}


def test_geonas_roles_share_one_pinned_image_built_from_the_dockerfile(compose):
    images = {compose["services"][role]["image"] for role in GEONAS_ROLES}
    assert len(images) == 1, images
    (image,) = images
    assert image == f"geonas:{PYPROJECT['project']['version']}-cpu"
    for role in GEONAS_ROLES:
        build = compose["services"][role]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == ROOT / "cluster" / "Dockerfile"


def test_every_image_is_pinned(compose):
    for name, service in compose["services"].items():
        tag = image_tag(service["image"])
        assert tag and tag != "latest", f"{name}: {service['image']}"
        if name == "postgres":
            assert re.match(r"\d+\.\d+", tag), "pin PostgreSQL to a minor version"


def test_api_environment_is_valid_settings_that_reach_the_other_services(compose):
    services = compose["services"]
    api = services["api"]
    settings = settings_from(api["environment"])
    assert settings.api_host == "0.0.0.0"  # reachable through the published port
    published = [p.rsplit(":", 1) for p in api["ports"]]
    assert [container for _, container in published] == [str(settings.api_port)]
    assert published[0][0].startswith("127.0.0.1:"), "publish the API on loopback by default"

    # The Ray address names the head service and the port its `ray start --port` opens.
    host, port = settings.ray_address.rsplit(":", 1)
    assert host in services and host == "ray-head"
    assert f"--port={port}" in shlex.split(services["ray-head"]["command"])

    # The database URL: the postgres service, its user/db/password from .env, a driver we install.
    url = make_url(settings.database_url)
    postgres_env = services["postgres"]["environment"]
    assert url.host in services and url.drivername == "postgresql+psycopg"
    assert (url.username, url.password, url.database) == (
        postgres_env["POSTGRES_USER"],
        FAKE_SECRETS["POSTGRES_PASSWORD"],
        postgres_env["POSTGRES_DB"],
    )
    url.get_dialect().import_dbapi()  # psycopg really is installed (pyproject dependency)

    assert settings.storage_path == "/data/storage"
    assert settings.data_roots == [Path("/data/datasets")]
    assert settings.dashboard_url == "http://localhost:8265"


def test_ray_roles_share_token_auth_storage_and_data(compose):
    services = compose["services"]
    for role in GEONAS_ROLES:
        env = services[role]["environment"]
        assert env["RAY_AUTH_MODE"] == "token", role
        assert env["RAY_AUTH_TOKEN"] == FAKE_SECRETS["RAY_AUTH_TOKEN"], role
        settings = settings_from({k: v for k, v in env.items() if k.startswith("GEONAS_")})
        mounts = dict(volume.split(":")[::-1] for volume in services[role]["volumes"])
        assert mounts[settings.storage_path] == "geonas-storage", role
        assert mounts["/data/datasets"] == "geonas-datasets", role
    assert {"geonas-storage", "geonas-datasets", "postgres-data"} <= set(compose["volumes"])


def test_object_store_uri_reaches_every_ray_role():
    env = {**user_env(), "STORAGE_URI": "s3://geonas-runs/prod"}
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for role in GEONAS_ROLES:
        environment = resolved(raw["services"][role]["environment"], env)
        assert settings_from(environment).resolved_storage_path == "s3://geonas-runs/prod"
        # Object-store credentials pass through from .env, unset (not empty) when absent.
        assert environment["AWS_ENDPOINT_URL"] is None


def test_workers_scale_and_join_the_head(compose):
    worker = compose["services"]["ray-worker"]
    assert "container_name" not in worker and "ports" not in worker, "--scale needs neither"
    assert "--address=ray-head:6379" in shlex.split(worker["command"])
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"


def test_dashboard_is_published_on_loopback_only(compose):
    head = compose["services"]["ray-head"]
    command = shlex.split(head["command"])
    assert "--head" in command and "--block" in command
    dashboard_port = next(a.split("=")[1] for a in command if a.startswith("--dashboard-port="))
    for mapping in head["ports"]:
        assert mapping.startswith("127.0.0.1:") and mapping.endswith(f":{dashboard_port}")


def test_every_service_has_a_health_check_and_start_order_waits_for_it(compose):
    services = compose["services"]
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services
            assert rule["condition"] == "service_healthy", f"{name} -> {dependency}"
    assert set(services["api"]["depends_on"]) == {"postgres", "ray-head"}


def test_health_checks_probe_the_ports_the_services_open(compose):
    services = compose["services"]
    api_check = " ".join(services["api"]["healthcheck"]["test"])
    port = services["api"]["environment"]["GEONAS_API_PORT"]
    assert f"localhost:{port}/healthz" in api_check
    head_check = " ".join(services["ray-head"]["healthcheck"]["test"])
    assert "/api/gcs_healthz" in head_check and "/api/local_raylet_healthz" in head_check
    for role in ("ray-head", "ray-worker"):
        agent_port = next(
            a.split("=")[1]
            for a in shlex.split(services[role]["command"])
            if a.startswith("--dashboard-agent-listen-port=")
        )
        assert f"localhost:{agent_port}/api/local_raylet_healthz" in " ".join(services[role]["healthcheck"]["test"])
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])


def test_secrets_come_from_an_uncommitted_env_file(compose_raw):
    text = (ROOT / "docker-compose.yml").read_text()
    for secret in FAKE_SECRETS:
        assert f"${{{secret}:?" in text, f"{secret} must be required from .env, with no default"
        assert dotenv_example()[secret] == "", f".env.example must not ship a value for {secret}"
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    # Compose refuses to start without them, naming the variable.
    env = {k: v for k, v in user_env().items() if k != "RAY_AUTH_TOKEN"}
    with pytest.raises(ValueError, match="RAY_AUTH_TOKEN"):
        resolved(compose_raw, env)


def test_env_example_documents_every_variable_compose_reads():
    text = (ROOT / "docker-compose.yml").read_text() + (ROOT / "cluster" / "compose.gpu.yml").read_text()
    used = {match["name"] for match in INTERPOLATION.finditer(text)}
    passed_through = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"}
    assert used | passed_through <= set(dotenv_example()), used - set(dotenv_example())
    # Its names must not be geonas settings: Settings reads a .env in the working directory too.
    assert not [name for name in dotenv_example() if name.startswith("GEONAS_")]


def test_roles_run_the_cli_and_ray_the_image_provides(compose):
    assert PYPROJECT["project"]["scripts"]["geonas"]
    assert compose["services"]["api"]["command"] == ["geonas", "serve"]
    for role in ("ray-head", "ray-worker"):
        assert shlex.split(compose["services"][role]["command"])[:2] == ["ray", "start"]


def test_gpu_override_reserves_gpus_for_workers_only():
    override = resolved(yaml.safe_load((ROOT / "cluster" / "compose.gpu.yml").read_text()), user_env())
    assert set(override["services"]) == {"ray-worker"}
    worker = override["services"]["ray-worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    num_gpus = next(a for a in shlex.split(worker["command"]) if a.startswith("--num-gpus="))
    assert num_gpus == f"--num-gpus={device['count']}"


# --- Kubernetes (KubeRay) --------------------------------------------------------------------


@pytest.fixture(scope="module")
def raycluster() -> dict:
    (doc,) = load_k8s("raycluster.yaml")
    return doc


@pytest.fixture(scope="module")
def raycluster_errors(raycluster):
    """What a Kubernetes API server with the KubeRay CRD installed rejects in a RayCluster."""
    if not KUBERAY_CRD.exists():
        pytest.skip(f"the KubeRay CRD is not at {KUBERAY_CRD} (shared/data/kuberay-crd)")
    validator = crd_validator(raycluster["apiVersion"], "RayCluster", KUBERNETES_VERSIONS[-1])
    return lambda doc: "\n".join(schema_errors(validator, doc))


def test_raycluster_matches_the_kuberay_crd(raycluster, raycluster_errors):
    assert raycluster["apiVersion"] == "ray.io/v1"  # the CRD's served and storage version
    assert raycluster_errors(raycluster) == ""
    # What the CRD leaves to the operator, which refuses the cluster otherwise.
    names = [group["groupName"] for group in raycluster["spec"]["workerGroupSpecs"]]
    assert len(names) == len(set(names)), "worker group names must be unique"
    for group in raycluster["spec"]["workerGroupSpecs"]:
        assert group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
        # Required by KubeRay before v1.2 (the README supports v1.1), so always given.
        assert "rayStartParams" in group


def test_the_crd_check_rejects_a_misspelt_field(raycluster, raycluster_errors):
    # Kubernetes would silently drop these fields; here they are errors.
    head_params = ("spec", "headGroupSpec", "rayStartParams")
    assert "'rayStartParam' was unexpected" in raycluster_errors(
        with_key_renamed(raycluster, head_params, "rayStartParam")
    )
    replicas = ("spec", "workerGroupSpecs", 0, "replicas")
    assert "'replica' was unexpected" in raycluster_errors(with_key_renamed(raycluster, replicas, "replica"))
    # Deep in the pod template (a core/v1 PodSpec inlined in the CRD) and in the metadata.
    container = ("spec", "workerGroupSpecs", 1, "template", "spec", "containers", 0)
    mounts = (*container, "volumeMounts")
    assert "'volumeMount' was unexpected" in raycluster_errors(with_key_renamed(raycluster, mounts, "volumeMount"))
    assert "'lables' was unexpected" in raycluster_errors(
        with_key_renamed(raycluster, ("metadata", "labels"), "lables")
    )


def test_the_crd_check_rejects_a_wrong_type_or_a_missing_field(raycluster, raycluster_errors):
    num_cpus = ("spec", "headGroupSpec", "rayStartParams", "num-cpus")
    assert "0 is not of type 'string'" in raycluster_errors(with_value(raycluster, num_cpus, 0))
    replicas = ("spec", "workerGroupSpecs", 0, "replicas")
    assert "'1' is not of type 'integer'" in raycluster_errors(with_value(raycluster, replicas, "1"))
    upscaling = ("spec", "autoscalerOptions", "upscalingMode")
    assert "is not one of" in raycluster_errors(with_value(raycluster, upscaling, "Fast"))
    nameless = copy.deepcopy(raycluster)
    del nameless["spec"]["workerGroupSpecs"][0]["groupName"]
    assert "'groupName' is a required property" in raycluster_errors(nameless)
    # Two containers of one name: the pod's containers are a list-type map keyed by name.
    containers = ("spec", "headGroupSpec", "template", "spec", "containers")
    twice = with_value(
        raycluster, containers, raycluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"] * 2
    )
    assert "duplicate entry for {'name': 'ray-head'}" in raycluster_errors(twice)


def test_the_crd_check_takes_int_or_string_quantities_as_kubernetes_does(raycluster, raycluster_errors):
    cpu_limit = ("spec", "workerGroupSpecs", 0, "template", "spec", "containers", 0, "resources", "limits", "cpu")
    assert raycluster_errors(with_value(raycluster, cpu_limit, 4)) == ""
    assert raycluster_errors(with_value(raycluster, cpu_limit, "4")) == ""
    assert "is not valid under any of the given schemas" in raycluster_errors(with_value(raycluster, cpu_limit, [4]))


def test_a_typo_in_a_copy_of_the_manifest_fails_the_check(raycluster_errors, tmp_path):
    manifest = (K8S / "raycluster.yaml").read_text()
    assert manifest.count("      replicas: 1\n") == 1
    copied = tmp_path / "raycluster.yaml"
    copied.write_text(manifest.replace("      replicas: 1\n", "      replica: 1\n"))
    (doc,) = [doc for doc in yaml.safe_load_all(copied.read_text()) if doc]
    assert "/spec/workerGroupSpecs/0: Additional properties are not allowed ('replica' was unexpected)" in (
        raycluster_errors(doc)
    )


BUILTIN_OBJECTS = sorted(key for key in k8s_objects() if key[0] != "RayCluster")


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kind, name", BUILTIN_OBJECTS, ids=[f"{kind}/{name}" for kind, name in BUILTIN_OBJECTS])
def test_kubernetes_objects_match_the_kubernetes_api(kind, name, kubernetes_version):
    assert kubernetes_errors(k8s_objects()[(kind, name)], kubernetes_version) == []


def test_the_kubernetes_check_rejects_what_kubectl_apply_rejects():
    deployment = k8s_objects()[("Deployment", "geonas-api")]
    version = KUBERNETES_VERSIONS[-1]
    container = ("spec", "template", "spec", "containers", 0)
    probe = (*container, "readinessProbe")
    (error,) = kubernetes_errors(with_key_renamed(deployment, probe, "readinesProbe"), version)
    assert "'readinesProbe' was unexpected" in error
    (error,) = kubernetes_errors(with_value(deployment, ("spec", "replicas"), "1"), version)
    assert "'1' is not of type 'integer'" in error
    # Ports are int-or-string, as on the API server: a number or a port's name, nothing else.
    service = k8s_objects()[("Service", "geonas-api")]
    target_port = ("spec", "ports", 0, "targetPort")
    assert kubernetes_errors(with_value(service, target_port, 8000), version) == []
    assert kubernetes_errors(with_value(service, target_port, "http"), version) == []
    assert kubernetes_errors(with_value(service, target_port, 8000.5), version) != []


def test_raycluster_autoscales_with_an_optional_gpu_group(raycluster):
    spec = raycluster["spec"]
    assert spec["rayVersion"] == ray_pin()
    assert spec["enableInTreeAutoscaling"] is True
    groups = {group["groupName"]: group for group in spec["workerGroupSpecs"]}
    assert groups["cpu"]["maxReplicas"] > groups["cpu"]["minReplicas"]
    gpu = groups["gpu"]
    assert gpu["minReplicas"] == 0, "the GPU group must cost nothing until trials ask for GPUs"
    (container,) = gpu["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["image"].endswith("-cuda")
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP", "never expose the dashboard publicly"


def test_every_ray_container_and_the_autoscaler_use_token_auth(raycluster):
    envs = [spec["containers"][0]["env"] for spec in pod_specs(raycluster)]
    envs.append(raycluster["spec"]["autoscalerOptions"]["env"])
    envs.append(k8s_objects()[("Deployment", "geonas-api")]["spec"]["template"]["spec"]["containers"][0]["env"])
    for env in envs:
        by_name = {item["name"]: item for item in env}
        assert by_name["RAY_AUTH_MODE"]["value"] == "token"
        assert by_name["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "geonas-ray-auth",
            "key": "auth_token",
        }


def test_k8s_images_are_pinned_to_the_project_version():
    version = PYPROJECT["project"]["version"]
    for doc in k8s_objects().values():
        for spec in pod_specs(doc):
            for container in spec["containers"]:
                assert image_tag(container["image"]) in (f"{version}-cpu", f"{version}-cuda")


def test_pods_run_as_the_images_non_root_user():
    for doc in k8s_objects().values():
        for spec in pod_specs(doc):
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["runAsUser"] == 1000


def test_api_deployment_reaches_ray_postgres_and_storage_by_reference(raycluster):
    objects = k8s_objects()
    deployment = objects[("Deployment", "geonas-api")]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["geonas", "serve"]
    env = {item["name"]: item for item in container["env"]}
    plain = {name: item.get("value") for name, item in env.items() if "value" in item}
    config = objects[("ConfigMap", "geonas-config")]["data"]
    settings = settings_from({**config, **plain, "GEONAS_DATABASE_URL": "postgresql+psycopg://u:p@db/geonas"})
    assert settings.ray_address == f"{raycluster['metadata']['name']}-head-svc:6379"
    assert settings.api_host == "0.0.0.0"
    assert urlsplit(settings.storage_path).scheme == "s3", "storage by URI: every pod reaches it"
    # PostgreSQL by reference: the URL comes from a Secret, never a literal in the manifest.
    assert env["GEONAS_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "geonas-db", "key": "url"}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["http"] == settings.api_port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = objects[("Service", "geonas-api")]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] in ports


def test_every_secret_and_config_reference_resolves():
    objects = k8s_objects()
    secrets = {name: doc["stringData"] for (kind, name), doc in objects.items() if kind == "Secret"}
    configs = {name: doc["data"] for (kind, name), doc in objects.items() if kind == "ConfigMap"}
    checked = 0
    for doc in objects.values():
        containers = [c for spec in pod_specs(doc) for c in spec["containers"]]
        envs = [item for c in containers for item in c.get("env", [])]
        if doc["kind"] == "RayCluster":
            envs += doc["spec"]["autoscalerOptions"]["env"]
        for item in envs:
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]], ref
                checked += 1
        for container in containers:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configs
                else:
                    assert source["secretRef"]["name"] in secrets
                checked += 1
    assert checked >= 10


def test_kustomization_applies_everything_but_the_secret_templates():
    kustomization = load_k8s("kustomization.yaml")[0]
    resources = set(kustomization["resources"])
    assert resources == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secrets.example.yaml"}
    for doc in load_k8s("secrets.example.yaml"):
        assert all(value == "CHANGE-ME" or "CHANGE-ME" in value for value in doc["stringData"].values())
