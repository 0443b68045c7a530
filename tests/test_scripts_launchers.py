"""The SLURM and ssh launchers: their dry runs print exactly the commands they would run."""

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _launch_ssh():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import launch_ssh
    finally:
        sys.path.pop(0)
    return launch_ssh


def test_ssh_launcher_dry_run_prints_one_command_per_host():
    out = subprocess.run([sys.executable, str(ROOT / "scripts/launch_ssh.py"), "--hosts", "n1,n2,n3", "--port", "1234",
                          "--workdir", "/srv/baobab", "--venv", "/srv/venv", "--dry-run", "--",
                          "configs/gpt_bytes.py", "trainer.steps=7"],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()
    assert len(out) == 3
    for i, line in enumerate(out):
        argv = shlex.split(line)
        assert argv[:4] == ["ssh", "-o", "BatchMode=yes", f"n{i + 1}"]
        remote = argv[4]
        assert remote.startswith("cd /srv/baobab && source /srv/venv/bin/activate && ")
        assert f"JAX_COORDINATOR_ADDRESS=n1:1234 JAX_NUM_PROCESSES=3 JAX_PROCESS_ID={i} " in remote
        assert remote.endswith("baobab train configs/gpt_bytes.py trainer.steps=7")


def test_ssh_launcher_local_mode_needs_no_ssh():
    cmds = _launch_ssh().commands(["localhost", "localhost"], ["c.py"], port=5, workdir="/w", venv=None, local=True)
    assert [c[:2] for c in cmds] == [["bash", "-c"]] * 2
    assert "JAX_COORDINATOR_ADDRESS=127.0.0.1:5" in cmds[1][2] and "JAX_PROCESS_ID=1" in cmds[1][2]


def test_ssh_launcher_stops_the_rest_at_the_first_failure():
    launch_ssh = _launch_ssh()
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]),
             subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])]
    codes = launch_ssh.wait_all(procs)
    assert codes == [-15, 3]  # the sleeper was terminated (SIGTERM), not waited for (it would exit 0)
    assert launch_ssh.exit_code(codes) == 128 + 15
    assert launch_ssh.exit_code([0, -9]) == 137  # a process killed by a signal is a failure, not 0
    assert launch_ssh.exit_code([0, 0]) == 0


def test_slurm_script_dry_run_prints_the_srun_line():
    env = {"PATH": "/usr/bin:/bin", "SLURM_JOB_NUM_NODES": "4", "BAOBAB_VENV": "/opt/venv"}
    out = subprocess.run(["bash", str(ROOT / "scripts/slurm_train.sbatch"), "--dry-run", "configs/gpt_bytes.py",
                          "optimizer.lr=3e-4"], capture_output=True, text=True, check=True, env=env).stdout
    line = [l for l in out.splitlines() if not l.startswith("#")][0]
    argv = shlex.split(line)
    assert argv[:5] == ["srun", "--nodes=4", "--ntasks=4", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    assert argv[5:7] == ["bash", "-c"]
    assert argv[7].strip() == "source /opt/venv/bin/activate && baobab train configs/gpt_bytes.py optimizer.lr=3e-4"
    bad = subprocess.run(["bash", str(ROOT / "scripts/slurm_train.sbatch"), "--dry-run"], capture_output=True,
                         text=True, env=env)
    assert bad.returncode == 2 and "usage" in bad.stderr
