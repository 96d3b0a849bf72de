"""The dev Slurm cluster (slurm/dev/cluster.py).

Three kinds of tests:
- pure ones (config rendering, /etc install rules, bad input) that start nothing;
- ones that use the main cluster started by `.ci/run` (`slurm_cluster` fixture) and never stop it;
- a lifecycle test that starts a SECOND, private cluster (own ports, ClusterName, munged, folder,
  SLURM_CONF; /etc/slurm untouched), runs a two-node job on it and stops it again.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from cli import cluster as cluster_cli
from slurm.dev import _config, cluster
from slurm.dev._procs import _tail
from tests.conftest import REPO, require_service
from tests.inprocess import status_json
from tests.sweeputil import free_port_block, run_progress, slow_spec, tp, wait_for, write_spec

MAIN_DIR = os.environ.get("TP_CLUSTER_DIR", os.path.join(REPO, ".tp-cluster"))


# ---------------------------------------------------------------- helpers


def _wait_job(job_id: str, env: dict | None = None, timeout: float = 120) -> str:
    """Poll scontrol until the job reaches a final state; returns it (no sacct here)."""
    deadline = time.monotonic() + timeout
    state = "?"
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["scontrol", "show", "job", job_id], capture_output=True, text=True, env=env, timeout=15
        ).stdout
        for tok in out.split():
            if tok.startswith("JobState="):
                state = tok.split("=", 1)[1]
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return state
        time.sleep(0.5)
    return f"still {state} after {timeout} s"


def _sbatch(args: list[str], env: dict | None = None) -> str:
    out = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def _can_run_daemons() -> str | None:
    missing = [b for b in cluster.BINARIES if shutil.which(b) is None and not os.path.exists(f"/usr/sbin/{b}")]
    if missing:
        return f"missing {missing} (apt-get install -y slurm-wlm munge)"
    if os.geteuid() != 0:
        return "needs root (daemons run as root and munge)"
    return None


# ---------------------------------------------------------------- no daemons needed


def test_status_of_never_started_dir(tmp_path):
    d = tmp_path / "nothing-here"
    st = cluster.status(str(d))
    assert not st.running and st.daemons == {} and st.nodes == []
    assert "no cluster" in st.message
    assert not d.exists(), "status must not create anything"


def test_up_on_a_file_is_bad_input(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(cluster.BadRequest, match="not a directory"):
        cluster.up(str(f))
    assert cluster_cli.main(["up", "--dir", str(f)]) == 2
    assert "not a directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["up", "--nodes", "0"], "--nodes"),
        (["up", "--port", "80"], "bad port"),
        (["up", "--cpus", "0", "--mem-mb", "10"], "bad node size"),
    ],
)
def test_bad_input_exits_2_and_creates_nothing(tmp_path, capsys, argv, msg):
    d = tmp_path / "c"
    assert cluster_cli.main([*argv, "--dir", str(d)]) == 2
    assert msg in capsys.readouterr().err
    assert not d.exists()


@pytest.mark.parametrize(
    "text, msg",
    [
        ("slurm_conf: [1, 2\n", "not YAML"),
        ("- MaxArraySize\n", "a mapping of slurm_conf, partitions, qos is needed"),
        ("slurmconf: {MaxArraySize: 8}\n", "unknown key 'slurmconf'"),
        ("partitions: low\n", "partitions must be a mapping"),
        ("partitions: {low: [PriorityTier]}\n", "partitions.low: a mapping of slurm.conf settings"),
        ("partitions: {low: {PreemptMode: OFF}}\n", "partitions.low.PreemptMode: YAML read a value as False"),
        ("slurm_conf: {MaxArraySize: 8 9}\n", "MaxArraySize='8 9' is not a slurm.conf setting"),
        ("slurm_conf: {'Max\\nArraySize': 8}\n", "is not a slurm.conf setting"),
        ("qos: {q5: {MaxSubmitJobsPerUser: 5}}\n", "qos limits need accounting"),
    ],
)
def test_bad_options_file_exits_2_and_creates_nothing(tmp_path, capsys, text, msg):
    (tmp_path / "opts.yaml").write_text(text)
    d = tmp_path / "c"
    assert cluster_cli.main(["up", "--options", str(tmp_path / "opts.yaml"), "--dir", str(d)]) == 2
    assert msg in capsys.readouterr().err
    assert not d.exists()
    assert cluster_cli.main(["up", "--options", str(tmp_path / "none.yaml"), "--dir", str(d)]) == 2
    assert "none.yaml: No such file" in capsys.readouterr().err


def test_options_file_reaches_slurm_conf(tmp_path):
    (tmp_path / "opts.yaml").write_text(
        "slurm_conf: {MaxArraySize: 8, PreemptType: preempt/partition_prio}\n"
        "partitions: {low: {PriorityTier: 1, PreemptMode: REQUEUE}, high: {PriorityTier: 10}}\n"
    )
    opts = cluster_cli.read_options(str(tmp_path / "opts.yaml"))
    cfg = _config._make_settings(
        str(tmp_path),
        1,
        False,
        2,
        2000,
        16000,
        "tpx",
        "n",
        False,
        _config._options(opts["extra_conf"], opts["partitions"], None, False),
    )
    text = _config._render(cfg)
    assert "\nMaxArraySize=8\n" in text and "\nPreemptType=preempt/partition_prio\n" in text
    assert "PartitionName=low " in text and "PreemptMode=REQUEUE" in text
    assert "PartitionName=high " in text and "PartitionName=debug " in text


def test_bare_up_restarts_with_the_folders_last_options(tmp_path, monkeypatch):
    saved = {"extra_conf": {"MaxArraySize": "8"}, "partitions": {"debug": {}, "low": {}}, "qos": {"q5": {}}}
    monkeypatch.setattr(cluster, "status", lambda d: cluster.ClusterStatus(str(d), False, {}, [], "", False))
    monkeypatch.setattr(cluster, "_load_settings", lambda d: dict(saved, nodes=1, accounting=True))
    calls = []
    monkeypatch.setattr(cluster, "up", lambda *a, **kw: calls.append(kw))
    cluster.up_again(str(tmp_path))  # not running, no --accounting: its QOS cannot come back
    cluster.up_again(str(tmp_path), accounting=True)
    cluster.up_again(str(tmp_path), options={"partitions": {"high": {}}})
    assert [{k: kw.get(k) for k in _config.OPTION_KEYS} for kw in calls] == [
        {"extra_conf": saved["extra_conf"], "partitions": saved["partitions"], "qos": None},
        saved,
        {"extra_conf": None, "partitions": {"high": {}}, "qos": None},
    ]


def test_unknown_subcommand_exits_2():
    assert cluster_cli.main(["sideways"]) == 2


def test_down_of_never_started_dir_is_a_noop(tmp_path):
    cluster.down(str(tmp_path / "nothing"))
    assert not (tmp_path / "nothing").exists()


def test_rendered_conf_has_the_working_settings(tmp_path):
    cfg = _config._make_settings(str(tmp_path), 3, False, 4, 8000, 16000, "tpx", "n", False)
    text = _config._render(cfg)
    lines = text.splitlines()
    assert lines[0].startswith(_config.MARKER + ": DIR=" + str(tmp_path) + " ")
    for want in (
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "JobAcctGatherType=jobacct_gather/none",
        "ReturnToService=2",
        "MailProg=/bin/true",
        "JobRequeue=1",
        "KillWait=10",
        "SlurmdParameters=config_overrides",
        "ClusterName=tpx",
        "SlurmctldPort=16000",
        f"StateSaveLocation={tmp_path}/state/ctld",
        "DefMemPerCPU=2000",
    ):
        assert want in lines, want
    assert any("cred_expire=10" in ln and ln.startswith("AuthInfo=") for ln in lines)
    nodes = [ln for ln in lines if ln.startswith("NodeName=")]
    assert [ln.split()[0] for ln in nodes] == ["NodeName=n1", "NodeName=n2", "NodeName=n3"]
    assert [t for ln in nodes for t in ln.split() if t.startswith("Port=")] == [
        "Port=16001",
        "Port=16002",
        "Port=16003",
    ]
    assert all("NodeAddr=127.0.0.1" in ln and "CPUs=4" in ln and "RealMemory=8000" in ln for ln in nodes)
    part = [ln for ln in lines if ln.startswith("PartitionName=")]
    assert part == ["PartitionName=debug Nodes=n1,n2,n3 Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO"]


def test_single_node_defaults_to_the_host_name(tmp_path):
    cfg = _config._make_settings(str(tmp_path), 1, False, None, None, 6817, "tpdev", None, True)
    assert cfg["node_names"] == [socket.gethostname().split(".")[0]]
    assert cfg["cpus"] == os.cpu_count() and 0 < cfg["mem_mb"] < _config._total_mem_mb()


def test_etc_conf_install_rules(tmp_path, monkeypatch):
    """Install when absent or ours; never touch a foreign file; down removes only ours."""
    etc = tmp_path / "etc-slurm" / "slurm.conf"
    monkeypatch.setattr(cluster, "ETC_CONF", str(etc))
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    text_a = f"{_config.MARKER}: DIR={a} (x)\nClusterName=a\n"
    assert cluster._install_conf(a, text_a) == ""
    assert etc.read_text() == text_a
    # b may take it over: ours, and cluster a is not running.
    text_b = f"{_config.MARKER}: DIR={b} (x)\nClusterName=b\n"
    assert cluster._install_conf(b, text_b) == ""
    assert etc.read_text() == text_b
    # A foreign file is left alone and the hint names SLURM_CONF.
    etc.write_text("ClusterName=site\n")
    hint = cluster._install_conf(a, text_a)
    assert f"export SLURM_CONF={a}/etc/slurm.conf" in hint
    assert etc.read_text() == "ClusterName=site\n"
    # down of a cluster that does not own the file leaves it.
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "cluster.json").write_text(
        '{"node_names": ["x"], "install_conf": true, "accounting": false}'
    )
    cluster.down(a)
    assert etc.read_text() == "ClusterName=site\n"
    etc.write_text(text_a)
    cluster.down(a)
    assert not etc.exists()


def test_import_is_light():
    """`tp-sweep --help` must stay fast: the cluster module imports no torch or rich."""
    code = "import sys, slurm.dev.cluster; print(sorted(m for m in ('torch', 'rich', 'ffcv') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stderr


# ---------------------------------------------------------------- the main (CI) cluster


@pytest.mark.slurm
def test_main_cluster_status_reports_idle_nodes(slurm_cluster):
    if not os.path.exists(os.path.join(MAIN_DIR, "cluster.json")):
        require_service("dev cluster folder", f"{MAIN_DIR} holds no cluster (set TP_CLUSTER_DIR)")
    st = cluster.status(MAIN_DIR)
    assert st.running, st
    assert all(st.daemons.values()) and "slurmctld" in st.daemons and "munged" in st.daemons
    assert st.nodes and all(n["state"].startswith(("idle", "mix", "alloc")) for n in st.nodes)
    assert all(n["cpus"] >= 1 and n["memory"] > 0 for n in st.nodes)
    assert os.path.exists(st.conf)
    # `up` again is idempotent: same daemons, nothing restarted.
    again = cluster.up(MAIN_DIR, nodes=len(st.nodes), accounting=st.accounting)
    assert again.daemons == st.daemons and "already running" in again.message


@pytest.mark.slurm
def test_trivial_job_completes_on_main_cluster(slurm_cluster, tmp_path):
    out = tmp_path / "job.out"
    job = _sbatch(
        [
            "-J",
            "tp-cluster-test",
            "-t",
            "5",
            "-o",
            str(out),
            "--wrap",
            "echo hello from $SLURMD_NODENAME; srun true",
        ]
    )
    assert _wait_job(job) == "COMPLETED"
    assert out.read_text().startswith("hello from ")


# ---------------------------------------------------------------- a second, private cluster


@pytest.fixture
def private_dir():
    """A folder munged (user munge) can reach: pytest's tmp_path is mode 0700."""
    d = tempfile.mkdtemp(prefix="tpc-", dir="/tmp")
    os.chmod(d, 0o755)
    yield os.path.join(d, "c")
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.slurm
def test_private_two_node_cluster_lifecycle(private_dir):
    why = _can_run_daemons()
    if why:
        require_service("slurm daemons", why)
    etc_before = open(cluster.ETC_CONF).read() if os.path.exists(cluster.ETC_CONF) else None
    main_before = cluster.status(MAIN_DIR)
    port = free_port_block(2)
    kw = dict(port=port, cluster_name="tptest", node_prefix="tpt", install_conf=False)
    try:
        st = cluster.up(private_dir, nodes=2, cpus_per_node=2, mem_mb=2000, **kw)
        assert st.running and [n["name"] for n in st.nodes] == ["tpt1", "tpt2"]
        assert all(n["state"] == "idle" and n["cpus"] == 2 for n in st.nodes)
        assert st.conf == os.path.join(private_dir, "etc", "slurm.conf")
        assert st.env == {"SLURM_CONF": st.conf} and "export SLURM_CONF" in st.message
        again = cluster.up(private_dir, nodes=2, cpus_per_node=2, mem_mb=2000, **kw)
        assert again.daemons == st.daemons and "already running" in again.message
        with pytest.raises(cluster.BadRequest, match="running with 2 node"):
            cluster.up(private_dir, nodes=3, **kw)
        with pytest.raises(cluster.BadRequest, match="running with other extra_conf and partitions"):
            cluster.up(
                private_dir, 2, False, 2, 2000, extra_conf={"MaxArraySize": 8}, partitions={"low": {}}, **kw
            )
        assert "already running" in cluster.up_again(private_dir).message  # a bare `up` keeps its options

        env = {**os.environ, **st.env}
        out = os.path.join(os.path.dirname(private_dir), "two.out")
        job = _sbatch(["-N", "2", "-o", out, "--wrap", "srun printenv SLURMD_NODENAME"], env)
        assert _wait_job(job, env, timeout=60) == "COMPLETED"
        assert sorted(open(out).read().split()) == ["tpt1", "tpt2"]
    finally:
        cluster.down(private_dir)
    st = cluster.status(private_dir)
    assert not st.running and not any(st.daemons.values())
    assert os.path.getsize(os.path.join(private_dir, "log", "slurmctld.log")) > 0  # logs stay
    # The main cluster and /etc/slurm were not touched.
    etc_after = open(cluster.ETC_CONF).read() if os.path.exists(cluster.ETC_CONF) else None
    assert etc_after == etc_before
    assert cluster.status(MAIN_DIR).daemons == main_before.daemons


@pytest.mark.slurm
def test_port_in_use_fails_clearly(private_dir):
    why = _can_run_daemons()
    if why:
        require_service("slurm daemons", why)
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(cluster.ClusterError, match=f"port {port} is in use"):
            cluster.up(private_dir, port=port, cluster_name="tpbad", node_prefix="tpb", install_conf=False)
    assert not cluster.status(private_dir).running


@pytest.mark.slurm
def test_daemon_that_dies_is_reported_and_nothing_left_running(private_dir, monkeypatch):
    why = _can_run_daemons()
    if why:
        require_service("slurm daemons", why)
    real = cluster._launch

    def broken_slurmd(d, name, argv):  # a slurmd asked for a node the config lacks exits at once
        real(d, name, argv[:-1] + ["nosuchnode"] if name.startswith("slurmd:") else argv)

    monkeypatch.setattr(cluster, "_launch", broken_slurmd)
    with pytest.raises(cluster.ClusterError, match="slurmd:tpd1 exited with status 1") as err:
        cluster.up(
            private_dir,
            port=free_port_block(1),
            cluster_name="tpdie",
            node_prefix="tpd",
            install_conf=False,
            timeout=10,
        )
    assert "slurmd-tpd1.log" in str(err.value)  # names the log to read
    st = cluster.status(private_dir)
    assert not st.running and not any(st.daemons.values()), "a failed up must stop what it started"


@pytest.mark.slurm
@pytest.mark.slow
def test_accounting_cluster_makes_sacct_work(private_dir):
    """--accounting: private MariaDB + slurmdbd. Skipped where the packages are not installed
    (`up --accounting` would apt-get them; a test should not)."""
    why = _can_run_daemons()
    if why:
        require_service("slurm daemons", why)
    if not (shutil.which("slurmdbd") and shutil.which("mariadbd")):
        require_service(
            "slurm accounting", "slurmdbd/mariadb-server not installed (scripts/bootstrap.sh installs them)"
        )
    kw = dict(port=free_port_block(81), cluster_name="tpacct", node_prefix="tpa", install_conf=False)
    try:
        st = cluster.up(private_dir, accounting=True, cpus_per_node=1, mem_mb=1000, **kw)
        assert st.accounting and st.daemons["slurmdbd"] and st.daemons["mariadbd"]
        env = {**os.environ, **st.env}
        job = _sbatch(["-o", "/dev/null", "--wrap", "true"], env)
        assert _wait_job(job, env, timeout=60) == "COMPLETED"
        deadline, out = time.monotonic() + 30, ""
        while time.monotonic() < deadline and "COMPLETED" not in out:
            out = subprocess.run(
                ["sacct", "-n", "-X", "-P", "-j", job, "-o", "State"],
                capture_output=True,
                text=True,
                env=env,
                timeout=30,
            ).stdout
            time.sleep(0.5)
        assert out.strip() == "COMPLETED"
    finally:
        cluster.down(private_dir)
    assert not any(cluster.status(private_dir).daemons.values())


# ---------------------------------------------------------------- down ends the jobs (#17)


def _start_time(pid: int) -> str | None:
    """A live process's start time (a reused pid has another); None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if rest[0] in ("Z", "X") else rest[19]


def _job_procs(env: dict) -> dict[tuple[int, str], str]:
    """Every process of the cluster's jobs, as Slurm lists them (`scontrol listpids`, from the
    stepds' own records) plus the slurmstepd above each: (pid, start time) -> job id."""
    out = subprocess.run(
        ["scontrol", "listpids"], capture_output=True, text=True, env=env, timeout=30, check=False
    ).stdout
    procs = {}
    for line in out.splitlines()[1:]:
        pid, job = int(line.split()[0]), line.split()[1]
        while pid > 1 and _start_time(pid):
            procs[(pid, _start_time(pid))] = job
            if os.readlink(f"/proc/{pid}/exe").endswith("slurmstepd"):
                break
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
    return procs


def _wait_procs(env: dict, steps: dict[str, int], d: str, timeout: float = 60) -> dict:
    """_job_procs once each job in `steps` has that many slurmstepds (an srun job: 2); the
    cluster's view of its jobs in the message if they never get there."""
    deadline = time.monotonic() + timeout
    while True:
        procs = _job_procs(env)
        stepds = [job for (pid, _), job in procs.items() if _cmdline(pid).startswith("slurmstepd")]
        if all(stepds.count(job) >= n for job, n in steps.items()):
            return procs
        if time.monotonic() > deadline:
            jobs = subprocess.run(
                ["scontrol", "show", "job"], env=env, capture_output=True, text=True, check=False
            )
            raise AssertionError(
                f"jobs {steps} not running after {timeout} s: {procs}\n{jobs.stdout}\n"
                f"{_tail(os.path.join(d, 'log', 'slurmctld.log'), 20)}"
            )
        time.sleep(0.5)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(procs) -> list[int]:
    return [pid for pid, start in procs if _start_time(pid) == start]


def _strays(conf: str, needle: str) -> list[str]:
    """Live processes of a cluster's jobs found through /proc, independently of listpids: job
    environment naming its config, or a command line naming the test's folder."""
    found = []
    for e in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{e}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        cmd = _cmdline(int(e))
        if (
            _start_time(int(e))
            and int(e) != os.getpid()
            and (
                needle in cmd
                or (f"SLURM_CONF={conf}".encode() in env and any(v.startswith(b"SLURM_JOB_ID=") for v in env))
            )
        ):
            found.append(f"{e} {cmd}")
    return found


@pytest.mark.slurm
def test_down_ends_its_jobs_and_no_others(tmp_path, capsys):
    """`down` of a cluster with a running `srun` job and a tp-sweep job mid-level leaves no
    process of either and does not touch a second cluster's job (--timeout 4 bounds the wait
    for Slurm's SIGTERM to work before down kills what is left). Then the second cluster, its
    slurmctld dead and its job ignoring SIGTERM, is ended through its folder alone; down twice
    is a no-op. One test for all: a cluster and a sweep job cost seconds to start."""
    why = _can_run_daemons()
    if why:
        require_service("slurm daemons", why)
    top = tempfile.mkdtemp(prefix="tpc-", dir="/tmp")
    os.chmod(top, 0o755)  # munged must reach the folders
    a, b = os.path.join(top, "a"), os.path.join(top, "b")
    try:
        sa = cluster.up(
            a,
            cpus_per_node=2,
            mem_mb=3000,
            port=free_port_block(1),
            cluster_name="tpka",
            node_prefix="tpka",
            install_conf=False,
        )
        sb = cluster.up(
            b,
            cpus_per_node=1,
            mem_mb=1000,
            port=free_port_block(1, start=19817),
            cluster_name="tpkb",
            node_prefix="tpkb",
            install_conf=False,
        )
        env_a, env_b = {**os.environ, **sa.env}, {**os.environ, **sb.env}
        # Both clusters number their jobs from 1: job ids and "slurmstepd: [1.0]" are shared.
        srun_job = _sbatch(["-o", "/dev/null", "--wrap", "srun sleep 300"], env_a)
        _sbatch(["-o", "/dev/null", "--wrap", "trap '' TERM; srun sh -c \"trap '' TERM; sleep 300\""], env_b)
        spec = slow_spec("downed", procs=1)
        spec["trainer"]["overrides"]["schedule.epochs"] = 50  # still in level 0 when down comes
        tp("launch", str(write_spec(tmp_path, spec)), "--executor", "slurm", cwd=tmp_path, env=sa.env, check=True)
        wait_for(lambda: run_progress(tmp_path) >= (0, 1), 240, "the tp-sweep job mid-level")
        assert status_json("downed", tmp_path, env=sa.env)["runs"][0]["state"] == "RUNNING"
        procs_a = _wait_procs(env_a, {srun_job: 2}, a)  # the srun job's batch step and step 0
        procs_b = _wait_procs(env_b, {"1": 2}, b)
        assert len(set(procs_a.values())) == 2, procs_a  # and the sweep's job
        trainer = [p for p, _ in procs_a if "trainer.job" in _cmdline(p)]
        assert trainer, "the sweep's trainer must be among the job's processes"
        assert procs_b and all(_alive(procs_b))

        assert cluster_cli.main(["down", "--dir", a, "--timeout", "4"]) == 0
        assert "stopped; ended 2 jobs" in capsys.readouterr().out
        assert not _alive(procs_a), _alive(procs_a)
        assert not _strays(sa.conf, str(tmp_path)), _strays(sa.conf, str(tmp_path))
        assert sorted(_alive(procs_b)) == sorted(p for p, _ in procs_b), "b's job was touched"
        assert (
            "RUNNING"
            in subprocess.run(
                ["squeue", "-h", "-o", "%T"], env=env_b, check=False, capture_output=True, text=True
            ).stdout
        )

        os.kill(cluster.status(b).daemons["slurmctld"], 9)  # scancel cannot reach b now
        assert cluster.down(b, timeout=3) == 1
        assert not _alive(procs_b), _alive(procs_b)
        assert not _strays(sb.conf, os.path.join(b, "state"))
        assert cluster.down(b) == 0 and cluster.down(a) == 0
    finally:
        try:
            cluster.down(a)
        finally:
            cluster.down(b)
            shutil.rmtree(top, ignore_errors=True)
