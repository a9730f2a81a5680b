"""The ``geonas`` command line. It talks to the REST API (``--url``), never to the database.

Errors a user can fix are printed as one line and exit with status 1; no tracebacks.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console

from search_spaces.errors import GeonasError

from .client import ApiClient

app = typer.Typer(help="geonas: latency-constrained NAS for satellite-image segmentation.", no_args_is_help=True)
experiments_app = typer.Typer(help="List and inspect experiments.", no_args_is_help=True)
data_app = typer.Typer(help="Create and import datasets.", no_args_is_help=True)
app.add_typer(experiments_app, name="experiments")
app.add_typer(data_app, name="data")
db_app = typer.Typer(help="The database: migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
predictions_app = typer.Typer(help="Prediction jobs: progress, resume.", no_args_is_help=True)
app.add_typer(predictions_app, name="predictions")
token_app = typer.Typer(help="API tokens (on the database, like `db`).", no_args_is_help=True)
app.add_typer(token_app, name="token")

console = Console(width=None if sys.stdout.isatty() else 130)
DEFAULT_URL = "http://127.0.0.1:8000"
UrlOption = typer.Option(DEFAULT_URL, "--url", envvar="GEONAS_URL", help="The geonas API.")


@app.callback()
def _options(
    token: str = typer.Option(
        None, "--token", envvar="GEONAS_TOKEN", help="Bearer token for the API (`geonas token create`)."
    ),
) -> None:
    """geonas: latency-constrained NAS for satellite-image segmentation."""
    if token:  # every ApiClient in this process sends it
        import os

        os.environ["GEONAS_TOKEN"] = token


def friendly(fn):
    """Print a GeonasError as one red line and exit 1, instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GeonasError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None

    return wrapper


def _load_spec(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise GeonasError(f"spec file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise GeonasError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise GeonasError(f"{path} must hold a mapping (an experiment spec), got {type(data).__name__}")
    return data


@app.command()
@friendly
def serve(
    host: str = typer.Option(None, help="Bind address (default from GEONAS_API_HOST)."),
    port: int = typer.Option(None, help="Port (default from GEONAS_API_PORT)."),
    workers: int = typer.Option(1, min=1, help="uvicorn worker processes (each with its own pool and caches)."),
) -> None:
    """Serve the API; with no RAY_ADDRESS, start a local Ray head first."""
    import os

    import uvicorn

    from cluster.connect import connect

    from .app import create_app
    from .auth import auth_required
    from .jobs import JobLauncher
    from .logs import configure_logging
    from .resume import reconcile
    from .settings import get_settings

    configure_logging()
    settings = get_settings()
    if host:  # auth's default depends on where the API listens
        settings = settings.model_copy(update={"api_host": host})
    cluster = connect(settings.ray_address, num_cpus=settings.local_num_cpus, home=settings.home)
    console.print(f"Ray dashboard: {cluster.dashboard_url}  ({cluster.token_note})")
    launcher = JobLauncher(cluster.dashboard_url, settings)
    application = create_app(settings, launcher=launcher)
    for experiment_id, action in reconcile(application.state.store, launcher).items():
        console.print(f"experiment {experiment_id}: its driver had stopped; {action}")
    bind = {"host": host or settings.api_host, "port": port or settings.api_port}
    try:
        if workers == 1:
            uvicorn.run(application, **bind)
            return
        # Worker processes build their own app from the environment: point them at this cluster's
        # Jobs API, and keep auth as decided here (a set RAY_ADDRESS alone would turn it on).
        os.environ["RAY_ADDRESS"] = cluster.dashboard_url
        os.environ["GEONAS_API_HOST"] = bind["host"]
        os.environ["GEONAS_AUTH"] = "true" if auth_required(settings) else "false"
        uvicorn.run("service.app:create_app", factory=True, workers=workers, **bind)
    finally:
        cluster.stop()


@app.command()
@friendly
def demo(
    trials: int = typer.Option(None, help="Override the demo's trial budget."),
    epochs: int = typer.Option(None, help="Override the demo's epochs per trial."),
    dataset: str = typer.Option("demo", help="'demo' (generated GeoTIFFs) or 'dubai-aerial' (real imagery)."),
) -> None:
    """Run the whole product locally: demo data, Ray, the API, a small search, the leaderboard."""
    from .demo import run_demo

    final = run_demo(console, trials=trials, epochs=epochs, dataset=dataset)
    if final["state"] != "completed":
        raise typer.Exit(1)


@app.command()
@friendly
def submit(
    spec: Path = typer.Argument(..., help="Experiment spec (YAML)."),
    wait: bool = typer.Option(False, "--wait", help="Follow the trials until the experiment ends."),
    url: str = UrlOption,
) -> None:
    """Submit an experiment spec."""
    client = ApiClient(url)
    created = client.submit(_load_spec(spec))
    console.print(f"experiment {created['id']} submitted as Ray Job {created['job_id']}")
    if created.get("dashboard_url"):
        console.print(f"dashboard: {created['dashboard_url']}  ({created.get('dashboard_note')})")
    if wait:
        from .watch import watch_experiment

        final = watch_experiment(client, created["id"], console)
        if final["state"] != "completed":
            console.print(f"[red]{final['state']}[/red]: {final.get('error')}")
            raise typer.Exit(1)


@app.command()
@friendly
def pretrain(
    spec: Path = typer.Argument(..., help="CSF pretraining spec (YAML)."),
    wait: bool = typer.Option(False, "--wait", help="Follow the loss until the job ends."),
    url: str = UrlOption,
) -> None:
    """Submit a Contrastive Sensor Fusion pretraining job; its encoder becomes a backbone."""
    import time

    client = ApiClient(url)
    created = client.submit_pretraining(_load_spec(spec))
    console.print(f"pretraining job {created['id']} submitted as Ray Job {created['job_id']}")
    if not wait:
        return
    while True:
        job = client.pretraining(created["id"])
        last = job["loss_curve"][-1]["loss"] if job["loss_curve"] else None
        console.print(f"{job['state']}: step {job['step']}" + (f", loss {last:.4f}" if last is not None else ""))
        if job["state"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(5)
    if job["state"] != "completed":
        console.print(f"[red]{job['state']}[/red]: {job.get('error')}")
        raise typer.Exit(1)
    console.print(f"backbone ready: use `backbone: {{csf: {job['id']}}}` in an experiment spec")


@app.command()
@friendly
def backbones(url: str = UrlOption) -> None:
    """Encoders from finished CSF pretraining jobs."""
    from rich.table import Table

    table = Table(title="backbones")
    for col in ("id", "name", "timm backbone", "bands", "steps"):
        table.add_column(col)
    for b in ApiClient(url).backbones():
        table.add_row(b["id"], b["name"], b["backbone"], ", ".join(b["bands"]), str(b["steps"]))
    console.print(table)


@experiments_app.command("list")
@friendly
def experiments_list(url: str = UrlOption) -> None:
    """All experiments, newest first."""
    from .render import experiments_table

    console.print(experiments_table(ApiClient(url).experiments()))


@experiments_app.command("show")
@friendly
def experiments_show(experiment_id: str, url: str = UrlOption) -> None:
    """One experiment and its trials."""
    from .render import experiments_table, trials_table

    client = ApiClient(url)
    console.print(experiments_table([client.experiment(experiment_id)]))
    console.print(trials_table(client.trials(experiment_id)))


@app.command()
@friendly
def leaderboard(
    max_latency_ms: float = typer.Option(None, "--max-latency-ms", help="Only models at or under this latency."),
    device: str = typer.Option(None, help="Only latencies measured on this device profile."),
    limit: int = typer.Option(20, help="Rows to show."),
    url: str = UrlOption,
) -> None:
    """Models ranked by mIoU across experiments; ★ marks the mIoU/latency Pareto front."""
    from .render import leaderboard_table

    console.print(
        leaderboard_table(ApiClient(url).leaderboard(max_latency_ms=max_latency_ms, device=device, limit=limit))
    )


@app.command()
@friendly
def predict(
    model_id: str = typer.Argument(..., help="A registered (stage-2) model id."),
    scenes: list[str] = typer.Argument(..., help="GeoTIFF scenes: files, folders (their .tif/.tiff) or globs."),
    out: Path = typer.Option(..., "--out", help="Folder for one mask COG per scene and mosaic.vrt over them."),
    local: bool = typer.Option(False, "--local", help="Predict in this process instead of as a Ray job."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Also write class probabilities (x255)."),
    tile: int = typer.Option(256, help="Tile side in pixels."),
    overlap: int = typer.Option(32, help="Overlap between tiles in pixels (blended)."),
    batch_size: int = typer.Option(None, help="Tiles per forward pass (default: 8 on the cluster, from memory here)."),
    workers: int = typer.Option(None, help="Model actors on the cluster (default: one per GPU, else per CPU)."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow the job until it ends."),
    url: str = UrlOption,
) -> None:
    """Segment scenes with a registered model: a Ray Data job on the cluster, or in this process with --local.

    Scenes whose outputs are already complete from this model are skipped; a scene that cannot be read
    fails alone and is named at the end.
    """
    from .predict_cli import follow_prediction, predict_local

    client = ApiClient(url)
    if local:
        from rich.progress import Progress

        meta = client.model(model_id)
        with Progress(console=console) as bar:
            task = bar.add_task("predicting", total=None)

            def show(name: str, done: int, total: int) -> None:
                bar.update(task, description=f"predicting {name}", completed=done, total=total)

            results = predict_local(
                client, meta, scenes, out, tile=tile, overlap=overlap, batch_size=batch_size,
                probabilities=probabilities, progress=show,
            )  # fmt: skip
        _print_scenes(results)
        if not any(r["state"] in ("completed", "skipped") for r in results):
            raise typer.Exit(1)
        return
    import os

    spec: dict[str, Any] = {
        "model_id": model_id,
        "scenes": [os.path.abspath(os.path.expanduser(s)) for s in scenes],  # the API resolves nothing of ours
        "out": str(out.expanduser().resolve()),
        "tile": tile,
        "overlap": overlap,
        "probabilities": probabilities,
    }
    if batch_size:
        spec["batch_size"] = batch_size
    if workers:
        spec["workers"] = workers
    created = client.submit_prediction(spec)
    console.print(f"prediction {created['id']} submitted as Ray Job {created['job_id']}")
    if created.get("dashboard_url"):
        console.print(f"dashboard: {created['dashboard_url']}  ({created.get('dashboard_note')})")
    console.print(f"page: {url.rstrip('/')}/predictions/{created['id']}")
    if not wait:
        return
    final = follow_prediction(client, created["id"], console.print)
    _print_scenes(final["scenes"])
    if final.get("mosaic"):
        console.print(f"mosaic: {final['mosaic']}")
    if final["state"] != "completed":
        console.print(f"[red]{final['state']}[/red]: {final.get('error')}")
        raise typer.Exit(1)


def _print_scenes(results: list[dict[str, Any]]) -> None:
    for r in results:
        colour = {"completed": "green", "skipped": "cyan", "failed": "red"}.get(r["state"], "white")
        console.print(f"[{colour}]{r['state']:>9}[/{colour}] {r['scene']} -> {r['output']}"
                      + (f"  ({r['error']})" if r.get("error") else ""))  # fmt: skip


@predictions_app.command("show")
@friendly
def predictions_show(prediction_id: str, url: str = UrlOption) -> None:
    """A prediction job's progress and each scene's outcome."""
    from .predict_cli import progress_line

    job = ApiClient(url).prediction(prediction_id)
    console.print(progress_line(job))
    _print_scenes(job["scenes"])
    if job.get("error"):
        console.print(f"[red]error:[/red] {job['error']}")


@predictions_app.command("resume")
@friendly
def predictions_resume(
    prediction_id: str,
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow the job until it ends."),
    url: str = UrlOption,
) -> None:
    """Run a prediction job again: complete scenes are skipped, the rest are predicted."""
    from .predict_cli import follow_prediction

    client = ApiClient(url)
    job = client.resume_prediction(prediction_id)
    console.print(f"prediction {job['id']} resumed as Ray Job {job['job_id']}")
    if wait:
        final = follow_prediction(client, job["id"], console.print)
        _print_scenes(final["scenes"])


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


@db_app.command("upgrade")
@friendly
def db_upgrade(revision: str = typer.Argument("head", help="Alembic revision to upgrade to.")) -> None:
    """Migrate the database (GEONAS_DATABASE_URL, default the SQLite file) to a revision."""
    from .dbcli import upgrade

    console.print(upgrade(revision))


@token_app.command("create")
@friendly
def token_create(
    name: str = typer.Option(..., "--name", help="The user: owner of what this token creates."),
    admin: bool = typer.Option(False, "--admin", help="Sees every user's resources."),
) -> None:
    """Create a token and print it once (only a salted hash is stored)."""
    from .dbcli import new_token

    print(new_token(name, admin))


@token_app.command("list")
@friendly
def token_list() -> None:
    """Tokens: id, user, admin, created, revoked (never the secrets)."""
    from .dbcli import tokens

    for row in tokens():
        console.print(row)


@token_app.command("revoke")
@friendly
def token_revoke(token_id: str = typer.Argument(..., help="The id (second part of gnt_<id>_...).")) -> None:
    """Revoke a token; APIs stop accepting it within 30 s (their verification cache)."""
    from .dbcli import revoke

    revoke(token_id)
    console.print(f"revoked {token_id}")


def _parse_split(text: str) -> dict[str, list[str]] | str:
    if "=" not in text:
        return text  # a split file
    split: dict[str, list[str]] = {}
    for part in text.split(";"):
        name, _, globs = part.partition("=")
        split[name.strip()] = [g.strip() for g in globs.split(",") if g.strip()]
    return split


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="geonas")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
