"""What a user sees when something goes wrong: one line, and never a secret.

``PipelineError`` is the one exception type a user sees: its message is printed as a single line, with
no traceback. ``mask_secrets`` is the one masking function: every path that echoes a storage URL, a
credential or an environment value goes through it (``PipelineError`` itself does, so does the CLI's
log file). It works on text, not on parsed URLs, because the URLs that leak are the ones that do not
parse: a missing ``:``, a missing scheme, an unencoded ``@`` in the password.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable

MASK = "***"

# user:password@host, anywhere in a word. The password runs to the word's *last* '@' (an unencoded '@' in a
# password must not leak its tail as the host name); a "scheme://", "scheme:/" or "scheme//" prefix is kept.
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][\w+.-]*(?::/{1,2}|//))?"
    r"(?P<user>[^\s:/@'\"<>]*):(?P<password>(?!//)[^\s'\"<>]*)@(?=[^\s@'\"<>]*(?:[\s'\"<>]|$))"
)
# password=..., token: ..., "api_key": "..." (query strings, env dumps, JSON, driver messages)
# (the name must *end* in the secret word: KAGGLE_KEY and api_key are secret, KeyError and keys_seen are not)
_SECRET_WORD = r"[\w.-]*(?:pass(?:word|wd)?|pwd|tokens?|secret|key|auth|authorization|credentials?)(?![A-Za-z0-9])"
_KEY_VALUE = re.compile(rf"(?i)(?P<key>\b{_SECRET_WORD}['\"]?\s*[=:]\s*['\"]?)(?P<value>(?!<)[^\s&;,'\"]+)")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[\w.~+/=-]{8,}")
_TOKENS = re.compile(r"\b(?:KGAT_[\w-]+|gh[pousr]_[A-Za-z0-9]{16,}|sk-[A-Za-z0-9_-]{16,}|xox[abpr]-[\w-]{10,})")
_SECRET_ENV = re.compile(r"(?i)(pass|pwd|token|secret|key|credential)")


def secret_env_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values of environment variables whose name says they are secret (``KAGGLE_KEY``, ``PGPASSWORD``...)."""
    env = os.environ if environ is None else environ
    return [v for k, v in env.items() if _SECRET_ENV.search(k) and len(v) >= 8 and not os.path.exists(v)]


def secrets_in(text: str) -> list[str]:
    """The passwords ``mask_secrets`` would hide in ``text`` (e.g. a storage URL), and each ``@``-separated piece
    of them: a driver that split ``u:pass@word@host`` at the first ``@`` echoes ``word@host`` as the host."""
    found = [m["password"] for m in _USERINFO.finditer(text)] + [m["value"] for m in _KEY_VALUE.finditer(text)]
    pieces = {p for secret in found for p in (secret, *secret.split("@")) if len(p) >= 3}
    return sorted(pieces, key=len, reverse=True)


def mask_secrets(text: object, secrets: Iterable[str] = ()) -> str:
    """``text`` with every password, token and known secret value replaced by ``***``.

    Masked: the password of anything shaped like ``user:password@host`` (whether or not it parses as a URL),
    the value of ``password=``/``token=``/``key=``-like pairs, bearer tokens and well-known token formats,
    and the literal values in ``secrets`` and in secret-named environment variables.
    """
    out = str(text)
    for value in sorted({*secrets, *secret_env_values()}, key=len, reverse=True):
        if value:
            out = out.replace(value, MASK)

    def userinfo(m: re.Match) -> str:
        return f"{m['scheme'] or ''}{m['user']}:{MASK}@" if m["password"] != MASK else m[0]

    out = _USERINFO.sub(userinfo, out)
    out = _BEARER.sub(lambda m: f"{m[1]} {MASK}", out)
    out = _KEY_VALUE.sub(lambda m: m["key"] + MASK if m["value"] not in (MASK, "Bearer", "Basic") else m[0], out)
    return _TOKENS.sub(MASK, out)


class PipelineError(Exception):
    """Bad input or a refused action. The CLI prints ``error: <message>`` and exits with status 2."""

    def __str__(self) -> str:  # one line whatever the caller passed, and never a secret
        return mask_secrets(" ".join(super().__str__().split()))


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``docker stop``, a scheduler), raised like Ctrl-C so that every clean-up written
    for Ctrl-C (``finally`` blocks, the writer's staging folder, tune's workers) runs for it too."""


# an OSError the user can act on (free space, a writable folder): one line naming the path, no traceback
_DISK_ERRORS = {errno.ENOSPC: "no space left on device writing {}", errno.EDQUOT: "disk quota exceeded writing {}",
                errno.EROFS: "read-only file system: cannot write {}", errno.EACCES: "permission denied: {}"}


def disk_error(err: BaseException, path: object = None) -> PipelineError | None:
    """The one-line ``PipelineError`` for a full disk, an exceeded quota, a read-only or forbidden path found in
    ``err`` or the errors it was raised from, naming ``path`` (else the error's own filename);
    ``None`` for any other error."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _DISK_ERRORS:
            where = path or err.filename or "a file"
            return PipelineError(_DISK_ERRORS[err.errno].format(where))
        err = err.__cause__
    return None
