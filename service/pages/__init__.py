"""The pages: experiments, an experiment's search, a model, a pretraining job — served by the API.

Charts are SVG generated in Python (:mod:`.charts`, :mod:`.cellgraph`), not a bundled JS chart
library. Why:

- Every picture here is a scatter, a line, bars or a small graph: a few hundred lines of Python
  draw them, where a charting library adds 100–200 kB of vendored JS, a licence to track and an npm
  step to refresh it.
- The architecture graph had to be generated from the spec on the server anyway (it needs the
  ArchSpec rules: pool indices, levels, outputs); one renderer for all pictures keeps one style.
- SVG made on the server is inline in the page (fetched with the user's token and inserted), so
  points are DOM elements a browser test can count and a click can select; it is also testable
  with no browser at all, and works offline with nothing to download.
- Scale is handled where the data is: at 10,000 trials the ordinary points become one ``<path>``
  and charts are cached per experiment version, so the browser receives one small document
  instead of 10,000 rows to plot.

The script (``static/pages.js``, no dependencies) only fetches, inserts, sorts and polls.
"""

from .routes import data_router, shell_router

__all__ = ["shell_router", "data_router"]
