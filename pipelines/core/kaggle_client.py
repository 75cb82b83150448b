"""The one door to Kaggle: find credentials the way the installed client (kaggle 2.x) does, call it, and
turn every failure into one ``PipelineError`` line.

Why not just ``import kaggle``? Importing the package authenticates at import time: with no credentials
it prints a page of help and swallows a ``SystemExit``; with a token it calls the network. And
``KaggleApi.authenticate()`` itself calls ``exit(1)``. So we look for credentials ourselves first (to say
exactly how to set one up), import the client with its output captured, and catch ``SystemExit`` too.

Every call has a time limit (``timeout``): the client sets none, so a network that accepts a connection and
never answers (a dead proxy, a captive portal) would hang ``submit`` for ever.

Secrets never leave this module: ``Credentials`` keeps them out of its ``repr``, messages are scrubbed
of every secret value before they are raised, and the client's own printing is captured and dropped.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import socket
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.core.errors import PipelineError, mask_secrets

TOKEN_URL = "https://www.kaggle.com/settings/api"
TIMEOUT_ENV = "PIPELINES_KAGGLE_TIMEOUT"  # seconds each network wait may take (``submit --timeout`` overrides)
DEFAULT_TIMEOUT = 30.0  # a Kaggle API call answers within seconds; an upload sends its bytes well within this
SETUP_HELP = (
    f"no Kaggle credentials found: create an API token at {TOKEN_URL} ('Generate New Token'), then either "
    "`export KAGGLE_API_TOKEN=<token>` or save it to ~/.kaggle/access_token and `chmod 600` it "
    "(legacy: ~/.kaggle/kaggle.json with username and key, or KAGGLE_USERNAME and KAGGLE_KEY)"
)


@dataclass(frozen=True)
class Credentials:
    """Which credentials the client will use and where they came from; the secrets are never shown."""

    method: str  # e.g. "KAGGLE_API_TOKEN", "~/.kaggle/access_token", "kaggle.json", "KAGGLE_USERNAME/KAGGLE_KEY"
    source: str  # an env variable name or a file path: safe to print
    warnings: tuple[str, ...] = ()
    secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def describe(self) -> str:
        return self.method if self.method == self.source else f"{self.method} ({self.source})"


def config_dir(environ: dict[str, str] | None = None) -> Path:
    """Where the client looks for ``kaggle.json``: ``$KAGGLE_CONFIG_DIR``, ``~/.kaggle``, else XDG."""
    env = os.environ if environ is None else environ
    if env.get("KAGGLE_CONFIG_DIR"):
        return Path(env["KAGGLE_CONFIG_DIR"])
    home = Path(os.path.expanduser("~"))
    legacy = home / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"
    return legacy


def _read_token(path: Path) -> str | None:
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    return token or None


def _too_open(path: Path) -> str | None:
    if os.name == "nt":
        return None
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}): run `chmod 600 {path}`"
    return None


def find_credentials(environ: dict[str, str] | None = None) -> Credentials | None:
    """The credentials kaggle 2.x would use, in its order: access token (env, then file), legacy API key
    (``kaggle.json`` overridden by ``KAGGLE_USERNAME``/``KAGGLE_KEY``), OAuth from ``kaggle auth login``.
    """
    env = os.environ if environ is None else environ
    home = Path(os.path.expanduser("~"))
    token = _access_token(env, home)
    if token is not None:
        return token
    json_path = config_dir(env) / "kaggle.json"
    legacy, warnings = _legacy_key(env, json_path)
    if legacy is not None:
        return legacy
    oauth = _oauth(home / ".kaggle" / "credentials.json", warnings)
    if oauth is not None:
        return oauth
    if warnings:  # a kaggle.json without a username or key: say why it did not count
        raise PipelineError(f"{json_path} has no 'username' and 'key'; {SETUP_HELP}")
    return None


def _token_file(method: str, path: Path) -> Credentials | None:
    """The token in ``path`` (``None`` if missing or empty), with a warning if other users can read it."""
    value = _read_token(path)
    if not value:
        return None
    warning = _too_open(path)
    return Credentials(method, str(path), (warning,) if warning else (), (value,))


def _access_token(env: dict[str, str], home: Path) -> Credentials | None:
    """``KAGGLE_API_TOKEN`` (the token itself, or a file holding it), then ``~/.kaggle/access_token[.txt]``."""
    token = env.get("KAGGLE_API_TOKEN")
    if token and not Path(token).is_file():
        return Credentials("KAGGLE_API_TOKEN", "KAGGLE_API_TOKEN", (), (token,))
    found = _token_file("KAGGLE_API_TOKEN", Path(token)) if token else None
    for name in ("access_token", "access_token.txt"):
        found = found or _token_file("access_token", home / ".kaggle" / name)
    return found


def _legacy_key(env: dict[str, str], json_path: Path) -> tuple[Credentials | None, list[str]]:
    """The legacy username and key: ``kaggle.json``'s, each overridden by ``KAGGLE_USERNAME``/``KAGGLE_KEY``;
    and the warnings the file gave (too open, not JSON)."""
    warnings: list[str] = []
    legacy = _read_kaggle_json(json_path, warnings)
    from_env = [k for k in ("username", "key") if env.get(f"KAGGLE_{k.upper()}")]
    for k in from_env:
        legacy[k] = env[f"KAGGLE_{k.upper()}"]
    if not (legacy.get("username") and legacy.get("key")):
        return None, warnings
    if len(from_env) == 2:
        return Credentials("KAGGLE_USERNAME/KAGGLE_KEY", "KAGGLE_USERNAME/KAGGLE_KEY", tuple(warnings),
                           (str(legacy["key"]),)), warnings
    return Credentials("kaggle.json", str(json_path), tuple(warnings), (str(legacy["key"]),)), warnings


def _read_kaggle_json(path: Path, warnings: list[str]) -> dict[str, Any]:
    """``kaggle.json`` as a dict (empty if missing or unreadable); problems are added to ``warnings``."""
    if not path.is_file():
        return {}
    warning = _too_open(path)
    if warning:
        warnings.append(warning)
    try:
        data = json.loads(path.read_text()) or {}
    except (OSError, ValueError):
        warnings.append(f"{path} is not valid JSON; ignored")
        return {}
    return data if isinstance(data, dict) else {}


def _oauth(path: Path, warnings: list[str]) -> Credentials | None:
    """``kaggle auth login``'s ``credentials.json``: every string field named like a token is a secret."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    fields = data.items() if isinstance(data, dict) else ()
    secrets = tuple(str(v) for k, v in fields if isinstance(v, str) and "token" in k.lower())
    warning = _too_open(path)
    return Credentials("oauth", str(path), (*warnings, *([warning] if warning else [])), secrets)


def require_credentials() -> Credentials:
    """``find_credentials()`` or the one-line setup instructions; warnings go to stderr."""
    creds = find_credentials()
    if creds is None:
        raise PipelineError(SETUP_HELP)
    for warning in creds.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return creds


# ------------------------------------------------------------------------------------ the client call
def scrub(text: str, creds: Credentials | None) -> str:
    """``text`` with every secret replaced by ``***`` (belt and braces: the client never prints them): the
    credentials' own values, then the shared masking of anything secret-shaped (``mask_secrets``)."""
    return mask_secrets(text, creds.secrets if creds else ())


def _reason(err: BaseException) -> str:
    text = str(err)
    for marker, short in (("NameResolutionError", "name resolution failed"),
                          ("Name or service not known", "name resolution failed"),
                          ("Temporary failure in name resolution", "name resolution failed"),
                          ("Connection refused", "connection refused"),
                          ("timed out", "timed out"),
                          ("Network is unreachable", "network is unreachable")):
        if marker in text:
            return short
    return type(err).__name__


def translate(err: BaseException, competition: str, creds: Credentials | None,
              offline_hint: str = "validate only with --dry-run", timeout: float | None = None) -> PipelineError:
    """One line a user can act on, for whatever the client raised (``offline_hint``: what to do offline,
    ``timeout``: the limit a timed-out call ran under)."""
    import requests

    rules = f"https://www.kaggle.com/competitions/{competition}/rules"
    who = creds.describe() if creds else "the configured credentials"
    if isinstance(err, SystemExit):  # authenticate() found nothing it accepts
        if creds and creds.method in ("KAGGLE_API_TOKEN", "access_token"):
            msg = f"Kaggle did not accept the access token from {who} (invalid or expired): create a new one at " \
                  f"{TOKEN_URL}"
        else:
            msg = SETUP_HELP
    elif isinstance(err, requests.HTTPError):
        code = getattr(err.response, "status_code", None)
        if code == 403:
            msg = (f"Kaggle refused {competition} with 403 Forbidden: the rules are probably not accepted; "
                   f"accept them at {rules} (signed in as the account of {who}), then retry")
        elif code == 401:
            msg = f"Kaggle rejected the credentials from {who} (401 Unauthorized): create a new token at {TOKEN_URL}"
        elif code == 404:
            msg = f"Kaggle has no competition {competition!r} (404 Not Found); check kaggle_competition in the record"
        elif code == 429:
            msg = f"Kaggle says too many requests (429) for {competition}: the daily submission limit may be reached"
        else:
            first = str(err).splitlines()[0] if str(err) else ""
            msg = f"Kaggle answered {code} for {competition}: {first}"
    elif isinstance(err, requests.Timeout | TimeoutError) or (
            isinstance(err, requests.ConnectionError) and _reason(err) == "timed out"):
        within = f" within {timeout:g} s" if timeout else ""
        msg = (f"cannot reach Kaggle (no answer{within}): check the network and any proxy, allow more time with "
               f"--timeout or {TIMEOUT_ENV}, or {offline_hint}")
    elif isinstance(err, requests.ConnectionError):
        msg = f"cannot reach Kaggle ({_reason(err)}): check the network, or {offline_hint}"
    elif isinstance(err, ImportError):
        msg = f"the kaggle client cannot be imported ({err}); run `make setup`"
    else:
        first = str(err).splitlines()[0] if str(err) else ""
        msg = f"kaggle client failed: {type(err).__name__}: {first}"
    return PipelineError(scrub(msg, creds))


@contextlib.contextmanager
def _quiet():
    """Capture the client's own printing (auth help, progress, permission notes) and drop it."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _api(creds: Credentials):
    """An authenticated ``KaggleApi`` that reads the config dir of *now* (the class fixes it at import)."""
    with _quiet():
        from kaggle.api.kaggle_api_extended import KaggleApi

        api = KaggleApi()
        folder = config_dir()
        api.config_dir = str(folder)
        api.config = str(folder / "kaggle.json")
        api.authenticate()
    return api


def default_timeout() -> float:
    """``$PIPELINES_KAGGLE_TIMEOUT`` seconds, else ``DEFAULT_TIMEOUT``; a value that is no positive number is
    one error line (a typo must not silently mean "wait for ever")."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise PipelineError(f"{TIMEOUT_ENV}={text!r}: expected a number of seconds above 0")
    return value


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Every socket wait inside bounded by ``seconds``: connecting, and each wait for an answer.

    The kaggle client passes no timeout to ``requests`` (an explicit ``None``, which also overrides
    ``socket.setdefaulttimeout``), and its uploads open sessions of their own, so the one place that sees
    every call is ``HTTPAdapter.send``: a missing timeout becomes ``seconds``, a longer one is cut to it.
    The socket default covers anything that does not go through ``requests``.
    """
    from requests.adapters import HTTPAdapter

    send = HTTPAdapter.send

    def bounded(adapter, request, stream=False, timeout=None, *args, **kwargs):
        if timeout is None or isinstance(timeout, int | float):
            timeout = seconds if timeout is None else min(timeout, seconds)
        return send(adapter, request, stream, timeout, *args, **kwargs)

    previous = socket.getdefaulttimeout()
    HTTPAdapter.send = bounded
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        HTTPAdapter.send = send
        socket.setdefaulttimeout(previous)


def _call(creds: Credentials, competition: str, fn, timeout: float | None = None, **translate_kw):
    """``fn(api)`` under a time limit (``timeout``, else ``default_timeout()``), any failure as one line."""
    seconds = timeout or default_timeout()
    try:
        with _quiet(), _time_limit(seconds):
            return fn(_api(creds))
    except (Exception, SystemExit) as err:  # noqa: BLE001 - anything the client raises becomes one line
        raise translate(err, competition, creds, timeout=seconds, **translate_kw) from None


def submit(file: str | Path, message: str, competition: str, creds: Credentials,
           timeout: float | None = None) -> dict:
    """``kaggle competitions submit -c competition -f file -m message`` through the Python API."""

    def send(api):
        response = api.competition_submit(str(file), message, competition, quiet=True)
        text = getattr(response, "message", None) or ""
        if text == api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:
            raise RuntimeError(text)
        return {"ref": getattr(response, "ref", None) or None, "message": text}

    return _call(creds, competition, send, timeout)


def submissions(competition: str, creds: Credentials, timeout: float | None = None) -> list[dict]:
    """Your recent submissions to ``competition``, newest first, as plain dicts (public score as a float)."""

    def fetch(api):
        rows = []
        for s in api.competition_submissions(competition) or []:
            if s is None:
                continue
            score = getattr(s, "public_score", None)
            try:
                score = float(score) if score not in (None, "") else None
            except ValueError:
                score = None
            rows.append({"ref": getattr(s, "ref", None), "description": getattr(s, "description", None),
                         "file_name": getattr(s, "file_name", None), "status": str(getattr(s, "status", "")),
                         "date": str(getattr(s, "date", "")), "public_score": score})
        return rows

    return _call(creds, competition, fetch, timeout)


def download(competition: str, dest: Path, creds: Credentials) -> Path:
    """``kaggle competitions download -c competition`` into ``dest``, archives unzipped and removed."""
    import zipfile

    dest.mkdir(parents=True, exist_ok=True)
    _call(creds, competition, lambda api: api.competition_download_files(competition, path=str(dest), quiet=True),
          offline_hint=f"put the competition files in {dest} yourself (or pass --data-dir)")
    for archive in dest.glob("*.zip"):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)
        archive.unlink()
    return dest
