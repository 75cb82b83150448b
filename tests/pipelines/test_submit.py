"""submit: validation against the competition's own files, dry runs, and the real kaggle client path.

Nothing here talks to Kaggle successfully (there is no network, and a faked success would prove
nothing): the client tests check that every way of failing is one line of ours, never a traceback, and
that no secret reaches the output or the run record.
"""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from pipelines.__main__ import main
from pipelines.commands.submit import append_submission
from pipelines.core import kaggle_client
from pipelines.core.kaggle_client import SETUP_HELP, Credentials, find_credentials, translate

REPO = Path(__file__).resolve().parents[2]
TEST_IDS = pd.read_csv(REPO / "data" / "house-prices" / "test.csv", usecols=["Id"])["Id"]
SLUG = "house-prices-advanced-regression-techniques"
KEY = "0123456789abcdef0123456789abcdef"  # well-formed, fake


def house_run(folder: Path, frame: pd.DataFrame | None = None, stem: str = "20260101T000000Z_strong_cv0.12000") -> Path:
    """A minimal house-prices run on disk: a submission and a record that points at the shipped data."""
    folder = folder / "house-prices"
    folder.mkdir(parents=True, exist_ok=True)
    if frame is None:
        frame = pd.DataFrame({"Id": TEST_IDS, "SalePrice": np.linspace(100_000, 300_000, len(TEST_IDS))})
    frame.to_csv(folder / f"{stem}.csv", index=False)
    record = {"competition": "house-prices", "preset": "strong", "cv": 0.12, "kaggle_competition": SLUG,
              "config": {"data_dir": None}, "cv_mean": 0.12, "cv_std": 0.01,
              "files": {"submission": f"{stem}.csv", "oof": None, "figures": {}}}
    (folder / f"{stem}.json").write_text(json.dumps(record))
    return folder / f"{stem}.csv"


def _valid() -> pd.DataFrame:
    return pd.DataFrame({"Id": TEST_IDS, "SalePrice": 180_000.0})


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    """HOME and every KAGGLE_* variable pointed at an empty folder."""
    home = tmp_path / "home"
    home.mkdir()
    for name in list(os.environ):
        if name.startswith("KAGGLE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    return home


def _cli(python: list[str], args, env_home: Path, **env) -> subprocess.CompletedProcess:
    """``python -m pipelines`` in a child with a clean HOME (the kaggle client is imported fresh there) and,
    with the ``offline_python`` fixture as ``python``, no network: the same outcome wherever the suite runs."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    clean.update(HOME=str(env_home), XDG_CONFIG_HOME=str(env_home / ".config"), **env)
    return subprocess.run([*python, *args], cwd=REPO, env=clean, capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("break_it, message", [
    (lambda f: f[["SalePrice", "Id"]], "columns are"),
    (lambda f: f.rename(columns={"SalePrice": "price"}), "columns are"),
    (lambda f: f.iloc[:-1], "missing"),
    (lambda f: pd.concat([f, pd.DataFrame({"Id": [99999], "SalePrice": [1.0]})]), "unknown"),
    (lambda f: f.assign(SalePrice=f["SalePrice"].where(f.index != 3)), "NaN"),
    (lambda f: f.assign(SalePrice=f["SalePrice"].where(f.index != 3, np.inf)), "NaN, infinite"),
    (lambda f: f.assign(SalePrice=f["SalePrice"].where(f.index != 3, -5.0)), "must be positive"),
    (lambda f: f.iloc[::-1], "different order"),
])
def test_malformed_house_file_is_refused_in_one_line(tmp_path, capsys, break_it, message):
    path = house_run(tmp_path, break_it(_valid()))
    assert main(["submit", str(path), "--dry-run", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: house-prices submission") and message in err and err.count("\n") == 1


def test_valid_house_file_dry_run_sends_nothing(tmp_path, capsys, monkeypatch):
    def explode(*a, **k):
        raise AssertionError("dry run must not reach the client")

    monkeypatch.setattr(kaggle_client, "submit", explode)
    monkeypatch.setattr(kaggle_client, "require_credentials", explode)
    path = house_run(tmp_path, _valid())
    before = (path.with_suffix(".json")).read_text()
    assert main(["submit", str(path), "-m", "x", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"valid: {path} (1459 rows) for {SLUG}" in out and "dry run: nothing sent" in out
    assert path.with_suffix(".json").read_text() == before


def test_file_without_record_needs_competition(tmp_path, capsys):
    path = tmp_path / "mine.csv"
    _valid().to_csv(path, index=False)
    assert main(["submit", str(path), "--dry-run"]) == 2
    assert "pass --competition" in capsys.readouterr().err
    assert main(["submit", str(path), "--dry-run", "--competition", "house-prices"]) == 0


def test_empty_and_unparseable_files_are_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main(["submit", str(empty), "--dry-run", "--competition", "house-prices"]) == 2
    assert capsys.readouterr().err == f"error: {empty}: empty file\n"


@pytest.fixture
def leaves_data(tmp_path) -> Path:
    data = tmp_path / "leaves-data"
    data.mkdir()
    pd.DataFrame({"image": [f"images/{i}.jpg" for i in range(6)],
                  "label": ["acer_rubrum", "quercus_alba"] * 3}).to_csv(data / "train.csv", index=False)
    pd.DataFrame({"image": [f"images/{i}.jpg" for i in range(6, 9)]}).to_csv(data / "test.csv", index=False)
    return data


@pytest.mark.parametrize("labels, ok", [
    (["acer_rubrum", "quercus_alba", "acer_rubrum"], True),
    (["acer_rubrum", "pinus_strobus", "acer_rubrum"], False),
    (["acer_rubrum", None, "acer_rubrum"], False),
])
def test_leaves_labels_must_come_from_training_set(tmp_path, leaves_data, capsys, labels, ok):
    folder = tmp_path / "out" / "classify-leaves"
    folder.mkdir(parents=True)
    stem = "20260101T000000Z_tf_efficientnet_lite0_cv0.90000"
    pd.DataFrame({"image": [f"images/{i}.jpg" for i in range(6, 9)], "label": labels}).to_csv(
        folder / f"{stem}.csv", index=False)
    record = {"competition": "classify-leaves", "cv": 0.9, "data": {"dir": str(leaves_data), "source": "given"},
              "files": {"submission": f"{stem}.csv"}}
    (folder / f"{stem}.json").write_text(json.dumps(record))
    assert main(["submit", str(folder / f"{stem}.csv"), "--dry-run"]) == (0 if ok else 2)
    if not ok:
        err = capsys.readouterr().err
        assert "label not in the training set" in err and err.count("\n") == 1


def test_synthetic_leaves_run_is_not_sent(tmp_path, leaves_data, capsys):
    folder = tmp_path / "classify-leaves"
    folder.mkdir()
    pd.DataFrame({"image": [f"images/{i}.jpg" for i in range(6, 9)], "label": ["acer_rubrum"] * 3}).to_csv(
        folder / "r.csv", index=False)
    (folder / "r.json").write_text(json.dumps({"competition": "classify-leaves", "files": {"submission": "r.csv"},
                                               "data": {"dir": str(leaves_data), "source": "synthetic"}}))
    assert main(["submit", str(folder / "r.csv"), "-m", "x"]) == 2
    assert "synthetic" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ credentials
def test_credential_discovery_follows_the_client(no_credentials, monkeypatch):
    home = no_credentials
    assert find_credentials() is None
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    assert find_credentials() is None  # a username alone is not a credential
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    assert find_credentials().method == "KAGGLE_USERNAME/KAGGLE_KEY"
    monkeypatch.delenv("KAGGLE_KEY")
    (home / ".kaggle").mkdir()
    token = home / ".kaggle" / "access_token"
    token.write_text("KGAT_secret\n")
    token.chmod(0o600)
    creds = find_credentials()
    assert creds.method == "access_token" and not creds.warnings and "KGAT_secret" not in repr(creds)
    monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_env")
    assert find_credentials().method == "KAGGLE_API_TOKEN"


def test_open_kaggle_json_gets_a_permission_warning(no_credentials, capsys):
    folder = no_credentials / ".kaggle"
    folder.mkdir()
    path = folder / "kaggle.json"
    path.write_text(json.dumps({"username": "someone", "key": KEY}))
    path.chmod(0o644)
    creds = kaggle_client.require_credentials()
    assert creds.method == "kaggle.json" and creds.source == str(path)
    err = capsys.readouterr().err
    assert "readable by other users" in err and f"chmod 600 {path}" in err and KEY not in err
    path.chmod(0o600)
    assert not find_credentials().warnings


def test_kaggle_json_honours_kaggle_config_dir(no_credentials, tmp_path, monkeypatch):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "kaggle.json").write_text(json.dumps({"username": "someone", "key": KEY}))
    (folder / "kaggle.json").chmod(0o600)
    assert find_credentials() is None
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(folder))
    assert find_credentials().source == str(folder / "kaggle.json")


def test_no_credentials_real_cli_path_is_our_one_line(tmp_path, offline_python):
    path = house_run(tmp_path, _valid())
    home = tmp_path / "home"
    home.mkdir()
    out = _cli(offline_python, ["submit", str(path), "-m", "first try"], home)
    assert out.returncode == 2, out.stderr
    assert out.stderr == f"error: {SETUP_HELP}\n"
    assert "Traceback" not in out.stdout + out.stderr
    assert "submissions" not in json.loads(path.with_suffix(".json").read_text())


@pytest.mark.parametrize("env", [
    {"KAGGLE_USERNAME": "someone", "KAGGLE_KEY": KEY},
    {"KAGGLE_API_TOKEN": "KGAT_" + KEY},
])
def test_unreachable_kaggle_is_one_line_and_leaks_no_secret(tmp_path, env, offline_python):
    path = house_run(tmp_path, _valid())
    home = tmp_path / "home"
    home.mkdir()
    out = _cli(offline_python, ["submit", str(path), "-m", "offline"], home, **env)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: cannot reach Kaggle") and out.stderr.count("\n") == 1
    assert "Traceback" not in out.stderr
    assert KEY not in out.stdout + out.stderr
    record = path.with_suffix(".json").read_text()
    assert KEY not in record and "submissions" not in json.loads(record)


def test_403_rules_and_other_errors_translate_without_secrets():
    creds = Credentials("KAGGLE_USERNAME/KAGGLE_KEY", "KAGGLE_USERNAME/KAGGLE_KEY", secrets=(KEY,))

    def http(code: int) -> requests.HTTPError:
        response = requests.Response()
        response.status_code = code
        return requests.HTTPError(f"{code} error for key {KEY}", response=response)

    forbidden = str(translate(http(403), SLUG, creds))
    assert "rules" in forbidden and f"https://www.kaggle.com/competitions/{SLUG}/rules" in forbidden
    assert "401" in str(translate(http(401), SLUG, creds))
    assert KEY not in str(translate(http(500), SLUG, creds))
    assert str(translate(SystemExit(1), SLUG, None)) == SETUP_HELP
    token = Credentials("KAGGLE_API_TOKEN", "KAGGLE_API_TOKEN", secrets=("KGAT_x",))
    assert "invalid or expired" in str(translate(SystemExit(1), SLUG, token))
    assert KEY not in str(translate(RuntimeError(f"boom {KEY}"), SLUG, creds))


def test_record_only_gains_a_submissions_list(tmp_path):
    path = house_run(tmp_path, _valid()).with_suffix(".json")
    before = json.loads(path.read_text())
    entry = {"time_utc": "2026-01-01T00:00:00+00:00", "message": "m", "sha256": "0" * 64, "kaggle_ref": 7}
    append_submission(path, entry)
    append_submission(path, {**entry, "kaggle_ref": 8})
    after = json.loads(path.read_text())
    assert {k: after[k] for k in before} == before
    assert [s["kaggle_ref"] for s in after["submissions"]] == [7, 8]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------ time limits
@pytest.fixture
def silent_server():
    """A TCP server on 127.0.0.1 that accepts every connection and never answers (a dead proxy, a black-holed
    network); yields its port and the connections it accepted."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    accepted, stop = [], threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


@pytest.mark.parametrize("how", ["submit", "score-only"])
def test_a_network_that_never_answers_ends_in_one_line_within_the_timeout(tmp_path, no_credentials, monkeypatch,
                                                                           capsys, silent_server, how):
    """Every proxy variable points at the silent server, and name resolution of anything else fails, so the
    client can only wait on that server: the call gives up after the time limit (``--timeout``, or
    ``$PIPELINES_KAGGLE_TIMEOUT``) in one line, and nothing is recorded."""
    port, accepted = silent_server
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{port}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    resolve = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost"):
            raise socket.gaierror(socket.EAI_NONAME, "the test reaches its own server only")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    path = house_run(tmp_path, _valid())
    record = path.with_suffix(".json")
    if how == "submit":
        argv = ["submit", str(path), "-m", "x", "--timeout", "0.5"]
    else:
        append_submission(record, {"time_utc": "2026-01-01T00:00:00+00:00", "message": "m", "kaggle_ref": 7})
        monkeypatch.setenv("PIPELINES_KAGGLE_TIMEOUT", "0.5")
        argv = ["submit", str(path), "--score-only"]
    before, start = record.read_text(), time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - start < 15
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach Kaggle (no answer within 0.5 s)") and err.count("\n") == 1, err
    assert KEY not in err and accepted  # the client did get as far as the server that never answered
    assert record.read_text() == before


def test_a_bad_timeout_is_refused_before_any_network_call(tmp_path, no_credentials, monkeypatch, capsys):
    path = house_run(tmp_path, _valid())
    assert main(["submit", str(path), "--timeout", "nan"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--timeout" in err[0]
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    monkeypatch.setenv("PIPELINES_KAGGLE_TIMEOUT", "forever")
    assert main(["submit", str(path), "-m", "x"]) == 2
    assert capsys.readouterr().err == \
        "error: PIPELINES_KAGGLE_TIMEOUT='forever': expected a number of seconds above 0\n"


# ------------------------------------------------------------------------------------------ Makefile
@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_passes_values_through_the_environment_never_the_shell(tmp_path):
    """``make submit FILE=... MESSAGE=...``: no value is pasted into a recipe's text (a path with a space stays
    one argument, a backquote or $(shell ...) in a message is not run); the values arrive as typed."""
    marker = tmp_path / "pwned"
    values = {"FILE": str(tmp_path / "a b" / "x.csv"), "MESSAGE": f"lasso `touch {marker}` $(shell touch {marker})",
              "ARGS": "--dry-run 'two words'", "RUNS": f"$$(touch {marker})", "TRIALS": f"1; touch {marker}"}
    assign = [f"{k}={v}" for k, v in values.items()]
    dry = subprocess.run(["make", "-n", "-o", ".venv/.installed", "submit", "blend", "tune", *assign], cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    assert dry.returncode == 0, dry.stderr
    assert not any(v in dry.stdout for v in values.values()) and '"$FILE"' in dry.stdout
    show = "show: ; @printf '[%s]\\n' " + " ".join(f'"$${k}"' for k in values)
    shown = subprocess.run(["make", "-s", "--eval", show, "show", *assign], cwd=REPO, capture_output=True, text=True,
                           timeout=30)
    assert shown.stdout.splitlines() == [f"[{v}]" for v in values.values()], shown.stderr
    assert not marker.exists()
