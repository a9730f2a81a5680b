"""``geonas data``: write the demo data sets and import a user's images and masks as a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from search_spaces.errors import GeonasError

from .cli_common import console, friendly

data_app = typer.Typer(help="Create and import datasets.", no_args_is_help=True)


@data_app.command("demo")
@friendly
def data_demo(
    out_dir: Path = typer.Argument(..., help="Folder to write the dataset into."),
    size: int = typer.Option(64, help="Chip side in pixels."),
    bands: int = typer.Option(4, help="Number of bands (≥ 3)."),
    seed: int = typer.Option(0),
) -> None:
    """Write the demo segmentation dataset as GeoTIFF chips with a dataset.yaml."""
    from trainers.demo_data import write_demo_dataset

    root = write_demo_dataset(out_dir, size=size, bands=bands, seed=seed)
    console.print(f"wrote demo dataset to {root}")


@data_app.command("demo-multisensor")
@friendly
def data_demo_multisensor(
    out_dir: Path = typer.Argument(..., help="Folder to write the co-registered sensors into."),
    chips: int = typer.Option(400, help="Number of chip locations (with dominant-class labels)."),
    size: int = typer.Option(64, help="Chip side in pixels on the finest grid."),
    seed: int = typer.Option(0),
    texture: str = typer.Option("class", help="'class' (each land cover its own texture) or 'uniform'."),
    acquisition: float = typer.Option(1.0, help="Each sensor's own illumination and haze (0 = none, max 3)."),
) -> None:
    """Write one scene seen by 3 sensors (12 bands, different resolutions), for CSF pretraining."""
    from csf.multisensor import write_multisensor_dataset

    root = write_multisensor_dataset(out_dir, n_chips=chips, size=size, seed=seed, texture=texture,
                                     acquisition=acquisition)
    console.print(f"wrote multi-sensor dataset to {root}")


@data_app.command("import")
@friendly
def data_import(
    src: Path = typer.Argument(..., help="Folder of images and masks (JPEG/PNG/GeoTIFF)."),
    out: Path = typer.Argument(..., help="Dataset folder to write."),
    classes: str = typer.Option(
        None,
        help="Class table: a JSON file, or the JSON list itself. Masks of raw values: "
        '\'[{"value": 1, "name": "forest"}, {"value": 2, "name": "other"}]\' makes classes 0, 1 in list '
        "order; every value not listed is ignored (255) and counted in dataset.yaml; "
        '{"value": 0, "ignore": true, "name": "no data"} names an ignored value. Colour masks (RGB or '
        'palette): {"name": "road", "color": "#808080"}. Entries with only "id" (0..N-1) and "name": '
        "1-band masks already hold the class ids.",
    ),
    split: str = typer.Option(
        None,
        help="Split file or 'train=GLOB,GLOB;val=GLOB;test=GLOB' over image paths relative to SRC. A file is "
        "YAML/JSON {split: list of globs} or a CSV table: 'path,split' rows, or a header row naming the columns "
        "path (or image) and split, in any order, other columns ignored.",
    ),
    chip_size: int = typer.Option(256, help="Chip side in pixels."),
    overlap: int = typer.Option(0, help="Overlap between chips in pixels."),
    image_glob: str = typer.Option("**/images/*", help="Which files are images."),
    mask_glob: str = typer.Option("**/masks/*", help="Which files are masks."),
    bands: str = typer.Option(
        None,
        help="Band names in the images' band order, comma-separated (e.g. red,green,blue,nir). Default: the "
        "files' band descriptions or colour interpretation; needed when those differ between files.",
    ),
    ignore_color: list[str] = typer.Option([], help="Mask colours (#rrggbb) to ignore; repeatable."),
    skip_bad: bool = typer.Option(
        False,
        help="Import the good image/mask pairs when some are bad (sizes differ, unreadable, no mask, unknown "
        "mask colours) and record the bad ones, and why, in dataset.yaml (import.skipped_pairs). Without it "
        "one error lists every bad pair and nothing is written.",
    ),
    preset: str = typer.Option(None, help="'dubai-aerial': the Dubai set's classes, split and colours."),
    overwrite: bool = typer.Option(False, help="Replace an existing dataset at OUT."),
) -> None:
    """Import images + colour/index masks into GeoTIFF chips, split by scene, with train statistics."""
    import json

    from trainers.datasets import DatasetInfo, band_stats
    from trainers.importer import dubai_defaults, import_dataset

    options: dict[str, Any] = dubai_defaults(src) if preset == "dubai-aerial" else {}
    if preset not in (None, "dubai-aerial"):
        raise GeonasError(f"unknown preset {preset!r}; available: dubai-aerial")
    if classes:
        if classes.lstrip().startswith("["):
            try:
                options["classes"] = json.loads(classes)
            except ValueError as exc:
                raise GeonasError(f"--classes is not a valid JSON list ({exc})") from None
        else:
            options["classes"] = Path(classes)
    if split:
        options["split"] = _parse_split(split)
    if image_glob != "**/images/*" or "image_glob" not in options:
        options["image_glob"] = image_glob
    if mask_glob != "**/masks/*" or "mask_glob" not in options:
        options["mask_glob"] = mask_glob
    if ignore_color:
        options["extra_colors"] = {**options.get("extra_colors", {}), **{c: "ignore" for c in ignore_color}}
    if bands:
        options["bands"] = [b.strip() for b in bands.split(",") if b.strip()]
    missing = [k for k in ("classes", "split") if k not in options]
    if missing:
        raise GeonasError(f"--{' and --'.join(missing)} needed (or --preset dubai-aerial)")
    root = import_dataset(
        src, out, chip_size=chip_size, overlap=overlap, skip_bad=skip_bad, overwrite=overwrite, **options
    )
    info = DatasetInfo.load(root)
    band_stats(info)
    counts = {s: len(info.chip_ids(s)) for s in info.splits}
    console.print(f"imported {root}: bands {list(info.bands)}, classes {list(info.classes)}, chips {counts}")
    report = info.extra.get("import", {})
    ignored: dict[int, int] = {}
    for per_split in report.get("ignored_values", {}).values():
        for value, pixels in per_split.items():
            ignored[value] = ignored.get(value, 0) + pixels
    if ignored:
        listed = ", ".join(f"{v} ({n} px)" for v, n in sorted(ignored.items()))
        console.print(f"mask values not in the class table, imported as ignore: {listed}")
    skipped = report.get("skipped_pairs", [])
    if skipped:
        console.print(f"[yellow]skipped {len(skipped)} bad pair(s)[/yellow] (recorded in dataset.yaml):")
        for pair in skipped:
            console.print(f"  - {pair['reason']}", markup=False, highlight=False)


def _parse_split(text: str) -> dict[str, list[str]] | str:
    if "=" not in text:
        return text  # a split file
    split: dict[str, list[str]] = {}
    for part in text.split(";"):
        name, _, globs = part.partition("=")
        split[name.strip()] = [g.strip() for g in globs.split(",") if g.strip()]
    return split
