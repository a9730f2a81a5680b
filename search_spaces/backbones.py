"""Which timm backbones exist, known without importing timm or torch, so the API refuses a typo at the door.

``timm_models.txt`` (beside this module) lists ``timm.list_models()`` for the timm version named on
its first line; the tests compare it with the installed timm, and ``python -m search_spaces.backbones``
writes it again after a timm upgrade. When the installed timm is another version than the list's,
:func:`known_backbones` asks timm itself (slower: it imports torch) rather than trust a stale list.
"""

from __future__ import annotations

import difflib
import logging
import sys
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .errors import SpecError

__all__ = ["NAMES_FILE", "known_backbones", "check_backbone_name", "write_backbone_names"]

log = logging.getLogger(__name__)

NAMES_FILE = Path(__file__).with_name("timm_models.txt")


def _installed_timm() -> str | None:
    try:
        return version("timm")
    except PackageNotFoundError:
        return None


def _read(path: Path) -> tuple[str, frozenset[str]]:
    lines = path.read_text().splitlines()
    header = lines[0].removeprefix("# timm ").strip() if lines and lines[0].startswith("# timm ") else ""
    return header, frozenset(line.strip() for line in lines[1:] if line.strip())


@lru_cache(maxsize=1)
def known_backbones() -> frozenset[str]:
    """Every model name timm can build (``timm.list_models()``), from the list file when it is current."""
    installed = _installed_timm()
    if NAMES_FILE.is_file():
        listed_for, names = _read(NAMES_FILE)
        if listed_for == installed:
            return names
        log.warning("%s lists timm %s, timm %s is installed: asking timm", NAMES_FILE.name, listed_for, installed)
    import timm

    return frozenset(timm.list_models())


def check_backbone_name(name: str, field: str = "backbone") -> str:
    """``name`` if timm has such a model (a pretrained tag, ``resnet18.a1_in1k``, is allowed), else a
    :class:`SpecError` at ``field`` with the closest names."""
    base = name.split(".", 1)[0]
    names = known_backbones()
    if base in names:
        return name
    close = difflib.get_close_matches(base, sorted(names), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise SpecError(
        f"unknown backbone {name!r}{hint} (any timm model name works: python -c 'import timm; "
        "print(timm.list_models())'; or {csf: <pretraining job id>} for a CSF encoder)",
        field=field,
    )


def write_backbone_names(path: Path = NAMES_FILE) -> int:
    """Write ``timm.list_models()`` of the installed timm to ``path``; returns how many names."""
    import timm

    names = sorted(timm.list_models())
    path.write_text(f"# timm {timm.__version__}\n" + "\n".join(names) + "\n")
    return len(names)


if __name__ == "__main__":
    count = write_backbone_names(Path(sys.argv[1]) if len(sys.argv) > 1 else NAMES_FILE)
    print(f"wrote {count} backbone names")
