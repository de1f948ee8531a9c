"""Start, watch, restart and stop the stack's processes, with their output on one terminal.

Every child gets its own session (so its own process group): Ctrl-C in the terminal reaches only
the launcher, which then stops the children in order, and killing a group also takes the pool
processes a Celery worker forks.
"""
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol

import psutil

NAME_WIDTH = 12
LAUNCHER = "devstack"


class Out(Protocol):
    """Where the launcher's lines go: sys.stdout by default, or any text stream."""

    def write(self, text: str, /) -> object: ...

    def flush(self) -> object: ...


class ProcessFailed(RuntimeError):
    """A one-off command (a migration) exited non-zero; the message carries its output."""

    def __init__(self, name: str, argv: Sequence[str], returncode: int, output: str) -> None:
        self.name, self.argv, self.returncode, self.output = name, list(argv), returncode, output
        command = shlex.join(["python" if arg == sys.executable else arg for arg in argv])
        super().__init__(f"{name} failed ({describe_exit(returncode)}): {command}\n"
                         f"its output:\n{output}")


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


@dataclass
class _Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path | None
    restart: bool
    log: BinaryIO | None
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    reader: threading.Thread | None = None
    started_at: float = 0.0
    exit_code: int | None = None  # set once the current process has been reaped
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=200))


class Supervisor:
    """Runs named children; restarts those that die (at most about once per `restart_interval`)."""

    def __init__(self, log_dir: Path | None = None, out: Out | None = None,
                 cwd: Path | None = None, restart_interval: float = 1.0,
                 relay: bool = True) -> None:
        """relay=False (needs log_dir): each child writes straight into its log file, not
        through a reader thread of ours and onto `out`; a benchmark wants that, because the
        relaying would otherwise cost the measured processes CPU they share."""
        if not relay and log_dir is None:
            raise ValueError("relay=False needs a log_dir to write the output to")
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.relay = relay
        self.out: Out = out if out is not None else sys.stdout
        self.cwd = cwd
        self.restart_interval = restart_interval
        self.restarts: dict[str, int] = {}
        self._children: dict[str, _Child] = {}
        self._lock = threading.RLock()        # the children table and their Popen objects
        self._out_lock = threading.Lock()     # one line at a time on the terminal
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None

    # -- output -------------------------------------------------------------------------------

    def say(self, message: str, name: str | None = LAUNCHER) -> None:
        """One line on our stdout, prefixed with who said it (name=None: no prefix)."""
        line = message if name is None else f"{name:<{NAME_WIDTH}} | {message}"
        with self._out_lock:
            try:
                self.out.write(line + "\n")
                self.out.flush()
            except (OSError, ValueError):
                pass  # stdout closed (e.g. piped into `head`): children must keep running anyway

    def recent_output(self, name: str | None = None, lines: int = 40) -> str:
        """The last lines each child printed, for error messages ("why is it not ready?")."""
        with self._lock:
            children = [self._children[name]] if name is not None else list(self._children.values())
            parts = []
            for child in children:
                tail = list(child.recent)[-lines:] if self.relay else _tail(child.log_path, lines)
                state = "running" if child.exit_code is None else describe_exit(child.exit_code)
                parts.append(f"--- {child.name} ({state}) ---\n"
                             + ("\n".join(tail) or "(no output)"))
            return "\n".join(parts)

    # -- children -----------------------------------------------------------------------------

    def add(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
            restart: bool = True, cwd: Path | None = None) -> None:
        """Start `argv` now as child `name`; with restart=True it is restarted whenever it exits."""
        if self._stopping.is_set():
            raise RuntimeError("the supervisor is stopping")
        with self._lock:
            if name in self._children:
                raise ValueError(f"a child named {name!r} already exists")
            log, log_path = None, None
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                log_path = self.log_dir / f"{name}.log"
                # no `with`: the file stays open for the child's whole life; closed in stop()
                log = open(log_path, "ab")  # noqa: SIM115
            child = _Child(name, list(argv), _child_env(env), cwd or self.cwd, restart, log,
                           log_path)
            self._children[name] = child
            self.restarts[name] = 0
            self._spawn(child)
            if self._monitor is None:
                self._monitor = threading.Thread(target=self._watch, name="devstack-monitor",
                                                 daemon=True)
                self._monitor.start()

    def pid(self, name: str) -> int | None:
        with self._lock:
            child = self._children[name]
            return child.proc.pid if child.proc is not None and child.exit_code is None else None

    @property
    def names(self) -> list[str]:
        with self._lock:
            return list(self._children)

    def run_once(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, timeout: float | None = 600) -> str:
        """Run a command to completion, its output streamed like a child's; raise if it fails."""
        lines: list[str] = []
        proc = subprocess.Popen(list(argv), env=_child_env(env), cwd=cwd or self.cwd,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        assert proc.stdout is not None
        reader = threading.Thread(target=self._pump, args=(name, proc.stdout, lines.append, None),
                                  daemon=True)
        reader.start()
        try:
            proc.wait(timeout)
        except BaseException:  # a timeout or Ctrl-C: do not leave it running behind us
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            reader.join(5)
        if proc.returncode != 0:
            raise ProcessFailed(name, argv, proc.returncode, "\n".join(lines[-60:]))
        return "\n".join(lines)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every child's group, wait up to `timeout`, SIGKILL what is left; no orphans."""
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.join()
        with self._lock:
            children = list(self._children.values())
            # Only children not yet reaped: a reaped leader's id may already be someone else's.
            pending = [c for c in children if c.proc is not None and c.exit_code is None]
            for child in pending:
                assert child.proc is not None
                _signal_group(child.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pending and time.monotonic() < deadline:
                pending = [c for c in pending if not self._group_gone(c)]
                if pending:
                    time.sleep(0.05)
            for child in pending:
                assert child.proc is not None
                self.say(f"{child.name} did not stop within {timeout:g} s; killing it")
                _signal_group(child.proc.pid, signal.SIGKILL)
            # SIGKILL is delivered asynchronously: wait (briefly) until the groups are empty, so
            # a caller never sees a process that is about to die
            deadline = time.monotonic() + 3
            while pending and time.monotonic() < deadline:
                pending = [c for c in pending if not self._group_gone(c)]
                if pending:
                    time.sleep(0.02)
            for child in children:
                if child.proc is not None:
                    child.proc.wait()
                    if child.exit_code is None:
                        child.exit_code = child.proc.returncode
                if child.reader is not None:
                    child.reader.join(2)
                if child.log is not None:
                    child.log.close()

    def _group_gone(self, child: _Child) -> bool:
        assert child.proc is not None
        if child.proc.poll() is None:
            return False
        if child.exit_code is None:
            child.exit_code = child.proc.returncode
        return not _live_group_members(child.proc.pid)

    def _spawn(self, child: _Child) -> None:
        proc = subprocess.Popen(child.argv, env=child.env, cwd=child.cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE if self.relay else child.log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        child.proc, child.started_at, child.exit_code = proc, time.monotonic(), None
        if not self.relay:
            return  # the child writes its log file itself
        assert proc.stdout is not None
        child.reader = threading.Thread(
            target=self._pump, daemon=True, name=f"devstack-{child.name}",
            args=(child.name, proc.stdout, child.recent.append, child.log))
        child.reader.start()

    def _pump(self, name: str, stream: BinaryIO, keep: Callable[[str], None],
              log: BinaryIO | None) -> None:
        # Runs until every process holding the pipe (pool children too) has closed it.
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                keep(line)
                self.say(line, name)
                if log is not None:
                    try:
                        log.write(raw if raw.endswith(b"\n") else raw + b"\n")
                        log.flush()
                    except (OSError, ValueError):
                        pass

    def _watch(self) -> None:
        while not self._stopping.wait(0.1):
            with self._lock:
                if self._stopping.is_set():
                    return
                for child in self._children.values():
                    self._check(child)

    def _check(self, child: _Child) -> None:
        proc = child.proc
        if proc is None:
            return
        if child.exit_code is None:
            if not _has_exited(proc):
                return
            # The leader is a zombie until reaped, so its pid (= the group id) cannot be reused
            # yet: kill what is left of its group (orphaned pool processes) first, then reap.
            _signal_group(proc.pid, signal.SIGKILL)
            child.exit_code = proc.wait()
            if not child.restart:
                self.say(f"{child.name} exited ({describe_exit(child.exit_code)}); "
                         "not restarting it")
                return
        if not child.restart:
            return
        # Back off: a child that crashes at once is restarted about once per interval, not in a
        # loop.
        if time.monotonic() < child.started_at + self.restart_interval:
            return
        code = child.exit_code
        try:
            self._spawn(child)
        except OSError as error:
            child.started_at = time.monotonic()
            self.say(f"{child.name} exited ({describe_exit(code)}) and could not be restarted: "
                     f"{error}")
            return
        self.restarts[child.name] += 1
        assert child.proc is not None
        self.say(f"{child.name} exited unexpectedly ({describe_exit(code)}); restarted it "
                 f"(restart #{self.restarts[child.name]}, pid {child.proc.pid})")

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _tail(path: Path | None, lines: int) -> list[str]:
    """The last lines of a log file, read from its end (it may be large)."""
    if path is None:
        return []
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 256 * max(1, lines)))
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def _child_env(env: Mapping[str, str] | None) -> dict[str, str]:
    result = dict(os.environ if env is None else env)
    # Python children otherwise block-buffer a pipe, and their lines would arrive late and batched.
    result.setdefault("PYTHONUNBUFFERED", "1")
    return result


def _has_exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the child exited, without reaping it (so its group id stays reserved)."""
    if proc.returncode is not None:
        return True
    if not hasattr(os, "waitid"):  # not on every platform; then reaping early is the fallback
        return proc.poll() is not None
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return proc.poll() is not None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # nobody left in the group
    except PermissionError:
        pass  # the id now belongs to someone else's group; not ours to signal


def _live_group_members(pgid: int) -> list[psutil.Process]:
    """Processes still in the group, zombies excluded (a container's init may never reap them)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return []
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (psutil.Error, ProcessLookupError):
            continue
    return members
