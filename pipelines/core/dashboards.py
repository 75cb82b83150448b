"""The two web UIs, on the loopback only: the MLflow UI on the tracking store, optuna-dashboard on a study.

``make mlflow-ui`` and ``make dashboard`` run ``python -m pipelines.core.dashboards mlflow-ui|optuna``. Each
checks its store first (one ``error:`` line when there is nothing to show), prints the URL to open, then
serves until Ctrl-C. Both bind 127.0.0.1: the runs, their data folders and a study's storage are not for the
network. Store URLs that may hold a password (PostgreSQL) travel in the environment, not on a command line
that every local user can read: ``MLFLOW_TRACKING_URI`` and ``PIPELINES_TUNE_STORAGE`` (``STORAGE=`` in make).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from pipelines.core import tracking
from pipelines.core.errors import PipelineError, mask_secrets

HOST = "127.0.0.1"
STORAGE_ENV = "PIPELINES_TUNE_STORAGE"  # as `tune` reads it


def mlflow_ui(port: int) -> NoReturn:
    """``mlflow ui`` on ``tracking.tracking_uri()``, one worker, MLflow's telemetry (it would reach the network)
    and job runner (7 processes for GenAI jobs, unused here) switched off."""
    uri = tracking.tracking_uri()
    if uri.startswith(("http://", "https://", "databricks")):
        raise PipelineError(f"{tracking.URI_ENV} is a server already ({mask_secrets(uri)}): open it in a browser")
    tracking.require_mlflow()
    path = tracking.sqlite_file(uri)
    if path is not None and not path.is_file():
        raise PipelineError(f"no MLflow store at {path}: run a command with --mlflow first, or set "
                            f"{tracking.URI_ENV}")
    print(f"MLflow UI on {mask_secrets(uri)}: http://{HOST}:{port}  (Ctrl-C stops it)", flush=True)
    env = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ,
           "MLFLOW_BACKEND_STORE_URI": uri}  # telemetry and jobs: unless the user's environment says otherwise
    os.execve(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--host", HOST, "--port", str(port),
                                  "--workers", "1"], env)


def optuna_dashboard(study: str | None, port: int) -> None:
    """optuna-dashboard on ``$PIPELINES_TUNE_STORAGE``, else ``runs/tune/<study>.db`` (tune's default); the
    URL printed is the study's own page."""
    import optuna

    from pipelines.core import tuning

    storage = os.environ.get(STORAGE_ENV) or (tuning.default_storage_url("runs", study, create=False) if study
                                              else None)
    if storage is None:
        raise PipelineError("name the study (STUDY=...) or its storage (STORAGE=sqlite:///... or postgresql://...)")
    path = tracking.sqlite_file(storage)
    if path is not None and not path.is_file():
        raise PipelineError(f"no study database at {path}: run `make tune` first, or pass STORAGE=")
    try:
        import optuna_dashboard as dashboard
    except ImportError:
        raise PipelineError(f"optuna-dashboard is in the optional 'track' extra: {tracking.EXTRA}") from None
    try:
        opened = optuna.storages.get_storage(storage)
        names = optuna.get_all_study_names(opened)
    except Exception as err:  # noqa: BLE001 - a server that is down, a wrong password: one line
        raise tuning.storage_error(storage, err) from None
    if study and study not in names:
        raise PipelineError(f"no study {study!r} in {tuning.mask_url(storage)}; it holds: "
                            f"{', '.join(sorted(names)) or 'no study'}")
    page = f"/dashboard/studies/{opened.get_study_id_from_name(study)}" if study else "/dashboard"
    print(f"optuna-dashboard on {tuning.mask_url(storage)}: http://{HOST}:{port}{page}  (Ctrl-C stops it)",
          flush=True)
    dashboard.run_server(opened, host=HOST, port=port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.core.dashboards", description=__doc__.split("\n")[0])
    parser.add_argument("ui", choices=("mlflow-ui", "optuna"))
    parser.add_argument("--port", type=int, default=None, help="default 5000 (MLflow), 8080 (optuna-dashboard)")
    parser.add_argument("--study", default=None, help="optuna: the study (its storage: runs/tune/<study>.db)")
    args = parser.parse_args(argv)
    try:
        if args.ui == "mlflow-ui":
            mlflow_ui(args.port or 5000)
        else:
            optuna_dashboard(args.study, args.port or 8080)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
