"""`prebuildd server`: one asyncio process with the HTTP API, embedded provisioner daemons and background loops.

Start order: database (embedded or by URL), migrations, first-start bootstrap, LISTEN, queue, daemons, background
services (the stale-job reaper; the reconciler registers itself the same way), then HTTP. Stop runs it backwards:
HTTP stops taking requests, daemons stop taking jobs and get ``shutdown_grace`` to finish (jobs still running then
are released back to the queue for another daemon), services stop, the database closes.

Supervision: every background task (the listener, each embedded daemon, the reconciler, the stale-job reaper,
the embedded PostgreSQL's watcher) runs under ``_supervise`` (policy and state in ``server.supervisor``): a crash
is logged at once as ``server.task_crashed`` and the task restarts with backoff, counted in
``prebuildd_task_restarts_total``. ``/readyz`` reads the tasks' health through the checks registered here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import structlog
import uvicorn

from prebuildd.api.app import create_app
from prebuildd.api.context import Services
from prebuildd.api.readiness import CheckResult, ReadinessCheck, run_check
from prebuildd.dashboard.app import install_dashboard
from prebuildd.identity.audit import AuditContext, AuditPruner
from prebuildd.identity.auth import create_token
from prebuildd.identity.users import create_user, ensure_default_organization, first_owner, remove_user
from prebuildd.prebuilds.loop import Reconciler
from prebuildd.provisioner.daemon import DaemonOptions, ProvisionerDaemon
from prebuildd.provisioner.registry import available_provisioners
from prebuildd.queue.pg import PgJobQueue
from prebuildd.queue.reaper import StaleJobReaper
from prebuildd.runtime.clock import Clock, SystemClock
from prebuildd.runtime.config import ServerConfig
from prebuildd.runtime.faults import ChangeHook
from prebuildd.runtime.files import private_dir
from prebuildd.runtime.identities import IdentityInUse, hold_replica_id, hold_worker_identity
from prebuildd.runtime.metrics import Metrics
from prebuildd.server.embedded_pg import EmbeddedPostgres
from prebuildd.server.health import ReplicaHealth, daemon_task_name
from prebuildd.server.schema import prepare_schema
from prebuildd.server.startup import (
    StartupError,
    bind_http,
    check_data_dir,
    check_database,
    write_secret_file,
)
from prebuildd.server.supervisor import (
    FINISHED,
    RESTARTING,
    RUNNING,
    STOPPED,
    BackgroundService,
    RestartPolicy,
    TaskHealth,
)
from prebuildd.server.workers import (
    METRICS_TIMEOUT,
    SERVER_SOCKET,
    PrivateEndpoint,
    WorkerProcess,
    WorkerRole,
    ask,
    readiness_body,
    worker_metrics,
    worker_socket,
)
from prebuildd.store import channels
from prebuildd.store.db import Database
from prebuildd.store.kicks import notify_reconcile_kick
from prebuildd.store.listener import Listener
from prebuildd.workspaces.builder import WorkspaceBuilder

log = structlog.get_logger(__name__)

OWNER_TOKEN_FILE = "owner-token"


class Server:
    def __init__(
        self,
        config: ServerConfig,
        clock: Clock | None = None,
        *,
        restart_policy: RestartPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        worker: WorkerRole | None = None,
    ) -> None:
        self.config = config
        self.worker = worker
        """Set in an API worker process of ``--workers N`` (``server.workers``): it serves the API only."""
        self._workers: list[WorkerProcess] = []
        self._worker_tasks: list[asyncio.Task[None]] = []
        self._private: PrivateEndpoint | None = None
        self._run_dir: Path | None = None
        self._kicks: set[asyncio.Task[None]] = set()
        self._socket: socket.socket | None = None
        self._database_url = ""
        self.clock = clock or SystemClock()
        self.restart_policy = restart_policy or RestartPolicy()
        self._sleep = sleep
        """The supervisor's pause before a restart (tests inject one that does not wait)."""
        self._monotonic: Callable[[], float] = time.monotonic
        self.tasks: dict[str, TaskHealth] = {}
        """The supervisor's view of every background task, by name."""
        self._stopping = asyncio.Event()
        self._listener_task: asyncio.Task[None] | None = None
        self.started_at = self.clock.now()
        self.metrics = Metrics()
        """This server's registry (``Services.metrics``); it exists before the services so the supervisor and the
        pool can count from the first task on."""
        self.embedded: EmbeddedPostgres | None = None
        self.services: Services | None = None
        self.reconciler: Reconciler | None = None
        self.daemons: list[ProvisionerDaemon] = []
        self._daemon_tasks: list[asyncio.Task[None]] = []
        self._background: list[BackgroundService] = []
        self._background_tasks: list[asyncio.Task[None]] = []
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        self.started = asyncio.Event()
        self.bound_port: int | None = None
        self.extensions: list[Callable[[Server], Awaitable[None]]] = []
        """Called after the services exist and before HTTP starts: where later features attach themselves."""
        self._db: Database | None = None
        self.replica_id = ""
        """This installation's stable id (``<data-dir>/replica-id``), held for the process: its daemons'
        identities are ``<replica-id>/embedded-<i>``."""
        self._first_owner: tuple[UUID, str] | None = None
        """The owner this start created and their token's secret, until startup has succeeded (then the secret
        goes to ``<data-dir>/owner-token``; on failure the owner is removed again)."""

    def add_background(self, service: BackgroundService) -> None:
        """Run ``service`` under the supervisor once the server has started."""
        self._background.append(service)

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.bound_port or self.config.port}"

    # -- start ---------------------------------------------------------------------------------------------

    async def start(self) -> Services:
        """Start every part; on any failure stop what had started (the embedded PostgreSQL included), remove
        the owner a first start created, and raise (a :class:`StartupError` for the failures an operator fixes:
        data directory, database, port). The owner token file is written only once all of it succeeded."""
        try:
            services = await self._start()
            self._publish_owner_token()
        except StartupError as exc:
            log.error("server.start_failed", reason=exc.reason, error=exc.message, hint=exc.hint)
            await self._abort()
            raise
        except Exception:
            log.exception("server.start_failed", reason="unexpected")
            await self._abort()
            raise
        except BaseException:  # canceled (Ctrl-C) while starting
            await self._abort()
            raise
        return services

    async def _start(self) -> Services:
        config = self.config
        check_data_dir(config.data_dir)
        worker = self.worker
        if worker is not None:
            try:
                self.replica_id = hold_worker_identity(
                    config.data_dir, config.replica_id or "prebuildd", worker.index
                ).value
            except IdentityInUse as exc:
                raise StartupError(
                    "replica_id_in_use", str(exc), "each server needs its own --data-dir"
                ) from None
        elif config.provisioner_daemons or config.workers > 1:
            # Before anything starts: a second server on this data dir would share its daemons' identities, and
            # a restart of one would fail the other's jobs.
            try:
                self.replica_id = hold_replica_id(config.data_dir, config.replica_id).value
            except IdentityInUse as exc:
                raise StartupError(
                    "replica_id_in_use", str(exc), "each server needs its own --data-dir (or --replica-id)"
                ) from None
            except ValueError as exc:
                raise StartupError("replica_id_invalid", str(exc), "see --replica-id") from None
        self.started_at = self.clock.now()
        url = config.postgres_url
        if url is None and worker is None:
            self.embedded = EmbeddedPostgres(config.data_dir)
            try:
                url = await asyncio.to_thread(self.embedded.start)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                raise StartupError(
                    "embedded_postgres_failed",
                    f"the embedded PostgreSQL in {config.data_dir} did not start: {exc}",
                    f"see {config.data_dir / 'postgres.log'}, or give --postgres-url",
                ) from None
        assert url is not None
        self._database_url = url
        await check_database(url, config.database_wait)
        metrics = self.metrics
        db = self._db = Database(
            url, max_size=config.db_pool_size, timeout=config.db_timeout, on_change=metrics.component_changed
        )
        await db.open()
        conn = await db.connect()
        try:
            applied = await prepare_schema(conn, self.clock, apply=config.migrate)
        finally:
            await conn.close()
        if applied:
            log.info("server.migrated", versions=applied)
        if worker is None:
            await self._bootstrap(db)
        listener = Listener(db, channels.ALL, on_change=metrics.component_changed)
        self._listener_task = self._spawn(BackgroundService("listener", listener.run))
        await listener.wait_connected(10)
        queue = PgJobQueue(
            db, self.clock, listener, metrics=metrics, poll_interval=self.config.job_poll_interval
        )
        self.services = services = Services(
            config=config,
            clock=self.clock,
            db=db,
            listener=listener,
            queue=queue,
            builder=WorkspaceBuilder(self.clock),
            metrics=metrics,
            replica_id=self.replica_id,
        )
        # Work may have waited through an outage: reconcile as soon as the database is back.
        listener.on_reconnect.append(lambda: services.kick("database reconnected"))
        if worker is not None:
            await self._start_worker(services, worker)
            self.started.set()
            return services
        reaper = StaleJobReaper(
            queue,
            self.clock,
            timedelta(seconds=config.stale_job_timeout),
            on_change=metrics.component_changed,
        )
        self.add_background(BackgroundService("stale-job-reaper", reaper.run))
        pruner = AuditPruner(
            db, self.clock, timedelta(seconds=config.audit_retention), on_change=metrics.component_changed
        )
        self.add_background(BackgroundService("audit-pruner", pruner.run))
        self.reconciler = Reconciler.build(
            config=config,
            db=db,
            clock=self.clock,
            builder=services.builder,
            queue=queue,
            metrics=services.metrics,
            listener=listener,
        )
        services.kick_hooks.append(self.reconciler.kick)
        if config.workers > 1:
            # The API runs in the workers: their claims (by the claim statement's own notification) and their
            # other kicks (by NOTIFY) reach this process's reconciler.
            reconciler = self.reconciler
            kicked_by = {channels.WORKSPACE_CLAIMED: "claim", channels.RECONCILE_KICK: ""}

            def forward(channel: str, payload: str) -> None:
                if channel in kicked_by:
                    reconciler.kick(kicked_by[channel] or payload or "worker")

            listener.add_handler(forward)
        self.add_background(BackgroundService("reconciler", self.reconciler.run))
        if self.embedded is not None:
            embedded = self.embedded
            self.add_background(
                BackgroundService("embedded-postgres", lambda: embedded.watch(on_restart=db.suspect))
            )
        ReplicaHealth(
            tasks=self.tasks,
            daemons=config.provisioner_daemons,
            reconciler=self.reconciler,
            reconcile_interval=config.reconcile_interval,
            clock=self.clock,
            started_at=self.started_at,
        ).register(services)
        for extension in self.extensions:
            await extension(self)
        if config.demo:
            from prebuildd.server.demo import install_demo

            await install_demo(services)
        if config.workers > 1:
            await self._start_workers(services)
        else:
            await self._start_http(services)  # first: a port of 0 is only known once bound
        if not config.access_url:
            config.access_url = self.url
        self._start_daemons(queue)
        for process in self._workers:
            self._worker_tasks.append(self._spawn(BackgroundService(f"worker-{process.index}", process.run)))
        for service in self._background:
            self._background_tasks.append(self._spawn(service))
        self.started.set()
        return services

    async def _start_workers(self, services: Services) -> None:
        """The listening socket for the workers (bound here: one clear error for a port in use), the private
        run directory, and this process's private endpoint; the workers start with the background tasks."""
        config = self.config
        sock = bind_http(config.host, config.port)
        sock.listen(2048)
        sock.set_inheritable(True)
        self._socket = sock
        self.bound_port = sock.getsockname()[1]
        run_dir = self._run_dir = Path(tempfile.mkdtemp(prefix="prebuildd-run-"))  # short: socket paths
        worker_config = config.model_copy(
            update={
                "postgres_url": self._database_url,
                "provisioner_daemons": 0,
                "replica_id": self.replica_id,
                "access_url": config.access_url or self.url,
            }
        )
        self._workers = [
            WorkerProcess(i, sock, worker_config, run_dir, grace=config.shutdown_grace)
            for i in range(config.workers)
        ]

        async def ready() -> bytes:
            checks = services.readiness_checks
            results = await asyncio.gather(*(run_check(check) for check in checks))
            body = {check.name: result.as_dict() for check, result in zip(checks, results, strict=True)}
            return readiness_body(body)

        async def metrics() -> bytes:
            return await worker_metrics(services.metrics.render(), run_dir, config.workers)

        self._private = PrivateEndpoint(run_dir / SERVER_SOCKET, {"ready": ready, "metrics": metrics})
        await self._private.start()
        log.info(
            "server.listening",
            url=self.url,
            access_url=config.effective_access_url,
            workers=config.workers,
        )

    async def _start_worker(self, services: Services, worker: WorkerRole) -> None:
        """An API worker: HTTP on the inherited socket, kicks by NOTIFY, /metrics and /readyz for the whole
        server (asked of the server's process), and a stop of its own when the server's process is gone."""
        db = services.db
        server_socket = worker.run_dir / SERVER_SOCKET

        def kick(reason: str) -> None:
            if reason == "claim":  # the claim statement notified already
                return
            task = asyncio.create_task(notify_reconcile_kick(db, reason))
            self._kicks.add(task)
            task.add_done_callback(self._kicks.discard)

        services.kick_hooks.append(kick)

        async def server_ready() -> CheckResult:
            try:
                checks: dict[str, dict[str, object]] = json.loads(await ask(server_socket, "ready"))
            except (OSError, TimeoutError, ValueError) as exc:
                return CheckResult(
                    False, f"the server's process does not answer: {exc or type(exc).__name__}"
                )
            failing = [f"{name}: {c.get('reason', '')}" for name, c in checks.items() if not c.get("ok")]
            return CheckResult(not failing, "; ".join(failing), {"checks": checks})

        services.readiness_checks.append(ReadinessCheck("server", server_ready))

        async def server_metrics() -> bytes:
            try:
                return await ask(server_socket, "metrics", timeout=METRICS_TIMEOUT + 1)
            except (OSError, TimeoutError):
                return services.metrics.render()  # at least this worker's own

        services.metrics_text = server_metrics

        async def own_metrics() -> bytes:
            return services.metrics.render()

        self._private = PrivateEndpoint(
            worker.run_dir / worker_socket(worker.index), {"metrics": own_metrics}
        )
        await self._private.start()
        sock = socket.socket(fileno=worker.fd)
        await self._start_http(services, sock)

        async def watch_parent() -> None:
            while True:  # no event tells a process its parent died (prctl's PDEATHSIG is Linux-only)
                await asyncio.sleep(0.5)
                if os.getppid() != worker.parent_pid:
                    break
            log.warning("server.worker_orphaned", parent_pid=worker.parent_pid)
            os.kill(os.getpid(), signal.SIGTERM)

        self._background_tasks.append(self._spawn(BackgroundService("parent-watch", watch_parent)))

    async def _bootstrap(self, db: Database) -> None:
        """First start: the default organization, an owner and their token; the token is written to
        `<data-dir>/owner-token` by :meth:`_publish_owner_token` once startup has succeeded."""
        org = await ensure_default_organization(db, self.clock)
        if await first_owner(db) is not None:
            return
        audit = AuditContext.system(self.clock)
        user = await create_user(
            db,
            self.clock,
            username="admin",
            role="owner",
            organization_id=org.id,
            site_owner=True,
            audit=audit,
        )
        _, secret = await create_token(
            db, self.clock, user_id=user.id, name="first-start", audit=audit, holder_name=user.username
        )
        self._first_owner = (user.id, secret)

    def _publish_owner_token(self) -> None:
        """Nothing secret is written before startup has succeeded: the first owner's token, now."""
        if self._first_owner is None:
            return
        path = self.config.data_dir / OWNER_TOKEN_FILE
        write_secret_file(path, self._first_owner[1])
        self._first_owner = None
        log.info(
            "server.owner_created",
            username="admin",
            token_file=str(path),
            hint=f"prebuildd login {self.config.effective_access_url} --token-file {path}",
        )

    async def _abort(self) -> None:
        """Undo a start that failed part way: the next start must find things as they were before it (no
        owner without a token file, no PostgreSQL left running, no open pool)."""
        if self._first_owner is not None and self._db is not None:
            # Without this, the next start would find an owner and issue no token: nobody could log in.
            try:
                await remove_user(self._db, self._first_owner[0])
            except Exception as exc:
                log.error("server.owner_not_removed", error=str(exc), user_id=str(self._first_owner[0]))
            self._first_owner = None
        with contextlib.suppress(Exception):
            await self.stop()
        if self.services is None and self._db is not None:
            with contextlib.suppress(Exception):
                await self._db.close()
        self._db = None

    def _start_daemons(self, queue: PgJobQueue) -> None:
        provisioners = available_provisioners()
        # Stable per installation (and locked to this process): a restart fails its previous run's jobs at once.
        replica = self.replica_id
        for i in range(self.config.provisioner_daemons):
            daemon = ProvisionerDaemon(
                queue,
                provisioners,
                DaemonOptions(
                    name=f"embedded-{i}",
                    identity=f"{replica}/embedded-{i}",
                    tags=self.config.provisioner_tags,
                    heartbeat_interval=self.config.heartbeat_interval,
                    poll_interval=self.config.job_poll_interval,
                    data_dir=self.config.data_dir,
                    work_root=_work_root(self.config.data_dir),
                    access_url=self.config.effective_access_url,
                    on_fault_change=self._daemon_fault_hook(daemon_task_name(i)),
                ),
            )
            self.daemons.append(daemon)
            self._daemon_tasks.append(self._spawn(BackgroundService(daemon_task_name(i), daemon.run)))

    def _daemon_fault_hook(self, name: str) -> ChangeHook:
        """Each daemon's outages on its own series (``prebuildd_component_down{component="daemon-0"}``): with one
        shared series, the first daemon back would clear the gauge while the others are still down."""

        def changed(component: str, dependency: str, down: bool) -> None:
            self.metrics.component_changed(name, dependency, down)

        return changed

    # -- supervision ---------------------------------------------------------------------------------------

    def _spawn(self, service: BackgroundService) -> asyncio.Task[None]:
        self.tasks[service.name] = TaskHealth(service.name)
        return asyncio.create_task(self._supervise(service), name=service.name)

    async def _supervise(self, service: BackgroundService) -> None:
        """Keep a background loop alive: a crash is logged at once and the loop restarts after a backoff that
        doubles per consecutive crash (capped), and starts over once the loop has run fine for a while. A loop
        that returns is done (daemons return when stopped); nothing restarts once the server is stopping."""
        health = self.tasks.setdefault(service.name, TaskHealth(service.name))
        policy = self.restart_policy
        while True:
            health.state = RUNNING
            started = self._monotonic()
            try:
                await service.run()
            except asyncio.CancelledError:
                health.state = STOPPED
                raise
            except Exception as exc:
                if self._monotonic() - started >= policy.healthy_after:
                    health.consecutive_crashes = 0
                health.consecutive_crashes += 1
                health.last_error = f"{type(exc).__name__}: {exc}"
                health.restart_in = policy.delay(health.consecutive_crashes)
                health.state = RESTARTING
                log.error(
                    "server.task_crashed",
                    task=service.name,
                    error=health.last_error,
                    consecutive_crashes=health.consecutive_crashes,
                    restart_in=health.restart_in,
                    exc_info=exc,
                )
                if not await self._pause(health.restart_in):
                    health.state = STOPPED
                    return
                health.restarts += 1
                self.metrics.task_restarts.labels(service.name).inc()
                log.info("server.task_restarted", task=service.name, restarts=health.restarts)
                continue
            health.state = FINISHED
            if not self._stopping.is_set():
                log.warning("server.task_exited", task=service.name)
            return

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (with the injected sleep); False when the server began stopping meanwhile."""
        if self._stopping.is_set():
            return False
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (sleeper, stopper):
                waiter.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)
        return not self._stopping.is_set()

    async def _start_http(self, services: Services, sock: socket.socket | None = None) -> None:
        if sock is None:
            sock = bind_http(self.config.host, self.config.port)  # a port in use: one StartupError, here
        app = create_app(services)
        install_dashboard(app, services)
        uv_config = uvicorn.Config(
            app,
            host=self.config.host,
            port=self.config.port,
            log_config=None,
            access_log=self.config.access_log,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self._http = _Uvicorn(uv_config)
        self._http_task = asyncio.create_task(self._http.serve(sockets=[sock]), name="http")
        while not self._http.started:
            if self._http_task.done():
                sock.close()
                with contextlib.suppress(BaseException):  # uvicorn exits (SystemExit) after logging why
                    self._http_task.result()
                raise StartupError(
                    "http_bind_failed",
                    f"the HTTP server did not start on {self.config.http_address}",
                    "see the lines above; check --http-address (PREBUILDD_HTTP_ADDRESS)",
                )
            await asyncio.sleep(0.01)
        self.bound_port = sock.getsockname()[1]
        if self.worker is None:
            log.info("server.listening", url=self.url, access_url=self.config.effective_access_url)

    # -- stop ----------------------------------------------------------------------------------------------

    async def stop(self) -> None:
        self._stopping.set()  # no supervised task restarts from here on
        for task in self._worker_tasks:  # the API first: every worker at once, each finishing its requests
            task.cancel()
        await asyncio.gather(*self._worker_tasks, return_exceptions=True)
        if self._private is not None:
            await self._private.stop()
        if self._run_dir is not None:
            with contextlib.suppress(OSError):
                self._run_dir.rmdir()
        if self._socket is not None:
            self._socket.close()
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            with contextlib.suppress(Exception):
                await self._http_task
        for daemon in self.daemons:
            daemon.stop()
        if self._daemon_tasks:
            _, pending = await asyncio.wait(self._daemon_tasks, timeout=self.config.shutdown_grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await self._release_unfinished()
        for task in self._background_tasks:
            task.cancel()
        await asyncio.gather(*self._background_tasks, return_exceptions=True)
        if self._listener_task is not None:
            self._listener_task.cancel()
            await asyncio.gather(self._listener_task, return_exceptions=True)
        if self.services is not None:
            await self.services.listener.stop()
            await self.services.db.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        log.info("server.stopped")

    async def _release_unfinished(self) -> None:
        assert self.services is not None
        for daemon in self.daemons:
            for job_id in daemon.interrupted:
                if await self.services.queue.release(job_id, daemon.worker_id):
                    log.info("server.job_released", job_id=str(job_id), reason="shutdown")

    async def run(self) -> None:
        """Start, serve until SIGINT/SIGTERM, stop."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()  # logs why and cleans up after itself when it fails
        try:
            await stop.wait()
            log.info("server.stopping")
        finally:
            await self.stop()


class _Uvicorn(uvicorn.Server):
    """uvicorn without its signal handling: the server owns SIGINT/SIGTERM and stops every part in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _work_root(data_dir: Path) -> Path:
    return private_dir(data_dir / "jobs")
