"""CSF benchmark: k-NN of random init vs CSF, transfer to Dubai segmentation, Ray throughput.

    python bench/csf.py                          # profile "cpu": ~30 min on 2 shared cores
    python bench/csf.py --profile quick          # smoke run, minutes
    python bench/csf.py --profile gpu --device cuda --no-ray --threads 8 --out R.json  # one GPU, no Ray/scipy
    (--export-cache DIR / --from-cache DIR keep the chips as .npz; GEONAS_DUBAI points at the data)

What it does (all settings are printed and stored in the JSON, with the ``commit``, ``command`` and
``machine``; a file that ``--sections``/``--datasets`` subsets were merged into lists those of every
run whose numbers it holds under ``runs``):
1. Chips. Dubai aerial (RGB, 6 classes): pretraining chips from tiles 1-6, k-NN chips from the
   held-out tile 8 labelled by dominant class; transfer chips (with masks) from tiles 1-6 (10% of
   them carry labels) and tile 8 (test). Multi-sensor: a generated 3-sensor, 12-band set; its last
   ``multisensor_knn_chips`` chips are the k-NN set, all the others pretrain.
2. CSF pretraining per data set with :class:`csf.train.CSFStep` (the step every Ray worker runs) in
   this process, then k-NN (global-pooled last stage, PCA, k = 10/25/50/100) of the same
   architecture with random init, with a user's supervised init (``--supervised-init``, a file) and
   with CSF, per sensor and all bands.
3. Transfer: the encoder + a small FPN-style decoder of this file fine-tuned on 10% of Dubai's
   training chips, random init vs CSF encoder, same steps/batch/lr; mIoU on tile 8 (the lead's
   stage-1 trainer is not used, so the comparison depends on nothing but this file and ``csf``).
4. Throughput: :func:`csf.train.run_pretraining` on a local Ray with 1 and 2 workers (CPU),
   images/s per worker and the 2-worker speed-up.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.provenance import stamp  # noqa: E402
from csf.data import ChipSet  # noqa: E402
from csf.encoder import CSFEncoder, build_encoder, load_init_weights  # noqa: E402
from csf.knn import DISTANCES, KS, evaluate_knn  # noqa: E402
from csf.schedule import LR_SCHEDULES  # noqa: E402
from csf.train import CSFStep, PretrainConfig, sensor_groups  # noqa: E402
from trainers.metrics import ConfusionMatrix  # noqa: E402

DUBAI = Path(os.environ.get("GEONAS_DUBAI", Path(__file__).resolve().parents[2] / "shared" / "data" / "dubai-aerial"))
RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = "knn,transfer,throughput"
DATASETS = ("dubai", "multisensor")
PROVENANCE = ("commit", "command", "machine")


PROFILES = {
    # 2 shared CPU cores: a small backbone, small chips, few steps.
    "cpu": {"backbone": "resnet10t", "pretrain_steps": 40, "batch_size": 12, "chip": 40, "crop": 32,
            "warmup_steps": 8, "ramp_steps": 30, "dubai_pretrain_chips": 1000, "dubai_knn_chips": 500,
            "multisensor_chips": 750, "multisensor_knn_chips": 250,
            "transfer_chip": 64, "transfer_steps": 30, "transfer_batch": 8,
            "transfer_test_chips": 200, "throughput_steps": 8},
    # One GPU: the paper's backbone at half its chip size (80 -> 64 px instead of 160 -> 128).
    "gpu": {"backbone": "resnet50", "pretrain_steps": 1500, "batch_size": 128, "chip": 80, "crop": 64,
            "warmup_steps": 300, "ramp_steps": 1000, "dubai_pretrain_chips": 4000, "dubai_knn_chips": 800,
            "multisensor_chips": 2300, "multisensor_knn_chips": 300,
            "transfer_chip": 64, "transfer_steps": 600, "transfer_batch": 32,
            "transfer_test_chips": 600, "throughput_steps": 20},
    "quick": {"backbone": "resnet10t", "pretrain_steps": 12, "batch_size": 8, "chip": 40, "crop": 32,
              "warmup_steps": 3, "ramp_steps": 6, "dubai_pretrain_chips": 120, "dubai_knn_chips": 150,
              "multisensor_chips": 240, "multisensor_knn_chips": 80,
              "transfer_chip": 64, "transfer_steps": 10, "transfer_batch": 8,
              "transfer_test_chips": 60, "throughput_steps": 6},
}


def settings(args: argparse.Namespace) -> dict:
    s = dict(PROFILES[args.profile])
    s.update(device=args.device, threads=args.threads, seed=0, p_max=0.66, lr=1e-3, temperature=args.temperature,
             grad_clip=1.0, normalize=args.similarity == "cosine", transfer_label_share=0.10, knn_tiles=[8],
             transfer_test_tiles=[8], ms_texture=args.ms_texture, ms_acquisition=args.ms_acquisition,
             noise_std=args.noise_std,
             gain_jitter=args.gain_jitter, sensor_dropout=args.sensor_dropout, transfer_seeds=args.transfer_seeds,
             lr_schedule=args.lr_schedule, knn_metric=args.knn_metric)
    for key in ("backbone", "steps", "batch"):
        value = getattr(args, key)
        if value:
            s[{"steps": "pretrain_steps", "batch": "batch_size"}.get(key, key)] = value
    return s


# -- data ------------------------------------------------------------------------------------------


def _save(chips: ChipSet, path: Path) -> None:
    np.savez_compressed(
        path, images=chips.images.astype(np.float16), labels=chips.labels,
        masks=chips.masks if chips.masks is not None else np.zeros(0, np.uint8),
        meta=json.dumps({"band_names": chips.band_names, "sensors": chips.sensors, "classes": chips.classes}),
    )


def _load(path: Path) -> ChipSet:
    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    masks = z["masks"] if z["masks"].size else None
    return ChipSet(z["images"].astype(np.float32), meta["band_names"], meta["sensors"], z["labels"], masks,
                   meta["classes"])


def build_chips(s: dict, work: Path, datasets: tuple[str, ...] = DATASETS) -> dict[str, ChipSet]:
    from csf.data import load_chips
    from csf.multisensor import write_multisensor_dataset

    chips: dict[str, ChipSet] = {}
    if "dubai" in datasets:
        chips.update(_dubai_chips(s))
    if "multisensor" not in datasets:
        return chips
    root = write_multisensor_dataset(work / "multisensor", n_chips=s["multisensor_chips"], size=s["chip"],
                                     seed=0, texture=s["ms_texture"],
                                     acquisition=s["ms_acquisition"])
    ms = load_chips({"kind": "multisensor", "root": str(root)})
    # The last chips are the k-NN set; all the others pretrain. At GPU scale 600 pretraining chips were
    # seen ~320 times each and CSF memorised them (loss 0.4); more chips of the same scene cost seconds.
    cut = len(ms) - s["multisensor_knn_chips"]
    chips["ms_pretrain"], chips["ms_knn"] = ms.subset(np.arange(cut)), ms.subset(np.arange(cut, len(ms)))
    # k-NN chips at the crop size, as the encoder saw them in pretraining (centre crop).
    o = (s["chip"] - s["crop"]) // 2
    knn = chips["ms_knn"]
    chips["ms_knn"] = ChipSet(knn.images[:, :, o:o + s["crop"], o:o + s["crop"]].copy(), knn.band_names,
                              knn.sensors, knn.labels, None, knn.classes)
    return chips


def _dubai_chips(s: dict) -> dict[str, ChipSet]:
    from csf.data import load_chips

    d = {"kind": "dubai", "root": str(DUBAI)}
    chips = {
        "dubai_pretrain": load_chips({**d, "tiles": [1, 2, 3, 4, 5, 6], "chip": s["chip"],
                                      "max_chips": s["dubai_pretrain_chips"], "seed": 0}),
        "dubai_knn": load_chips({**d, "tiles": s["knn_tiles"], "chip": s["crop"],
                                 "max_chips": s["dubai_knn_chips"], "seed": 1}),
    }
    train = load_chips({**d, "tiles": [1, 2, 3, 4, 5, 6], "chip": s["transfer_chip"], "seed": 2})
    n_labelled = max(s["transfer_batch"], int(round(len(train) * s["transfer_label_share"])))
    chips["transfer_train"] = train.subset(np.random.default_rng(3).permutation(len(train))[:n_labelled])
    chips["transfer_test"] = load_chips({**d, "tiles": s["transfer_test_tiles"], "chip": s["transfer_chip"],
                                         "max_chips": s["transfer_test_chips"], "seed": 4})
    return chips


# -- pretraining and k-NN --------------------------------------------------------------------------


def pretrain_local(chips: ChipSet, s: dict, device: torch.device) -> tuple[CSFEncoder, list[float], float]:
    """CSF in this process with the workers' step; returns the encoder, loss curve and seconds."""
    cfg = PretrainConfig.from_dict({
        "data": {"kind": "in-memory"}, "backbone": s["backbone"], "steps": s["pretrain_steps"],
        "batch_size": s["batch_size"], "lr": s["lr"], "warmup_steps": s["warmup_steps"],
        "grad_clip": s["grad_clip"], "temperature": s["temperature"], "crop": s["crop"],
        "p_max": s["p_max"], "ramp_steps": s["ramp_steps"], "seed": s["seed"], "normalize": s["normalize"],
        "noise_std": s["noise_std"], "gain_jitter": s["gain_jitter"], "sensor_dropout": s["sensor_dropout"],
        "lr_schedule": s["lr_schedule"],
    })
    torch.manual_seed(s["seed"])
    encoder = build_encoder(s["backbone"], len(chips.band_names)).to(device)
    if device.type == "cuda":
        encoder = encoder.to(memory_format=torch.channels_last)
    step_fn = CSFStep(encoder, cfg, device, sensor_groups(chips.band_names, chips.sensors))
    mean, std = chips.band_stats()
    images = chips.normalised(mean, std)
    losses, start = [], time.perf_counter()
    for step in range(cfg.steps):
        rng = torch.Generator().manual_seed(s["seed"] * 100_003 + step)
        pick = torch.randperm(len(images), generator=rng)[: cfg.batch_size].numpy()
        losses.append(step_fn(torch.from_numpy(images[pick]), step, rng)["loss"])
    return encoder, losses, time.perf_counter() - start


def random_encoder(s: dict, in_chans: int) -> CSFEncoder:
    torch.manual_seed(s["seed"])
    return build_encoder(s["backbone"], in_chans)


# -- transfer --------------------------------------------------------------------------------------


class TinyFPN(nn.Module):
    """Encoder + a light FPN-style decoder: every stage projected to 32 channels, summed, classified."""

    def __init__(self, encoder: CSFEncoder, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.lateral = nn.ModuleList(nn.Conv2d(c, 32, 1) for c in encoder.channels)
        self.head = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.Conv2d(32, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder.forward_all(x)
        size = feats[0].shape[-2:]
        y = sum(F.interpolate(lat(f), size=size, mode="bilinear", align_corners=False)
                for lat, f in zip(self.lateral, feats, strict=True))
        return F.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear", align_corners=False)


def transfer(encoder: CSFEncoder, train: ChipSet, test: ChipSet, s: dict, device: torch.device,
             mean: list[float], std: list[float]) -> float:
    torch.manual_seed(s["seed"])
    model = TinyFPN(encoder, len(train.classes)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x_train = torch.from_numpy(train.normalised(mean, std))
    y_train = torch.from_numpy(train.masks.astype(np.int64))
    amp = device.type == "cuda"
    model.train()
    for step in range(s["transfer_steps"]):
        g = torch.Generator().manual_seed(1000 * (1 + s["seed"]) + step)
        pick = torch.randperm(len(x_train), generator=g)[: s["transfer_batch"]]
        x, y = x_train[pick].to(device), y_train[pick].to(device)
        if torch.rand(1, generator=g).item() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    preds = []
    x_test = torch.from_numpy(test.normalised(mean, std))
    with torch.no_grad():
        for i in range(0, len(x_test), 32):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                preds.append(model(x_test[i:i + 32].to(device)).float().argmax(1).cpu().numpy())
    scores = ConfusionMatrix(len(test.classes), test.ignore_index)
    scores.update(torch.from_numpy(np.concatenate(preds)), torch.from_numpy(test.masks.astype(np.int64)))
    return scores.miou()


# -- throughput ------------------------------------------------------------------------------------


def throughput(s: dict, work: Path) -> dict:
    import ray

    from csf.train import run_pretraining

    for attempt in range(3):  # a loaded machine can miss Ray's node start deadline
        if ray.is_initialized():
            break
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        except Exception as exc:
            print(f"ray.init failed ({exc}); retrying ({attempt + 1}/3)")
            ray.shutdown()
    out = {}
    storage = work / "ray"
    # A fresh storage folder: a run of the same name found there would be resumed, not measured.
    shutil.rmtree(storage, ignore_errors=True)
    for workers in (1, 2):
        spec = {
            "name": f"throughput-{workers}", "num_workers": workers, "use_gpu": False,
            "data": {"kind": "multisensor", "root": str(work / "multisensor"), "max_chips": 200},
            "backbone": s["backbone"], "steps": s["throughput_steps"], "batch_size": s["batch_size"],
            "crop": s["crop"], "checkpoint_every": 10_000, "threads_per_worker": 1,
        }
        result = run_pretraining(spec, str(storage), progress=None)
        out[workers] = result["images_per_s_per_worker"]
    ray.shutdown()
    return {"images_per_s_per_worker": {str(k): round(v, 2) for k, v in out.items()},
            "speedup_2_vs_1": round(2 * out[2] / out[1], 2)}


# -- report ----------------------------------------------------------------------------------------


def _knn_table(knn: dict) -> str:
    lines = [f"{'dataset':<24}{'init':<12}" + "".join(f"{'k=' + str(k):>16}" for k in KS),
             f"{'':<36}" + "".join(f"{'same / acc':>16}" for _ in KS)]
    for dataset, inits in knn.items():
        for init, per_k in inits.items():
            cells = "".join(f"{per_k[str(k)]['same_class']:>8.3f}/{per_k[str(k)]['accuracy']:.3f}"
                            for k in KS)
            lines.append(f"{dataset:<24}{init:<12}{cells}")
    return "\n".join(lines)


def _print_throughput(tp: dict) -> dict:
    print("\nthroughput (Ray Train, CPU, 1 thread per worker, 2 shared cores):")
    print(f"{'workers':<10}{'img/s/worker':>14}")
    for w, v in tp["images_per_s_per_worker"].items():
        print(f"{w:<10}{v:>14.2f}")
    print(f"speed-up 2 vs 1 worker: {tp['speedup_2_vs_1']}x")
    return tp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--backbone")
    parser.add_argument("--similarity", choices=["cosine", "dot"], default="cosine",
                        help="the loss' similarity: cosine (the product's default) or the paper's raw dot product")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ms-texture", default="class",
                        help="generated scene: 'class' (each class its own texture) or 'uniform' (one texture for "
                             "all classes, the first generator); see csf/multisensor.py")
    parser.add_argument("--ms-acquisition", type=float, default=1.0,
                        help="multi-sensor generator: each sensor's own illumination and haze (0 = none)")
    parser.add_argument("--noise-std", type=float, default=0.0, help="per-view noise (csf.views; 0 = paper)")
    parser.add_argument("--sensor-dropout", type=float, default=0.5,
                        help="per-view whole-sensor dropout (csf.views; 0.5 as the pretraining spec; 0 = paper; "
                        "no effect with one sensor)")
    parser.add_argument("--gain-jitter", type=float, default=0.0, help="per-view band gain (csf.views; 0 = paper)")
    parser.add_argument("--lr-schedule", choices=sorted(LR_SCHEDULES), default=PretrainConfig.lr_schedule,
                        help="after the warm-up (csf.schedule; default the pretraining spec's)")
    parser.add_argument("--temperature", type=float, default=PretrainConfig.temperature,
                        help="the contrastive loss' temperature (the paper's 0.1)")
    parser.add_argument("--knn-metric", choices=list(DISTANCES), default="euclidean",
                        help="k-NN distance (csf.knn; euclidean, the pretraining spec's default)")
    parser.add_argument("--transfer-seeds", type=int, default=3,
                        help="fine-tuning seeds per init: random init's spread over them is the noise CSF's gain "
                        "is read against")
    parser.add_argument("--supervised-init", help="a local weights file for the backbone (never downloaded)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray throughput section")
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help="comma-separated subset of dubai,multisensor (transfer needs dubai)")
    parser.add_argument("--sections", default=SECTIONS,
                        help="comma-separated subset of knn,transfer,throughput; a subset is merged into the "
                             "existing result file (a CSF encoder pretrained by one section is reused)")
    parser.add_argument("--export-cache", type=Path)
    parser.add_argument("--from-cache", type=Path)
    parser.add_argument("--work", type=Path, default=Path("/tmp/geonas-bench-csf"))
    parser.add_argument("--tag", default="", help="suffix of the result file: csf{-tag}.json")
    parser.add_argument("--out", type=Path, help="result file (default bench/results/csf{-tag}.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    s = settings(args)
    device = torch.device(args.device)
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    out = args.out or RESULTS / f"csf{'-' + args.tag if args.tag else ''}.json"
    partial = args.sections != SECTIONS or args.datasets != ",".join(DATASETS)
    result = json.loads(out.read_text()) if out.is_file() and partial else {}
    # a subset merged into an earlier file: that file's runs made the rest of its numbers
    earlier = (result.pop("runs", None) or [{k: result.get(k, "unknown") for k in PROVENANCE}]) if result else []
    for key in PROVENANCE:
        result.pop(key, None)
    result.update(settings=s, device=str(device) if device.type == "cpu" else torch.cuda.get_device_name())
    sections = set(args.sections.split(","))
    if args.no_ray:
        sections.discard("throughput")
    if sections & {"knn", "transfer"}:
        if args.from_cache:
            chips = {p.stem: _load(p) for p in sorted(args.from_cache.glob("*.npz"))}
        else:
            chips = build_chips(s, args.work, tuple(args.datasets.split(",")))
        if args.export_cache:
            args.export_cache.mkdir(parents=True, exist_ok=True)
            for name, c in chips.items():
                _save(c, args.export_cache / f"{name}.npz")
        print(f"settings: {json.dumps(s)}")
        print("chips: " + ", ".join(f"{k}={len(v)}×{v.images.shape[1]}×{v.images.shape[2]}px"
                                    for k, v in chips.items()))
    if "knn" in sections:
        knn, pretraining = knn_section(chips, s, device, args)
        result.setdefault("knn", {}).update(knn)  # a --datasets subset replaces only its own rows
        result.setdefault("pretraining", {}).update(pretraining)
    if "transfer" in sections and "transfer_train" in chips:
        result["transfer"] = transfer_section(chips, s, device, args)
    if "throughput" in sections:
        if not (args.work / "multisensor" / "multisensor.json").is_file():
            from csf.multisensor import write_multisensor_dataset

            write_multisensor_dataset(args.work / "multisensor", n_chips=200, size=s["chip"], seed=0)
        result["throughput"] = _print_throughput(throughput(s, args.work))
    result.setdefault("seconds", {})[args.sections] = round(time.perf_counter() - t0, 1)
    result = stamp(result)
    if earlier:
        result["runs"] = [*earlier, {k: result[k] for k in PROVENANCE}]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out} ({time.perf_counter() - t0:.0f}s)")


def _encoder_file(args: argparse.Namespace, s: dict, name: str) -> tuple[Path, str]:
    skip = ("device", "threads", "knn_tiles", "transfer_test_tiles", "dubai_knn_chips", "knn_metric")
    key = json.dumps({k: v for k, v in s.items() if k not in skip and not k.startswith(("transfer", "throughput"))},
                     sort_keys=True)
    return args.work / f"csf-{name}.safetensors", key


def _pretrained(chips: dict[str, ChipSet], s: dict, device: torch.device, args: argparse.Namespace,
                name: str, pre: str) -> tuple[CSFEncoder, dict]:
    """CSF encoder for a data set: pretrained here, and kept in the work folder for later sections."""
    from csf.encoder import EncoderMetadata, export_encoder, load_csf_backbone

    path, key = _encoder_file(args, s, name)
    sidecar = path.with_suffix(".json")
    if path.is_file() and sidecar.is_file() and json.loads(sidecar.read_text())["key"] == key:
        backbone, state, _ = load_csf_backbone(path)
        encoder = build_encoder(backbone, len(chips[pre].band_names))
        encoder.body.load_state_dict(state, strict=True)
        print(f"reusing the CSF encoder of {name} from {path}")
        return encoder.to(device), json.loads(sidecar.read_text())["pretraining"]
    encoder, losses, seconds = pretrain_local(chips[pre], s, device)
    info = {"seconds": round(seconds, 1), "loss_first10": float(np.mean(losses[:10])),
            "loss_last10": float(np.mean(losses[-10:])),
            "images_per_s": round(s["batch_size"] * len(losses) / seconds, 2)}
    print(f"pretrained {name}: {len(losses)} steps in {seconds:.0f}s, loss {losses[0]:.1f} → "
          f"mean of last 10 {info['loss_last10']:.2f}")
    mean, std = chips[pre].band_stats()
    c = chips[pre]
    export_encoder(encoder, path, EncoderMetadata(s["backbone"], len(c.band_names), c.band_names, mean, std,
                                                  c.sensors, list(encoder.stages), len(losses)))
    sidecar.write_text(json.dumps({"key": key, "pretraining": info}))
    return encoder, info


def knn_section(chips: dict[str, ChipSet], s: dict, device: torch.device,
                args: argparse.Namespace) -> tuple[dict, dict]:
    knn: dict[str, dict] = {}
    pretraining: dict[str, dict] = {}
    for name, pre, ev in (("dubai", "dubai_pretrain", "dubai_knn"), ("multisensor", "ms_pretrain", "ms_knn")):
        if pre not in chips:
            continue
        encoder, pretraining[name] = _pretrained(chips, s, device, args, name, pre)
        mean, std = chips[pre].band_stats()
        inits = {"random": random_encoder(s, len(chips[pre].band_names)), "csf": encoder}
        if args.supervised_init:
            sup = random_encoder(s, len(chips[pre].band_names))
            load_init_weights(sup, args.supervised_init)
            inits = {"random": inits["random"], "supervised": sup, "csf": encoder}
        res = evaluate_knn(inits, chips[ev], mean, std, device=device, metric=s["knn_metric"])
        for subset in next(iter(res.values())):
            key = name if subset == "all" else f"{name}/{subset}"
            knn[key] = {init: {str(k): {m: round(v[m], 4) for m in ("same_class", "accuracy")}
                               for k, v in res[init][subset].items()} for init in res}
    print("\nk-NN (same-class share / leave-one-out accuracy), held-out chips:")
    print(_knn_table(knn))
    return knn, pretraining


def transfer_section(chips: dict[str, ChipSet], s: dict, device: torch.device,
                     args: argparse.Namespace) -> dict:
    """Fine-tune random init and the CSF encoder over ``transfer_seeds`` seeds each (the seed draws
    random init's weights, the decoder's and the batch order); CSF's gain is read against random
    init's own seed-to-seed spread (max - min)."""
    encoder, _ = _pretrained(chips, s, device, args, "dubai", "dubai_pretrain")
    mean, std = chips["dubai_pretrain"].band_stats()
    train, test = chips["transfer_train"], chips["transfer_test"]
    runs: dict[str, list[float]] = {"random": [], "csf": []}
    for seed in range(s["transfer_seeds"]):
        run = {**s, "seed": s["seed"] + seed}
        runs["random"].append(transfer(random_encoder(run, 3), train, test, run, device, mean, std))
        runs["csf"].append(transfer(copy.deepcopy(encoder), train, test, run, device, mean, std))
    res: dict = {init: {"mean": round(float(np.mean(v)), 4), "min": round(min(v), 4), "max": round(max(v), 4),
                        "spread": round(max(v) - min(v), 4), "runs": [round(x, 4) for x in v]}
                 for init, v in runs.items()}
    res["gain"] = round(res["csf"]["mean"] - res["random"]["mean"], 4)
    res["beyond_random_spread"] = bool(len(runs["random"]) > 1 and res["gain"] > res["random"]["spread"])
    print(f"\ntransfer (Dubai, {len(train)} labelled chips = 10% of tiles 1-6, "
          f"{s['transfer_steps']} steps, mIoU on tile 8, {s['transfer_seeds']} seeds):")
    print(f"{'init':<10}{'mean':>8}{'min':>8}{'max':>8}\n" + "\n".join(
        f"{k:<10}{res[k]['mean']:>8.4f}{res[k]['min']:>8.4f}{res[k]['max']:>8.4f}" for k in runs))
    print(f"CSF gain {res['gain']:+.4f} vs random init's spread {res['random']['spread']:.4f}: "
          f"{'beyond' if res['beyond_random_spread'] else 'NOT beyond'} it")
    return res


if __name__ == "__main__":
    main()
