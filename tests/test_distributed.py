"""Sharding over (fake) devices and splitting over processes do not change the results."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--config", str(ROOT / "configs" / "demo.py"), "--config.d=16", "--config.alphas=(1.0,2.0)",
        "--config.seeds=2", "--config.steps=40", "--config.n_test=200", "--config.omegas=(0.2,0.6)"]
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
