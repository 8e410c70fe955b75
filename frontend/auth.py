"""API keys: loading, hashing and constant-time checking of `Authorization: Bearer` keys
(or `x-api-key`, as Anthropic's clients send them).

Only SHA-256 digests of keys are kept in memory and on disk. A key file has one key per
line, `<key_id>:sha256:<64 hex digits>`; blank lines and `#` comments are skipped.
`python -m frontend.auth <key_id>` makes a new key and prints its file line.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from frontend.errors import MissingApiKeyError, UnknownApiKeyError

ANONYMOUS = "anonymous"
_LINE = re.compile(r"^(?P<key_id>[A-Za-z0-9_.-]{1,64}):sha256:(?P<digest>[0-9a-f]{64})$")


class KeyFileError(ValueError):
    """The key file is unreadable or has a malformed line."""


def key_digest(key: str) -> bytes:
    """SHA-256 of a key; keys are random and long, so no salt or slow hash is needed."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def key_file_line(key_id: str, key: str) -> str:
    """The key file line for `key` (what gets persisted instead of the key)."""
    return f"{key_id}:sha256:{key_digest(key).hex()}"


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    digest: bytes


def load_key_file(path: Path) -> list[ApiKey]:
    """Read a key file of hashed keys."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise KeyFileError(f"cannot read API key file {path}: {exc.strerror}") from exc
    keys = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise KeyFileError(f"{path}:{number}: expected <key_id>:sha256:<64 hex digits>")
        keys.append(ApiKey(match["key_id"], bytes.fromhex(match["digest"])))
    return keys


class ApiKeyStore:
    """The accepted keys; `authenticate` turns an Authorization header into a key id."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._keys = tuple(keys)

    @classmethod
    def from_settings(cls, plain: Sequence[SecretStr], key_file: Path | None) -> ApiKeyStore:
        """Keys given in the settings (ids derive from their digests) plus a key file's."""
        digests = [key_digest(k.get_secret_value()) for k in plain]
        keys = [ApiKey(f"key-{digest.hex()[:8]}", digest) for digest in digests]
        if key_file is not None:
            keys.extend(load_key_file(key_file))
        return cls(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def authenticate(self, authorization: str | None, api_key: str | None = None) -> str:
        """The key id for a `Bearer <key>` Authorization header or, without one, an
        `x-api-key` header (Anthropic's); else MissingApiKeyError/UnknownApiKeyError."""
        if not authorization:
            token = (api_key or "").strip()
            if not token:
                raise MissingApiKeyError
            return self._key_id(token)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise MissingApiKeyError
        return self._key_id(token)

    def _key_id(self, token: str) -> str:
        presented = key_digest(token)
        found: str | None = None
        # Every stored digest is compared, so the time taken does not tell which matched.
        for key in self._keys:
            if hmac.compare_digest(presented, key.digest):
                found = key.key_id
        if found is None:
            raise UnknownApiKeyError
        return found


def main(argv: Sequence[str] | None = None) -> int:
    """Print a new random key and the line to add to a key file."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", args[0]):
        print("usage: python -m frontend.auth <key_id>", file=sys.stderr)
        return 2
    key = "sk-" + secrets.token_urlsafe(32)
    print(f"key (shown once): {key}")
    print(f"key file line:    {key_file_line(args[0], key)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
