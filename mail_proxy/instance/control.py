"""Start, restart and delete instances from the CLI side (cli.md §4, §9); stopping is in
``instance.stopping``.

Functions report through two callables, ``out`` (stdout lines) and ``err`` (stderr lines), and
raise :mod:`mail_proxy.errors` exceptions; the CLI edge turns those into exit codes.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import mail_proxy
from mail_proxy.errors import (
    ConfigurationError,
    MailProxyError,
    OperationFailed,
)
from mail_proxy.instance import paths
from mail_proxy.instance.config import (
    DEFAULT_HOST,
    InstanceExists,
    ProcessConfig,
    check_admin_token,
    check_host,
    create_instance,
    port_free,
    probe_host,
    resolve_process_config,
    update_config,
    url_host,
)
from mail_proxy.instance.database import check_database
from mail_proxy.instance.logs import log_path
from mail_proxy.instance.states import (
    DATABASE_UNREACHABLE_EXIT,
    read_record,
    supervisor_alive,
    worker_alive,
)
from mail_proxy.instance.stopping import stop

Say = Callable[[str], None]
LOCK_LOST_EXIT = 1  # a supervisor that finds supervisor.lock taken exits 1 (also FATAL)
LOCK_GRACE = 1.0  # how long the lock holder may take to record itself
NO_WAIT_GRACE = 2.0  # --wait 0 still lets the supervisor record itself (status shows it)


def health_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    conn = http.client.HTTPConnection(probe_host(host), port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def running_line(name: str, config: ProcessConfig, record: dict | None) -> str:
    """Where it runs: the address its supervisor recorded, which config.toml may no longer
    say (`config set port` applies at the next start)."""
    rec = record or {}
    url = config.url
    if isinstance(rec.get("host"), str) and isinstance(rec.get("port"), int):
        url = f"http://{url_host(rec['host'])}:{rec['port']}"
    state = rec.get("state")
    if state in (None, "RUNNING") and rec.get("worker_pid"):
        return f"mail-proxy '{name}' is running at {url} (pid {rec['worker_pid']})"
    # no worker serving right now: say what its supervisor is doing, as `status` would
    backoff = ("is waiting for its database (BACKOFF: its worker cannot reach it and is "
               f"started again every 30 s at most; mail-proxy logs {name})"
               if rec.get("last_exit_code") == DATABASE_UNREACHABLE_EXIT else
               "is in BACKOFF (its worker failed and is restarted after a pause; "
               f"mail-proxy logs {name})")
    doing = {"STARTING": "is starting", "STOPPING": "is stopping",
             "BACKOFF": backoff}.get(str(state), f"is {state}")
    return f"mail-proxy '{name}' {doing} at {url} (supervisor pid {rec.get('supervisor_pid')})"


def _child_env() -> dict[str, str]:
    """Our environment, plus the path that imports this very mail_proxy package, and the
    home made absolute: the supervisor runs in the instance folder, where a relative
    MAIL_PROXY_HOME would name another place."""
    env = dict(os.environ)
    env["MAIL_PROXY_HOME"] = str(paths.home())
    root = str(Path(mail_proxy.__file__).resolve().parent.parent)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts:
        env["PYTHONPATH"] = os.pathsep.join([root, *parts])
    return env


def launch_supervisor(name: str, folder: Path) -> subprocess.Popen[bytes]:
    """Start the supervisor detached: new session, no stdin, output to supervisor.log."""
    logs = folder / "logs"
    paths.make_private_dir(logs)
    with paths.os_errors("open", logs / "supervisor.log"):
        fd = os.open(logs / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "mail_proxy.instance.supervisor", name],
            stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT, cwd=folder,
            env=_child_env(), start_new_session=True, umask=0o077, close_fds=True)
    finally:
        os.close(fd)


def start(name: str, *, host: str | None = None, port: int | None = None,
          db: str | None = None, wait: float = 15.0, foreground: bool = False,
          key_file: Path | None = None, out: Say, err: Say) -> int:
    paths.validate_name(name)  # first: an over-long name fails every file operation
    if host is not None:
        check_host(host)  # before anything is created or saved (cli.md §8: exit 2)
    folder = paths.instance_dir(name)
    existed = folder.exists()
    try:
        config = _create(name, host=host, port=port, db=db, key_file=key_file, out=out)
    except KeyboardInterrupt:
        if not existed:  # half-written: it would block the next start as orphaned files
            shutil.rmtree(folder, ignore_errors=True)
        raise
    created = config is not None
    proc = None
    log_start = _log_size(folder)
    with _start_lock(folder):
        # one `start` at a time per instance: a second one waits here, then finds the
        # supervisor the first one launched (two preflights on a new SQLite file collide)
        if config is None:
            config = _existing(name, host=host, port=port, db=db, key_file=key_file,
                               wait=wait)
            if config is not None:
                _warn_unknown_keys(folder, err)
        if config is not None:
            try:
                _check_port(name, config.host, config.port)
                _preflight(name, config, created)
            except (MailProxyError, KeyboardInterrupt):
                # a failed (or interrupted: CLI hunt) creation keeps nothing, so the next
                # start creates it afresh and shows its token; else it stayed, never
                # announced
                if created:
                    shutil.rmtree(folder, ignore_errors=True)
                raise
            if created:  # only now: a refused creation is not kept, nor announced
                out(f"Created instance '{name}' in {config.folder}")
                out(f"Admin token (stored in {folder / 'api_token'}): {config.api_token}")
            if not foreground:
                proc = launch_supervisor(name, folder)
                with _interrupted_note(name, err):
                    _wait_recorded(folder, proc, wait or NO_WAIT_GRACE)
    if config is None:  # already running (alive, cli.md §9.4): its URL, exit 0
        running = resolve_process_config(name, need_token=False)
        record = read_record(folder) or {}
        if record.get("state") == "STARTING" and wait:
            # another `start` launched it a moment ago: wait for it as that one does
            _await_ready(name, folder, running, None, wait, out=out, err=err)
        else:
            out(running_line(name, running, record))
        if host is not None or port is not None:
            err(f"note: --host and --port apply to a stopped instance; mail-proxy restart "
                f"{name} after `mail-proxy {name} config set port N` moves a running one")
        return 0
    if foreground:
        from mail_proxy.instance.supervisor import run_supervisor

        code = run_supervisor(name, foreground=True)
        other = _other_supervisor(folder, os.getpid()) if code == LOCK_LOST_EXIT else None
        if other is not None:  # another supervisor runs it: that is "already running"
            out(running_line(name, config, other))
            return 0
        return code
    if wait == 0 and proc is not None and proc.poll() is None:
        # --wait 0: launched, not waited for (cli.md: --wait takes seconds from 0 upward)
        out(f"mail-proxy '{name}' is starting at {config.url} (supervisor pid {proc.pid}); "
            f"mail-proxy status {name} tells when it runs")
        return 0
    with _interrupted_note(name, err):
        return _await_ready(name, folder, config, proc, wait, log_start, out=out, err=err)


@contextlib.contextmanager
def _interrupted_note(name: str, err: Say) -> Iterator[None]:
    """Ctrl-C while `start` waits stops the waiting, not the instance: say so (CLI hunt:
    the supervisor went on in the background without a word)."""
    try:
        yield
    except KeyboardInterrupt:
        err(f"interrupted: instance '{name}' goes on starting in the background; "
            f"mail-proxy status {name} tells how it is, mail-proxy stop {name} stops it")
        raise


def _log_size(folder: Path) -> int:
    try:
        return log_path(folder, supervisor=True).stat().st_size
    except OSError:
        return 0


def _log_since(folder: Path, offset: int, lines: int) -> list[str]:
    """The last ``lines`` lines the supervisor log gained since ``offset``: a failed start
    shows what this start wrote, not the end of an earlier run."""
    path = log_path(folder, supervisor=True)
    try:
        with path.open("rb") as fh:
            if fh.seek(0, os.SEEK_END) < offset:
                offset = 0  # rotated meanwhile
            fh.seek(offset)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def _create(name: str, *, host: str | None, port: int | None, db: str | None,
            key_file: Path | None, out: Say) -> ProcessConfig | None:
    """Create a new instance (``start`` prints its token once it passed the preflight);
    None when the instance exists."""
    folder = paths.instance_dir(name)
    if (folder / "config.toml").is_file():
        return None
    try:
        config = create_instance(name, host or DEFAULT_HOST, port, db, key_file=key_file)
    except InstanceExists:
        return None  # a concurrent `start NAME` created it a moment ago: start it as it is
    return config


@contextlib.contextmanager
def _start_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the instance folder itself (no extra file), released when the
    descriptor closes; the supervisor does not inherit it (close_fds)."""
    with paths.os_errors("lock", folder):
        fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _existing(name: str, *, host: str | None, port: int | None, db: str | None,
              key_file: Path | None, wait: float) -> ProcessConfig | None:
    """The configuration to start an existing instance with; None when it runs already."""
    folder = paths.existing_instance(name)
    if db or key_file:
        raise ConfigurationError(
            f"--db and --key-file only apply when creating an instance; '{name}' exists",
            hint=f"edit {folder / 'config.toml'} deliberately to move it")
    record = read_record(folder) or {}
    if supervisor_alive(record):
        if record.get("state") != "STOPPING":
            return None
        # A stop is draining it: "is stopping" with exit 0 left nothing running once the
        # drain ended (ops hunt). Wait for the stop, within --wait, and start afresh.
        if not _gone(folder, wait):
            raise OperationFailed(f"instance '{name}' is still stopping (supervisor pid "
                                  f"{record.get('supervisor_pid')})",
                                  hint=f"mail-proxy start {name} once the stop has ended")
    elif worker_alive(record):
        # its supervisor was killed and the worker drains alone; "port in use, use --port N"
        # would have put a second worker on the same queue
        raise OperationFailed(f"the worker of instance '{name}' (pid {record.get('worker_pid')})"
                              " is still draining: its supervisor is gone",
                              hint=f"wait for it to end, or mail-proxy stop {name}")
    if host is not None or port is not None:
        # checked before it is saved: a refused start must not change the configuration
        current = resolve_process_config(name, need_token=False)
        _check_port(name, host or current.host, port or current.port)
        update_config(folder, host=host, port=port)
    config = resolve_process_config(name)
    check_database(config)
    return config


def _warn_unknown_keys(folder: Path, err: Say) -> None:
    """A typo in config.toml ("prot = 8100") was ignored without a word (ops hunt): the
    instance started on its old port. Said once, at start; the instance still starts."""
    from mail_proxy.instance.config import CONFIG_KEYS, read_toml

    unknown = sorted(k for k in read_toml(folder) if k not in CONFIG_KEYS)
    if unknown:
        err(f"warning: {folder / 'config.toml'}: unknown key(s) "
            + ", ".join(repr(k) for k in unknown) + " ignored (known: "
            + ", ".join(CONFIG_KEYS) + ")")


def _gone(folder: Path, limit: float) -> bool:
    """True once no supervisor or worker of the instance is alive, within ``limit`` s."""
    deadline = time.monotonic() + limit
    while True:
        record = read_record(folder) or {}
        if not supervisor_alive(record) and not worker_alive(record):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _wait_recorded(folder: Path, proc: subprocess.Popen[bytes], limit: float) -> None:
    """Until the launched supervisor has recorded itself (it does so as soon as it holds
    supervisor.lock) or has exited: then a waiting `start` can tell it is alive."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if (read_record(folder) or {}).get("supervisor_pid") == proc.pid:
            return
        time.sleep(0.05)


def _check_port(name: str, host: str, port: int, *, running: bool = False) -> None:
    if not port_free(host, port):
        # a running instance keeps its port through `start --port` (CLI hunt: the hint
        # sent a refused restart round in a loop)
        hint = (f"mail-proxy {name} config set port N, then mail-proxy restart {name}"
                if running else f"mail-proxy start {name} --port N takes another")
        raise OperationFailed(f"port {port} on {host} is in use", hint=hint)


def _preflight(name: str, config: ProcessConfig, created: bool) -> None:
    """--db and --key-file apply only when creating: a new instance whose database cannot be
    opened, or whose key ring misses the database's keys, is not kept (``start`` removes
    it), so the corrected command, the one the hint names, can simply run again."""
    from mail_proxy.instance.preflight import preflight
    from mail_proxy.store.errors import StoreUnavailable

    try:
        preflight(config, creating=created)
    except (StoreUnavailable, ConfigurationError) as exc:
        if created:
            fix = ("correct --db (or start the database) and run the same command again"
                   if isinstance(exc, StoreUnavailable) else
                   "run the same command again with --key-file PATH (or "
                   "MAIL_PROXY_ENCRYPTION_KEY set)")
            exc.hint = f"instance '{name}' was not kept; {fix}"
        raise


def _ready(record: dict, proc: subprocess.Popen[bytes] | None, config: ProcessConfig,
           wait: float) -> bool:
    """The supervisor we wait for saw /health answer 200, and so do we."""
    if record.get("state") != "RUNNING":
        return False
    ours = (supervisor_alive(record) if proc is None
            else record.get("supervisor_pid") == proc.pid)
    return ours and health_ok(config.host, config.port, timeout=min(1.0, wait))


def _other_supervisor(folder: Path, not_pid: int) -> dict | None:
    """The record of a live supervisor other than ``not_pid``, given a moment to appear:
    the one holding supervisor.lock records itself right after taking it."""
    deadline = time.monotonic() + LOCK_GRACE
    while True:
        record = read_record(folder) or {}
        if record.get("supervisor_pid") != not_pid and supervisor_alive(record):
            return record
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def _await_ready(name: str, folder: Path, config: ProcessConfig,
                 proc: subprocess.Popen[bytes] | None, wait: float, log_start: int = 0, *,
                 out: Say, err: Say) -> int:
    """Wait for the supervisor we launched (``proc``) or, when it lost supervisor.lock to a
    concurrent ``start``, for the live supervisor that holds it."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        record = read_record(folder) or {}
        if _ready(record, proc, config, wait):
            out(running_line(name, config, record))
            return 0
        if proc is not None and proc.poll() is not None:
            if proc.returncode != LOCK_LOST_EXIT or record.get("supervisor_pid") == proc.pid:
                break  # it ran and gave up (FATAL), or refused its configuration
            if _other_supervisor(folder, proc.pid) is None:
                break
            proc = None  # it lost supervisor.lock: the live holder is the instance
        elif proc is None and not supervisor_alive(record):
            break  # the other supervisor is gone too
        time.sleep(0.2)
    for line in _log_since(folder, log_start, 20):
        err(line)
    if (proc is not None and proc.poll() is None) or supervisor_alive(read_record(folder)):
        raise OperationFailed(f"mail-proxy '{name}' did not answer /health within {wait:g}s "
                              "(the supervisor keeps trying)",
                              hint=f"mail-proxy logs {name} --supervisor")
    # what was seen, for a failure the log does not explain (a supervisor that lost its
    # lock to another `start` writes nothing there)
    seen = read_record(folder) or {}
    how = (f"its supervisor exited with code {proc.returncode}" if proc is not None
           else "the supervisor that held its lock exited")
    raise OperationFailed(f"mail-proxy '{name}' could not start ({how}; recorded state "
                          f"{seen.get('state') or 'none'})",
                          hint=f"mail-proxy logs {name} --supervisor")


def restart(name: str, *, timeout: float | None = None, force: bool = False,
            wait: float = 15.0, out: Say, err: Say) -> int:
    record = read_record(paths.existing_instance(name))
    if record and record.get("foreground") and supervisor_alive(record):
        # Stopping would work, but the start would put a daemon where systemd (or whatever
        # ran `serve`) expects its own process: the restart belongs to that manager.
        raise OperationFailed(
            f"instance '{name}' runs in the foreground (mail-proxy serve, pid "
            f"{record.get('supervisor_pid')})",
            hint="restart it where it was started (e.g. systemctl restart mail-proxy@"
                 f"{name}), or mail-proxy stop {name} and mail-proxy start {name}")
    was_running = supervisor_alive(record)
    if was_running:
        _check_restartable(name, record or {})
    try:
        stop(name, timeout=timeout, force=force, out=lambda _line: None, err=err)
    except KeyboardInterrupt:
        err(f"interrupted: instance '{name}' may still be stopping and will not be started "
            f"again; mail-proxy start {name} starts it")
        raise
    try:
        return start(name, wait=wait, out=out, err=err)
    except MailProxyError as exc:
        # what the checks above cannot see (the database, a port taken meanwhile): say
        # plainly that the instance this command found running is down now; one that was
        # not running gets start's own message (security hunt: it was told it had been
        # "stopped by this restart")
        if was_running:
            exc.hint = (f"instance '{name}' was stopped by this restart and is not running; "
                        + (exc.hint or f"mail-proxy start {name} once the cause is fixed"))
        raise


def _check_restartable(name: str, record: dict) -> None:
    """What `start` would refuse, checked while the running worker still serves: a restart
    that stopped a healthy instance and then could not start it left it down (a port set by
    `config set port` and taken meanwhile, an edited api_token or encryption.key)."""
    from mail_proxy.security.crypto import KeyRing

    config = resolve_process_config(name)  # config.toml, the admin token
    KeyRing.load(config.folder)
    if (config.host, config.port) != (record.get("host"), record.get("port")):
        # the running worker holds the old one
        _check_port(name, config.host, config.port, running=True)


def read_token(name: str) -> str:
    token = os.environ.get("GMP_API_TOKEN")
    if token:
        check_admin_token(token, name, from_env=True)
        return token
    return resolve_process_config(name).api_token


def regenerate_token(name: str, *, out: Say, err: Say) -> str:
    from mail_proxy.instance.config import new_admin_token

    if os.environ.get("GMP_API_TOKEN"):
        raise ConfigurationError("GMP_API_TOKEN is set: the environment wins over api_token",
                                 hint="change GMP_API_TOKEN where it is defined")
    folder = paths.existing_instance(name)
    token = new_admin_token()
    paths.write_private(folder / "api_token", token + "\n")
    record = read_record(folder)
    if supervisor_alive(record) and worker_alive(record):
        assert record is not None
        os.kill(record["supervisor_pid"], signal.SIGHUP)
        err("the running worker was told to reload the token")
    return token
