"""Checks a spec needs beyond its types: the dataset exists, is inside an allowed root, has the bands.

Only ``dataset.yaml`` is read here (no torch, no rasterio): the API must stay light. The driver reads
the chips themselves and reports a bad chip with its file name.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from search_spaces.errors import SpecError

from .settings import Settings
from .specs import ExperimentSpec, PretrainingData, PretrainingSpec

#: libyaml's safe loader when PyYAML was built with it (several times faster), else the pure-Python one
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

__all__ = ["check_dataset", "check_pretraining_data", "check_backbone", "check_data_root"]


#: Folders that never hold datasets. With no data roots configured (the embedded, single-user
#: default) any readable folder is allowed, which is what a local user wants; these are refused even
#: then, so a request that reaches the API (a misbound port, a forged browser request) cannot make a
#: driver read or list system files.
_SYSTEM = "/etc /proc /sys /dev /boot /run /var/run /var/lib /usr /bin /sbin /lib"
SYSTEM_FOLDERS = tuple(Path(p) for p in _SYSTEM.split())


def _refuse_system_folder(root: Path, path: str, field: str) -> None:
    if root == Path("/") or any(root == base or base in root.parents for base in SYSTEM_FOLDERS):
        raise SpecError(f"{path} is a system folder; datasets cannot be read from there", field=field)


def user_path(path: str, field: str) -> Path:
    """``path`` with ``~`` expanded; a ``~user`` of no user is a 422 at ``field``, not a server error."""
    try:
        return Path(path).expanduser()
    except RuntimeError as exc:
        raise SpecError(f"cannot expand {path}: {exc}", field=field) from None


def check_data_root(path: str, settings: Settings, field: str) -> Path:
    """Resolve ``path`` and refuse it unless it lies inside one of the allowed data roots."""
    root = user_path(path, field).resolve()
    if not settings.data_roots:
        _refuse_system_folder(root, path, field)
    if settings.data_roots:
        allowed = [Path(r).expanduser().resolve() for r in settings.data_roots]
        if not any(root == base or base in root.parents for base in allowed):
            raise SpecError(f"{path} is outside the allowed data roots ({', '.join(map(str, allowed))})", field=field)
    if not root.is_dir():
        raise SpecError(f"folder {root} does not exist", field=field)
    return root


def check_dataset(spec: ExperimentSpec, settings: Settings) -> Path:
    root = check_data_root(spec.dataset.path, settings, "dataset.path")
    meta = root / "dataset.yaml"
    if not meta.is_file():
        raise SpecError(
            f"{meta} is missing: a dataset folder needs a dataset.yaml (write one with `geonas data demo DIR`)",
            field="dataset.path",
        )
    try:
        raw = yaml.load(meta.read_text(), Loader=_YAML_LOADER) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"{meta} is not readable YAML: {exc}", field="dataset.path") from None
    available = [str(b) for b in raw.get("bands") or []]
    if spec.dataset.bands:
        missing = [b for b in spec.dataset.bands if b not in available]
        if missing:
            raise SpecError(
                f"bands {missing} are not in {meta}; available: {', '.join(available)}", field="dataset.bands"
            )
    return root


def _bands_of(root: Path) -> list[str]:
    raw = yaml.load((root / "dataset.yaml").read_text(), Loader=_YAML_LOADER) or {}
    return [str(b) for b in raw.get("bands") or []]


def check_backbone(spec: ExperimentSpec, settings: Settings, store) -> None:
    """A ``{csf: id}`` backbone must be a finished job whose encoder reads the experiment's bands."""
    if isinstance(spec.backbone, str):
        return
    from search_spaces.errors import NotFound

    try:
        job = store.get_pretraining(spec.backbone.csf)
    except NotFound:
        raise SpecError(
            f"backbone csf {spec.backbone.csf!r} is not a pretraining job; list them with GET /v1/backbones",
            field="backbone.csf",
        ) from None
    if job.state != "completed" or not job.artifact:
        raise SpecError(f"pretraining job {job.id} is {job.state}, not completed", field="backbone.csf")
    bands = spec.dataset.bands or _bands_of(Path(spec.dataset.path).expanduser().resolve())
    encoder_bands = list((job.encoder or {}).get("band_names", []))
    if len(bands) != len(encoder_bands):
        raise SpecError(
            f"the CSF encoder of job {job.id} reads {len(encoder_bands)} bands {encoder_bands}; the experiment "
            f"uses {len(bands)} {bands}: choose dataset.bands to match",
            field="backbone.csf",
        )


def _chip_bands(ref: PretrainingData, root: Path, field: str) -> list[str]:
    """The band names, in order, that the chip loader (``csf.data``) will read from ``ref``."""
    if ref.kind == "geotiff":
        if not (root / "dataset.yaml").is_file():
            raise SpecError(f"{root} has no dataset.yaml (a geotiff dataset folder)", field=f"{field}.path")
        available = _bands_of(root)
        missing = [b for b in ref.bands or [] if b not in available]
        if missing:
            raise SpecError(f"bands {missing} not in {root}; available: {', '.join(available)}", f"{field}.bands")
        return list(ref.bands or available)
    manifest_path = root / "multisensor.json"
    try:
        listed = json.loads(manifest_path.read_text())["sensors"]
        sensors = {str(name): [str(b) for b in sensor["bands"]] for name, sensor in listed.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SpecError(
            f"{manifest_path} is not a readable multi-sensor manifest ({exc}); write one with "
            "`geonas data demo-multisensor DIR` or list the sensor files yourself",
            field=f"{field}.path",
        ) from None
    unknown = [s for s in ref.sensors or [] if s not in sensors]
    if unknown:
        raise SpecError(f"sensors {unknown} not in {root}; available: {', '.join(sensors)}", f"{field}.sensors")
    return [band for sensor in (ref.sensors or list(sensors)) for band in sensors[sensor]]


def check_pretraining_data(spec: PretrainingSpec, settings: Settings) -> Path:
    """The pretraining chips exist with the bands asked for; ``knn_data`` has the very same bands."""
    root = check_data_root(spec.data.path, settings, "data.path")
    bands = _chip_bands(spec.data, root, "data")
    knn = spec.knn_chips()
    if knn is not None:
        if knn.kind != spec.data.kind:
            raise SpecError(f"knn_data is {knn.kind}, the pretraining data {spec.data.kind}", field="knn_data.kind")
        knn_root = check_data_root(knn.path, settings, "knn_data.path")
        knn_bands = _chip_bands(knn, knn_root, "knn_data")
        if knn_bands != bands:
            raise SpecError(
                f"knn_data has bands {knn_bands}; the encoder is pretrained on {bands}: evaluate on chips of the "
                "same sensors and bands, in the same order",
                field="knn_data",
            )
    return root
