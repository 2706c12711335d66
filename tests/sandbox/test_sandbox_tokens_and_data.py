"""Tokens, data files and the shipped default world."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from amperity_signal.sandbox import SandboxDataError, default_data, load_data, mint_token
from amperity_signal.sandbox.__main__ import main as sandbox_main
from amperity_signal.sandbox.identity import hash_email, hash_phone
from amperity_signal.sandbox.testing import (
    ACME_COLLECTION,
    ACME_DROP_STREAM,
    ACME_EMPTY_KEYS_COLLECTION,
    ACME_REJECT_STREAM,
    ACME_STREAM,
    ALICE_PROFILE,
    default_tokens,
)
from amperity_signal.sandbox.tokens import TokenError, verify_token

SECRET = "test-secret"
NOW = 1_800_000_000.0
YEAR_2036 = 2_082_758_400


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    return decoded


def test_minted_token_is_a_verifiable_hs256_jwt() -> None:
    """A minted token has three base64url parts and verifies with its claims."""
    token = mint_token(SECRET, "acme", ["stream:write"], 60, now=NOW)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "HS256", "typ": "JWT"}
    claims = verify_token(SECRET, token, NOW + 30)
    assert (claims.tenant, claims.scopes, claims.expires_at) == (
        "acme",
        frozenset({"stream:write"}),
        NOW + 60,
    )
    assert set(_claims(token)) == {"tenant", "scopes", "exp", "iat", "jti"}


def test_minted_tokens_are_unique() -> None:
    """Two tokens minted with the same inputs differ (random jti)."""
    assert mint_token(SECRET, "acme", [], 60, now=NOW) != mint_token(
        SECRET, "acme", [], 60, now=NOW
    )


def test_expired_wrongly_signed_and_malformed_tokens_fail() -> None:
    """Expiry, another secret and garbage all fail verification."""
    expired = mint_token(SECRET, "acme", ["stream:write"], -1, now=NOW)
    other = mint_token("other-secret", "acme", ["stream:write"], 60, now=NOW)
    for token in (expired, other, "a.b", "x.y.z", "...."):
        with pytest.raises(TokenError):
            verify_token(SECRET, token, NOW)


def test_profile_read_is_granted_by_amperitys_two_scopes() -> None:
    """profile-collections:read plus pii:read grants profile:read; one of them alone does not."""
    both = mint_token(SECRET, "acme", ["profile-collections:read", "pii:read"], 60, now=NOW)
    one = mint_token(SECRET, "acme", ["profile-collections:read"], 60, now=NOW)
    assert verify_token(SECRET, both, NOW).allows("profile:read")
    assert not verify_token(SECRET, one, NOW).allows("profile:read")


def test_default_tokens_verify_until_2036_with_their_scopes() -> None:
    """Each tenant ships an ingest and a profile token valid until 2036."""
    data = default_data()
    tokens = default_tokens(data)
    assert set(tokens) == {"acme-ingest", "acme-profile", "globex-ingest", "globex-profile"}
    for name, token in tokens.items():
        claims = verify_token(data.signing_secret, token, NOW)
        scope = "stream:write" if name.endswith("ingest") else "profile:read"
        assert claims.scopes == {scope}
        assert claims.tenant == name.split("-")[0]
        assert claims.expires_at == YEAR_2036


def test_default_data_has_the_required_streams_and_collections() -> None:
    """Acme has active/drop/reject streams and a full and an empty-keys collection."""
    acme = default_data().tenants["acme"]
    modes = {sid: s.mode for sid, s in acme.streams.items()}
    assert modes == {ACME_STREAM: "active", ACME_DROP_STREAM: "drop", ACME_REJECT_STREAM: "reject"}
    assert acme.streams[ACME_STREAM].routing.values == {"DATAFLY"}
    assert acme.collections[ACME_COLLECTION].linking_keys == (
        "email_sha256",
        "device_cookie",
        "customer_id",
        "phone_sha256",
    )
    assert acme.collections[ACME_EMPTY_KEYS_COLLECTION].linking_keys == ()
    assert "globex" in default_data().tenants


def test_alice_is_linked_by_her_hashed_email() -> None:
    """Alice's seed profile links sha256('alice@example.com') and has her attributes."""
    collection = default_data().tenants["acme"].collections[ACME_COLLECTION]
    alice = next(p for p in collection.profiles if p.profile_id == ALICE_PROFILE)
    assert alice.links["email_sha256"] == (hash_email(" Alice@Example.com "),)
    assert hash_email("alice@example.com") == (
        "ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976"
    )
    assert {k: alice.attributes[k] for k in ("Persona", "LifetimeTier", "FavoriteBrand")} == {
        "Persona": "Value Hunter",
        "LifetimeTier": "Gold",
        "FavoriteBrand": "Acme Outdoor",
    }
    assert alice.attributes["ChurnRisk"] == "low"


def test_phone_is_hashed_in_e164_form() -> None:
    """Formatting and a 00 prefix do not change the phone hash."""
    assert hash_phone("+44 7700 900123") == hash_phone("0044-7700-900123")
    assert hash_phone("+44 7700 900123") == hash_phone("+447700900123")


def test_json_data_file_loads(tmp_path: Path) -> None:
    """A JSON data file loads like YAML."""
    path = tmp_path / "world.json"
    path.write_text(
        json.dumps(
            {
                "signing_secret": "s",
                "tenants": [
                    {
                        "id": "t1",
                        "streams": [
                            {
                                "id": "esm-1",
                                "routing": 'source == "X"',
                                "target": "E",
                                "mode": "drop",
                            }
                        ],
                        "collections": [{"id": "apc-1", "linking_keys": ["device_cookie"]}],
                    }
                ],
            }
        )
    )
    tenant = load_data(path).tenants["t1"]
    assert tenant.streams["esm-1"].mode == "drop"
    assert tenant.collections["apc-1"].linking_keys == ("device_cookie",)


@pytest.mark.parametrize(
    ("stream", "problem"),
    [
        ({"id": "is-1", "routing": 'source == "X"', "target": "E"}, "esm-"),
        ({"id": "esm-1", "routing": "source = X", "target": "E"}, "routing"),
        ({"id": "esm-1", "routing": 'source == "X"', "target": "E", "mode": "pause"}, "mode"),
    ],
)
def test_invalid_streams_are_refused_with_the_fix(
    tmp_path: Path, stream: dict[str, str], problem: str
) -> None:
    """A batch is- id, an unparsable routing expression and an unknown mode are refused."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        json.dumps({"signing_secret": "s", "tenants": [{"id": "t", "streams": [stream]}]})
    )
    with pytest.raises(SandboxDataError, match=problem):
        load_data(path)


def test_a_collections_hash_is_sha256_unless_set_and_must_be_known(tmp_path: Path) -> None:
    """``hash`` defaults to sha256, takes sha256_upper, and refuses anything else by name."""

    def load_with(collection: dict[str, object]) -> str:
        path = tmp_path / "world.json"
        tenant = {"id": "t", "collections": [{"id": "apc-1", **collection}]}
        path.write_text(json.dumps({"signing_secret": "s", "tenants": [tenant]}))
        return load_data(path).tenants["t"].collections["apc-1"].hashing

    assert load_with({}) == "sha256"
    assert load_with({"hash": "sha256_upper"}) == "sha256_upper"
    with pytest.raises(SandboxDataError, match=r"apc-1: hash 'md5' .* sha256_upper"):
        load_with({"hash": "md5"})


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("deep.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("deep.yaml", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("long.yaml", "signing_secret: s\ntenants: []\nx: " + "9" * 5000, "4300 digits"),
    ],
)
def test_a_data_file_python_cannot_decode_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: str, problem: str
) -> None:
    """A data file nested too deeply or with a 5000-digit number: exit 2 naming --data."""
    path = tmp_path / name
    path.write_text(content)
    assert sandbox_main(["--data", str(path)], prog="sandbox") == 2
    error = capsys.readouterr().err
    assert error.startswith(f"sandbox: error: --data {path}: ")
    assert problem in error
    assert "Traceback" not in error


@pytest.mark.parametrize(
    ("tenant", "problem"),
    [
        (
            {"streams": [{"id": "esm-1", "routing": 'source == "X"', "target": "E"}] * 2},
            "tenant 't': stream 'esm-1' is listed twice",
        ),
        ({"collections": [{"id": "apc-1"}, {"id": "apc-1"}]}, "collection 'apc-1' is listed twice"),
        (
            {
                "collections": [
                    {
                        "id": "apc-1",
                        "profiles": [{"profile_id": "p-1", "created_at": "2026-01-01"}] * 2,
                    }
                ]
            },
            "apc-1: profile 'p-1' is listed twice",
        ),
    ],
)
def test_an_id_listed_twice_is_refused_not_silently_dropped(
    tmp_path: Path, tenant: dict[str, object], problem: str
) -> None:
    """Two streams, collections or seed profiles with one id: refused, naming the id."""
    path = tmp_path / "world.json"
    path.write_text(json.dumps({"signing_secret": "s", "tenants": [{"id": "t", **tenant}]}))
    with pytest.raises(SandboxDataError, match=problem):
        load_data(path)


def test_seed_times_without_a_zone_are_utc_quoted_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A created_at without a zone, or a bare date, is UTC whatever the machine's zone is."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        times = ["'2026-01-02T03:04:05'", "2026-01-02T03:04:05", "'2026-01-02'", "2026-01-02"]
        profiles = ", ".join(
            f"{{profile_id: p-{index}, created_at: {value}}}" for index, value in enumerate(times)
        )
        path = tmp_path / "world.yaml"
        collection = f"{{id: apc-1, profiles: [{profiles}]}}"
        path.write_text(f"signing_secret: s\ntenants: [{{id: t, collections: [{collection}]}}]\n")
        seeds = load_data(path).tenants["t"].collections["apc-1"].profiles
    finally:
        monkeypatch.undo()  # the machine's own TZ again, then applied
        time.tzset()
    at_3_04_05 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    midnight = datetime(2026, 1, 2, tzinfo=UTC).timestamp()
    assert [seed.created_at for seed in seeds] == [at_3_04_05, at_3_04_05, midnight, midnight]


def test_an_empty_host_is_refused_rather_than_binding_every_interface(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An empty --host (an unset variable) is a usage error naming --host, not 0.0.0.0."""
    with pytest.raises(SystemExit) as stopped:
        sandbox_main(["--host", " ", "--port", "0"], prog="sandbox")
    assert stopped.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("sandbox: error: argument --host: pass an address")
