"""The start line: one record summarising the whole config (listen, TLS, auth methods, routing key names,
events URL, dry-run, outbox, encryption key ids, rules, audit path), and no secret in any start-up record,
looked for in the records themselves (before the log formatter's redaction, the last line of defence)."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

from prometheus_client import CollectorRegistry

import receiver
from receiver.app import Deps, create_app
from receiver.audit import NullAudit
from receiver.cli import serve
from receiver.crypto import Keyring, generate_key
from receiver.settings import settings_from_mapping
from receiver.state import STATE

ROUTING = {"default": "R" * 32, "db-oncall": "S" * 32}
BEARER, ADMIN, PASSWORD, JWT_SECRET, HMAC_KEY = "B" * 24, "A" * 24, "P" * 20, "J" * 40, "H" * 40


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_start_line_summarises_the_config_and_no_record_holds_a_secret(tmp_path: Path) -> None:
    keys = [generate_key(), generate_key()]
    (tmp_path / "rules.yaml").write_text("version: 1\nrules:\n  - name: page\n    set: {severity: critical}\n"
                                         "  - name: db\n    match: ['team=\"db\"']\n"
                                         "    set: {routing_key: db-oncall}\n")
    settings = settings_from_mapping({
        "server": {"listen": "127.0.0.1:9095"},
        "pagerduty": {"routing_keys": dict(ROUTING)},
        "auth": {"bearer_tokens": [BEARER], "admin_tokens": [ADMIN], "basic": {"username": "am", "password": PASSWORD},
                 "jwt": {"algorithms": ["HS256"], "audience": "pdrelay", "issuer": "https://idp.example"}},
        "security": {"encryption_key": keys, "jwt_secret": JWT_SECRET},
        "audit": {"path": str(tmp_path / "audit.jsonl"), "hmac_key": HMAC_KEY},
        "outbox": {"path": str(tmp_path / "outbox.db")},
        "rules": {"paths": [str(tmp_path / "rules.yaml")]},
    })
    records = Records()
    log = logging.getLogger("test-start-line")
    log.addHandler(records)
    log.setLevel(logging.INFO)
    try:
        app = create_app(settings, Deps(registry=CollectorRegistry(), audit=NullAudit(), log=log))
        serve._announce(settings, app, log)
    finally:
        log.removeHandler(records)

    (start,) = [r for r in records.records if r.getMessage() == "pdrelay starting"]
    keyring = Keyring.from_secrets(settings.security.encryption_keys)
    assert keyring is not None
    every = ("bearer", "basic", "jwt", "admin_token")
    assert {k: start.__dict__[k] for k in serve.start_summary(settings, app)} == {
        "version": str(receiver.__version__), "config": "<mapping>", "listen": "127.0.0.1:9095",
        "tls": False, "client_auth": "none",
        "auth_methods": {"intake": list(every), "events": list(every), "admin": list(every)},
        "routing_keys": ["db-oncall", "default"], "events_url": "https://events.pagerduty.com/v2/enqueue",
        "dry_run": False, "outbox_backend": "sqlite", "outbox": str(tmp_path / "outbox.db"),
        "rate_budget": "process", "encryption": "aes-256-gcm", "key_ids": list(keyring.ids),
        "rules_sources": [str(tmp_path / "rules.yaml")], "rules_sha256": app[STATE].rulebook.current.sha256,
        "rule_count": 2, "audit": str(tmp_path / "audit.jsonl"),
    }
    secrets = [*ROUTING.values(), BEARER, ADMIN, PASSWORD, JWT_SECRET, HMAC_KEY, *keys,
               *(k.replace("+", "-").replace("/", "_").rstrip("=") for k in keys),
               base64.b64encode(f"am:{PASSWORD}".encode()).decode()]
    assert sorted(settings.secrets()) == sorted(secrets[:7 + len(keys)])  # every secret the config holds is looked for
    seen = "\n".join(f"{r.getMessage()} {r.__dict__!r}" for r in records.records)
    assert [s for s in secrets if s in seen] == []
