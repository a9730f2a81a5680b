"""Latency: what the search is constrained by, measured so it can be trusted. One module per concern:

- :mod:`.profiles`: named device profiles (``cpu-4threads``, ``cuda:<gpu>``, ``onnxruntime-cpu``) and
  their grammar; imports without torch, so the API checks a device name at submission;
- :mod:`.results`: :class:`~.results.LatencyResult`, what one measurement says and how far to trust it;
- :mod:`.runners`: one timed forward pass per backend (torch CPU, CUDA events, ONNX Runtime);
- :mod:`.harness`: :func:`~.harness.measure_latency`: the reference-normalised, repeat-until-stable
  estimator, and the reference calibration;
- :mod:`.machine`: :func:`~.machine.machine_fingerprint`, which hardware and software measured;
- :mod:`.cache`: the SQLite cache of measurements, keyed by architecture, profile, shape and machine;
- :mod:`.meter`: the Ray actor that measures apart from training (imports Ray).

Import from the module that owns a name; this package imports none of them, so importing
``search_spaces.latency.profiles`` costs no torch.
"""
