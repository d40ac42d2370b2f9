"""The rule set in force, and its safe reload: validate the whole new set, swap it in
atomically, keep the last good one on any error.

Rules are checked against the configuration as they load: a rule naming a routing key
that ``pagerduty.routing_keys`` does not define is refused at start, at reload and by
``check-rules --config`` — not found later, when its first event is dead-lettered; a
``module:callable`` plugin outside ``rules.allow_plugins`` is refused the same way,
before anything is imported for it.

For /status it keeps when the rules in force were loaded, their rule names, and the last
failed reload (when, and its ``file:line: message`` errors) until a later reload succeeds;
each load creates ``pdrelay_rule_hits_total`` for every rule name it brings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from pathlib import Path

from receiver.audit import AuditSink, NullAudit
from receiver.clock import Clock, SystemClock
from receiver.metrics import Metrics
from transforms import RulesError, RuleSet, load_rules

__all__ = ["Rulebook", "load_checked"]


def load_checked(
    paths: Sequence[Path], routing_keys: Collection[str], allow_plugins: Sequence[str] = ()
) -> RuleSet:
    """Load the rules and refuse any routing key name not in ``routing_keys`` (none configured: dry run,
    every name goes), and any ``module:callable`` plugin whose module is not under ``allow_plugins``.
    Raises :class:`RulesError` with every ``file:line: message``."""
    rules = load_rules(paths, allow_plugins=allow_plugins)
    if routing_keys and (errors := rules.unknown_routing_keys(routing_keys)):
        raise RulesError(errors)
    return rules


class Rulebook:
    """Holds the current :class:`~transforms.RuleSet` for the handlers."""

    def __init__(
        self, paths: Sequence[Path], metrics: Metrics, log: logging.Logger, audit: AuditSink | None = None,
        *, routing_keys: Collection[str] = (), allow_plugins: Sequence[str] = (), clock: Clock | None = None,
    ) -> None:
        self._paths = tuple(paths)
        self._clock = clock or SystemClock()
        self.loaded_at = 0.0  # wall time the rules in force were loaded
        self.last_reload_error: tuple[float, tuple[str, ...]] | None = None  # (when, errors) until a success
        self._routing_keys = frozenset(routing_keys)
        self._allow_plugins = tuple(allow_plugins)
        self._metrics = metrics
        self._log = log
        self._audit = audit or NullAudit()
        self.current: RuleSet = self._load_or_raise("start")

    def _load_or_raise(self, actor: str) -> RuleSet:
        self._stamp_loaded = self._stamp()  # taken before reading, so an edit during the load is seen
        rules = load_checked(self._paths, self._routing_keys, self._allow_plugins)
        self.loaded_at = self._clock.now()
        self.last_reload_error = None
        self._metrics.rules_reload_success.set(1)
        self._metrics.rules_loaded_at.set(self.loaded_at)
        self._metrics.rules_loaded(rule.name for rule in rules.engine.rules)
        self._audit.record("rules.loaded", actor=actor, sha256=rules.sha256,
                           sources=[str(p) for p in rules.sources])
        return rules

    def reload(self, actor: str = "reload") -> RuleSet:
        """Load the rules again; on error keep the current set and re-raise :class:`RulesError`.

        ``actor`` names who asked (an identity, ``signal:SIGHUP``, ``watch``), for the audit log."""
        try:
            rules = self._load_or_raise(actor)
        except RulesError as exc:
            self.last_reload_error = (self._clock.now(), tuple(exc.errors))
            self._metrics.rules_reload_success.set(0)
            self._log.error("rules reload failed; keeping the last good rules",
                            extra={"errors": exc.errors, "sha256": self.current.sha256})
            self._audit.record("rules.reload_failed", actor=actor, kept_sha256=self.current.sha256,
                               errors=exc.errors[:20], error_count=len(exc.errors))
            raise
        changed = rules.sha256 != self.current.sha256
        self.current = rules
        self._log.info("rules reloaded", extra={"sha256": rules.sha256, "changed": changed})
        return rules

    @property
    def rule_names(self) -> tuple[str, ...]:
        """The names of the rules in force, in order."""
        return tuple(rule.name for rule in self.current.engine.rules)

    def try_reload(self, actor: str = "reload") -> bool:
        """:meth:`reload`, for callers with nobody to tell: a failure is logged and counted there."""
        try:
            self.reload(actor)
        except RulesError:
            return False
        return True

    def _stamp(self) -> tuple[tuple[str, int, int], ...]:
        """Name, size and mtime of every rule file: cheap to compute, changes on any edit or swap."""
        files: list[Path] = []
        for p in self._paths:
            if p.is_dir():
                files.extend(sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml")))
            else:
                files.append(p)
        out = []
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            out.append((str(f), st.st_size, st.st_mtime_ns))
        return tuple(out)

    async def watch(self, interval: float = 2.0) -> None:
        """Reload whenever the rule files change (polling: works with ConfigMap symlink swaps)."""
        while True:
            await asyncio.sleep(interval)
            stamp = self._stamp()
            if stamp != self._stamp_loaded:
                self._stamp_loaded = stamp  # a broken file is tried again only once it changes
                self.try_reload("watch")
