"""The Triton server that the PyPI wheel ``nvidia-pytriton`` bundles (tritonserver 2.51, Python backend only), run
from its own environment on 127.0.0.1.

Measured here (docs/RESULTS.md, "Serving"), each handled below:

- the Python backend's stub runs models with the ``python3`` first on ``PATH`` (its ``sys.prefix`` and
  site-packages), so the environment's ``bin`` goes first on the server's ``PATH``; ``PYTHONPATH`` is removed, so
  nothing of this project's environment leaks in;
- the stub links ``libpython3.X.so.1.0`` by name, and a library of another patch release than the interpreter's
  standard library (this machine's Debian 3.11.2 beside pyenv's 3.11.7) breaks models that reach newer standard-library
  code (multiprocessing's resource tracker: "'_thread.RLock' object has no attribute '_recursion_count'"); the
  folder of the environment interpreter's own library goes first on ``LD_LIBRARY_PATH``;
- the stub needs numpy < 2 in that Python (with numpy 2 every response fails), so the environment is checked;
- the wheel keeps one stub per Python version beside the backend, and PyTriton's own launcher copies the whole
  server into ``~/.cache/pytriton`` to put the right one in place: here a temporary backend folder holds links
  instead (the libraries find their neighbours through the real path);
- a repository holding a model the server cannot load (a ``tensorrt_plan`` or ``onnxruntime`` model: their backends
  are not bundled) makes the server exit at start, and ``/v2/health/ready`` answer 400, unless it runs with
  ``--exit-on-error=false --strict-readiness=false``: it does.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import List, Optional

from swin_trt.errors import UserError

_LOG = logging.getLogger("swin")
ENV_VARIABLE = "TRITON_SERVER_ENV"
LOOPBACK = "127.0.0.1"
INSTALL = ("create it as the README's second command does (python3 -m venv .venv/triton-server && "
           ".venv/triton-server/bin/pip install -r requirements-triton.txt), or point TRITON_SERVER_ENV at such an "
           "environment")

# asked of the environment's own interpreter, without importing the server package
_PROBE = r'''
import importlib.util, json, sys, sysconfig
spec = importlib.util.find_spec("pytriton")
try:
    import numpy
    numpy_version = numpy.__version__
except ImportError:
    numpy_version = None
print(json.dumps({"version": "%d.%d" % sys.version_info[:2], "full_version": sys.version.split()[0],
                  "libdir": sysconfig.get_config_var("LIBDIR"), "ldlibrary": sysconfig.get_config_var("LDLIBRARY"),
                  "shared": bool(sysconfig.get_config_var("Py_ENABLE_SHARED")), "numpy": numpy_version,
                  "pytriton": list(spec.submodule_search_locations) if spec else None}))
'''


@dataclasses.dataclass(frozen=True)
class ServerEnvironment:
    """The server's own Python environment and what the server needs from it.

    Attributes:
        root: the virtual environment.
        server_dir: the bundled ``tritonserver`` folder (``bin/``, ``backends/``, ``python_backend_stubs/``).
        python_version: ``3.11``.
        full_version: ``3.11.7``.
        libdir: the folder of the interpreter's ``libpython3.X.so.1.0``.
        numpy: numpy's version in the environment.
    """

    root: str
    server_dir: str
    python_version: str
    full_version: str
    libdir: str
    numpy: str

    @property
    def server_binary(self) -> str:
        return os.path.join(self.server_dir, "bin", "tritonserver")

    @property
    def stub(self) -> str:
        return os.path.join(self.server_dir, "python_backend_stubs", self.python_version, "triton_python_backend_stub")


def default_environment() -> str:
    """``$TRITON_SERVER_ENV``, else ``triton-server`` inside this project's environment (``.venv/triton-server``)."""
    return os.environ.get(ENV_VARIABLE) or os.path.join(sys.prefix, "triton-server")


def find_environment(path: Optional[str] = None) -> ServerEnvironment:
    """Check the server environment at ``path`` (default :func:`default_environment`) and describe it.

    Raises:
        UserError: no environment there, no bundled server in it, numpy 2 in it, a Python without its shared
            library, or a Python version the wheel has no backend stub for.
    """
    root = path or default_environment()
    python = os.path.join(root, "bin", "python3")
    if not os.path.isfile(python):
        raise UserError(f"no Triton server environment at {root}: {INSTALL}.")
    probe = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=60,
                           env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")})
    if probe.returncode != 0:
        raise UserError(f"the Python of the Triton server environment {root} does not run ({probe.stderr.strip()[-200:]}): "
                        f"{INSTALL}.")
    facts = json.loads(probe.stdout.strip().splitlines()[-1])
    if not facts["pytriton"]:
        raise UserError(f"the Triton server environment {root} has no nvidia-pytriton (the wheel that bundles "
                        f"tritonserver): {INSTALL}.")
    if facts["numpy"] is None or int(facts["numpy"].split(".")[0]) >= 2:
        raise UserError(f"the Triton server environment {root} has numpy {facts['numpy']}, and the Python backend of "
                        "tritonserver 2.51 needs numpy 1.x there (with numpy 2 every response fails): "
                        "pip install -r requirements-triton.txt in it.")
    library = os.path.join(facts["libdir"] or "", f"libpython{facts['version']}.so.1.0")
    if not facts["shared"] or not os.path.isfile(library):
        raise UserError(f"the Python {facts['full_version']} of the Triton server environment {root} has no shared "
                        f"library ({library}), which the Python backend's stub loads: make the environment with a "
                        "Python built with --enable-shared.")
    environment = ServerEnvironment(root, os.path.join(facts["pytriton"][0], "tritonserver"), facts["version"],
                                    facts["full_version"], facts["libdir"], facts["numpy"])
    if not os.path.isfile(environment.stub):
        raise UserError(f"nvidia-pytriton in {root} has no Python-backend stub for Python {facts['version']} "
                        f"(it has {', '.join(sorted(os.listdir(os.path.dirname(os.path.dirname(environment.stub)))))}): "
                        "make the environment with one of those versions.")
    return environment


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


class LocalTritonServer:
    """The bundled tritonserver on 127.0.0.1, as a context manager: started, waited for, stopped.

    Args:
        repository: the model repository folder.
        http_port, grpc_port: ports on 127.0.0.1 (None: free ones).
        environment: the server environment folder (None: :func:`default_environment`).
        startup_timeout: seconds to wait for the server to answer (models load before it does).
        log_file: where the server's log goes (None: a file in the server's temporary folder).
        verbose: the server's verbose log level.

    Raises:
        UserError: from :func:`find_environment`, a missing repository, or a server that does not start in time
            (the message ends with the last line of its log).
    """

    def __init__(self, repository: str, http_port: Optional[int] = None, grpc_port: Optional[int] = None,
                 environment: Optional[str] = None, startup_timeout: float = 120.0, log_file: Optional[str] = None,
                 verbose: int = 0) -> None:
        if not os.path.isdir(repository):
            raise UserError(f"model repository {repository} does not exist: write one with trt/triton_repository.py.")
        self.repository = os.path.abspath(repository)
        self.environment = find_environment(environment)
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.startup_timeout = startup_timeout
        self.log_file = log_file
        self.verbose = verbose
        self.process: Optional[subprocess.Popen] = None
        self.workdir: Optional[str] = None
        self.started_in: Optional[float] = None

    @property
    def http_url(self) -> str:
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def url(self, protocol: str) -> str:
        return self.http_url if protocol == "http" else self.grpc_url

    def command(self, backends: str) -> List[str]:
        return [self.environment.server_binary, "--model-repository", self.repository, "--backend-directory", backends,
                "--http-address", LOOPBACK, "--http-port", str(self.http_port),
                "--grpc-address", LOOPBACK, "--grpc-port", str(self.grpc_port),
                "--allow-metrics=false", "--exit-on-error=false", "--strict-readiness=false",
                "--exit-timeout-secs=10", f"--log-verbose={self.verbose}"]

    def _backend_folder(self) -> str:
        """``backends/python/`` of links to the bundled Python backend and the stub of the environment's Python."""
        python = os.path.join(self.workdir, "backends", "python")
        os.makedirs(python)
        bundled = os.path.join(self.environment.server_dir, "backends", "python")
        for name in os.listdir(bundled):
            if name != "__pycache__":
                os.symlink(os.path.join(bundled, name), os.path.join(python, name))
        os.symlink(self.environment.stub, os.path.join(python, "triton_python_backend_stub"))
        return os.path.dirname(python)

    def _server_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["PATH"] = os.path.join(self.environment.root, "bin") + os.pathsep + env.get("PATH", "")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (self.environment.libdir, env.get("LD_LIBRARY_PATH")) if p)
        return env

    def start(self) -> "LocalTritonServer":
        self.workdir = tempfile.mkdtemp(prefix="swin_trt_triton_")
        self.log_file = self.log_file or os.path.join(self.workdir, "tritonserver.log")
        start = time.perf_counter()
        with open(self.log_file, "wb") as log:
            # its own session, so stop() reaches the backend stubs it starts too
            self.process = subprocess.Popen(self.command(self._backend_folder()), stdout=log, stderr=subprocess.STDOUT,
                                            env=self._server_env(), start_new_session=True)
        _LOG.info("tritonserver (pid %d) on %s (HTTP) and %s (gRPC), repository %s, log %s", self.process.pid,
                  self.http_url, self.grpc_url, self.repository, self.log_file)
        try:
            self._wait_until_live(start)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.perf_counter() - start
        return self

    def _wait_until_live(self, start: float) -> None:
        url = f"http://{self.http_url}/v2/health/live"
        while time.perf_counter() - start < self.startup_timeout:
            if self.process.poll() is not None:
                raise UserError(f"tritonserver exited with code {self.process.returncode} while starting; its log "
                                f"ends: {self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise UserError(f"tritonserver did not answer on {self.http_url} within {self.startup_timeout:.0f} s; its "
                        f"log ends: {self.log_tail()}")

    def log_tail(self) -> str:
        """The last non-empty line of the server's log."""
        try:
            with open(self.log_file, encoding="utf-8", errors="replace") as f:
                lines = [line.strip() for line in f if line.strip()]
        except OSError:
            return "no log"
        return lines[-1][-300:] if lines else "empty log"

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``) and the stubs of its session; idempotent.

        SIGTERM goes to the server alone: it stops its Python-backend stubs itself, and waits for any stub that
        died before it did until ``--exit-timeout-secs``.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        if self.process is not None:
            try:  # stubs left behind by a killed server belong to its session
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> "LocalTritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
