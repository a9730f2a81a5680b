"""The ``geonas`` command line. It talks to the REST API (``--url``), never to the database.

Errors a user can fix are printed as one line and exit with status 1; no tracebacks.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
import yaml

from search_spaces.errors import GeonasError

from .cli_common import UrlOption, console, friendly
from .cli_data import data_app
from .client import ApiClient

app = typer.Typer(help="geonas: latency-constrained NAS for satellite-image segmentation.", no_args_is_help=True)
experiments_app = typer.Typer(help="List and inspect experiments.", no_args_is_help=True)
app.add_typer(experiments_app, name="experiments")
app.add_typer(data_app, name="data")
db_app = typer.Typer(help="The database: migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
predictions_app = typer.Typer(help="Prediction jobs: progress, resume.", no_args_is_help=True)
app.add_typer(predictions_app, name="predictions")
token_app = typer.Typer(help="API tokens (on the database, like `db`).", no_args_is_help=True)
app.add_typer(token_app, name="token")

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


class WriteOn(StrEnum):
    """Who writes a cluster prediction's scenes (``PredictionSpec.write_on``)."""

    workers = "workers"
    driver = "driver"


@app.command()
@friendly
def predict(
    model_id: str = typer.Argument(..., help="A registered (stage-2) model id."),
    scenes: list[str] = typer.Argument(..., help="GeoTIFF scenes: files, folders (their .tif/.tiff) or globs."),
    out: Path = typer.Option(
        ...,
        "--out",
        help="Folder for one mask COG per scene and mosaic.vrt over them; on the cluster the model actors "
        "write there, so it must be a folder every node sees at this path (shared: NFS, a mounted bucket) "
        "unless --write-on driver.",
    ),
    write_on: WriteOn = typer.Option(
        "workers", "--write-on", help="Who writes each scene on the cluster: the model actors (needs a shared "
        "--out) or the job's driver (actors send it each blended scene as uint8).",
    ),
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
    fails alone and is named at the end. On the cluster each model actor writes the scenes it predicts,
    so --out must be shared by every node; without a shared folder, use --write-on driver.
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
        "write_on": write_on.value,
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


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="geonas")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
