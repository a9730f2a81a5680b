"""The published schemas that tests/test_cluster_files.py checks the container and Kubernetes files against.

None of them is written here; each comes from where its format is defined:

* **RayCluster**: the KubeRay operator's own CustomResourceDefinition, ``ray.io_rayclusters.yaml`` in
  ``shared/data/kuberay-crd/`` (its README names the KubeRay commit). Its ``openAPIV3Schema`` is
  applied the way a Kubernetes API server applies a structural schema: a field the schema does not
  declare is an error (the server would prune it, or reject it under kubectl's default strict field
  validation) unless the schema says ``x-kubernetes-preserve-unknown-fields``;
  ``x-kubernetes-int-or-string`` takes an integer or a string; ``nullable`` takes null; list-type
  ``set`` and ``map`` lists take no duplicates; the object's ``metadata`` is a Kubernetes
  ``ObjectMeta``. Its CEL rules (``x-kubernetes-validations``) are not evaluated; in this CRD they
  only make fields immutable and restrict ``spec.managedBy``, which the manifest does not set.
* **Every other Kubernetes object**: the Kubernetes API's OpenAPI definitions as JSON Schema, in
  their strict form (unknown fields are errors), as shipped for each Kubernetes minor version by the
  ``kubernetes-validate`` package.
* **Compose files**: the Compose Specification's JSON schema (``schema/compose-spec.json`` of
  compose-spec/compose-spec), the copy vendored by the ``check-jsonschema`` package.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from importlib.resources import files
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from check_jsonschema.builtin_schemas import get_builtin_schema
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[1]
KUBERAY_CRD = ROOT.parent / "shared" / "data" / "kuberay-crd" / "ray.io_rayclusters.yaml"

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRD is ~1 MB: libyaml reads it in 0.5 s


def schema_errors(validator: jsonschema.protocols.Validator, instance) -> list[str]:
    """Every error as ``/path/to/field: message``, so a failing assert shows them all.

    An object that fails one of its fields also fails ``unevaluatedProperties`` (the Compose schema
    uses it), naming every field it holds; that echo of a deeper error is left out.
    """
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    paths = [tuple(e.absolute_path) for e in errors]

    def echo(error: jsonschema.ValidationError) -> bool:
        path = tuple(error.absolute_path)
        return error.validator == "unevaluatedProperties" and any(
            len(other) > len(path) and other[: len(path)] == path for other in paths
        )

    return [_describe(e) for e in errors if not echo(e)]


def _describe(error: jsonschema.ValidationError) -> str:
    return f"/{'/'.join(map(str, error.absolute_path))}: {error.message}"


# --- Kubernetes' built-in kinds ----------------------------------------------------------------


def kubernetes_versions() -> list[str]:
    """The Kubernetes minor versions whose API schemas kubernetes-validate ships, oldest first."""
    return sorted(
        {kubernetes_validate.utils.major_minor(v) for v in kubernetes_validate.utils.all_versions()},
        key=lambda v: tuple(map(int, v.split("."))),
    )


def kubernetes_errors(doc: dict, kubernetes_version: str) -> list[str]:
    """What the Kubernetes API of that version rejects in ``doc`` (a Deployment, Service, ...)."""
    try:
        kubernetes_validate.validate(doc, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [_describe(error)]
    return []


@cache
def _kubernetes_definitions(kubernetes_version: str) -> Resource:
    folder = files("kubernetes_validate") / "kubernetes-json-schema" / f"v{kubernetes_version}.0-local-strict"
    return Resource.from_contents(json.loads((folder / "_definitions.json").read_text()))


def _object_meta_ref(kubernetes_version: str) -> dict:
    definitions = _kubernetes_definitions(kubernetes_version)
    return {"$ref": f"{definitions.id()}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}


# --- custom resources: a CRD's structural schema, as the API server applies it ----------------


def _list_type(validator, list_type, instance, schema) -> Iterator[jsonschema.ValidationError]:
    """``x-kubernetes-list-type``: a ``set`` holds no duplicates; a ``map`` no two items with the same keys."""
    if not isinstance(instance, list):
        return
    if list_type == "set":
        for index, item in enumerate(instance):
            if item in instance[:index]:
                yield jsonschema.ValidationError(f"duplicate entry {item!r} in a list-type set")
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        # A key left out takes its default first (a port's protocol is TCP), as on the server.
        defaults = {k: schema.get("items", {}).get("properties", {}).get(k, {}).get("default") for k in keys}
        seen = []
        for item in instance:
            key = {k: item.get(k, defaults[k]) for k in keys} if isinstance(item, dict) else None
            if key is not None and key in seen:
                yield jsonschema.ValidationError(f"duplicate entry for {key} in a list-type map")
            seen.append(key)


CrdValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"x-kubernetes-list-type": _list_type})


def _as_the_api_server_applies_it(node):
    """A copy of a structural schema in which what Kubernetes would prune is an error."""
    if isinstance(node, list):
        return [_as_the_api_server_applies_it(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _as_the_api_server_applies_it(value) for key, value in node.items()}
    if node.get("x-kubernetes-int-or-string"):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if (
        node.get("type") == "object"
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    return node


@cache
def _kuberay_crd() -> dict:
    return yaml.load(KUBERAY_CRD.read_text(), Loader=_YAML_LOADER)


@cache
def crd_validator(api_version: str, kind: str, kubernetes_version: str) -> jsonschema.protocols.Validator:
    """A validator for ``kind`` at ``api_version`` (e.g. ``ray.io/v1``) from the KubeRay CRD."""
    crd = _kuberay_crd()["spec"]
    group, version_name = api_version.split("/")
    assert (group, kind) == (crd["group"], crd["names"]["kind"]), f"the CRD defines {crd['group']}/{crd['names']}"
    (version,) = [v for v in crd["versions"] if v["name"] == version_name]
    assert version["served"], f"{api_version} is not served by this CRD"
    schema = _as_the_api_server_applies_it(version["schema"]["openAPIV3Schema"])  # a copy
    schema["properties"]["apiVersion"]["const"] = api_version
    schema["properties"]["kind"]["const"] = kind
    schema["properties"]["metadata"] = _object_meta_ref(kubernetes_version)
    registry = _kubernetes_definitions(kubernetes_version) @ Registry()
    return CrdValidator(schema, registry=registry)


# --- Compose ---------------------------------------------------------------------------------


@cache
def compose_validator() -> jsonschema.protocols.Validator:
    """The Compose Specification's schema, as ``docker compose`` checks a file against it."""
    schema = get_builtin_schema("vendor.compose-spec")
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)
