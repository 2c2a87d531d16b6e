"""What the routes of one server process share: the database, the clock, the listener, the queue, the builder,
the metrics, the reconciler's kick and the readiness checks. Built by the composition (``server/process.py``); services below the API
take the named parts they use, never this."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prebuildd.api.readiness import ReadinessCheck
from prebuildd.prebuilds.claim import WorkspaceCreator
from prebuildd.prebuilds.coalesce import ClaimCoalescer
from prebuildd.queue.pg import PgJobQueue
from prebuildd.runtime.clock import Clock
from prebuildd.runtime.config import ServerConfig
from prebuildd.runtime.metrics import Metrics
from prebuildd.store.db import Database
from prebuildd.store.listener import Listener
from prebuildd.workspaces.builder import WorkspaceBuilder


@dataclass
class Services:
    config: ServerConfig
    clock: Clock
    db: Database
    listener: Listener
    queue: PgJobQueue
    builder: WorkspaceBuilder
    metrics: Metrics = field(default_factory=Metrics)
    kick_hooks: list[Callable[[str], None]] = field(default_factory=list)
    """Called with a reason when something should make the reconciler run now (claims, settings, versions)."""
    readiness_checks: list[ReadinessCheck] = field(default_factory=list)
    """What ``/readyz`` checks besides the database: the server registers what this replica runs."""

    replica_id: str = ""
    """This process's replica identity (an API worker's is ``<replica-id>-w<i>``), shown by ``/healthz``."""
    metrics_text: Callable[[], Awaitable[bytes]] | None = None
    """What ``/metrics`` serves when it is more than this process's registry (an API worker: the server's)."""
    _coalescer: ClaimCoalescer | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # The queue times claim builds when they end; the server passes it the metrics, a test may not.
        if self.queue.metrics is None:
            self.queue.metrics = self.metrics

    def kick(self, reason: str) -> None:
        for hook in self.kick_hooks:
            hook(reason)

    def workspace_creator(self) -> WorkspaceCreator:
        """The claim service over this process's parts (built per use: a test may swap ``db`` first)."""
        return WorkspaceCreator(
            db=self.db,
            clock=self.clock,
            builder=self.builder,
            metrics=self.metrics,
            kick=self.kick,
            claim_timeout=self.config.claim_timeout,
            coalescer=self.claim_coalescer(),
        )

    def claim_coalescer(self) -> ClaimCoalescer:
        """The claim line every request of this process shares (a new one if a test swapped ``db``)."""
        if self._coalescer is None or self._coalescer.db is not self.db:
            self._coalescer = ClaimCoalescer(
                self.db, self.clock, on_statement=self.metrics.claim_batch_size.observe
            )
        return self._coalescer
