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

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# what the forked commands would import first: vtcc's entry points and what they pull in
PRELOAD = ("vtcc.train", "vtcc.evaluate", "vtcc.predict", "vtcc.data.shards", "vtcc.api")


class WarmInterpreter:
    """One server interpreter; :meth:`run` runs a command as a forked child of it."""

    def __init__(self) -> None:
        self._server: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
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
        return self._server

    def run(
        self,
        command: list[str],
        cwd: Path,
        env: dict[str, str],
        timeout: float,
    ) -> subprocess.CompletedProcess:
        """``command`` as ``[sys.executable, "-m", module, *args]`` or ``[sys.executable, script,
        *args]``; a :class:`subprocess.CompletedProcess` with text output, like ``subprocess.run``."""
        if os.environ.get("VTCC_TEST_COLD") == "1" or not hasattr(os, "fork"):
            return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        with self._lock, tempfile.TemporaryDirectory(prefix="vtcc-cmd-") as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            server = self._start()
            request = {
                "argv": command[1:],
                "cwd": str(cwd),
                "env": env,
                "stdout": str(out),
                "stderr": str(err),
            }
            server.stdin.write(json.dumps(request) + "\n")
            server.stdin.flush()
            pid = int(json.loads(server.stdout.readline())["pid"])
            ready, _, _ = select.select([server.stdout], [], [], timeout)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                server.stdout.readline()
                raise subprocess.TimeoutExpired(command, timeout)
            code = int(json.loads(server.stdout.readline())["code"])
            return subprocess.CompletedProcess(
                command, code, out.read_text(errors="replace"), err.read_text(errors="replace")
            )

    def close(self) -> None:
        if self._server is not None and self._server.poll() is None:
            self._server.kill()  # between commands: it holds no child
            self._server.wait()


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
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), file=reply, flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), file=reply, flush=True)


if __name__ == "__main__":
    serve()
