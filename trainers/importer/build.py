"""``import_dataset``: options checked, pairs found and checked, chips cut, ``dataset.yaml`` written.

Everything is written to a temporary sibling folder and renamed at the end, so a failed import
leaves nothing behind; the per-step work lives in the sibling modules.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from search_spaces.errors import DataError, SpecError
from trainers._raster import publish_dir
from trainers.datasets import DatasetInfo, band_stats

from .chips import _LOCAL, _Cutter, _SplitTally
from .classes import ClassTable
from .pairs import BadPairs, _assign, _BadPair, _check_pairs, _find_scenes, _Scene
from .splits import _load_split

__all__ = ["import_dataset"]


def import_dataset(
    src: str | Path,
    out: str | Path,
    *,
    classes: str | Path | list[dict[str, Any]],
    split: dict[str, list[str]] | str | Path,
    chip_size: int = 256,
    overlap: int = 0,
    image_glob: str = "**/images/*",
    mask_glob: str = "**/masks/*",
    extra_colors: dict[Any, Any] | None = None,
    name: str | None = None,
    bands: list[str] | None = None,
    ignore_index: int = 255,
    min_labelled: float = 0.0,
    skip_bad: bool = False,
    overwrite: bool = False,
) -> Path:
    """Import scenes under ``src`` into a dataset at ``out``; returns ``out``.

    - ``classes``: class table (JSON file or list), see :meth:`ClassTable.load`. Raw mask values:
      ``[{"value": 1, "name": "forest"}, {"value": 2, "name": "other"}]`` gives classes 0, 1 and
      makes every other value ignore. Colours: ``{"name", "color": "#RRGGBB"}`` for RGB (and
      palette) masks. Without ``value`` or ``color``, 1-band masks hold class ids 0..n-1.
    - ``split``: ``{split: [globs over image paths relative to src]}`` or a split file (YAML/JSON
      mapping, or a CSV table: ``path,split`` rows, or a header naming the columns path/image and
      split, in any order, among others). Whole scenes go to one split; unmatched scenes are left out.
    - ``image_glob`` / ``mask_glob``: which files are images and masks; an image pairs with the
      mask whose relative path is the same after dropping the images/masks folder and the suffix.
    - ``chip_size`` / ``overlap``: chips of chip_size² px stepping chip_size - overlap; the last
      chip of a row or column is shifted to end at the scene edge (no padding unless a scene is
      smaller than a chip; padding is nodata in the image and ignore in the mask).
    - ``extra_colors``: more colours (``"#000000"``) or index values mapped to a class or ``"ignore"``.
    - ``bands``: band names in the files' order (default: from the files' colour interpretation or
      descriptions, which must then agree between files).
    - ``min_labelled``: chips with a smaller labelled fraction are dropped (all-ignore chips always).
    - ``skip_bad``: import the good pairs when some are bad (sizes differ, unreadable, no mask,
      unknown mask colours) and record the bad ones in ``dataset.yaml``; without it, one
      :class:`BadPairs` error lists every bad pair.

    ``dataset.yaml`` records the scenes of each split, the pixels per class, the raw values a value
    table ignored and the skipped pairs (key ``import``). Written to a temporary sibling folder and
    renamed, so a failed import leaves nothing behind.
    """
    src, out = Path(src).expanduser().resolve(), Path(out).expanduser().resolve()
    if not src.is_dir():
        raise DataError(f"{src}: source folder not found")
    if not isinstance(chip_size, int) or chip_size < 8:
        raise SpecError(f"chip_size must be an integer >= 8, got {chip_size!r}", field="chip_size")
    if not isinstance(overlap, int) or not 0 <= overlap < chip_size:
        raise SpecError(f"overlap must be in 0..{chip_size - 1} px, got {overlap!r}", field="overlap")
    bands = _checked_bands(bands)
    table = ClassTable.load(classes, extra_colors)
    if not len(table.names) <= ignore_index <= 255:
        raise SpecError(f"ignore_index must be in {len(table.names)}..255 (not a class id, fits uint8)")
    _check_out(out, overwrite)
    where = "split" if isinstance(split, dict) else str(split)
    by_split = _assign(_find_scenes(src, image_glob, mask_glob), _load_split(split), where)
    total = sum(len(s) for s in by_split.values())
    bad, band_names = _check_pairs(by_split, table, bands, ignore_index, mask_glob)

    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cutter = _Cutter(table, chip_size, chip_size - overlap, ignore_index, min_labelled, band_names)
    try:
        tallies, imported = _cut_all(by_split, bad, cutter, tmp, skip_bad)
        if bad and not skip_bad:
            raise BadPairs.of(bad, total)
        info = DatasetInfo(
            name=name or src.name,
            bands=tuple(band_names),
            classes=table.names,
            root=tmp,
            ignore_index=ignore_index,
            splits={s: s for s in by_split},
            source=str(src),
            crs=_crs_note(cutter.crs_kinds),
            extra={"chip_size": chip_size, "overlap": overlap, "import": _report(table, tallies, imported, bad)},
        )
        info.write()
        band_stats(info)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return publish_dir(tmp, out, replace=overwrite)


def _checked_bands(bands: list[str] | None) -> list[str] | None:
    """The ``bands`` option stripped, or a SpecError saying what is wrong with it."""
    if bands is None:
        return None
    if isinstance(bands, str) or not bands or not all(isinstance(b, str) and b.strip() for b in bands):
        raise SpecError(f"bands must be a list of band names, got {bands!r}", field="bands")
    bands = [b.strip() for b in bands]
    if len(set(bands)) != len(bands):
        raise SpecError(f"bands name a band twice: {bands}", field="bands")
    return bands


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an output folder that holds anything but a dataset we were told to replace."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"{out}: folder exists and is not empty; choose another or pass overwrite=True")
        if not (out / "dataset.yaml").is_file():
            raise DataError(f"{out}: not a dataset folder (no dataset.yaml); refusing to replace it")


def _cut_all(
    by_split: dict[str, list[_Scene]], bad: list[_BadPair], cutter: _Cutter, tmp: Path, skip_bad: bool
) -> tuple[dict[str, _SplitTally], dict[str, list[_Scene]]]:
    """Cut every good pair into ``tmp/<split>``: (tally per split, scenes imported per split).

    A pair whose pixels fail is appended to ``bad`` and its chips removed. Once the import is bound
    to fail, the remaining pairs are still read (not written): the error then lists every bad pair,
    including those whose pixels are bad, in one go.
    """
    cutter.write = skip_bad or not bad
    tallies: dict[str, _SplitTally] = {}
    imported: dict[str, list[_Scene]] = {}
    skip = {b.scene.rel for b in bad}
    for split_name, scenes in by_split.items():
        tallies[split_name], imported[split_name] = _SplitTally(), []
        for scene in scenes:
            if scene.rel in skip:
                continue
            one, written = _SplitTally(), []
            try:
                cutter.cut(scene, tmp / split_name, one, written)
            except DataError as exc:  # this pair only: undo its chips, go on to find the others
                for path in written:
                    path.unlink(missing_ok=True)
                bad.append(_BadPair(scene, split_name, str(exc)))
                cutter.write = skip_bad
                continue
            tallies[split_name].add(one)
            imported[split_name].append(scene)
    return tallies, imported


def _report(
    table: ClassTable,
    tallies: dict[str, _SplitTally],
    imported: dict[str, list[_Scene]],
    bad: list[_BadPair],
) -> dict[str, Any]:
    """``dataset.yaml``'s ``import`` key; a DataError for a split with no scene or no labelled pixel."""
    report: dict[str, Any] = {"chips": {}, "skipped_empty": {}, "class_pixels": {}, "scenes": {}}
    for split_name, tally in tallies.items():
        if not imported[split_name]:
            raise DataError(
                f"split '{split_name}': every scene in it is a bad pair; nothing to import "
                f"({'; '.join(b.reason for b in bad if b.split == split_name)})"
            )
        if tally.counts is None:
            raise DataError(f"split '{split_name}': no chip has labelled pixels; check the masks and classes")
        report["chips"][split_name] = tally.chips
        report["skipped_empty"][split_name] = tally.skipped
        report["class_pixels"][split_name] = {
            **{n: int(c) for n, c in zip(table.names, tally.counts[:-1], strict=True)},
            "ignore": int(tally.counts[-1]),
        }
        report["scenes"][split_name] = [s.rel for s in imported[split_name]]
    if table.by_value:  # raw values that became ignore: a typo in the table shows up here
        report["ignored_values"] = {s: dict(sorted(t.ignored_values.items())) for s, t in tallies.items()}
    report["skipped_pairs"] = [b.record() for b in sorted(bad, key=lambda b: b.scene.rel)]
    return report


def _crs_note(kinds: set[str]) -> str:
    """``dataset.yaml``'s ``crs``: the sources' CRSs, or what the local pixel CRS of chips means."""
    if kinds == {_LOCAL}:
        return (
            "none in the source: each chip has a local pixel CRS 'pixel grid of <scene>' "
            "(origin top-left, 1 unit = 1 px, y down)"
        )
    return ", ".join(sorted(k if k != _LOCAL else "local pixel grid" for k in kinds))
