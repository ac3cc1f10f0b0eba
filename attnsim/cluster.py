"""Several processes on one sweep: a rendezvous at the start, then independent work watched by heartbeats.

The processes of a launch (``attnsim run --coordinator/--num-processes/--process-id`` or ``--distributed``)
split the chunks of a sweep between them and share nothing while they train: each writes its own results
and checkpoint files (``attnsim.workdir``). They only need to agree on the chunks, which they do by reading
the workdir at the same moment: between two barriers of a rendezvous, after process 0 has prepared the
workdir and before anyone writes.

The rendezvous runs ``jax.distributed`` in a short-lived helper process (:class:`Rendezvous`), not in the
process that trains. A process joined to ``jax.distributed`` aborts (SIGABRT, a C++ stack trace) when a
peer is killed: at once if the peer was the coordinator, after the heartbeat timeout otherwise; and Orbax
then coordinates every save across the processes. A training process outside it has neither problem.

While they train, the processes watch each other through heartbeat files in the workdir
(:class:`Heartbeat`): each rewrites its own file every ``BEAT_SECONDS``; a peer whose file has not changed
for ``ATTNSIM_PEER_TIMEOUT`` seconds (default ``PEER_TIMEOUT``), or that says it stopped, is lost, and the
process exits at once with one line and status ``EXIT_PEER_LOST``: re-running the same command resumes.
Peers are compared by the content of their files, never by clocks, so clock skew between hosts and the
attribute caches of network file systems do not matter.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

BEAT_SECONDS = 1.0
PEER_TIMEOUT = 20.0
EXIT_PEER_LOST = 75  # EX_TEMPFAIL: try again (re-running the same command resumes)


_MARK = "attnsim-rendezvous: "  # the helper's replies (other lines on its stdout are not)


class ClusterError(RuntimeError):
    """The processes could not meet (one line, for the user)."""


@dataclasses.dataclass(frozen=True)
class Launch:
    """This process's place in a launch: its index, the process count, and a token that is new at every
    launch (so that files left by an earlier launch are never taken for this one's)."""

    index: int = 0
    count: int = 1
    token: str = ""


class Rendezvous:
    """The start of a multi-process launch, through a helper process that joins ``jax.distributed`` (on
    the CPU platform, so it never takes an accelerator), learns the launch, and passes barriers on request.

    ``coordinator, num_processes, process_id``: the explicit set-up; all None: JAX's cluster auto-detection
    (SLURM, Open MPI, TPU pods)."""

    def __init__(self, coordinator: str | None = None, num_processes: int | None = None,
                 process_id: int | None = None, timeout: float = 300.0):
        self.timeout = timeout
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "attnsim.cluster", json.dumps([coordinator, num_processes, process_id, timeout])]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env)
        info = json.loads(self._reply("joining the other processes"))
        self.launch = Launch(info["index"], info["count"], info["token"])

    def _reply(self, what: str) -> str:
        line = self._proc.stdout.readline()
        while line and not line.startswith(_MARK):  # other output (gloo prints to stdout)
            line = self._proc.stdout.readline()
        if not line:
            self._proc.wait()
            err = [ln for ln in self._proc.stderr.read().splitlines() if ln.strip()]
            why = next((ln for ln in err if "rror" in ln), err[-1] if err else f"exit status {self._proc.returncode}")
            raise ClusterError(f"{what} failed ({why.strip()[:300]})")
        return line[len(_MARK):].strip()

    def barrier(self, name: str) -> None:
        """Wait until every process of the launch has reached the barrier ``name``."""
        try:
            self._proc.stdin.write(name + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass  # the helper is gone: _reply says why
        self._reply(f"waiting for the other processes ({name})")

    def abort(self) -> None:
        """End the helper at once (after an error, or when it is already done)."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()

    def close(self) -> None:
        """Leave ``jax.distributed`` (a last barrier) and end the helper."""
        if self._proc.poll() is None:
            self.barrier("end")
            self._proc.stdin.close()
            self._proc.wait(timeout=60)


def _helper(spec: str) -> None:
    """The helper's side (``python -m attnsim.cluster SPEC``): one JSON line with the launch, then one
    "ok" line per barrier name read from standard input."""
    coordinator, num_processes, process_id, timeout = json.loads(spec)
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator is None:
        jax.distributed.initialize(initialization_timeout=int(timeout))
    else:
        jax.distributed.initialize(coordinator, num_processes, process_id, initialization_timeout=int(timeout))
    token = np.frombuffer(os.urandom(8), np.int32) if jax.process_index() == 0 else np.zeros(2, np.int32)
    token = np.asarray(multihost_utils.broadcast_one_to_all(token))
    print(_MARK + json.dumps(dict(index=jax.process_index(), count=jax.process_count(),
                                  token=token.tobytes().hex())), flush=True)
    for line in sys.stdin:
        multihost_utils.sync_global_devices(line.strip())
        print(_MARK + "ok", flush=True)
        if line.strip() == "end":
            break
    jax.distributed.shutdown()


class Heartbeat:
    """Heartbeat files of a launch in ``folder``: this process's own (``process{index}.json``, rewritten
    every BEAT_SECONDS by a daemon thread), and a watch over its peers'. ``on_lost(message)`` is called
    (from the thread) when a peer is lost; by default it prints the message and exits the process."""

    def __init__(self, folder: Path, launch: Launch, on_lost=None):
        self.folder = Path(folder)
        self.launch = launch
        self.timeout = float(os.environ.get("ATTNSIM_PEER_TIMEOUT", PEER_TIMEOUT))
        self.on_lost = on_lost or _exit_peer_lost
        self.status = "running"
        self._beats = 0
        self._seen: dict[int, tuple[str, float]] = {}  # peer -> (its file's content, when it last changed)
        self._stop = threading.Event()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write()
        self._thread = threading.Thread(target=self._loop, name="attnsim-heartbeat", daemon=True)
        self._thread.start()

    def path(self, index: int) -> Path:
        return self.folder / f"process{index}.json"

    def _write(self) -> None:
        self._beats += 1
        me = self.path(self.launch.index)
        tmp = me.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(token=self.launch.token, beat=self._beats, status=self.status)))
        tmp.replace(me)

    def peers(self) -> dict[int, dict]:
        """The peers' files as read now ({} for a peer whose file is missing or from another launch)."""
        out = {}
        for i in range(self.launch.count):
            if i == self.launch.index:
                continue
            try:
                info = json.loads(self.path(i).read_text())
            except (OSError, ValueError):
                info = {}
            out[i] = info if info.get("token") == self.launch.token else {}
        return out

    def _check(self) -> None:
        now = time.monotonic()
        for i, info in self.peers().items():
            status = info.get("status")
            if status == "done":
                continue
            if status == "stopped":
                return self.on_lost(f"process {i} of {self.launch.count} stopped")
            content = json.dumps(info, sort_keys=True)
            before, since = self._seen.get(i, (None, now))
            if content != before:
                self._seen[i] = (content, now)
            elif now - since > self.timeout:
                return self.on_lost(f"process {i} of {self.launch.count} is gone (no heartbeat for "
                                    f"{self.timeout:.0f} s)")

    def _loop(self) -> None:
        while not self._stop.wait(BEAT_SECONDS):
            try:
                self._write()
                self._check()
            except OSError:
                pass  # a transient file-system error: the next beat tries again

    def all_done(self) -> bool:
        return all(info.get("status") == "done" for info in self.peers().values())

    def wait_all_done(self) -> None:
        """Block until every peer says it is done (a lost peer ends the process through on_lost)."""
        while not self.all_done():
            time.sleep(BEAT_SECONDS / 2)

    def stop(self, status: str) -> None:
        """Write a last beat with ``status`` ("done" or "stopped") and stop beating."""
        self._stop.set()
        self._thread.join()
        self.status = status
        try:
            self._write()
        except OSError:
            pass


def _exit_peer_lost(message: str) -> None:
    print(f"attnsim: error: {message}; exiting. Finished chunks and checkpoints are kept: re-run the same "
          "command (every process) to resume", file=sys.stderr, flush=True)
    os._exit(EXIT_PEER_LOST)


if __name__ == "__main__":
    _helper(sys.argv[1])
