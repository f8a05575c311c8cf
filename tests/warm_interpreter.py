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

``VTCC_TEST_COLD=1`` runs every command in a fresh interpreter instead (what a user's shell does;
``tests/e2e/test_imports.py`` and the wheel check start real console scripts either way).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
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
        return WarmProcess(self, command, int(self._ask(request)["pid"]), folder)

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
            self._server.kill()  # its children have been waited for, or are the tests' to end
            self._server.wait()
        for folder in self._folders:  # a started command's output stays readable until here
            shutil.rmtree(folder, ignore_errors=True)
        self._folders.clear()


class WarmProcess:
    """A command forked from the warm interpreter, handled like a ``subprocess.Popen``."""

    def __init__(self, interpreter: WarmInterpreter, args: list[str], pid: int, folder: Path) -> None:
        self._interpreter, self.args, self.pid, self._folder = interpreter, args, pid, folder
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._interpreter._ask({"op": "wait", "pid": self.pid, "timeout": 0})["code"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            request = {"op": "wait", "pid": self.pid, "timeout": timeout}
            self.returncode = self._interpreter._ask(request)["code"]
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


def _child(request: dict) -> None:
    """In the forked child: become the command, run it, exit with its code (never returns)."""
    code: object = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, name in ((1, "stdout"), (2, "stderr")):
            target = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
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
    """The server: import what the commands import, then fork one child per request line."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    reply = sys.stdout
    print("ready", file=reply, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "start":
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(request)
            answer = {"pid": pid}
        else:  # wait: the child's exit code, or None when it runs past the timeout (None: no limit)
            answer = {"code": _wait(request["pid"], request["timeout"])}
        print(json.dumps(answer), file=reply, flush=True)


def _wait(pid: int, timeout: float | None) -> int | None:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG if deadline is not None else 0)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


if __name__ == "__main__":
    serve()
