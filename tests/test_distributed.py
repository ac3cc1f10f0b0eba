"""Sharding over (fake) devices and splitting over processes do not change the results."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--config", str(ROOT / "configs" / "demo.py"), "--config.d=16", "--config.alphas=(1.0,2.0)",
        "--config.seeds=2", "--config.steps=40", "--config.n_test=200", "--config.omegas=(0.2,0.6)"]
KEYS = ["omega", "sigma", "lam", "alpha", "seed", "init"]
METRICS = ["train_loss", "test_error", "m", "theta", "q", "lin_test_error", "lin_train_loss"]


def _env(devices=1):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _run(workdir, devices=1, extra=()):
    out = subprocess.run([sys.executable, "-m", "attnsim.cli", "run", *ARGS, "--workdir", str(workdir), *extra],
                         capture_output=True, text=True, env=_env(devices), timeout=600)
    assert out.returncode == 0, out.stderr
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("one")
    _run(workdir)
    return pd.read_csv(workdir / "results.csv")


def test_four_devices_equal_one(tmp_path, reference):
    out = _run(tmp_path, devices=4)
    assert "on 4 cpu device(s)" in out.stderr
    res = pd.read_csv(tmp_path / "results.csv")
    pd.testing.assert_frame_equal(res.drop(columns=METRICS), reference.drop(columns=METRICS))
    for col in METRICS:  # float32 reduction-order noise: 1e-5 relative, and 1e-7 absolute for overlaps near 0
        np.testing.assert_allclose(res[col], reference[col], rtol=1e-5, atol=1e-7, err_msg=col)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_write_the_same_results_as_one(tmp_path, reference):
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "attnsim.cli", "run", *ARGS, "--workdir", str(tmp_path),
                               "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert "in 2 process(es)" in outs[0][1]
    res = pd.read_csv(tmp_path / "results.csv")
    pd.testing.assert_frame_equal(res, reference)


def _launch(workdir, port, fault=("", ""), extra=()):
    """Two processes of one launch on 127.0.0.1; ``fault[i]``: process i's ATTNSIM_FAULT."""
    return [subprocess.Popen([sys.executable, "-m", "attnsim.cli", "run", *ARGS, "--workdir", str(workdir), *extra,
                              "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(_env(), ATTNSIM_FAULT=fault[i]))
            for i in range(2)]


def test_a_lost_process_stops_its_peer_and_a_relaunch_finishes(tmp_path, reference):
    """Process 1 is SIGKILLed in its second chunk (8 chunks of 2 runs, saves after every segment). Process
    0 notices within the heartbeat timeout, exits with status 75 and one line, and keeps what it finished;
    relaunching both resumes process 1's checkpoint and ends with the one-process results (float32
    reduction order aside: the relaunch plans the remaining runs anew)."""
    extra = ["--config.max_batch=2", "--config.checkpoint_every=10", "--config.checkpoint_seconds=0"]
    procs = _launch(tmp_path, _free_port(), fault=("", "segment:6"), extra=extra)
    _, err1 = procs[1].communicate(timeout=600)
    assert procs[1].returncode == -signal.SIGKILL, err1
    killed = time.monotonic()
    _, err0 = procs[0].communicate(timeout=600)
    assert time.monotonic() - killed < 60, "the survivor did not exit within 60 s"
    assert procs[0].returncode == 75, err0
    last = [line for line in err0.splitlines() if line.strip()][-1]
    assert last.startswith("attnsim: error: process 1 of 2 is gone") and "re-run the same command" in last, err0
    assert "Traceback" not in err0 and "Aborted" not in err0
    assert any(tmp_path.glob("checkpoints.process1/*")), "process 1 kept no checkpoint"
    procs = _launch(tmp_path, _free_port(), extra=extra)
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert "resuming a chunk of 2 runs from its checkpoint" in outs[0][1] + outs[1][1]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("test_error")) == [
        "config.json", "results.csv"]  # merged; checkpoints and heartbeats removed
    res = pd.read_csv(tmp_path / "results.csv").sort_values(KEYS, ignore_index=True)
    ref = reference.sort_values(KEYS, ignore_index=True)
    pd.testing.assert_frame_equal(res.drop(columns=METRICS), ref.drop(columns=METRICS))
    for col in METRICS:
        np.testing.assert_allclose(res[col], ref[col], rtol=1e-5, atol=1e-7, err_msg=col)
    