"""Latency harness, device profiles, the cache, and the latency meter actor on a real local Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from search_spaces.errors import ClusterError, SpecError
from search_spaces.latency.cache import LatencyCache, LatencyKey, cached_latency
from search_spaces.latency.harness import measure_latency
from search_spaces.latency.profiles import get_profile, list_profile_patterns, list_profiles, normalise_device_name
from search_spaces.latency.results import LatencyResult
from search_spaces.nasfpn import ArchSpec, Cell

torch.set_num_threads(1)

QUICK = dict(warmup=1, min_repeats=5, max_repeats=10, block_size=5, max_seconds=20.0)


class ThreadSpy(nn.Module):
    """A small conv net that records the thread count and grad mode it runs under."""

    def __init__(self, width: int = 8, depth: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1)]
        for _ in range(depth - 1):
            layers += [nn.ReLU(), nn.Conv2d(width, width, 3, padding=1)]
        self.body = nn.Sequential(*layers)
        self.seen_threads: set[int] = set()
        self.seen_inference: set[bool] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_threads.add(torch.get_num_threads())
        self.seen_inference.add(torch.is_inference_mode_enabled())
        return self.body(x)


def tiny_arch() -> ArchSpec:
    return ArchSpec("resnet18", (2, 3, 4, 5), 8, (Cell(0, 3, 3, "sum"), Cell(1, 4, 2, "global_attention")))


# -- profiles ------------------------------------------------------------------------------------------


def test_cpu_profiles_parse_any_thread_count_and_canonicalise() -> None:
    assert get_profile("cpu-1threads").threads == 1
    assert get_profile("CPU-4Threads").name == "cpu-4threads"
    assert get_profile("cpu-3thread").name == "cpu-3threads"
    assert get_profile("onnxruntime-cpu").threads == 1
    assert get_profile("onnxruntime-cpu-1threads").name == "onnxruntime-cpu"
    assert get_profile("onnxruntime-cpu-2threads").threads == 2


def test_cuda_profile_names_are_normalised_device_names() -> None:
    assert normalise_device_name("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    profile = get_profile("cuda:NVIDIA H100 80GB HBM3")
    assert profile.name == "cuda:nvidia-h100-80gb-hbm3" and profile.backend == "torch-cuda"
    if not torch.cuda.is_available():
        assert not get_profile("cuda").available
        ok, why = profile.availability()
        assert not ok and "CUDA" in why
        assert "cuda" not in " ".join(list_profiles(available_only=True))
    else:
        assert get_profile("cuda").name.startswith("cuda:")


@pytest.mark.parametrize("name", ["tpu", "cpu-threads", "cpu-0threads", "onnxruntime-gpu", ""])
def test_unknown_profiles_raise_spec_error_listing_the_valid_ones(name: str) -> None:
    with pytest.raises(SpecError) as info:
        get_profile(name)
    if name != "cpu-0threads":
        for pattern in list_profile_patterns():
            assert pattern in str(info.value)
        assert "cpu-1threads" in str(info.value)  # available here


def test_list_profiles_offers_every_family() -> None:
    names = list_profiles()
    assert {"cpu-1threads", "cuda", "onnxruntime-cpu"} <= set(names) or torch.cuda.is_available()
    assert all(get_profile(n).available for n in list_profiles(available_only=True))
    assert get_profile("cpu-512threads").availability()[0] is False


def test_unavailable_profile_is_refused_with_what_is_available() -> None:
    with pytest.raises(SpecError, match="available here"):
        measure_latency(ThreadSpy(), (1, 3, 16, 16), "cpu-512threads", **QUICK)


# -- harness ---------------------------------------------------------------------------------------------


def test_harness_returns_sane_numbers_and_restores_threads_and_mode() -> None:
    model = ThreadSpy().train()
    torch.set_num_threads(2)
    try:
        result = measure_latency(model, (1, 3, 32, 32), "cpu-1threads", **QUICK)
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(1)
    assert model.seen_threads == {1} and model.seen_inference == {True}
    assert model.training  # restored
    assert result.profile == "cpu-1threads" and result.input_shape == (1, 3, 32, 32)
    assert result.clock == "thread-cpu"
    assert 5 <= result.repeats <= 10
    assert 0 < result.min_ms <= result.raw_median_ms <= result.p90_ms < 10_000
    assert result.median_ms > 0 and result.cv >= 0 and result.wall_s > 0
    assert (
        result.reference_ms
        and result.ratio
        and result.median_ms == pytest.approx(result.ratio * result.reference_ms)
    )
    assert LatencyResult.from_dict(result.to_dict()) == result


def test_two_threads_use_the_wall_clock_and_are_respected() -> None:
    model = ThreadSpy()
    result = measure_latency(model, (1, 3, 32, 32), "cpu-2threads", reference=None, **QUICK)
    assert model.seen_threads == {2} and result.clock == "wall"
    assert result.reference_ms is None and result.median_ms == result.direct_ms


def test_given_reference_calibration_scales_the_ratio() -> None:
    result = measure_latency(ThreadSpy(), (1, 3, 32, 32), "cpu-1threads", reference=10.0, **QUICK)
    assert result.reference_ms == 10.0
    assert result.median_ms == pytest.approx(10.0 * result.ratio)


def test_a_much_heavier_model_measures_slower() -> None:
    light = measure_latency(ThreadSpy(width=4, depth=1), (1, 3, 32, 32), "cpu-1threads", **QUICK)
    heavy = measure_latency(ThreadSpy(width=64, depth=4), (1, 3, 32, 32), "cpu-1threads", **QUICK)
    assert heavy.median_ms > 3 * light.median_ms


def test_onnxruntime_profile_measures_an_exported_model() -> None:
    result = measure_latency(ThreadSpy(width=8, depth=2), (1, 3, 32, 32), "onnxruntime-cpu", **QUICK)
    assert result.profile == "onnxruntime-cpu" and result.median_ms > 0 and result.clock == "thread-cpu"


def test_bad_input_shape_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="4 positive integers"):
        measure_latency(ThreadSpy(), (3, 32, 32), "cpu-1threads", **QUICK)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_profile_times_with_events_and_leaves_the_model_on_cpu() -> None:
    from search_spaces.builder import build_model

    model = build_model(tiny_arch(), 3, 4)
    result = measure_latency(model, (2, 3, 64, 64), "cuda", **QUICK)
    assert result.profile.startswith("cuda:") and result.clock == "cuda-events"
    assert result.reference_ms is None and result.median_ms > 0
    assert next(model.parameters()).device.type == "cpu"


# -- cache -----------------------------------------------------------------------------------------------


def fake_result(profile: str = "cpu-1threads", shape=(1, 3, 32, 32), ms: float = 1.5) -> LatencyResult:
    return LatencyResult(
        median_ms=ms, p90_ms=ms * 1.1, cv=0.01, repeats=20, profile=profile, input_shape=shape
    )


def test_cache_returns_without_measuring(tmp_path: Path) -> None:
    cache = LatencyCache(tmp_path / "latency.sqlite")
    key = LatencyKey.of("abc123", "cpu-1threads", (1, 3, 32, 32))
    calls = []

    def measure() -> LatencyResult:
        calls.append(1)
        return measure_latency(ThreadSpy(), (1, 3, 32, 32), "cpu-1threads", reference=None, **QUICK)

    first = cached_latency(cache, key, measure)
    second = cached_latency(cache, key, measure)
    again = cached_latency(LatencyCache(tmp_path / "latency.sqlite"), key, measure)  # a new opener
    assert len(calls) == 1
    assert not first.cached and second.cached and again.cached
    assert second.median_ms == first.median_ms and second.measured_at == first.measured_at
    other_shape = LatencyKey.of("abc123", "cpu-1threads", (1, 3, 64, 64))
    assert other_shape not in cache and key in cache and len(cache) == 1


def test_cache_keys_use_canonical_profile_names(tmp_path: Path) -> None:
    cache = LatencyCache(tmp_path / "c.sqlite")
    cache.put(LatencyKey.of("h", "CPU-1Threads", [1, 3, 32, 32]), fake_result())
    assert cache.get(LatencyKey.of("h", "cpu-1threads", (1, 3, 32, 32))) is not None
    assert cache.get(LatencyKey.of("h", "cpu-2threads", (1, 3, 32, 32))) is None
    [(key, result)] = cache.entries(profile="cpu-1threads")
    assert key.input_shape == (1, 3, 32, 32) and result.median_ms == 1.5
    with pytest.raises(ValueError, match="disagree"):
        cache.put(LatencyKey.of("h", "cpu-2threads", (1, 3, 32, 32)), fake_result())


WRITER = """
import sys
from search_spaces.latency.cache import LatencyCache, LatencyKey
from search_spaces.latency.results import LatencyResult
cache = LatencyCache(sys.argv[1])
for i in range(25):
    key = LatencyKey.of(f"{sys.argv[2]}-{i}", "cpu-1threads", (1, 3, 32, 32))
    cache.put(key, LatencyResult(1.0 + i, 2.0, 0.1, 5, "cpu-1threads", (1, 3, 32, 32)))
print(cache.reference_ms("cpu-1threads", (1, 3, 32, 32), lambda: float(sys.argv[3])))
"""


def test_cache_is_safe_for_several_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    root = Path(__file__).resolve().parents[1]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), name, ref],
            cwd=root,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name, ref in (("p", "7.0"), ("q", "9.0"))
    ]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    cache = LatencyCache(path)
    assert len(cache) == 50
    assert outputs[0] == outputs[1] and float(outputs[0]) in (7.0, 9.0)  # one calibration wins


# -- the latency meter actor -------------------------------------------------------------------------------


def test_meter_falls_back_to_cpus_without_the_custom_resource(ray_cluster) -> None:
    from search_spaces.latency.meter import MeterPlacement, meter_actor_options

    assert "latency_meter" not in ray_cluster.cluster_resources()
    assert meter_actor_options("cpu-1threads") == {"num_cpus": 1.0, "num_gpus": 0.0}
    with pytest.raises(ClusterError, match="latency_meter"):
        meter_actor_options("cpu-1threads", MeterPlacement(fallback=False))
    head = "node:__internal_head__"
    assert head in ray_cluster.cluster_resources()
    assert meter_actor_options("cpu-1threads", MeterPlacement(resource=head))["resources"] == {head: 1}


def test_meter_measures_once_then_answers_from_the_cache(ray_cluster, tmp_path: Path) -> None:
    from search_spaces.latency.meter import MeterPlacement, get_latency_meter, model_key

    placement = MeterPlacement(namespace="test-latency", harness=QUICK)
    cache_path = tmp_path / "meter.sqlite"
    meter = get_latency_meter("cpu-1threads", cache_path, placement)
    try:
        arch = tiny_arch()
        first = ray_cluster.get(meter.measure.remote(arch.to_dict(), 3, 4, (1, 3, 32, 32)), timeout=300)
        second = ray_cluster.get(meter.measure.remote(arch.to_dict(), 3, 4, [1, 3, 32, 32]), timeout=300)
        assert first["cached"] is False and second["cached"] is True
        assert first["median_ms"] == second["median_ms"] > 0
        assert first["profile"] == "cpu-1threads" and first["key"] == model_key({"arch": arch.to_dict()}, 4)
        assert first["node"] == second["node"] == ray_cluster.get_runtime_context().get_node_id()
        assert first["meter"] == "latency-meter/cpu-1threads" and first["reference_ms"] > 0
        # the same named actor is found again, and it measured exactly once
        again = get_latency_meter("cpu-1threads", cache_path, placement)
        stats = ray_cluster.get(again.stats.remote())
        assert (
            stats["measured"] == 1 and stats["cache_hits"] == 1 and stats["meter_pid"] == first["meter_pid"]
        )
        assert len(LatencyCache(cache_path)) == 1

        baseline = {"baseline": "unet", "backbone": "resnet18"}
        unet = ray_cluster.get(meter.measure.remote(baseline, 3, 2, (1, 3, 32, 32)), timeout=300)
        assert unet["key"].startswith("baseline-") and unet["median_ms"] > 0

        with pytest.raises(SpecError, match="bands"):
            ray_cluster.get(meter.measure.remote(arch.to_dict(), 4, 4, (1, 3, 32, 32)), timeout=60)
    finally:
        ray_cluster.kill(meter)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_meter_holds_a_gpu_and_measures(ray_cluster, tmp_path: Path) -> None:
    from search_spaces.latency.meter import MeterPlacement, get_latency_meter, meter_actor_options

    assert meter_actor_options("cuda")["num_gpus"] == 1.0
    meter = get_latency_meter(
        "cuda", tmp_path / "gpu.sqlite", MeterPlacement(namespace="test-gpu", harness=QUICK)
    )
    try:
        result = ray_cluster.get(
            meter.measure.remote(tiny_arch().to_dict(), 3, 4, (2, 3, 64, 64)), timeout=300
        )
        assert result["profile"].startswith("cuda:") and result["clock"] == "cuda-events"
        assert result["median_ms"] > 0 and result["cached"] is False
    finally:
        ray_cluster.kill(meter)


def test_ratio_estimate_is_the_median_round_ratio_and_ignores_a_few_disturbed_rounds() -> None:
    from search_spaces.latency.harness import _ratio_estimate

    steady = [1.0, 1.01, 0.99] * 20
    median, rse = _ratio_estimate(steady)
    assert median == 1.0 and 0 < rse < 0.005
    # three rounds a neighbour slowed fivefold move neither the estimate nor its standard error much
    disturbed_median, disturbed_rse = _ratio_estimate([*steady[:-3], 5.0, 5.0, 5.0])
    assert disturbed_median == 1.0 and disturbed_rse <= 2 * rse
    assert _ratio_estimate([1.0])[1] == float("inf")
