"""A sweep killed at any moment (SIGKILL, in a subprocess) and re-run ends with the results.csv of an
uninterrupted run, bit for bit, also when the config was extended in between; damaged checkpoints and
another config's are skipped; a 4-device checkpoint resumes on 1 device.

The kills come from the ATTNSIM_FAULT hook of attnsim.checkpoint, so that they land at a chosen moment."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attnsim import cli, sweep

# 12 runs in 3 chunks of one shape (a seed's 2 alphas x 2 inits each), 60 steps in 6 segments, a save
# after every segment.
TINY = ["--config.d=16", "--config.alphas=(1.5,2.0)", "--config.seeds=3", "--config.steps=60",
        "--config.n_test=200", "--config.max_batch=4", "--config.checkpoint_every=10",
        "--config.checkpoint_seconds=0"]


def _subprocess(workdir: Path, fault: str = "", devices: int = 1, extra=()) -> subprocess.CompletedProcess:
    """Run the sweep in a subprocess on ``devices`` CPU devices (they share a compilation cache)."""
    env = dict(os.environ, ATTNSIM_FAULT=fault, ATTNSIM_COMPILATION_CACHE=str(workdir.parent / "jax_cache"),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.run([sys.executable, "-m", "attnsim.cli", "run", "--config", "configs/demo.py",
                           "--workdir", str(workdir), *TINY, *extra], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).parents[1], timeout=600)


def _killed(workdir: Path, fault: str, devices: int = 1, extra=()) -> None:
    """Run the sweep in a subprocess that the fault hook kills."""
    out = _subprocess(workdir, fault, devices, extra)
    assert out.returncode == -signal.SIGKILL, out.stderr


def _run(workdir: Path, capsys, extra=()) -> str:
    """Run (or resume) the sweep in this process (one device); what it printed."""
    capsys.readouterr()
    assert cli.main(["run", "--config", "configs/demo.py", "--workdir", str(workdir), *TINY, *extra]) == 0
    out = capsys.readouterr()
    return out.err + out.out


def _lines(workdir: Path) -> list[str]:
    """results.csv as its header and its sorted rows: equal lists mean the same rows with the same bits."""
    head, *rows = (workdir / "results.csv").read_text().splitlines()
    return [head] + sorted(rows)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ckpt") / "reference"
    assert cli.main(["run", "--config", "configs/demo.py", "--workdir", str(workdir), *TINY]) == 0
    assert not (workdir / "checkpoints").exists()  # removed once every run is in results.csv
    return workdir


@pytest.mark.parametrize("fault, resumes_at", [
    ("segment:9", "at step 30 of 60"),  # mid-chunk: after the second chunk's third segment
    ("save:3", "at step 20 of 60"),  # while the first chunk's third save is written: the second is the last whole one
    ("chunk:1", None),  # between chunks: the first chunk's rows are written, nothing is in training
])
def test_killed_sweep_resumes_bit_identical(reference, tmp_path, capsys, fault, resumes_at):
    _killed(tmp_path, fault)
    log = _run(tmp_path, capsys)
    assert _lines(tmp_path) == _lines(reference)
    if resumes_at:
        assert "resuming a chunk of 4 runs from its checkpoint " + resumes_at in log
    else:
        assert "resuming" not in log and "8 runs to do (4 already done)" in log
    again = _run(tmp_path, capsys).strip()
    assert "already in" in again and "\n" not in again  # a finished sweep: one line, nothing done


def test_damaged_checkpoint_falls_back_to_the_previous(reference, tmp_path, capsys):
    _killed(tmp_path, "segment:4")
    newest = max((p for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for f in (newest / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")  # as if the files had been cut short
    log = _run(tmp_path, capsys)
    assert f"warning: checkpoint {newest} is damaged" in log
    assert "from its checkpoint at step 30 of 60" in log
    assert _lines(tmp_path) == _lines(reference)


def test_extended_config_resumes_the_live_checkpoint(tmp_path, tmp_path_factory, capsys):
    """Runs may be added to a config (here a fourth seed) while a chunk is checkpointed: the chunk's runs
    are all still to do, so it resumes, and the sweep ends as an uninterrupted run of the extended config
    (whose plan has the same chunks: one seed's four runs each)."""
    _killed(tmp_path, "segment:9")  # in seed 1's chunk, saved at step 30
    more = ["--config.seeds=4"]
    log = _run(tmp_path, capsys, more)
    assert "12 runs to do (4 already done)" in log
    assert "resuming a chunk of 4 runs from its checkpoint at step 30 of 60" in log
    fresh = tmp_path_factory.mktemp("fresh")
    _run(fresh, capsys, more)
    assert _lines(tmp_path) == _lines(fresh)


def test_checkpoint_of_another_config_is_not_restored(reference, tmp_path_factory, capsys):
    """Checkpoints written under another config fingerprint (here lr) are never restored: with that
    config's config.json the workdir is refused (exit 2, one line, nothing deleted); copied alone they
    are skipped with one warning and every run is computed afresh."""
    other = tmp_path_factory.mktemp("other")  # beside the other tests' workdirs: the same compilation cache
    _killed(other, "segment:4", extra=["--config.lr=0.1"])
    saved = sorted(p.relative_to(other) for p in (other / "checkpoints").rglob("*"))
    workdir = tmp_path_factory.mktemp("mine")
    shutil.copytree(other / "checkpoints", workdir / "checkpoints")
    shutil.copy(other / "config.json", workdir / "config.json")
    capsys.readouterr()
    assert cli.main(["run", "--config", "configs/demo.py", "--workdir", str(workdir), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different config (lr=0.1, now 0.15)" in err, err
    assert sorted(p.relative_to(workdir) for p in (workdir / "checkpoints").rglob("*")) == saved
    (workdir / "config.json").unlink()
    log = _run(workdir, capsys)
    assert log.count("belongs to a different config (lr=0.1, now 0.15); not restored") == 1, log
    assert "resuming" not in log and "12 runs to do (0 already done)" in log
    assert _lines(workdir) == _lines(reference)
    assert sorted(p.relative_to(other) for p in (other / "checkpoints").rglob("*")) == saved  # copied, not moved


def _assert_close(workdir: Path, reference: Path) -> None:
    """Same runs, metrics equal up to float32 reduction order (another device count or chunk plan)."""
    got, want = (pd.read_csv(p / "results.csv").sort_values(sweep.KEY_COLUMNS, ignore_index=True)
                 for p in (workdir, reference))
    pd.testing.assert_frame_equal(got[sweep.RUN_COLUMNS], want[sweep.RUN_COLUMNS])
    for col in ("train_loss", "test_error", "m", "theta", "q"):
        np.testing.assert_allclose(got[col], want[col], rtol=1e-5, atol=1e-7, err_msg=col)


def test_four_device_checkpoint_resumes_on_one_device(reference, tmp_path, capsys):
    _killed(tmp_path, "segment:3", devices=4)
    assert "from its checkpoint at step 30 of 60" in _run(tmp_path, capsys)
    _assert_close(tmp_path, reference)


def test_one_device_checkpoint_resumes_on_four_devices(reference, tmp_path):
    """Saved with 2 runs per chunk on 1 device; 4 devices pad the run axis to 4 on restore."""
    _killed(tmp_path, "segment:3", extra=["--config.max_batch=2"])
    out = _subprocess(tmp_path, devices=4, extra=["--config.max_batch=2"])
    assert out.returncode == 0, out.stderr
    assert "resuming a chunk of 2 runs from its checkpoint at step 30 of 60" in out.stderr
    _assert_close(tmp_path, reference)


# The paper's 5000 steps in one long chunk (4 runs of 2 seeds, d = 1000, n = 2000: ~16 s of training on 2 cores),
# segments of 100 steps, saves at most every 2 s of *finished* training.
LONG = ["--config.d=1000", "--config.alphas=(2.0,)", "--config.seeds=2", "--config.steps=5000",
        "--config.n_test=200", "--config.checkpoint_every=100", "--config.checkpoint_seconds=2"]


def test_saves_follow_the_training_clock(tmp_path):
    """Killed at 70% of one long chunk (after its 35th of 50 segments), the re-run resumes from at least
    half of the steps and ends bit-identical to an uninterrupted run. (When the save rule looked at the
    clock right after dispatching a segment, all segments were queued within milliseconds and no save was
    taken before the kill.)"""
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert _subprocess(reference, extra=LONG).returncode == 0
    out = _subprocess(killed, "segment:35", extra=LONG)
    assert out.returncode == -signal.SIGKILL, out.stderr
    out = _subprocess(killed, extra=LONG)
    assert out.returncode == 0, out.stderr
    resumed = [int(w.split()[0]) for w in out.stderr.split("from its checkpoint at step ")[1:]]
    assert resumed and 2500 <= resumed[0] <= 3500, out.stderr
    assert _lines(killed) == _lines(reference)
