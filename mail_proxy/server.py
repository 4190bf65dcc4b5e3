"""The worker: uvicorn serving the API, plus dispatcher, reporter and housekeeping, on one
event loop (delivery.md §1). ``serve`` is what `mail-proxy serve` and the supervisor run.

Shutdown order on SIGTERM/SIGINT (delivery.md §10): the API switches to 503, the dispatcher
stops claiming and finishes in-flight sends within ``shutdown_timeout``, the reporter finishes
its calls, SMTP connections are closed, then the HTTP server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import logging.handlers
import os
import secrets
import signal
import socket
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mail_proxy import __version__
from mail_proxy.errors import MailProxyError
from mail_proxy.store.errors import SchemaLost, StoreUnavailable, StoreUnreachable

log = logging.getLogger("mail_proxy.worker")
SETTINGS_POLL = 5.0
PARENT_POLL = 2.0


class KeyRingRefused(MailProxyError):
    code = "secret_unavailable"


def _setup_logging(config: Any) -> None:
    level = getattr(logging, str(config.log_level).upper(), logging.INFO)
    from mail_proxy.instance.logs import JsonLineFormatter, OneLineErrors

    formatter = (JsonLineFormatter() if config.log_format == "json"
                 else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if config.folder is not None:
        logs = Path(config.folder) / "logs"
        logs.mkdir(mode=0o700, exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(
            logs / "mail-proxy.log", maxBytes=10 * 1024 * 1024, backupCount=5,
            encoding="utf-8"))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiosmtplib").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for name in ("asyncpg", "asyncpg.pool"):  # a logger's filters are not inherited
        library = logging.getLogger(name)
        if not any(isinstance(f, OneLineErrors) for f in library.filters):
            library.addFilter(OneLineErrors())


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise MailProxyError(f"port {port} on {host} is in use" if exc.errno == 98
                             else f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class Worker:
    """Everything one worker process runs, with explicit start and stop."""

    def __init__(self, config: Any, keyring: Any) -> None:
        self.config = config
        self.keyring = keyring
        self.owner = owner_id()
        self.stop_requested = asyncio.Event()
        self.exit_code = 0  # what run_worker returns once stopped
        self._gauged_pools: set[tuple[str, str]] = set()
        self.tasks: list[asyncio.Task[Any]] = []
        self._unimplemented_warned: tuple[str, ...] = ()
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        from mail_proxy.manager.core import Core

        cfg = self.config
        self.core = core = await Core.open(cfg.db_url, self.keyring, name=cfg.name,
                                           pool_size=cfg.db_pool_size, password=cfg.db_password)
        from mail_proxy.store.keycheck import missing_kids, refusal_message

        try:
            writable = getattr(core.store, "check_writable", None)
            if writable is not None:
                await writable()
            missing = await missing_kids(core.store, self.keyring)
            if missing:
                raise KeyRingRefused(refusal_message(missing, cfg.name))
            await self._start_on(core)
        except BaseException:
            # A start that fails (a busy port, a host that does not resolve) must close what
            # it opened: the database's threads are not daemons, and left running they kept
            # the process alive, deaf to SIGTERM, after "worker failed to start".
            await self._close_partial()
            raise

    async def _close_partial(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for part in (getattr(self, "smtp", None), getattr(self, "fetcher", None)):
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.close()
        with contextlib.suppress(Exception):
            await self.core.close()

    async def _start_on(self, core: Any) -> None:
        from mail_proxy.api.app import create_app
        from mail_proxy.api.state import ApiState
        from mail_proxy.delivery.attachments.fetcher import AttachmentFetcher
        from mail_proxy.delivery.dispatcher import Dispatcher
        from mail_proxy.delivery.smtp import SmtpPools
        from mail_proxy.manager.validation import message_id_domain
        from mail_proxy.metrics import Metrics

        cfg = self.config
        settings = core.settings
        # getfqdn may block on DNS: resolve the EHLO / Message-ID domain once, off the loop
        await asyncio.to_thread(message_id_domain, settings)
        self.metrics = Metrics(version=__version__, database=core.store.backend)
        core.metrics = self.metrics
        accounts = await core.store.fetch("all_account_keys")
        self.metrics.init_accounts((a["tenant_id"], a["id"]) for a in accounts)
        self.smtp = SmtpPools(ehlo_name=message_id_domain(settings),
                              connect_timeout=settings.smtp_connect_timeout,
                              send_timeout=settings.smtp_send_timeout,
                              idle_timeout=settings.smtp_idle_timeout,
                              health_check_after=settings.smtp_health_check_after)
        self.fetcher = AttachmentFetcher(
            settings, cache_dir=cfg.cache_dir, version=__version__,
            on_fetch=lambda mode, outcome: self.metrics.attachment_fetch_total.labels(
                mode, outcome).inc())
        self.reporter = self._make_reporter()
        self.dispatcher = Dispatcher(core, owner=self.owner, smtp=self.smtp,
                                     fetcher=self.fetcher, metrics=self.metrics,
                                     on_event=self._event_written)
        core.wake_dispatcher = self.dispatcher.wake
        core.account_changed = self._account_changed
        core.settings_listeners.append(self._settings_changed)
        self._warn_unimplemented(settings)
        core.wake_reporter = self._event_written
        listen = getattr(core.store, "listen", None)
        if listen is not None:  # PostgreSQL: enqueues on other instances wake us at once
            await listen(lambda _payload: self.dispatcher.wake())
        self.api = ApiState(core=core, admin_token=cfg.api_token, metrics=self.metrics,
                            wake_reporter=self._wake_reporter, live_gauges=self._live_gauges)
        import uvicorn

        sock = _bind(cfg.host, cfg.port)
        from mail_proxy.api.http_protocol import protocol_class

        server_config = uvicorn.Config(create_app(self.api), log_config=None, access_log=False,
                                       lifespan="off", timeout_graceful_shutdown=5,
                                       server_header=False, http=protocol_class())
        self.server = _QuietServer(server_config)
        self.tasks = [asyncio.create_task(self.server.serve(sockets=[sock]), name="http"),
                      asyncio.create_task(self.dispatcher.run(), name="dispatcher"),
                      asyncio.create_task(self._settings_loop(), name="settings"),
                      asyncio.create_task(self.smtp.run_reaper(), name="smtp-reaper")]
        from mail_proxy import housekeeping

        self.tasks.append(asyncio.create_task(
            housekeeping.loop(core, self.owner, self.fetcher), name="housekeeping"))
        if self.reporter is not None:
            self.tasks.append(asyncio.create_task(self.reporter.run(), name="reporter"))
        if os.environ.get("MAIL_PROXY_SUPERVISOR_PID"):
            self.tasks.append(asyncio.create_task(self._watch_parent(), name="parent"))
        # Everything loaded so far (modules, app, caches) lives as long as the worker: keep
        # it out of the collector's full passes, which otherwise rescan it on busy hours.
        gc.collect()
        gc.freeze()
        log.info("mail-proxy %s worker %s listening on http://%s:%s (database %s)",
                 __version__, self.owner, cfg.host, cfg.port, core.store.backend)

    def _make_reporter(self) -> Any:
        try:
            from mail_proxy.reports.reporter import Reporter
        except ImportError:
            return None
        return Reporter(self.core, owner=self.owner, metrics=self.metrics)

    def _live_gauges(self) -> None:
        gauge = self.metrics.smtp_connections
        stats = self.smtp.stats()
        # An account whose pool is gone (changed, deleted, idle-closed) keeps its series
        # (metrics.md §8) at 0: left alone it froze at its last value, "busy 1" for a send
        # long over (metrics hunt).
        for key in self._gauged_pools - stats.keys():
            for state in ("idle", "busy"):
                gauge.labels(key[0], key[1], state).set(0)
        self._gauged_pools = set(stats)
        for (tenant_id, account_id), counts in stats.items():
            for state in ("idle", "busy"):
                gauge.labels(tenant_id, account_id, state).set(counts.get(state, 0))
        for tier, size in self.fetcher.cache_bytes().items():
            self.metrics.attachment_cache_bytes.labels(tier).set(size)

    def _account_changed(self, tenant_id: str, account_id: str) -> None:
        task = asyncio.create_task(self.smtp.discard(tenant_id, account_id))
        self._background.add(task)  # kept until done: a bare task may be collected
        task.add_done_callback(self._background.discard)

    def _event_written(self, tenant_id: str | None) -> None:
        if self.reporter is not None:
            self.reporter.wake(tenant_id)

    def _wake_reporter(self, tenant_id: str | None, forced: bool) -> None:
        if self.reporter is not None:
            self.reporter.wake(tenant_id, forced=forced)

    async def _settings_loop(self) -> None:
        failing: str | None = None  # logged once per distinct cause, not every poll
        while True:
            await asyncio.sleep(SETTINGS_POLL)
            try:
                await self.reload_settings()
            except SchemaLost as exc:
                from mail_proxy.instance.states import DATABASE_UNREACHABLE_EXIT

                log.error("%s; the worker stops (exit %d) so that its supervisor starts it "
                          "again, which creates them in an empty database as a first start "
                          "does", exc, DATABASE_UNREACHABLE_EXIT)
                self.exit_code = DATABASE_UNREACHABLE_EXIT
                self.stop_requested.set()
                return
            except Exception as exc:
                if str(exc) != failing:
                    log.error("cannot reload the runtime settings, keeping the current ones: "
                              "%s", exc, exc_info=not isinstance(exc, StoreUnavailable))
                failing = str(exc)
            else:
                if failing is not None:
                    log.info("runtime settings readable again")
                failing = None

    async def reload_settings(self, *, force: bool = False) -> None:
        if await self.core.reload_settings(force=force):
            log.info("runtime settings reloaded (version %d)", self.core.settings_version)

    def _warn_unimplemented(self, settings: Any) -> None:
        """Settings of features this version does not have are stored (the contract keeps
        them, so a configuration carries over) but do nothing: say so in the log, once per
        change, rather than let an operator believe bounces are being read."""
        missing = tuple(name for name, on in (
            ("bounce_enabled (IMAP bounce polling)", settings.bounce_enabled),
            ("bounce_verp (VERP tags)", settings.bounce_verp)) if on)
        if missing and missing != self._unimplemented_warned:
            log.warning("not implemented in this version, so without effect: %s "
                        "(see README, 'Not in this version')", ", ".join(missing))
        self._unimplemented_warned = missing

    def _settings_changed(self, settings: Any) -> None:
        from mail_proxy.manager.validation import message_id_domain

        self._warn_unimplemented(settings)
        self.fetcher.update_settings(settings)
        # the host's own name was looked up (and cached) at start: no DNS wait here
        self.smtp.configure(connect_timeout=settings.smtp_connect_timeout,
                            send_timeout=settings.smtp_send_timeout,
                            idle_timeout=settings.smtp_idle_timeout,
                            health_check_after=settings.smtp_health_check_after,
                            ehlo_name=message_id_domain(settings))
        # settings.md §1 "applies it at once": a dispatcher asleep for the old
        # send_loop_interval (or with dispatch disabled) would otherwise finish that sleep
        # first (scheduling hunt: 28.5 s after re-enabling dispatch)
        self.dispatcher.wake()

    async def _watch_parent(self) -> None:
        expected = int(os.environ["MAIL_PROXY_SUPERVISOR_PID"])
        while True:
            await asyncio.sleep(PARENT_POLL)
            if os.getppid() != expected:
                log.warning("supervisor %d is gone: draining and exiting", expected)
                self.stop_requested.set()
                return

    def reload(self) -> None:
        """SIGHUP: reopen the log file, re-read the admin token, the key ring and the
        settings."""
        from mail_proxy.instance.config import resolve_process_config
        from mail_proxy.instance.logs import reopen_files
        from mail_proxy.security.crypto import KeyRing

        reopen_files(logging.getLogger())

        token, ring = None, None
        try:
            fresh = resolve_process_config(self.config.name if self.config.folder else None)
            token, ring = fresh.api_token, KeyRing.load(self.config.folder)
        except MailProxyError as exc:
            log.error("reload failed, keeping the previous token and key ring: %s", exc)
        task = asyncio.get_running_loop().create_task(self._reload(token, ring))
        self.tasks.append(task)

    async def _reload(self, token: str | None, ring: Any) -> None:
        if token is not None and ring is not None:
            await self.adopt_key_ring(token, ring)
        await self.reload_settings(force=True)

    async def adopt_key_ring(self, token: str, ring: Any) -> bool:
        """Use a re-read admin token and key ring, unless the ring drops a key of the
        current one that stored values use: a reload that took such a ring made every send
        needing one of those secrets fail (attachment hunt: an edited encryption.key and a
        SIGHUP, and messages ended in internal_error). A ring that still lacks a key the
        current one lacks too is taken: copying in one missing key of several must help."""
        from mail_proxy.store.keycheck import missing_kids

        try:
            missing = {kid for kid in await missing_kids(self.core.store, ring)
                       if kid in self.keyring}
        except Exception as exc:
            log.error("reload: cannot check the new key ring against the database (%s); "
                      "keeping the previous token and key ring", exc)
            return False
        if missing:
            log.error("reload refused, keeping the previous token and key ring: the database "
                      "holds values encrypted with key %s, which the new key ring lacks",
                      ", ".join(sorted(missing)))
            return False
        self.api.admin_token = token
        self.keyring = ring
        self.core.keyring = ring
        self.dispatcher.configs.forget()
        log.info("reloaded admin token and key ring")
        return True

    async def stop(self) -> None:
        timeout = float(self.config.shutdown_timeout)
        log.info("stopping: draining (budget %.0f s)", timeout)
        self.api.state = "stopping"
        self.metrics.set_state("stopping")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # One budget for every step, the drain and the report calls side by side: one after
        # the other they could take 55 s, past the supervisor's SIGKILL at budget + 10 s
        # (and the systemd unit's TimeoutStopSec), cutting the drain short.
        steps = [self.dispatcher.drain(timeout)]
        if self.reporter is not None:
            steps.append(self.reporter.stop(timeout=min(timeout, 15.0)))
        # A step that fails (the database gone at SIGTERM) must not skip the rest: the
        # store's threads would keep the process alive after the loop ends.
        failures = [r for r in await asyncio.gather(*steps, return_exceptions=True)
                    if isinstance(r, Exception)]
        try:
            for close in (self.smtp.close, self.fetcher.close):
                try:
                    await close()
                except Exception as exc:
                    failures.append(exc)
            self.server.should_exit = True
            http = self.tasks[0]
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(
                    http, timeout=max(1.0, min(10.0, deadline - loop.time() + 5)))
            for task in self.tasks[1:]:
                task.cancel()
            await asyncio.gather(*self.tasks[1:], return_exceptions=True)
        finally:
            await self.core.close()
        for failure in failures:
            log.error("while stopping: %s", failure)
        log.info("stopped" if not failures else "stopped, with the errors above")


def _server_class() -> Any:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """The worker owns the signals: uvicorn must not exit on SIGTERM before the drain."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return QuietServer


class _QuietServer:
    def __new__(cls, config: Any) -> Any:  # built lazily so uvicorn is imported only here
        return _server_class()(config)


async def run_worker(config: Any, keyring: Any) -> int:
    worker = Worker(config, keyring)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop_requested.set)
    await worker.start()
    loop.add_signal_handler(signal.SIGHUP, worker.reload)
    waiter = asyncio.create_task(worker.stop_requested.wait())
    await asyncio.wait([waiter, worker.tasks[0]], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    await worker.stop()
    return worker.exit_code


def serve(config: Any) -> int:
    """Run the worker in the foreground until SIGTERM/SIGINT; returns the exit code."""
    from mail_proxy.instance.database import check_database
    from mail_proxy.security.crypto import KeyRing

    _setup_logging(config)
    try:
        check_database(config)
        keyring = KeyRing.load(config.folder)
    except MailProxyError as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    uvloop: types.ModuleType | None
    try:
        import uvloop
    except ImportError:
        uvloop = None
    try:
        if uvloop is not None:
            return int(uvloop.run(run_worker(config, keyring)))
        return int(asyncio.run(run_worker(config, keyring)))
    except KeyRingRefused as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StoreUnreachable as exc:
        from mail_proxy.instance.states import DATABASE_UNREACHABLE_EXIT

        log.error("worker cannot start yet: %s (exit %d: started again once the database "
                  "answers)", exc, DATABASE_UNREACHABLE_EXIT)
        print(f"error: {exc}", file=sys.stderr)
        return DATABASE_UNREACHABLE_EXIT
    except MailProxyError as exc:
        log.error("worker failed to start: %s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 1
