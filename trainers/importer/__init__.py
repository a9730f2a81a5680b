"""Turn a folder of scenes + colour (or index) masks into the project's dataset format.

``import_dataset`` pairs every image with its mask, assigns whole scenes to splits (by glob or by
a split file: chips of one scene never land in two splits, because neighbouring chips share
content and a random chip split leaks), cuts both into chips of ``chip_size`` with an optional
overlap, translates mask colours or raw mask values to class indices 0..n-1 through a class table,
writes GeoTIFF chips and ``dataset.yaml``, and computes the train statistics. Chips are cut once
here so that trials never decode JPEG/PNG or re-tile on every epoch.

Every pair is checked before anything is cut (sizes, band names, mask kind, from the headers), and
a pair whose pixels fail while cutting does not stop the others: one error lists every bad pair,
or, with ``skip_bad``, the rest is imported and ``dataset.yaml`` says what was skipped and why.

Georeferencing: a source with a CRS keeps it, and each chip gets the exact window transform. A
source without one (plain JPEG/PNG) gets a *local pixel CRS*: an engineering CRS named
``pixel grid of <scene>`` with origin at the scene's top-left corner, 1 unit = 1 pixel, y down, and
the chip's pixel offset in its transform. That keeps every chip traceable to where it was cut
(predictions can be stitched back), while the name makes it impossible to mistake for a real map
projection. (GeoTIFF stores an engineering CRS without its unit, so GDAL reads the unit back as
metre; the name and ``dataset.yaml``'s ``crs`` note carry the meaning.)

Memory: a GeoTIFF source is read one chip window at a time (never the whole scene); JPEG/PNG have
no random access, so they are read in strips of one chip row, top to bottom.

Modules: :mod:`.classes` (class tables), :mod:`.masks` (mask pixels to class ids), :mod:`.splits`
(split files and tables), :mod:`.pairs` (pairing, split assignment, header checks, bad pairs),
:mod:`.chips` (cutting one pair), :mod:`.build` (:func:`import_dataset`, ``dataset.yaml``),
:mod:`.dubai` (the Dubai aerial set's options and class table).
"""

from .build import import_dataset
from .classes import ClassTable
from .dubai import DUBAI_SPLIT, dubai_classes, dubai_defaults
from .masks import read_mask
from .pairs import BadPairs

__all__ = ["BadPairs", "ClassTable", "import_dataset", "dubai_defaults", "DUBAI_SPLIT", "dubai_classes", "read_mask"]
