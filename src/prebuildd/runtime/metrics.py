"""Prometheus metrics (SPEC §8), one registry per server; gauges come from the last reconcile snapshot."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from prebuildd.domain.autoscale import AutoscaleSettings, Demand, estimate
from prebuildd.domain.planner import Plan
from prebuildd.domain.snapshot import PresetRow
from prebuildd.domain.targets import PoolTarget

PRESET_LABELS = ("organization", "template", "preset")


@functools.lru_cache(maxsize=1024)
def _uuid_text(value: UUID) -> str:
    """An organization id as a label (when its name is not known): formatting a UUID costs more than the rest of
    a preset's gauges, and a server has few organizations."""
    return str(value)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.created = Counter(
            "prebuildd_prebuilds_created_total", "Prebuild creations started.", PRESET_LABELS, registry=r
        )
        self.failed = Counter(
            "prebuildd_prebuilds_failed_total", "Prebuild creations that failed.", PRESET_LABELS, registry=r
        )
        self.claimed = Counter(
            "prebuildd_prebuilds_claimed_total", "Prebuilds claimed by users.", PRESET_LABELS, registry=r
        )
        self.claim_missed = Counter(
            "prebuildd_prebuilds_claim_missed_total",
            "Creations with a preset that found no eligible prebuild.",
            PRESET_LABELS,
            registry=r,
        )
        self.claim_builds = Counter(
            "prebuildd_claim_builds_total",
            "Claims that ran a claim build (a claim step, a Terraform claim build, or values given at claim).",
            PRESET_LABELS,
            registry=r,
        )
        self.claim_builds_failed = Counter(
            "prebuildd_claim_builds_failed_total",
            "Claim builds that failed (the workspace stays its user's, with a failed build).",
            PRESET_LABELS,
            registry=r,
        )
        self.claim_build_duration = Histogram(
            "prebuildd_claim_build_duration_seconds",
            "From a claim to the end of its claim build (queue wait included).",
            PRESET_LABELS,
            registry=r,
            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
        )
        self.desired = Gauge(
            "prebuildd_prebuilds_desired", "Target size of the pool.", PRESET_LABELS, registry=r
        )
        self.running = Gauge(
            "prebuildd_prebuilds_running", "Valid running prebuilds.", PRESET_LABELS, registry=r
        )
        self.eligible = Gauge(
            "prebuildd_prebuilds_eligible", "Prebuilds ready to be claimed.", PRESET_LABELS, registry=r
        )
        self.starting = Gauge(
            "prebuildd_prebuilds_starting", "Prebuilds being built.", PRESET_LABELS, registry=r
        )
        self.hard_limited = Gauge(
            "prebuildd_preset_hard_limited", "1 when the preset is hard-limited.", PRESET_LABELS, registry=r
        )
        self.backing_off = Gauge(
            "prebuildd_preset_backing_off",
            "1 while creation backs off after failures.",
            PRESET_LABELS,
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "prebuildd_reconcile_duration_seconds",
            "Duration of a reconcile cycle.",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.last_reconcile = Gauge(
            "prebuildd_reconcile_last_timestamp_seconds", "When the last reconcile cycle ended.", registry=r
        )
        self.paused = Gauge(
            "prebuildd_reconciliation_paused", "1 while reconciliation is paused.", registry=r
        )
        self.lock_holder = Gauge(
            "prebuildd_reconcile_lock_holder",
            "1 when this replica held the cycle lock at its last attempt.",
            registry=r,
        )
        self.queue_depth = Gauge("prebuildd_job_queue_depth", "Pending provisioner jobs.", registry=r)
        self.oldest_pending = Gauge(
            "prebuildd_job_queue_oldest_pending_seconds",
            "Age of the oldest pending provisioner job.",
            registry=r,
        )
        self.claim_duration = Histogram(
            "prebuildd_claim_duration_seconds",
            "Time to claim a prebuild.",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 10),
        )
        self.claim_batch_size = Histogram(
            "prebuildd_claim_statement_requests",
            "Claim requests served by one claim statement (concurrent claims of a preset are coalesced).",
            registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.time_to_ready = Histogram(
            "prebuildd_prebuild_time_to_ready_seconds",
            "From a prebuild's creation to ready.",
            registry=r,
            buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800),
        )
        self.component_down = Gauge(
            "prebuildd_component_down",
            "1 while a component of this process cannot reach a dependency (runtime.faults).",
            ("component", "dependency"),
            registry=r,
        )
        self.component_outages = Counter(
            "prebuildd_component_outages_total",
            "Times a component of this process lost a dependency.",
            ("component", "dependency"),
            registry=r,
        )
        self.task_restarts = Counter(
            "prebuildd_task_restarts_total",
            "Restarts of a background task after it crashed (the supervisor logs server.task_crashed).",
            ("task",),
            registry=r,
        )
        self.daemons_configured = Gauge(
            "prebuildd_daemons_configured", "Embedded provisioner daemons this replica runs.", registry=r
        )
        self.daemons_alive = Gauge(
            "prebuildd_daemons_alive", "Embedded provisioner daemons running now (not crashed).", registry=r
        )
        self.since_success = Gauge(
            "prebuildd_reconcile_seconds_since_success",
            "Seconds since this replica last completed a reconcile cycle (since start if none yet).",
            registry=r,
        )
        self.target_source = Gauge(
            "prebuildd_preset_target_source",
            "1 for where the pool's target comes from: scheduled, autoscale, autoscale_fallback, expression, "
            "expression_fallback.",
            (*PRESET_LABELS, "source"),
            registry=r,
        )
        self.arrival_rate = Gauge(
            "prebuildd_autoscale_arrival_rate",
            "Claims plus misses per minute, as the autoscaler estimates them.",
            PRESET_LABELS,
            registry=r,
        )
        self.lead_time = Gauge(
            "prebuildd_autoscale_lead_time_seconds",
            "The autoscaler's lead time L: the mean time to ready (or the p90, as configured), 300 s while none is measured.",
            PRESET_LABELS,
            registry=r,
        )
        self.recommended = Gauge(
            "prebuildd_autoscale_recommended",
            "The autoscale formula's pool size for the preset's demand (also when autoscale is off).",
            PRESET_LABELS,
            registry=r,
        )
        self.hit_rate = Gauge(
            "prebuildd_prebuilds_hit_rate_1h",
            "Share of creations of the preset that found a prebuild over the last hour.",
            PRESET_LABELS,
            registry=r,
        )
        self._sources: dict[tuple[str, str, str], str] = {}
        self._sized: set[tuple[str, str, str]] = set()
        self._seen_failed: set[UUID] | None = None
        self._preset_gauges = (
            self.desired,
            self.running,
            self.eligible,
            self.starting,
            self.hard_limited,
            self.backing_off,
        )
        self._children: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        self._values: dict[tuple[str, str, str], tuple[int, ...]] = {}
        """The values last set on each preset's gauges: an unchanged pool costs no gauge update."""
        self._labelled: set[tuple[str, str, str]] = set()
        self._label_cache: dict[UUID, tuple[PresetRow, tuple[str, str, str]]] = {}

    def _preset_labels(self, preset: PresetRow) -> tuple[str, str, str]:
        """``labels(preset)``, kept while the preset's row is the same object (a pool at rest)."""
        seen = self._label_cache.get(preset.preset_id)
        if seen is not None and seen[0] is preset:
            return seen[1]
        labels = self.labels(preset)
        self._label_cache[preset.preset_id] = (preset, labels)
        return labels

    @staticmethod
    def labels(preset: PresetRow) -> tuple[str, str, str]:
        """(organization, template, preset): the organization by name, as operators know it."""
        return (
            preset.organization_name or _uuid_text(preset.organization_id),
            preset.template_name,
            preset.preset_name,
        )

    def observe_cycle(
        self,
        presets: dict[UUID, PresetRow],
        plans: Iterable[Plan],
        *,
        paused: bool,
        duration: float,
        ended_at: datetime,
        failed_ids: Iterable[tuple[UUID, UUID]],
    ) -> None:
        self.paused.set(1 if paused else 0)
        self.reconcile_duration.observe(duration)
        self.last_reconcile.set(ended_at.timestamp())
        # The series are by name: while a new version takes over, the old version's preset of the same name is
        # still planned (its prebuilds are being deleted). The counts add up (the old one's eligible and desired
        # are 0, so the gauge still equals what a claim can take), the flags are either's.
        by_labels: dict[tuple[str, str, str], tuple[int, ...]] = {}
        for plan in plans:
            labels = self._preset_labels(presets[plan.preset_id])
            state = plan.state
            blocked = plan.blocked or ""
            values: tuple[int, ...] = (
                state.desired,
                state.running_valid,
                state.eligible,
                state.starting,
                1 if blocked.startswith("hard-limited") else 0,
                1 if blocked.startswith("backing off") else 0,
            )
            other = by_labels.get(labels)
            if other is not None:
                counts = (a + b for a, b in zip(other[:4], values[:4], strict=True))
                values = (*counts, *map(max, other[4:], values[4:]))
            by_labels[labels] = values
        current: set[tuple[str, str, str]] = set()
        for labels, values in by_labels.items():
            current.add(labels)
            children = self._children.get(labels)
            if children is None:  # labels() is costly: resolve each preset's series once
                children = tuple(g.labels(*labels) for g in self._preset_gauges)
                self._children[labels] = children
            if self._values.get(labels) != values:  # most pools do not change between cycles
                self._values[labels] = values
                for gauge, value in zip(children, values, strict=True):
                    gauge.set(value)
        for labels in self._labelled - current:  # presets gone since the last cycle
            for gauge in self._preset_gauges:
                gauge.remove(*labels)
            self._children.pop(labels, None)
            self._values.pop(labels, None)
        self._labelled = current
        if len(self._label_cache) > len(presets):
            self._label_cache = {k: v for k, v in self._label_cache.items() if k in presets}
        failed = list(failed_ids)
        if self._seen_failed is None:  # failures from before this process started are not new
            self._seen_failed = {workspace_id for workspace_id, _ in failed}
            return
        for workspace_id, preset_id in failed:
            if workspace_id not in self._seen_failed and preset_id in presets:
                self._seen_failed.add(workspace_id)
                self.failed.labels(*self.labels(presets[preset_id])).inc()

    def claim_build_finished(self, labels: tuple[str, str, str], seconds: float, status: str) -> None:
        """A claim build ended (``status``: its job's); it took ``seconds`` since the claim."""
        self.claim_build_duration.labels(*labels).observe(max(seconds, 0.0))
        failed = self.claim_builds_failed.labels(
            *labels
        )  # the series exists (at 0) from the first claim build
        if status == "failed":
            failed.inc()

    def observe_sizing(
        self,
        presets: dict[UUID, PresetRow],
        targets: dict[UUID, PoolTarget],
        demand: dict[UUID, Demand],
        now: datetime,
    ) -> None:
        """Per preset: the target source, the autoscaler's λ, L and recommended size, the hit rate over 1 h.
        Series of a preset without an estimate (too little data) are removed, not left at a stale value."""
        current: set[tuple[str, str, str]] = set()
        seen: set[tuple[str, str, str]] = set()
        # By name, as the pool gauges: an old version's preset still being emptied does not stand for the pool
        # while the active version has one of the same name.
        active = {self._preset_labels(presets[pid]) for pid in targets if presets[pid].active}
        for preset_id, target in targets.items():
            preset = presets[preset_id]
            labels = self._preset_labels(preset)
            if not preset.active and labels in active:
                continue
            seen.add(labels)
            source = target.snapshot.target_source
            old = self._sources.get(labels)
            if old != source:
                if old is not None:
                    self.target_source.remove(*labels, old)
                self.target_source.labels(*labels, source).set(1)
                self._sources[labels] = source
            d = demand.get(preset_id)
            if d is None or d.first_at is None:  # no demand record: nothing to show
                continue
            hits = d.hit_rate_hour()
            settings = (
                AutoscaleSettings.from_dict(preset.autoscale) if preset.autoscale else AutoscaleSettings()
            )
            est = estimate(d, now, settings.target_hit_rate, settings.lead_time)
            if est is None and hits is None:
                continue
            current.add(labels)
            if hits is not None:
                self.hit_rate.labels(*labels).set(hits)
            if est is not None:
                self.arrival_rate.labels(*labels).set(est.rate)
                self.lead_time.labels(*labels).set(est.lead_seconds)
                self.recommended.labels(*labels).set(target.recommended or est.size)
        for labels in set(self._sources) - seen:
            self.target_source.remove(*labels, self._sources.pop(labels))
        for labels in self._sized - current:
            for gauge in (self.hit_rate, self.arrival_rate, self.lead_time, self.recommended):
                with contextlib.suppress(KeyError):  # never set for this preset
                    gauge.remove(*labels)
        self._sized = current

    def component_changed(self, component: str, dependency: str, down: bool) -> None:
        """The ``on_change`` hook of ``runtime.faults.FaultState``."""
        self.component_down.labels(component, dependency).set(1 if down else 0)
        if down:
            self.component_outages.labels(component, dependency).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
