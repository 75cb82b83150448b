"""One masking function for every secret: malformed storage URLs, env values, tokens; nothing leaks to
stdout, stderr or any written file (the CLI's log file included)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.__main__ import main
from pipelines.core.errors import PipelineError, mask_secrets

SECRET = "hunter2Zq"
TAIL = "Tq9tail"  # the part of a password after an unencoded '@', which a driver takes for the host
# every way a storage URL was seen to leak, and more: no "://", no scheme, "scheme:/", a query password,
# an unencoded "@" (and ":" or "/") in the password, driver prefixes, quoting
CORPUS = [
    f"postgresql//optuna:{SECRET}@db-host:5432/optuna",
    f"optuna:{SECRET}@db-host:5432/optuna",
    f"postgresql:/optuna:{SECRET}@127.0.0.1:1/optuna",
    f"postgresql://127.0.0.1:1/optuna?user=optuna&password={SECRET}",
    f"postgresql://127.0.0.1:1/optuna?password={SECRET}&sslmode=disable",
    f"postgresql://u:{SECRET}@{TAIL}@127.0.0.1:1/db",
    f"postgresql://u:{SECRET}@T:o/p@127.0.0.1:1/db",
    f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/db",
    f"mysql://root:{SECRET}@[::1]:1/db",
    f"postgres://u:{SECRET}@127.0.0.1:1/db",
    f"'postgresql://u:{SECRET}@127.0.0.1:1/db'",
    f"postgresql://:{SECRET}@127.0.0.1:1/db",
    f"u:{SECRET}@",
    f"sqlite:///x.db?password={SECRET}",
    f"postgresql://u:{SECRET}@127.0.0.1:notaport/db",
]


@pytest.mark.parametrize("url", CORPUS)
def test_mask_secrets_hides_the_password_of_any_url_shape(url):
    masked = mask_secrets(url)
    assert SECRET not in masked and TAIL not in masked and "***" in masked
    assert any(host in masked for host in ("127.0.0.1", "db-host", "x.db", "::1")) or masked.endswith("@")


def test_mask_keeps_what_is_not_secret_and_masks_tokens_and_env_values(monkeypatch):
    assert mask_secrets("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    assert mask_secrets("postgresql://optuna@localhost/db") == "postgresql://optuna@localhost/db"
    assert mask_secrets("sqlite:////abs/runs/tune/x.db") == "sqlite:////abs/runs/tune/x.db"
    assert mask_secrets("export KAGGLE_API_TOKEN=<token>") == "export KAGGLE_API_TOKEN=<token>"  # help text stays
    for text in ("KAGGLE_KEY=0123456789abcdef", '{"key": "0123456789abcdef"}', "Authorization: Bearer 0123456789abcdef",
                 "token KGAT_0123456789abcdef", "PGPASSWORD=0123456789abcdef"):
        assert "0123456789abcdef" not in mask_secrets(text), text
    monkeypatch.setenv("MY_DB_PASSWORD", "plainvalue-42x")
    assert "plainvalue-42x" not in mask_secrets("connecting with plainvalue-42x")
    assert "plainvalue-42x" not in str(PipelineError("driver said: plainvalue-42x"))


def _all_written(root: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") + p.name for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("url", CORPUS)
def test_tune_with_a_malformed_storage_leaks_the_password_nowhere(url, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIPELINES_LOG_DIR", str(tmp_path / "logs"))
    code = main(["tune", "house-prices", "--storage", url, "--trials", "1", "--models", "lasso", "--folds", "2",
                 "--runs-dir", str(tmp_path / "runs"), "--no-plots", "--study", "s"])
    captured = capfd.readouterr()
    if not url.startswith("sqlite"):  # a sqlite URL with a query is valid: that study just runs
        err = captured.err.strip()
        assert code in (1, 2) and err.startswith("error: ") and "\n" not in err, err
    for secret in (SECRET, TAIL):
        assert secret not in captured.out + captured.err
        assert secret not in _all_written(tmp_path)


def test_an_unexpected_error_quoting_a_secret_is_masked_in_the_line_and_the_log(tmp_path, monkeypatch, capfd):
    import pipelines.commands.runs

    def boom(args):
        raise RuntimeError(f"connection to postgresql://u:{SECRET}@h/db failed; password={SECRET}")

    monkeypatch.setattr(pipelines.commands.runs, "run", boom)
    monkeypatch.setenv("PIPELINES_LOG_DIR", str(tmp_path / "logs"))
    assert main(["runs", "--debug"]) == 1
    captured = capfd.readouterr()
    assert SECRET not in captured.out + captured.err and "Traceback" in captured.err  # --debug: inline
    (log,) = (tmp_path / "logs").iterdir()
    assert "Traceback" in log.read_text() and SECRET not in log.read_text()


def test_worker_processes_get_the_storage_url_from_the_environment_not_argv(tmp_path):
    """A password in argv is visible to every local user through ps: the workers' command lines hold none."""
    from pipelines.__main__ import build_parser
    from pipelines.commands.tune import STORAGE_ENV, child_argv

    argv = ["tune", "house-prices", "--storage", f"postgresql://u:{SECRET}@h/db", "--study", "s"]
    args = build_parser(argv).parse_args(argv)  # the real parser: its common flags (--mlflow) included
    argv = child_argv(args, 1)
    assert SECRET not in " ".join(argv) and "--storage" not in argv and STORAGE_ENV == "PIPELINES_TUNE_STORAGE"
