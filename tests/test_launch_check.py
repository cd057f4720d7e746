"""`accelerate launch --num_processes 2` without --multi_gpu starts one process: smora says
how to launch instead of training alone."""

import os
import subprocess
import sys

import pytest

from smora_cli.errors import UserInputError
from smora_cli.utils import accel
from tests.cli_helpers import recipe_file


def test_accelerate_without_multi_gpu_is_refused(tmp_path, encoder_dir):
    recipe = recipe_file(tmp_path, encoder_dir)
    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    done = subprocess.run(
        [launcher, "launch", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no",
         "-m", "smora_cli", "train", str(recipe), "--quiet"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    # smora exits 2; accelerate's launcher turns any failure of its child into 1.
    assert done.returncode == 1 and "non-zero exit status 2." in done.stderr, done.stderr[-2000:]
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert error == [
        "error: accelerate launch was asked for 2 processes but started this one alone (without "
        "--multi_gpu it runs the script once); launch with: accelerate launch --multi_gpu "
        "--num_processes N -m smora_cli ... (on a CPU-only machine too: smora forms a gloo "
        "group), or give a config file whose distributed_type is MULTI_GPU"
    ]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("env", "arguments", "refused"),
    [
        ({"ACCELERATE_USE_CPU": "False"}, ["accelerate", "launch", "--num_processes", "2"], True),
        ({"ACCELERATE_USE_CPU": "False"}, ["accelerate", "launch", "--num_processes=3"], True),
        ({"ACCELERATE_USE_CPU": "False"}, ["accelerate", "launch", "--num_processes", "1"], False),
        ({"ACCELERATE_USE_CPU": "False"}, ["accelerate", "launch", "x.py"], False),
        ({"ACCELERATE_USE_CPU": "False", "MASTER_ADDR": "127.0.0.1"}, ["accelerate", "launch"], True),
        ({"ACCELERATE_USE_CPU": "False", "WORLD_SIZE": "2"}, ["accelerate", "launch", "--num_processes", "2"], False),
        ({}, ["accelerate", "launch", "--num_processes", "2"], False),
    ],
)  # fmt: skip
def test_launch_check(monkeypatch, env, arguments, refused):
    for name in ("ACCELERATE_USE_CPU", "MASTER_ADDR", *accel.WORLD_SIZE_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(accel, "_launcher_arguments", lambda: arguments)
    monkeypatch.setattr(accel, "_launcher_env", lambda: set())  # MASTER_ADDR came from it
    if refused:
        with pytest.raises(UserInputError, match="--multi_gpu"):
            accel.check_launch()
    else:
        accel.check_launch()
