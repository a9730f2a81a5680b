"""The typed boundary, inbound: pydantic specs for what users submit (bodies and queries).

A bad spec is a 422 naming the field before anything is stored. What the API returns is in
:mod:`service.public`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from search_spaces.backbones import check_backbone_name
from search_spaces.errors import SpecError
from search_spaces.latency.profiles import check_profile_name
from search_spaces.searchers.options import check_options

__all__ = [
    "UtcDateTime",
    "DatasetRef",
    "SearchSpaceSpec",
    "LatencySpec",
    "BudgetSpec",
    "Stage1Spec",
    "Stage2Spec",
    "SearcherSpec",
    "ExperimentSpec",
    "ResumeRequest",
    "PretrainingSpec",
    "PredictionSpec",
    "TrialPageQuery",
    "LeaderboardQuery",
    "MAX_OFFSET",
]

#: The largest page offset a list accepts: more rows than any store holds, and well inside the
#: databases' 64-bit integers (a larger one reached SQLite as an OverflowError, a 500).
MAX_OFFSET = 10**9


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


#: The store keeps naive UTC; the API says so (RFC 3339 with an offset), as the schema promises.
UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _no_traversal(value: str) -> str:
    if "\x00" in value:
        raise ValueError("the path must not contain a NUL byte")
    if ".." in Path(value).parts:
        raise ValueError("the path must not contain '..'")
    return value


#: A data folder named in a spec: never climbs out with ``..`` (roots are checked in validation.py).
DataPath = Annotated[str, AfterValidator(_no_traversal)]


def _as_value_error(check):
    """A check that raises :class:`SpecError` as a pydantic validator (its message at the field)."""

    def validate(value):
        try:
            return check(value)
        except SpecError as exc:
            raise ValueError(str(exc)) from None

    return validate


#: A timm model name, checked against the names timm knows (without importing it).
BackboneName = Annotated[str, AfterValidator(_as_value_error(check_backbone_name))]
#: A device profile name, checked by the profile grammar (without torch or hardware).
DeviceName = Annotated[str, AfterValidator(_as_value_error(check_profile_name))]


class DatasetRef(_Spec):
    path: DataPath = Field(..., description="Folder holding dataset.yaml (see `geonas data demo`).")
    bands: list[str] | None = Field(None, description="Bands to use, by name; default all.")


class CsfBackbone(_Spec):
    csf: str = Field(..., description="Id of a finished CSF pretraining job whose encoder to start from.")


class SearchSpaceSpec(_Spec):
    levels: list[int] = Field([2, 3, 4, 5], min_length=1, max_length=6, description="log2 strides used.")
    num_cells: int | list[int] = Field(7, description="Number of merge cells, or choices to search.")
    channels: int | list[int] = Field(64, description="Decoder channels, or choices to search.")
    ops: list[Literal["sum", "global_attention", "product", "max", "concat_conv"]] = Field(
        ["sum", "global_attention"], min_length=1
    )
    backbones: list[BackboneName] | None = Field(None, description="Allowed timm backbones to search over.")

    @field_validator("levels")
    @classmethod
    def _levels(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value) or any(not 1 <= v <= 6 for v in value):
            raise ValueError("levels must be distinct integers in 1..6 (level = log2 stride)")
        return sorted(value)

    @field_validator("num_cells", "channels")
    @classmethod
    def _bounded(cls, value: int | list[int], info) -> int | list[int]:
        low, high = (1, 12) if info.field_name == "num_cells" else (4, 512)
        values = value if isinstance(value, list) else [value]
        if not values or any(not low <= v <= high for v in values):
            raise ValueError(f"{info.field_name} must be in {low}..{high}")
        return value


class LatencySpec(_Spec):
    target_ms: float | None = Field(None, gt=0, description="Latency target T; none = no constraint.")
    target_ratio: float | None = Field(
        None,
        gt=0,
        description="A target relative to a baseline, when you know what you run today rather than a number of "
        "ms: T = target_ratio x the latency of `relative_to` (same backbone, bands, tile and device profile), "
        "measured by the experiment's latency meter when it starts and stored as target_ms. target_ms wins "
        "when both are given.",
    )
    relative_to: Literal["unet", "fpn", "space"] = Field("unet", description="What target_ratio is relative to: "
                                                         "a baseline, or `space`: the median of 8 draws of the space.")
    device: DeviceName = Field(
        "cpu-1threads",
        description="Device profile that measures latency: cpu-<N>threads, cuda, cuda:<device name>, "
        "onnxruntime-cpu[-<N>threads].",
    )
    reward: Literal["soft", "hard", "absolute"] = "soft"
    margin: float = Field(
        0.1,
        ge=0,
        description="A model meets the target when its latency is at most T·(1+margin): the same rule prunes "
        "in stage 1 (hard reward), picks stage-2 candidates and checks the fine-tuned model. 0 = strict.",
    )
    recheck_tolerance: float = Field(
        0.15,
        ge=0,
        le=1,
        description="Stage 2 measures each model again on this host; a result more than this fraction away "
        "from the stage-1 latency flags the model latency_disagrees on the leaderboard.",
    )
    batch_size: int = Field(1, ge=1, le=256)
    tile_size: int | None = Field(None, ge=16, le=4096, description="Tile side in px; default chip size.")
    max_seconds: float = Field(30.0, gt=0, le=600, description="Cap on the time one measurement may take.")


class BudgetSpec(_Spec):
    trials: int = Field(20, ge=1, le=10000)
    concurrency: int = Field(1, ge=1, le=256)
    wall_time_s: float | None = Field(None, gt=0)


class Stage1Spec(_Spec):
    subset: int = Field(4000, ge=1, description="Training chips per trial (seeded subset).")
    val_subset: int | None = Field(
        1000, ge=1, description="Validation chips scored after each epoch (seeded subset; null: the whole split)."
    )
    epochs: int = Field(3, ge=1, le=500)
    batch_size: int = Field(8, ge=1, le=1024)
    lr: float = Field(1e-3, gt=0, lt=1)
    early_stopping: Literal["asha", "none"] = Field("asha", description="ASHA stops poor trials early.")
    early_stopping_metric: Literal["reward", "miou"] = Field(
        "reward",
        description="What ASHA ranks trials by: the searcher's reward (mIoU with the latency term) or raw "
        "validation mIoU. Trials pruned for latency never report to it.",
    )
    grace_period: int = Field(1, ge=1, description="Epochs every trial gets before ASHA may stop it.")
    reduction_factor: int = Field(3, ge=2)
    max_failures: int = Field(1, ge=0, le=10, description="Retries of a crashed trial (from its checkpoint).")
    cpus_per_trial: float = Field(1, gt=0, le=64)


class Stage2Spec(_Spec):
    top_k: int = Field(5, ge=0, le=50)
    init: Literal["stage1", "scratch"] = Field(
        "stage1", description="Fine-tune from the trial's best stage-1 weights, or train from scratch."
    )
    epochs: int = Field(10, ge=1, le=1000)
    subset: int | None = Field(
        None, ge=1, description="Training chips for fine-tuning (seeded subset); null: the whole training split."
    )
    workers: int = Field(1, ge=1, le=64)
    cpus_per_worker: int | None = Field(
        None, ge=1, le=256, description="CPU threads per Ray Train worker (null: share the free CPUs among workers)."
    )


class SearcherSpec(_Spec):
    name: Literal["ppo", "random", "tpe", "gp", "regularized_evolution"] = "ppo"
    options: dict[str, Any] = Field(
        default_factory=dict, description="The searcher's options (search_spaces/searchers/options.py)."
    )
    screen: int = Field(
        0, ge=0, le=256, description="Model screening for any searcher: each trial goes to the best of this many "
        "of the searcher's proposals by a Gaussian-process reward model (expected improvement x P(meets the "
        "latency target)); 0 = off. PPO ranks a pool of its own already (options.pool_draws).",
    )

    @field_validator("options")
    @classmethod
    def _options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "name" not in info.data:  # the name was invalid: that error is enough
            return value
        return check_options(info.data["name"], value).model_dump(exclude_unset=True)


class ExperimentSpec(_Spec):
    """What a user submits to ``POST /v1/experiments``."""

    name: str = Field(..., min_length=1, max_length=200)
    dataset: DatasetRef
    backbone: str | CsfBackbone = Field("resnet18", description="timm encoder name, or {csf: <job id>}.")
    search_space: SearchSpaceSpec = Field(default_factory=SearchSpaceSpec)
    searcher: SearcherSpec = Field(
        default_factory=SearcherSpec, description="A searcher's name, or {name: ..., options: {...}}."
    )
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    latency: LatencySpec = Field(default_factory=LatencySpec)
    stage1: Stage1Spec = Field(default_factory=Stage1Spec)
    stage2: Stage2Spec = Field(default_factory=Stage2Spec)
    baselines: list[Literal["unet", "fpn"]] = Field(default_factory=list)
    seed: int = Field(0, ge=0)
    auto_resume: bool = Field(False, description="Resume automatically if the driver dies while the API is down.")

    @field_validator("searcher", mode="before")
    @classmethod
    def _searcher(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("backbone")
    @classmethod
    def _backbone(cls, value: str | CsfBackbone) -> str | CsfBackbone:
        return _as_value_error(check_backbone_name)(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        if self.budget.concurrency > self.budget.trials:
            self.budget.concurrency = self.budget.trials
        if self.latency.reward == "hard" and self.latency.target_ms is None and self.latency.target_ratio is None:
            raise ValueError("latency.reward 'hard' needs latency.target_ms or latency.target_ratio")
        return self


class PretrainingData(_Spec):
    kind: Literal["geotiff", "multisensor"] = Field(
        "geotiff", description="A dataset folder (dataset.yaml) or a multi-sensor folder."
    )
    path: DataPath
    bands: list[str] | None = Field(None, description="geotiff: bands to use; default all.")
    sensors: list[str] | None = Field(None, description="multisensor: sensors to use; default all.")
    max_chips: int | None = Field(None, ge=2)


class PretrainingSpec(_Spec):
    """What a user submits to ``POST /v1/pretraining`` (Contrastive Sensor Fusion)."""

    name: str = Field(..., min_length=1, max_length=200)
    data: PretrainingData
    backbone: BackboneName = Field("resnet18", description="timm encoder; in_chans = the data's band count.")
    steps: int = Field(1000, ge=1, le=1_000_000)
    batch_size: int = Field(32, ge=2, le=4096, description="Per worker; all workers' samples are negatives.")
    workers: int = Field(1, ge=1, le=64)
    cpus_per_worker: int | None = Field(
        None, ge=1, le=256, description="CPU threads per Ray Train worker (null: share the free CPUs among workers)."
    )
    lr: float = Field(1e-3, gt=0, lt=1)
    warmup_steps: int = Field(3000, ge=0)
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="After the warm-up: a constant rate, or a cosine decay to 0 at the last step "
        "(csf/schedule.py).",
    )
    crop: int = Field(128, ge=8, le=4096)
    temperature: float = Field(0.1, gt=0)
    similarity: Literal["cosine", "dot"] = Field(
        "cosine",
        description="The loss' similarity: cosine (L2-normalised features, bounded logits) or the paper's raw dot "
        "product, which saturates the softmax on real imagery (csf/loss.py).",
    )
    projection: int = Field(0, ge=0, le=4096, description="Channels of a projection head on each stage the loss "
                            "sees (1x1-conv MLP, not exported); 0 = none, as the paper.")
    ramp_steps: int = Field(8000, ge=0, description="Steps over which band and sensor dropout ramp to their "
                            "final probabilities.")
    p_max: float = Field(0.66, ge=0, lt=1, description="Band dropout: each band of a view is zeroed with this "
                         "probability at the end of the ramp (the paper's 0.66); 0 = none. On a spectrometer it "
                         "teaches the encoder to ignore the spectrum's shape (bench/csf_real.py uses 0).")
    noise_std: float = Field(0.0, ge=0, le=1, description="Gaussian noise added to each view on its own "
                             "(normalised units); 0 = the paper's views.")
    gain_jitter: float = Field(0.0, ge=0, le=1, description="Std of the log of a per-view, per-band gain; "
                               "0 = the paper's views.")
    sensor_dropout: float = Field(0.5, ge=0, lt=1, description="Probability of dropping each whole sensor from "
                                  "a view (ramped like band dropout; never all; none with one sensor); 0 = the paper.")
    cross_sensor: float = Field(0.0, ge=0, le=1, description="Share of samples whose two views see "
                                "complementary sensor sets (ramped; needs two or more sensors); 0 = the paper.")
    dihedral: bool = Field(False, description="Turn and mirror each chip at random (the same for both views) "
                           "before its views are made; false = the paper.")
    dropout_counts: Literal["stack", "view"] = Field(
        "stack", description="What band dropout's never-all rule counts: every band of the stack (the paper), or "
        "only the bands a view still has after sensor dropout (a height-only view is then never emptied).")
    place_negatives: bool = Field(True, description="Contrast a chip with other chips of its own place (a "
                                  "multi-sensor chip's plot, whose windows overlap); false leaves them out of its "
                                  "loss, so overlapping ground is not pushed apart (csf/loss.py).")
    ema: float = Field(0.0, ge=0, lt=1, description="Decay of a moving average of the weights over the steps "
                       "(BatchNorm statistics too), exported instead of the last step's weights; 0 = off, the paper.")
    checkpoint_every: int = Field(500, ge=1)
    seed: int = Field(0, ge=0)
    knn: bool = Field(True, description="Evaluate k-NN (random init vs CSF) when done.")
    knn_data: PretrainingData | None = Field(
        None,
        description="Labelled chips of the same sensors and bands to evaluate k-NN on, so pretraining and "
        "evaluation never share chips (split by place, e.g. by plot); default: the pretraining chips.",
    )
    knn_metric: Literal["euclidean", "cosine"] = Field(
        "euclidean", description="k-NN distance: euclidean, or cosine (embeddings L2-normalised first, the usual "
        "protocol for contrastive features, whose loss sees only their direction).",
    )
    knn_seeds: int = Field(
        3, ge=1, le=10, description="Random-init encoders (seeds 0..n-1) k-NN evaluates: their spread is the "
        "noise CSF's gain is read against.",
    )

    def knn_chips(self) -> PretrainingData | None:
        """Where k-NN is evaluated: ``knn_data`` with the pretraining data's band or sensor choice unless
        it names its own, or None (the pretraining chips themselves)."""
        if self.knn_data is None:
            return None
        ref = self.knn_data
        inherited = {"bands": ref.bands or self.data.bands, "sensors": ref.sensors or self.data.sensors}
        return ref.model_copy(update=inherited)


class PredictionSpec(_Spec):
    """What a user submits to ``POST /v1/predictions``: one registered model over many scenes."""

    name: str = Field("prediction", min_length=1, max_length=200)
    model_id: str = Field(..., min_length=1, max_length=32, description="A registered (stage-2) model id.")
    scenes: list[DataPath] = Field(
        ..., min_length=1, max_length=10_000, description="GeoTIFF files, folders (their .tif/.tiff) or globs."
    )
    out: DataPath = Field(
        ...,
        description="Folder for one mask COG per scene and mosaic.vrt over them. With write_on 'workers' (the "
        "default) every node of the cluster writes here: it must be one folder all nodes see at this path "
        "(NFS, a mounted bucket).",
    )
    write_on: Literal["workers", "driver"] = Field(
        "workers",
        description="Who writes each scene: the model actor that predicted it (fast; needs the shared 'out' "
        "folder) or the job's driver (no shared folder; actors send each blended mask to it).",
    )
    tile: int = Field(256, ge=16, le=4096, description="Window side in pixels.")
    overlap: int = Field(32, ge=0, le=2047, description="Pixels shared by neighbouring windows (blended).")
    batch_size: int = Field(8, ge=1, le=1024, description="Windows per forward pass on a model actor.")
    probabilities: bool = Field(False, description="Also write class probabilities (x255) per scene.")
    workers: int | None = Field(
        None, ge=1, le=1024, description="Model actors (null: one per GPU, else as many as the CPUs allow)."
    )
    cpus_per_worker: float = Field(1.0, gt=0, le=256, description="CPUs (and torch threads) per model actor.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: GPU actors where the cluster has GPUs.")
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources per model actor, to keep actors on a node pool."
    )

    @field_validator("overlap")
    @classmethod
    def _overlap_fits(cls, value: int, info: ValidationInfo) -> int:
        tile = info.data.get("tile")
        if tile is not None and value * 2 >= tile:
            raise ValueError(f"overlap {value} px must be less than half the tile ({tile} px)")
        return value


class ResumeRequest(_Spec):
    trials: int | None = Field(None, ge=1, le=10000, description="A new (larger) trial budget.")


class TrialPageQuery(BaseModel):
    """``GET /v1/experiments/{id}/trials``'s query (also validated by ``routes/cached_reads.py``)."""

    stage: int | None = Field(None, ge=1, le=2, description="Only this stage's trials.")
    limit: int = Field(1000, ge=1, le=10000, description="Page size, in creation order.")
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


class LeaderboardQuery(BaseModel):
    """``GET /v1/leaderboard``'s query (also validated by ``routes/cached_reads.py``)."""

    max_latency_ms: float | None = Field(None, gt=0, description="Only models at or under this latency.")
    device: str | None = Field(None, description="Only latencies measured on this device profile.")
    stage: int | None = Field(None, ge=1, le=2, description="2 = fine-tuned models only.")
    limit: int = Field(50, ge=1, le=1000)
