"""A simulated world of prebuild pools driven through the real domain pipeline (rows -> ``group`` ->
``preset_snapshot`` with ``failure_inputs`` -> ``plan_preset`` -> ``pace``), with random claims, build outcomes,
clock advances across schedule hours, DST and TTLs, version changes, pool changes, invalidations, pause, retry,
transient outages and config errors (SPEC §5, §5.1, §6).

The world stands in for PostgreSQL and the executor: a create becomes a pending start build, a delete a pending
delete build (an orphan delete removes the workspace at once), a cancel removes the never-started create. Every
timestamp comes from one monotonic clock, so builds are totally ordered as in the database.

Invariants checked on every cycle: creates never push ``running_valid + starting`` above desired; while paused
no action at all (but the state is computed); no creates while hard-limited or backing off (against an oracle
written from SPEC §6, not from the code) and creation is not held back otherwise; infrastructure failures never
hard-limit; pacing never exceeds the in-flight cap. Liveness ("eventually") is checked by settling a copy of the
world: no new failures, every job completes, time moves past every backoff; then inactive presets are empty,
every active preset is at its target with nothing expired, and a retry brings a hard-limited preset back.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from prebuildd.domain.failures import FailurePolicy, failure_inputs
from prebuildd.domain.planner import Plan, PresetSnapshot, pace, plan_preset
from prebuildd.domain.schedules import Schedule
from prebuildd.domain.snapshot import PrebuildRow, PresetRow, group, inflight_jobs, preset_snapshot

# Saturday morning before the spring DST switch in Berlin (2026-03-29 01:00Z): the clock crosses it.
START = datetime(2026, 3, 28, 6, 0, tzinfo=UTC)
TZ = "Europe/Berlin"
POLICY = FailurePolicy()  # interval 1 min, lookback 1 h, max backoff 1 h, hard limit 3
CAP = 5
TICK = timedelta(microseconds=1)
TEMPLATES = ("a", "b")
SCHEDULES: tuple[tuple[Schedule, ...], ...] = (
    (),
    (Schedule("* 8-17 * * *", 3),),
    (Schedule("* 8-17 * * 1-5", 4), Schedule("* 0-6 * * *", 0)),
    (Schedule("* 2 * * *", 4),),  # the hour that does not exist on the DST day
)
ACTIVE = ("pending", "running", "canceling")


@dataclass
class Pool:
    """A preset row: one template version's preset, with its pool settings and transient-failure record."""

    preset_id: UUID
    template: str
    version: int
    active: bool
    desired: int
    ttl: int = 0
    schedules: tuple[Schedule, ...] = ()
    invalidated_at: datetime | None = None
    reset_at: datetime | None = None
    consecutive: int = 0
    last_failure_at: datetime | None = None
    last_error: str = ""

    @property
    def version_id(self) -> UUID:
        return UUID(int=10_000 * (TEMPLATES.index(self.template) + 1) + self.version)

    def row(self) -> PresetRow:
        return PresetRow(
            preset_id=self.preset_id,
            preset_name="pool",
            template_id=UUID(int=TEMPLATES.index(self.template) + 1),
            template_name=self.template,
            organization_id=UUID(int=99),
            version_id=self.version_id,
            version_name=f"v{self.version}",
            active=self.active,
            desired_instances=self.desired,
            ttl_seconds=self.ttl,
            timezone=TZ,
            schedules=self.schedules,
            last_invalidated_at=self.invalidated_at,
            failures_reset_at=self.reset_at,
            consecutive_failures=self.consecutive,
            last_failure_at=self.last_failure_at,
            last_error=self.last_error,
        )

    def counts(self, at: datetime) -> bool:
        """Whether a failure at ``at`` still counts after the last retry."""
        return self.reset_at is None or at > self.reset_at


@dataclass
class Prebuild:
    """A prebuild workspace and its latest build."""

    workspace_id: UUID
    pool: Pool
    created_at: datetime
    transition: str
    status: str
    build_at: datetime
    job_id: UUID
    started_at: datetime | None = None
    completed_at: datetime | None = None
    failure_class: str | None = None
    error: str | None = None
    ready: bool = False

    def row(self) -> PrebuildRow:
        return PrebuildRow(
            workspace_id=self.workspace_id,
            workspace_created_at=self.created_at,
            preset_id=self.pool.preset_id,
            version_id=self.pool.version_id,
            transition=self.transition,
            job_id=self.job_id,
            job_status=self.status,
            build_created_at=self.build_at,
            job_started_at=self.started_at,
            job_completed_at=self.completed_at,
            failure_class=self.failure_class,
            error=self.error,
            ready=self.ready,
        )

    @property
    def is_start(self) -> bool:
        return self.transition == "start"

    @property
    def in_flight(self) -> bool:
        return self.status in ACTIVE


@dataclass
class Cycle:
    now: datetime
    snaps: list[PresetSnapshot]
    plans: list[Plan]
    paced: list[Plan]


class World:
    """What PostgreSQL would hold, and what the reconciler's executor does with a cycle's plans."""

    def __init__(self) -> None:
        self.now = START
        self.ids = itertools.count(1)
        self.pools: dict[UUID, Pool] = {}
        self.prebuilds: dict[UUID, Prebuild] = {}
        self.paused = False
        self.outage: set[str] = set()  # templates whose creates the builder refuses with a 503
        self.broken: set[str] = set()  # templates whose creates fail with a config error (400)
        self.cycles = 0
        for template, desired in zip(TEMPLATES, (2, 1), strict=True):
            self.new_pool(template, 1, desired)

    def stamp(self) -> datetime:
        """Now, one microsecond after the last stamp: every write is ordered, as rows in the database are."""
        self.now += TICK
        return self.now

    def uuid(self) -> UUID:
        return UUID(int=next(self.ids))

    def new_pool(self, template: str, version: int, desired: int, **settings: object) -> Pool:
        pool = Pool(self.uuid(), template, version, True, desired, **settings)  # type: ignore[arg-type]
        self.pools[pool.preset_id] = pool
        return pool

    def active_pool(self, template: str) -> Pool:
        return next(p for p in self.pools.values() if p.template == template and p.active)

    def of(self, pool: Pool) -> list[Prebuild]:
        return [pb for pb in self.prebuilds.values() if pb.pool is pool]

    # -- the cycle ----------------------------------------------------------------------------------------

    def snapshot(self, now: datetime) -> tuple[list[PresetSnapshot], list[PrebuildRow]]:
        # Mirrors the snapshot query: presets with a pool on an active version, plus any with prebuilds.
        with_prebuilds = {pb.pool.preset_id for pb in self.prebuilds.values()}
        presets = [p.row() for p in self.pools.values() if p.active or p.preset_id in with_prebuilds]
        rows = [pb.row() for pb in self.prebuilds.values()]
        inputs = failure_inputs(POLICY, now)
        snaps = [
            preset_snapshot(g, delete_retry=POLICY.backoff_interval, failure_inputs=inputs)
            for g in group(presets, rows).values()
        ]
        return snaps, rows

    def plan(self, pool: Pool) -> Plan:
        """What the planner would do for ``pool`` now, were reconciliation running."""
        now = self.stamp()
        snaps, _ = self.snapshot(now)
        return plan_preset(next(s for s in snaps if s.preset_id == pool.preset_id), now)

    def cycle(self) -> Cycle:
        now = self.stamp()
        snaps, rows = self.snapshot(now)
        plans = [plan_preset(s, now, paused=self.paused) for s in snaps]
        paced = pace(plans, inflight_jobs(rows), CAP)
        cycle = Cycle(now, snaps, plans, paced)
        check_cycle(self, cycle, inflight_jobs(rows))
        for plan in paced:
            self.execute(self.pools[plan.preset_id], plan)
        self.cycles += 1
        return cycle

    def execute(self, pool: Pool, plan: Plan) -> None:
        for cancel in plan.cancels:
            pb = self.prebuilds.pop(cancel.workspace_id)
            assert pb.is_start and pb.status == "pending" and pb.started_at is None, pb
        for delete in plan.deletes:
            pb = self.prebuilds[delete.workspace_id]
            assert not pb.in_flight, ("deleting a workspace with a build in flight", pb)
            if delete.orphan:  # SPEC §3: only when the infrastructure never ran
                assert pb.is_start and pb.status == "canceled" and pb.started_at is None, pb
                del self.prebuilds[delete.workspace_id]
                continue
            at = self.stamp()
            pb.transition, pb.status, pb.build_at, pb.job_id = "delete", "pending", at, self.uuid()
            pb.started_at = pb.completed_at = pb.failure_class = pb.error = None
        created = 0
        for _ in range(plan.create):
            at = self.stamp()
            if pool.template in self.outage:  # SPEC §6.2: one transient failure per cycle, then stop
                pool.consecutive += 1
                pool.last_failure_at, pool.last_error = at, "503 provisioner capacity exhausted"
                break
            pb = Prebuild(self.uuid(), pool, at, "start", "pending", at, self.uuid())
            self.prebuilds[pb.workspace_id] = pb
            if pool.template in self.broken:  # a failed build record, then the rest of the creates skipped
                pb.status, pb.completed_at = "failed", at
                pb.failure_class, pb.error = "config", "parameter `repo` is required"
                break
            created += 1
        if created:
            pool.consecutive, pool.last_failure_at, pool.last_error = 0, None, ""

    # -- jobs ---------------------------------------------------------------------------------------------

    def in_flight(self) -> list[Prebuild]:
        return sorted((pb for pb in self.prebuilds.values() if pb.in_flight), key=lambda pb: pb.build_at)

    def complete(self, pb: Prebuild, outcome: str) -> None:
        at = self.stamp()
        if not (outcome == "canceled" and pb.status == "pending"):  # a canceled pending job never starts
            pb.started_at = pb.started_at or at
        if pb.transition == "delete" and outcome == "succeeded":
            del self.prebuilds[pb.workspace_id]
            return
        pb.completed_at = at
        if pb.status == "canceling":
            pb.status = "canceled"
        elif outcome in ("failed", "infrastructure"):
            pb.status = "failed"
            pb.failure_class = "infrastructure" if outcome == "infrastructure" else "build"
            pb.error = "provisioner stopped responding" if outcome == "infrastructure" else "apply failed"
        else:
            pb.status = outcome

    def complete_all(self) -> None:
        for pb in self.in_flight():
            self.complete(pb, "succeeded")
            pb.ready = True


# --- the oracle: SPEC §6 restated over the world, independent of failures.py ---------------------------------


def oracle(world: World, pool: Pool, now: datetime) -> tuple[bool, datetime | None]:
    """(hard-limited, backing off until) for a pool."""
    starts = [pb for pb in world.of(pool) if pb.is_start and pool.counts(pb.build_at)]
    finished = sorted(
        (
            pb
            for pb in starts
            if pb.status in ("succeeded", "failed") and pb.failure_class != "infrastructure"
        ),
        key=lambda pb: pb.build_at,
        reverse=True,
    )
    limit = POLICY.hard_limit
    hard = limit > 0 and len(finished) >= limit and all(pb.status == "failed" for pb in finished[:limit])
    window = now - POLICY.backoff_lookback
    waits: list[datetime] = []
    if any(pb.status == "failed" and pb.build_at >= window for pb in finished[: max(pool.desired, 1)]):
        recent = [pb for pb in finished if pb.status == "failed" and pb.build_at >= window]
        waits.append(
            max(pb.completed_at or pb.build_at for pb in recent) + len(recent) * POLICY.backoff_interval
        )
    if pool.consecutive and pool.last_failure_at and pool.counts(pool.last_failure_at):
        wait = min(pool.consecutive * POLICY.backoff_interval, POLICY.max_backoff)
        waits.append(pool.last_failure_at + wait)
    last_ok = max((pb.build_at for pb in starts if pb.status == "succeeded"), default=None)
    infra = [
        pb
        for pb in starts
        if pb.failure_class == "infrastructure"
        and pb.build_at >= window
        and (last_ok is None or pb.build_at > last_ok)
    ]
    if infra:
        wait = min(len(infra) * POLICY.backoff_interval, POLICY.max_backoff)
        waits.append(max(pb.completed_at or pb.build_at for pb in infra) + wait)
    until = max(waits, default=None)
    return hard, until if until is not None and now < until else None


def slow_start(world: World, pool: Pool) -> int | None:
    """§5.1: after a failed creation, 1, 2, 4, … creates per cycle: at most one more than were started since."""
    finished = [
        pb
        for pb in world.of(pool)
        if pb.is_start
        and pb.status in ("succeeded", "failed")
        and pb.failure_class != "infrastructure"
        and pool.counts(pb.build_at)
    ]
    newest = max(finished, key=lambda pb: pb.build_at, default=None)
    if newest is None or newest.status != "failed":
        return None
    failed_at = newest.completed_at or newest.build_at
    return 1 + sum(pb.is_start and pb.build_at > failed_at for pb in world.of(pool))


def fresh(pool: Pool, pb: Prebuild, now: datetime) -> bool:
    """Not expired: built after the last invalidation and younger than the TTL (SPEC §5)."""
    if pool.invalidated_at is not None and pb.created_at < pool.invalidated_at:
        return False
    return pool.ttl == 0 or now - pb.created_at < timedelta(seconds=pool.ttl)


def check_cycle(world: World, cycle: Cycle, inflight: int) -> None:
    jobs = 0
    for snap, plan, paced in zip(cycle.snaps, cycle.plans, cycle.paced, strict=True):
        pool = world.pools[snap.preset_id]
        state = plan.state
        mine = world.of(pool)
        # The snapshot sees the world as it is.
        assert len(snap.running) == sum(pb.is_start and pb.status == "succeeded" for pb in mine)
        assert snap.starting == sum(pb.is_start and pb.in_flight for pb in mine)
        # §5.1 invariant: creates never push running_valid + starting above desired.
        if plan.create:
            assert state.running_valid + state.starting + plan.create <= state.desired, plan
        assert paced.create <= plan.create
        # Pacing never holds back cancels or orphan deletes (they start no job).
        assert paced.cancels == plan.cancels
        assert [d for d in paced.deletes if d.orphan] == [d for d in plan.deletes if d.orphan]
        if world.paused:
            assert plan.actions == 0 and paced.actions == 0, plan
            assert state == plan_preset(snap, cycle.now).state
        if not pool.active:
            assert state.desired == 0 and plan.create == 0
        hard, backing_off = oracle(world, pool, cycle.now)
        assert snap.hard_limited is hard, (snap, [pb.row() for pb in mine])
        cap = slow_start(world, pool)
        if hard or backing_off:
            assert plan.create == 0, (plan, hard, backing_off)
        elif pool.active and not world.paused and plan.wanted_creates:
            assert plan.create == min(plan.wanted_creates, cap or plan.wanted_creates), (plan, snap, cap)
        # Extraneous prebuilds go not-ready first, then oldest; expired ones always go.
        gone = {d.workspace_id: d.reason.value for d in plan.deletes}
        valid = [p for p in snap.running if gone.get(p.workspace_id) != "expired"]
        for extra in (p for p in valid if gone.get(p.workspace_id) == "extraneous"):
            for kept in (p for p in valid if p.workspace_id not in gone):
                assert (extra.ready, extra.created_at) <= (kept.ready, kept.created_at), (extra, kept)
        for p in snap.running:
            if not fresh(pool, world.prebuilds[p.workspace_id], cycle.now) and not world.paused:
                assert p.workspace_id in gone, ("expired prebuild kept", p)
        # A failed delete is retried only after a pause.
        for workspace_id, reason in gone.items():
            pb = world.prebuilds[workspace_id]
            if reason == "retrying failed delete":
                assert pb.completed_at is not None and pb.completed_at + POLICY.backoff_interval <= cycle.now
        # Infrastructure failures never hard-limit: it takes `limit` failures of another class.
        if snap.hard_limited:
            counted = [
                pb
                for pb in mine
                if pb.is_start
                and pb.status == "failed"
                and pb.failure_class != "infrastructure"
                and pool.counts(pb.build_at)
            ]
            assert len(counted) >= POLICY.hard_limit
        jobs += paced.create + sum(not d.orphan for d in paced.deletes)
    assert jobs <= max(CAP - inflight, 0)


def settle(world: World, rounds: int = 40) -> list[Cycle]:
    """Run cycles, completing every job successfully, until nothing changes."""
    cycles = []
    for _ in range(rounds):
        for pb in world.prebuilds.values():
            if pb.is_start and pb.status == "succeeded":
                pb.ready = True
        cycle = world.cycle()
        cycles.append(cycle)
        had_jobs = bool(world.in_flight())
        world.complete_all()
        if not any(p.actions for p in cycle.paced) and not had_jobs:
            return cycles
    raise AssertionError(f"no steady state after {rounds} cycles")


def assert_converged(world: World, *, allow_hard_limited: bool) -> list[Pool]:
    """Inactive presets hold nothing but failed evidence; active ones are at target with nothing expired."""
    limited = []
    now = world.stamp()
    snaps = {s.preset_id: s for s in world.snapshot(now)[0]}
    for pool in world.pools.values():
        mine = world.of(pool)
        leftover = [pb for pb in mine if not (pb.is_start and pb.status in ("succeeded", "failed"))]
        assert leftover == [], ("stuck workspaces", leftover)
        if not pool.active:
            assert [pb for pb in mine if pb.status != "failed"] == [], ("inactive preset not emptied", pool)
            continue
        state = plan_preset(snaps[pool.preset_id], now).state
        stale = [pb for pb in mine if pb.status == "succeeded" and not fresh(pool, pb, now)]
        assert stale == [], ("expired prebuilds not replaced", stale)
        if snaps[pool.preset_id].hard_limited:
            assert allow_hard_limited, ("still hard-limited after a retry", pool)
            assert state.running_valid <= state.desired and state.expired == 0
            limited.append(pool)
            continue
        assert (state.running_valid, state.eligible, state.expired, state.starting) == (
            state.desired,
            state.desired,
            0,
            0,
        ), (pool, state)
    return limited


class PlannerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World()

    # -- the reconciler and the jobs ---------------------------------------------------------------------

    @rule()
    def reconcile(self) -> None:
        self.world.cycle()

    @rule(
        outcomes=st.lists(st.sampled_from(["succeeded", "failed", "infrastructure", "canceled"]), max_size=6),
        minutes=st.sampled_from([1, 2, 5]),
    )
    def busy_minutes(self, outcomes: list[str], minutes: int) -> None:
        """A cycle, a few minutes of building, then the oldest jobs finish with the given outcomes."""
        self.world.cycle()
        self.world.now += timedelta(minutes=minutes)
        for pb, outcome in zip(self.world.in_flight(), outcomes, strict=False):
            if pb.transition != "start" and outcome not in ("succeeded", "failed"):
                outcome = "failed"
            self.world.complete(pb, outcome)
            pb.ready = True

    @precondition(lambda self: self.world.in_flight())
    @rule(
        pick=st.integers(0, 30),
        outcome=st.sampled_from(["succeeded", "succeeded", "failed", "infrastructure", "canceled"]),
        ready=st.booleans(),
    )
    def complete_job(self, pick: int, outcome: str, ready: bool) -> None:
        jobs = self.world.in_flight()
        pb = jobs[pick % len(jobs)]
        if pb.transition != "start" and outcome not in ("succeeded", "failed"):
            outcome = "failed"
        self.world.complete(pb, outcome)
        pb.ready = ready

    @precondition(lambda self: any(pb.status == "pending" for pb in self.world.prebuilds.values()))
    @rule(pick=st.integers(0, 30))
    def daemon_starts_a_job(self, pick: int) -> None:
        pending = [pb for pb in self.world.in_flight() if pb.status == "pending"]
        pb = pending[pick % len(pending)]
        pb.status, pb.started_at = "running", self.world.stamp()

    @precondition(lambda self: any(pb.status == "running" for pb in self.world.prebuilds.values()))
    @rule(pick=st.integers(0, 30))
    def operator_cancels_a_running_job(self, pick: int) -> None:
        running = [pb for pb in self.world.in_flight() if pb.status == "running"]
        running[pick % len(running)].status = "canceling"

    def _running(self) -> list[Prebuild]:
        return [pb for pb in self.world.prebuilds.values() if pb.is_start and pb.status == "succeeded"]

    @precondition(lambda self: self._running())
    @rule(pick=st.integers(0, 30))
    def claim(self, pick: int) -> None:
        # The claimed workspace leaves the prebuilds user: it is no longer in the snapshot.
        candidates = [pb for pb in self._running() if pb.ready and pb.pool.active]
        if candidates:
            del self.world.prebuilds[candidates[pick % len(candidates)].workspace_id]

    @precondition(lambda self: self._running())
    @rule(pick=st.integers(0, 30))
    def agent_becomes_ready(self, pick: int) -> None:
        running = self._running()
        running[pick % len(running)].ready = True

    @precondition(lambda self: self._running())
    @rule(pick=st.integers(0, 30))
    def someone_stops_a_prebuild(self, pick: int) -> None:
        running = self._running()
        pb = running[pick % len(running)]
        at = self.world.stamp()
        pb.transition, pb.status, pb.build_at, pb.job_id = "stop", "pending", at, self.world.uuid()
        pb.started_at = pb.completed_at = None

    # -- time and operators ------------------------------------------------------------------------------

    @rule(minutes=st.sampled_from([1, 2, 7, 30, 61, 180, 600]))
    def advance_clock(self, minutes: int) -> None:
        self.world.now += timedelta(minutes=minutes)

    @precondition(lambda self: len(self.world.pools) < 8)
    @rule(template=st.sampled_from(TEMPLATES))
    def new_active_version(self, template: str) -> None:
        old = self.world.active_pool(template)
        old.active = False
        self.world.broken.discard(template)  # the new version fixes the template
        pool = self.world.new_pool(
            template, old.version + 1, old.desired, ttl=old.ttl, schedules=old.schedules
        )
        plan = self.world.plan(pool)
        # A new active version always lets creation resume (its preset has no failures yet).
        assert plan.blocked is None and plan.create == plan.wanted_creates == plan.state.desired, plan

    @rule(
        template=st.sampled_from(TEMPLATES), desired=st.integers(0, 4), ttl=st.sampled_from([0, 1800, 7200])
    )
    def set_pool(self, template: str, desired: int, ttl: int) -> None:
        pool = self.world.active_pool(template)
        pool.desired, pool.ttl = desired, ttl

    @rule(template=st.sampled_from(TEMPLATES), schedules=st.sampled_from(SCHEDULES))
    def set_schedules(self, template: str, schedules: tuple[Schedule, ...]) -> None:
        self.world.active_pool(template).schedules = schedules

    @rule(template=st.sampled_from(TEMPLATES))
    def invalidate(self, template: str) -> None:
        self.world.active_pool(template).invalidated_at = self.world.stamp()

    @rule(paused=st.booleans())
    def pause_or_resume(self, paused: bool) -> None:
        self.world.paused = paused

    @rule(template=st.sampled_from(TEMPLATES))
    def retry(self, template: str) -> None:
        pool = self.world.active_pool(template)
        pool.reset_at = self.world.stamp()
        pool.consecutive, pool.last_failure_at, pool.last_error = 0, None, ""  # the tracker is cleared too
        plan = self.world.plan(pool)
        # A retry always lets creation resume: nothing before it counts any more.
        assert plan.blocked is None and plan.create == plan.wanted_creates, plan

    @rule(template=st.sampled_from(TEMPLATES), on=st.booleans())
    def transient_outage(self, template: str, on: bool) -> None:
        (self.world.outage.add if on else self.world.outage.discard)(template)

    @rule(template=st.sampled_from(TEMPLATES), on=st.booleans())
    def config_error(self, template: str, on: bool) -> None:
        (self.world.broken.add if on else self.world.broken.discard)(template)

    # -- eventually ----------------------------------------------------------------------------------------

    @rule()
    def check_eventually(self) -> None:
        check_liveness(self.world)

    @invariant()
    def one_active_pool_per_template(self) -> None:
        for template in TEMPLATES:
            assert sum(p.active for p in self.world.pools.values() if p.template == template) == 1

    def teardown(self) -> None:
        check_liveness(self.world)


def check_liveness(original: World) -> None:
    world = copy.deepcopy(original)
    # No new failures, resume, and move past every backoff (lookback and max backoff are 1 h).
    world.outage.clear()
    world.broken.clear()
    world.paused = False
    world.now += timedelta(hours=2)
    settle(world)
    limited = assert_converged(world, allow_hard_limited=True)
    for pool in limited:
        pool.reset_at = world.stamp()
    if limited:
        settle(world)
        assert_converged(world, allow_hard_limited=False)


PlannerMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPlannerMachine = PlannerMachine.TestCase


def test_paused_world_takes_no_action_then_resume_restores_the_pool() -> None:
    # Acceptance §11.4, on the simulated world.
    world = World()
    world.paused = True
    for _ in range(3):
        cycle = world.cycle()
        assert all(p.actions == 0 for p in cycle.paced)
        assert [p.state.desired for p in cycle.plans] == [2, 1]
    assert world.prebuilds == {}
    world.paused = False
    settle(world)
    assert_converged(world, allow_hard_limited=False)
    assert len(world.prebuilds) == 3


def test_world_reaches_the_hard_limit_on_config_errors_and_retry_recovers() -> None:
    world = World()
    pool = world.active_pool("a")
    world.broken.add("a")
    for _ in range(10):
        world.cycle()
        world.now += timedelta(minutes=5)
    failed = [pb for pb in world.of(pool) if pb.status == "failed"]
    assert len(failed) == 3 and {pb.failure_class for pb in failed} == {"config"}
    plan = world.plan(pool)
    assert (
        plan.create == 0
        and plan.blocked == "hard-limited: last 3 creations failed: parameter `repo` is required"
    )
    world.broken.clear()
    pool.reset_at = world.stamp()
    settle(world)
    assert_converged(world, allow_hard_limited=False)
    assert len([pb for pb in world.of(pool) if pb.status == "failed"]) == 3  # evidence stays


def test_infrastructure_failures_back_off_but_never_hard_limit() -> None:
    world = World()
    pool = world.active_pool("b")
    for _ in range(8):
        world.cycle()
        for pb in world.in_flight():
            world.complete(pb, "infrastructure")
        world.now += timedelta(minutes=30)
    assert len([pb for pb in world.of(pool) if pb.failure_class == "infrastructure"]) >= 4
    snap = next(s for s in world.snapshot(world.stamp())[0] if s.preset_id == pool.preset_id)
    assert not snap.hard_limited
    settle(world)
    assert_converged(world, allow_hard_limited=False)


def test_expired_prebuilds_are_replaced_across_the_ttl() -> None:
    world = World()
    pool = world.active_pool("a")
    pool.ttl = 1800
    settle(world)
    first = {pb.workspace_id for pb in world.of(pool)}
    assert len(first) == 2
    world.now += timedelta(minutes=30)
    settle(world)
    assert_converged(world, allow_hard_limited=False)
    second = {pb.workspace_id for pb in world.of(pool)}
    assert len(second) == 2 and not first & second


def test_schedule_changes_the_target_through_the_day() -> None:
    world = World()
    pool = world.active_pool("a")
    pool.schedules = (Schedule("* 8-17 * * *", 3),)  # Berlin local hours; START is 07:00 local
    settle(world)
    assert len(world.of(pool)) == 2
    world.now += timedelta(hours=1)  # 08:00 local
    settle(world)
    assert len(world.of(pool)) == 3
    world.now += timedelta(hours=10)  # 18:00 local
    settle(world)
    assert len(world.of(pool)) == 2


def test_a_replaced_version_is_emptied_even_with_pending_creates() -> None:
    world = World()
    old = world.active_pool("a")
    world.cycle()  # two pending creates on v1
    old.active = False
    world.new_pool("a", 2, 2)
    cycle = world.cycle()
    old_plan = next(p for p in cycle.paced if p.preset_id == old.preset_id)
    assert len(old_plan.cancels) == 2
    assert world.of(old) == []
    settle(world)
    assert_converged(world, allow_hard_limited=False)
