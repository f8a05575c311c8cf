"""Command-line runs for the tests, each its own process, without paying for the imports each time.

A fresh ``python -m vtcc.train`` spends about 7 s of CPU importing torch, Lightning (which imports
torchmetrics, torchvision's models and torch._dynamo) and Hydra before it reads its first argument;
the end-to-end tests start a hundred such commands. :class:`WarmInterpreter` starts one interpreter
per test process that imports those once and then, for every command, forks: the child changes to
the command's folder and environment, sends its output to files, and runs the module or script as
``__main__`` (``runpy``, as ``python -m`` and ``python <script>`` do), then exits with its code
after the interpreter's exit handlers. Each command is still a process of its own, with its own
exit code, output, working folder, environment and signals; only the imports are shared (the server
holds one thread when it forks, and has built nothing: no CUDA, no Hydra, no registry lookup).

A multi-process command (``strategy=ddp``) starts its other ranks the way Lightning does, as
``python -m vtcc.<command> ...`` with ``LOCAL_RANK`` set; in a forked command that start goes to
the server too (over a Unix socket), which forks the rank as it forks a command: same arguments,
environment and folder, its output appended to the command's own. As with pipes, a command counts
as ended once every rank it started has ended too.

``VTCC_TEST_COLD=1`` runs every command in a fresh interpreter instead (what a user's shell does;
``tests/e2e/test_imports.py`` and the wheel check start real console scripts either way).
"""

from __future__ import annotations

import io
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# what the forked commands would import first: vtcc's entry points and what they pull in
PRELOAD = ("vtcc.train", "vtcc.evaluate", "vtcc.predict", "vtcc.data.shards", "vtcc.api")


class WarmInterpreter:
    """One server interpreter; :meth:`start` forks a command from it, :meth:`run` runs one."""

    def __init__(self) -> None:
        self._server: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._folders: list[Path] = []  # the started commands' output folders, removed at close

    def _ask(self, request: dict) -> dict:
        with self._lock:
            if self._server is None or self._server.poll() is not None:
                env = {**os.environ, "PYTHONWARNINGS": "ignore"}
                self._server = subprocess.Popen(
                    [sys.executable, "-m", "tests.warm_interpreter"],
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                ready = self._server.stdout.readline()
                if ready.strip() != "ready":
                    raise RuntimeError(f"the warm interpreter did not start: {ready!r}")
            self._server.stdin.write(json.dumps(request) + "\n")
            self._server.stdin.flush()
            return json.loads(self._server.stdout.readline())

    def start(self, command: list[str], cwd: Path, env: dict[str, str]) -> WarmProcess:
        """``command`` (``[sys.executable, "-m", module, *args]`` or ``[sys.executable, script,
        *args]``) started; a handle with ``subprocess.Popen``'s ``pid``, ``poll``, ``wait``,
        ``send_signal``, ``kill``, ``communicate`` and ``stdout`` / ``stderr`` (read from files)."""
        if os.environ.get("VTCC_TEST_COLD") == "1" or not hasattr(os, "fork"):
            return subprocess.Popen(
                command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        folder = Path(tempfile.mkdtemp(prefix="vtcc-cmd-"))
        self._folders.append(folder)
        request = {
            "op": "start",
            "argv": command[1:],
            "cwd": str(cwd),
            "env": env,
            "stdout": str(folder / "stdout"),
            "stderr": str(folder / "stderr"),
        }
        return WarmProcess(self._ask, command, int(self._ask(request)["pid"]), folder)

    def run(
        self, command: list[str], cwd: Path, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess:
        """``command`` run to its end, like ``subprocess.run(..., capture_output=True, text=True)``."""
        process = self.start(command, cwd, env)
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        return subprocess.CompletedProcess(command, process.returncode, out, err)

    def close(self) -> None:
        if self._server is not None and self._server.poll() is None:
            self._server.stdin.close()  # its children have been waited for, or are the tests' to end
            try:  # the server ends at the end of its input, removing its socket's folder
                self._server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
        for folder in self._folders:  # a started command's output stays readable until here
            shutil.rmtree(folder, ignore_errors=True)
        self._folders.clear()


class WarmProcess:
    """A command forked from the warm interpreter, handled like a ``subprocess.Popen``."""

    def __init__(self, ask: Callable[[dict], dict], args: list[str], pid: int, folder: Path) -> None:
        self._ask, self.args, self.pid, self._folder = ask, args, pid, folder
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._ask({"op": "wait", "pid": self.pid, "timeout": 0})["code"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            request = {"op": "wait", "pid": self.pid, "timeout": timeout}
            self.returncode = self._ask(request)["code"]
            if self.returncode is None:
                raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self.stdout.read(), self.stderr.read()

    def send_signal(self, sent: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sent)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _output(self, name: str) -> io.StringIO:
        path = self._folder / name
        return io.StringIO(path.read_text(errors="replace") if path.exists() else "")

    @property
    def stdout(self) -> io.StringIO:
        return self._output("stdout")

    @property
    def stderr(self) -> io.StringIO:
        return self._output("stderr")


_SOCKET: str | None = None  # the server's, for the ranks a command starts (set in the server)


def _ask_over_socket(request: dict) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as channel:
        channel.connect(_SOCKET)
        channel.sendall((json.dumps(request) + "\n").encode())
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = channel.recv(65536)
            if not chunk:
                raise RuntimeError("the warm interpreter closed the connection")
            answer += chunk
    return json.loads(answer)


class _RankStarts:
    """``subprocess`` as Lightning's launchers see it in a forked command: a start of another rank
    of this command (``python ...`` with ``LOCAL_RANK``) is forked by the server; anything else is
    ``subprocess`` itself."""

    def __init__(self, output: dict) -> None:
        self._output = output

    def __getattr__(self, name: str):
        return getattr(subprocess, name)

    def Popen(self, args, *rest, env=None, cwd=None, **options):  # noqa: N802  (subprocess's name)
        command = list(args) if isinstance(args, list | tuple) else None
        if rest or options or not command or command[0] != sys.executable or "LOCAL_RANK" not in (env or {}):
            return subprocess.Popen(args, *rest, env=env, cwd=cwd, **options)
        request = {"op": "start", "argv": command[1:], "cwd": str(cwd or os.getcwd()), "env": dict(env)}
        request.update(self._output, owner=os.getpid())
        pid = int(_ask_over_socket(request)["pid"])
        return WarmProcess(_ask_over_socket, command, pid, Path(self._output["stdout"]).parent)


def _route_rank_starts(output: dict) -> None:
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as trainer_launcher

    for launcher in (fabric_launcher, trainer_launcher):
        launcher.subprocess = _RankStarts(output)


def _child(request: dict) -> None:
    """In the forked child: become the command, run it, exit with its code (never returns)."""
    code: object = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, name in ((1, "stdout"), (2, "stderr")):
            # appended: the ranks a command starts write into the same files, as into one pipe
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if "owner" in request else os.O_TRUNC)
            target = os.open(request[name], flags, 0o600)
            os.dup2(target, fd)
            os.close(target)
        _route_rank_starts({"stdout": request["stdout"], "stderr": request["stderr"]})
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        argv = request["argv"]
        import runpy

        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]  # runpy sets argv[0] to the module's file
            sys.path[0] = os.getcwd()  # as python -m does
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path[0] = str(Path(argv[0]).resolve().parent)  # as python <script> does
            runpy.run_path(argv[0], run_name="__main__")
        code = 0
    except SystemExit as stop:
        code = stop.code
    except BaseException:  # what the interpreter prints for an uncaught exception
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
        try:
            import atexit

            atexit._run_exitfuncs()  # logging.shutdown and the rest, as at a normal exit
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    """The server: import what the commands import, then fork one child per start request, from
    the test process (standard input) or from a command starting its other ranks (the socket).
    Waits never block it: they are answered once the command and the ranks it started have ended,
    or at their timeout."""
    import importlib

    global _SOCKET
    for name in PRELOAD:
        importlib.import_module(name)
    folder = Path(tempfile.mkdtemp(prefix="vtcc-warm-"))
    _SOCKET = str(folder / "socket")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(_SOCKET)
    listener.listen()
    server = _Server(listener)
    print("ready", file=sys.stdout, flush=True)
    try:
        server.run()
    finally:
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)


class _Server:
    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, self._accept)
        self.selector.register(sys.stdin.fileno(), selectors.EVENT_READ, self._read_stdin)
        self.stdin_buffer = b""
        self.started: dict[int, list[int]] = {}  # command pid -> the ranks it started
        self.codes: dict[int, int] = {}  # exit codes of the children reaped
        self.waiting: list[tuple[Callable[[dict], None], int, float | None]] = []
        self.open = True

    def run(self) -> None:
        while self.open:
            for key, _ in self.selector.select(timeout=0.02 if self.waiting else None):
                key.data(key.fileobj)
            self._answer_waits()

    def _read_stdin(self, fd: int) -> None:
        chunk = os.read(fd, 65536)
        if not chunk:  # the test process has gone
            self.open = False
            return
        self.stdin_buffer += chunk
        while b"\n" in self.stdin_buffer:
            line, self.stdin_buffer = self.stdin_buffer.split(b"\n", 1)
            self._handle(json.loads(line), self._reply_stdout)

    @staticmethod
    def _reply_stdout(answer: dict) -> None:
        print(json.dumps(answer), file=sys.stdout, flush=True)

    def _accept(self, listener: socket.socket) -> None:
        channel, _ = listener.accept()
        data = b""
        while not data.endswith(b"\n"):
            chunk = channel.recv(65536)
            if not chunk:
                channel.close()
                return
            data += chunk

        def reply(answer: dict) -> None:
            with channel:
                channel.sendall((json.dumps(answer) + "\n").encode())

        self._handle(json.loads(data), reply)

    def _handle(self, request: dict, reply: Callable[[dict], None]) -> None:
        if request["op"] == "start":
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # the command: none of the server's channels
                self.selector.close()
                self.listener.close()
                _child(request)
            self.started.setdefault(pid, [])
            if "owner" in request:
                self.started.setdefault(int(request["owner"]), []).append(pid)
            reply({"pid": pid})
        else:  # wait: the exit code, or None past the timeout (None: no limit)
            timeout = request["timeout"]
            deadline = None if timeout is None else time.monotonic() + timeout
            self.waiting.append((reply, int(request["pid"]), deadline))
            self._answer_waits()

    def _ended(self, pid: int) -> bool:
        if pid not in self.codes:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not this server's child
                return True
            if not done:
                return False
            self.codes[pid] = os.waitstatus_to_exitcode(status)
        return True

    def _answer_waits(self) -> None:
        still = []
        for reply, pid, deadline in self.waiting:
            # ended, as a pipe's reader sees it: the command and every rank it started
            if all([self._ended(p) for p in (pid, *self.started.get(pid, []))]):
                reply({"code": self.codes.get(pid, 1)})
            elif deadline is not None and time.monotonic() >= deadline:
                reply({"code": None})
            else:
                still.append((reply, pid, deadline))
        self.waiting = still


if __name__ == "__main__":
    serve()
