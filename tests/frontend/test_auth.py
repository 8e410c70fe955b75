"""API keys: digests only, key files, Bearer parsing, unknown and missing keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from frontend.auth import (
    ApiKeyStore,
    KeyFileError,
    key_digest,
    key_file_line,
    load_key_file,
    main,
)
from frontend.errors import MissingApiKeyError, UnknownApiKeyError


def test_settings_keys_authenticate_under_a_digest_derived_id() -> None:
    store = ApiKeyStore.from_settings([SecretStr("alpha"), SecretStr("beta")], None)
    key_id = store.authenticate("Bearer beta")
    assert key_id == f"key-{key_digest('beta').hex()[:8]}"
    assert store.authenticate("bearer   alpha") != key_id  # scheme is case-insensitive


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic YWxwaGE=", "alpha"])
def test_missing_key(header: str | None) -> None:
    store = ApiKeyStore.from_settings([SecretStr("alpha")], None)
    with pytest.raises(MissingApiKeyError):
        store.authenticate(header)


def test_unknown_key() -> None:
    store = ApiKeyStore.from_settings([SecretStr("alpha")], None)
    with pytest.raises(UnknownApiKeyError):
        store.authenticate("Bearer alphA")


def test_x_api_key_authenticates_without_an_authorization_header() -> None:
    store = ApiKeyStore.from_settings([SecretStr("alpha"), SecretStr("beta")], None)
    assert store.authenticate(None, "beta") == store.authenticate("Bearer beta")
    assert store.authenticate("", " alpha ") == store.authenticate("Bearer alpha")
    # Authorization wins when both come.
    assert store.authenticate("Bearer alpha", "beta") == store.authenticate("Bearer alpha")
    with pytest.raises(UnknownApiKeyError):
        store.authenticate(None, "alphA")
    with pytest.raises(MissingApiKeyError):
        store.authenticate(None, " ")
    with pytest.raises(MissingApiKeyError):
        store.authenticate("Basic YWxwaGE=", "alpha")


def test_key_file_holds_digests_not_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(
        "# team keys\n\n" + key_file_line("team-a", "sk-secret-a") + "\n"
        + key_file_line("team-b", "sk-secret-b") + "\n"
    )  # fmt: skip
    assert "sk-secret" not in path.read_text()
    store = ApiKeyStore.from_settings([SecretStr("plain")], path)
    assert len(store) == 3
    assert store.authenticate("Bearer sk-secret-b") == "team-b"
    assert store.authenticate("Bearer sk-secret-a") == "team-a"


def test_malformed_key_file_line_is_reported_with_its_number(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(key_file_line("ok", "k") + "\nteam:sk-plaintext\n")
    with pytest.raises(KeyFileError, match=r"keys:2: expected"):
        load_key_file(path)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        load_key_file(tmp_path / "absent")


def test_generated_key_matches_its_printed_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["svc"]) == 0
    out = capsys.readouterr().out.splitlines()
    key = out[0].split(": ", 1)[1]
    line = out[1].split(":", 1)[1].strip()
    assert line == key_file_line("svc", key)
    assert main(["bad id"]) == 2
