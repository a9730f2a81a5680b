"""The shared ``main`` of the Ray Job entrypoints (experiment driver, pretraining driver).

Each runs one resource by id; whatever stops it, the reason is recorded on that resource as
``failed`` and the job exits non-zero, so the store never says "running" for a dead job.
"""

from __future__ import annotations

import argparse
import traceback
from collections.abc import Callable

from search_spaces.errors import GeonasError

from .settings import get_settings
from .store import Store, get_store

__all__ = ["job_main"]


def job_main(
    argv: list[str] | None,
    description: str,
    run: Callable[[str, Store, str], None],
    record_failure: Callable[[Store, str, str], None],
) -> int:
    """Parse ``ID``, set up JSON logs, run ``run(id, store, storage)``; on any error record it and return 1."""
    from .logs import configure_logging

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("resource_id")
    args = parser.parse_args(argv)
    configure_logging(experiment=args.resource_id)  # JSON lines, each with the resource's id
    settings = get_settings()
    store = get_store(settings.resolved_database_url)
    try:
        run(args.resource_id, store, settings.resolved_storage_path)
    except BaseException as exc:  # record why, then let the job fail visibly
        message = str(exc) if isinstance(exc, GeonasError) else f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        try:
            record_failure(store, args.resource_id, message[:4000])
        except GeonasError:
            pass
        return 1
    return 0
