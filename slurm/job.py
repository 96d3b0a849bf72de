"""What a scheduler job runs: the trainer on one job file, with preemption handled.

One task per node runs `torchrun` (the pattern NOTES.md records: submitit's own multi-task mode and
torchrun do not mix). torchrun starts in its own process group with SIGUSR2 ignored, so a Slurm
signal that reaches every process of the step stops only the trainer ranks, which save and exit;
torchrun itself survives to report. A job of one process on one node runs the trainer directly:
torchrun would add a launcher process and a rendezvous (about 3 s a job) and nothing else.
Stdlib + submitit only: this module is unpickled in the job.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import submitit
from submitit.core.utils import UncompletedJobError

from core.atomic import write_json_atomic
from core.layout import status_path
from slurm.procs import children_of, pid_alive
from slurm.usr2 import DeferredUsr2, stop_and_wait, wait_answering


def _ignore_usr2() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def trainer_command(
    job_file: str,
    db_file: str,
    procs_per_node: int,
    nodes: int = 1,
    node_rank: int = 0,
    master: str = "127.0.0.1",
    port: int = 29500,
) -> list[str]:
    # The store URL stays in its owner-only file: `ps` and the job log show only the path.
    job = ["-m", "trainer.job", job_file, "--db-file", db_file]
    if nodes == 1 and procs_per_node == 1:
        return [sys.executable, "-u", *job]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs_per_node}"]
    if nodes == 1:
        cmd.append("--standalone")
    else:
        cmd += [
            f"--nnodes={nodes}",
            f"--node_rank={node_rank}",
            f"--master_addr={master}",
            f"--master_port={port}",
        ]
    return cmd + job


def read_status(job_file: str) -> dict:
    try:
        return json.loads(status_path(job_file).read_text())
    except (OSError, ValueError):
        return {}


def report(job_file: str, status: dict) -> None:
    """What the wrapper says of a job its trainer could not report on, beside the job file, where
    reconcile reads it (orchestrator/control/reconcile.py wrapper_report)."""
    try:
        write_json_atomic(status_path(job_file), status)
    except OSError:
        pass


def killed_status(job_file: str, log: str | None) -> dict:
    """The trainer died of SIGKILL while this wrapper lived: what the kernel's OOM killer does
    (a node's own death or a scancel would have taken the wrapper too). Left for the supervisor
    (orchestrator/control/policy.py), which resubmits the job once with more memory."""
    where = f" (log: {log})" if log else ""
    status = {
        "state": "FAILED",
        "failure": "OUT_OF_MEMORY",
        "message": f"the trainer was killed by SIGKILL, as the kernel's OOM killer does{where}",
    }
    report(job_file, status)
    return status


def timed_out_status(job_file: str, why: str) -> dict:
    """submitit ended the job at its time-limit warning instead of requeueing it (`max_requeues`
    spent): after `checkpoint` below had the trainer save and stop, its USR2 handler raised
    UncompletedJobError, and the job exits 1, which Slurm records as FAILED. What the job says
    here makes it a TIMEOUT for the supervisor (resubmitted from its checkpoint, never held
    against the node), with the trainer's progress for telling a slow level from a stuck one."""
    said = read_status(job_file)
    status = {
        "state": "TIMEOUT",
        "failure": "TIMEOUT",
        "message": f"time limit reached after its requeues ({why})",
        "progress": said.get("progress") or {},
    }
    report(job_file, status)
    return status


def check_code(job_file: str, code_dir: str) -> None:
    """The snapshot the trainer is to import is the code its name says (core/code.py), checked
    here, by the wrapper's own code (imported from the code that submitted the job, never from the
    snapshot: slurm/executors.py), before any process has it on its import path. A refused one is
    set aside and the job fails with failure ERROR, which the supervisor does not retry
    (orchestrator/control/policy.py): a relaunch makes a fresh snapshot."""
    from core.code import SnapshotRefused, check_snapshot  # code identity: hashes the trainer's files (0.1 s cold)

    try:
        check_snapshot(code_dir)
    except SnapshotRefused as exc:
        print(f"[tp] {exc}", file=sys.stderr, flush=True)
        report(job_file, {"state": "FAILED", "failure": "ERROR", "message": str(exc)})
        raise


def node_address(name: str) -> str:
    """Where node NAME is reached, as Slurm records it (NodeAddr: clusters whose node names are
    not host names, the dev cluster's nodes on 127.0.0.1); NAME itself where Slurm says nothing
    more."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "node", name, "--oneliner"], capture_output=True, text=True, timeout=15
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return name
    found = re.search(r"(?:^|\s)NodeAddr=(\S+)", out)
    return found.group(1) if found and found.group(1) not in ("(null)", "") else name


def unreachable(host: str, port: int, timeout_s: float = 5.0) -> str | None:
    """Why HOST:PORT cannot be reached (name does not resolve, connection refused, timed out);
    None when a connection opens."""
    try:
        addrs = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"the name does not resolve ({exc.strerror})"
    why = "no address"
    for family, kind, proto, _, addr in addrs:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout_s)
                sock.connect(addr)
                return None
        except ConnectionRefusedError:
            why = "connection refused"
        except TimeoutError:
            why = f"timed out after {timeout_s:g} s"
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
    return why


def rendezvous_failed(job_file: str, nodes: int, host: str, node: str, port: int, why: str) -> str:
    """A multi-node job whose nodes could not meet: a node or network failure for the supervisor
    (retried, and held against the first node, whose address the others could not use)."""
    message = f"rendezvous of {nodes} nodes at {host}:{port} (node {node}) failed: {why}"
    report(job_file, {"state": "FAILED", "failure": "NODE_FAIL", "message": message, "node": node})
    return message


def say_waiting(job_file: str, db_file: str, nodes: int, host: str, port: int) -> None:
    """The job runs in Slurm, but its trainer reports only once every node has joined: until then
    status says so (RUNNING, "waiting for N nodes at HOST:PORT"), not PENDING."""
    try:
        url = open(db_file).read().strip()
        job_id = json.loads(open(job_file).read())["job_id"]
        from db.store import Store  # SQLAlchemy (0.3 s), multi-node jobs only

        store = Store(url)
        try:
            store.set_job_state(
                job_id,
                "RUNNING",
                message=f"waiting for {nodes} nodes at {host}:{port}",
                only_from=("PENDING", "PREEMPTED"),
            )
        finally:
            store.close()
    except Exception as exc:  # noqa: BLE001 - a note for status; the job goes on without it
        print(f"[tp] could not say the job waits for its nodes: {type(exc).__name__}: {exc}", flush=True)


def replace_supervisor(job_file: str, db_file: str) -> None:
    """A job of a supervised sweep that ends while the supervisor's lease is stale submits a new
    supervisor (slurm/supervisor_job.py), so a killed supervisor is replaced without a person.
    Costs one small query when the sweep is supervised, and nothing else otherwise."""
    from slurm.supervisor_job import replace_if_stale  # only for supervised sweeps (and their store)

    replace_if_stale(job_file, db_file)


class TrainerJob(submitit.helpers.Checkpointable):
    """Callable submitted through submitit; `checkpoint` is its answer to USR2 (timeout/preemption)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None

    def __call__(
        self,
        job_file: str,
        db_file: str,
        procs_per_node: int = 1,
        nodes: int = 1,
        code_dir: str | None = None,
        rendezvous_timeout_s: float = 300,
    ) -> str:
        self._usr2 = DeferredUsr2()
        env = dict(os.environ)
        if code_dir:  # the trainer imports the launch's snapshot, whatever the checkout holds now
            check_code(job_file, code_dir)
            env["PYTHONPATH"] = code_dir + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            env["PYTHONSAFEPATH"] = "1"
            env["PYTHONDONTWRITEBYTECODE"] = "1"  # a __pycache__ in a snapshot is refused
        try:
            jenv = submitit.JobEnvironment()
            env["TP_JOB_ID"] = str(jenv.job_id)
            env["TP_JOB_LOG"] = str(jenv.paths.stderr)  # named in the trainer's failure message
            # Rendezvous on the job's first node, at the address Slurm knows it by (NodeAddr);
            # TP_MASTER_ADDR overrides it.
            node_rank, first = jenv.node, jenv.hostnames[0]
            master = "127.0.0.1"
            if nodes > 1:
                master = env.get("TP_MASTER_ADDR") or node_address(first)
        except RuntimeError:  # not inside a submitit job (tests calling it directly)
            node_rank, first, master = 0, "localhost", "127.0.0.1"
        # A port per job, so two jobs sharing a node do not collide at rendezvous.
        port = 20000 + int(env.get("SLURM_JOB_ID", os.getpid())) % 20000
        cmd = trainer_command(job_file, db_file, procs_per_node, nodes, node_rank, master, port)
        status_path(job_file).unlink(missing_ok=True)
        joined = None
        if nodes > 1:
            if node_rank == 0:
                say_waiting(job_file, db_file, nodes, master, port)
            try:
                socket.getaddrinfo(master, port)
            except socket.gaierror as exc:  # torchrun would retry it until the time limit
                why = f"the name does not resolve ({exc.strerror})"
                raise RuntimeError(rendezvous_failed(job_file, nodes, master, first, port, why)) from None
            # Each node's first rank says when the process group is whole (trainer/job.py).
            joined = f"{job_file}.joined-{node_rank}"
            os.unlink(joined) if os.path.exists(joined) else None
            env["TP_JOINED_FILE"] = joined
        print("[tp] " + " ".join(cmd), flush=True)
        try:
            self._usr2.answer()  # a warning during the set-up ends the job before a trainer starts
            self._proc = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_ignore_usr2)
            if joined is None:
                rc = wait_answering(self._proc, self._usr2)
                assert rc is not None  # no time-out given
            else:
                rc = self._wait_for_nodes(joined, rendezvous_timeout_s)
                if rc is None:
                    why = unreachable(master, port) or "it answers, but not every node joined"
                    raise RuntimeError(
                        rendezvous_failed(
                            job_file, nodes, master, first, port, f"not within {rendezvous_timeout_s:g} s: {why}"
                        )
                    )
        except UncompletedJobError as exc:
            # Raised by submitit's USR2 handler once the trainer has saved (see timed_out_status).
            timed_out_status(job_file, str(exc).rstrip("."))
            self._replace_supervisor(job_file, db_file)
            raise
        status = read_status(job_file)
        if not status and rc == -signal.SIGKILL:
            status = killed_status(job_file, env.get("TP_JOB_LOG"))
        self._replace_supervisor(job_file, db_file)
        state = status.get("state", "FAILED" if rc else "COMPLETED")
        if state == "COMPLETED" and rc == 0:
            return state
        raise RuntimeError(
            f"trainer for {job_file} ended {state} (exit status {rc}): {status.get('message', 'see the job log')}"
        )

    def _wait_for_nodes(self, joined: str, timeout_s: float) -> int | None:
        """The trainer's exit status, or None when its nodes did not all join within `timeout_s`
        (then torchrun and whatever it started are killed). Answers the time-limit warning
        while it waits (slurm/usr2.py)."""
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            rc = wait_answering(proc, self._usr2, timeout_s=1.0)
            if rc is not None:
                return rc
            if time.monotonic() > deadline and not os.path.exists(joined):
                for pid in [proc.pid, *children_of(proc.pid)]:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                proc.wait()
                return None

    @staticmethod
    def _replace_supervisor(job_file: str, db_file: str) -> None:
        try:
            replace_supervisor(job_file, db_file)
        except Exception as exc:  # noqa: BLE001 - never let supervision fail the job
            print(f"[tp] could not check the sweep's supervisor: {type(exc).__name__}: {exc}", flush=True)

    def checkpoint(
        self,
        job_file: str,
        db_file: str,
        procs_per_node: int = 1,
        nodes: int = 1,
        code_dir: str | None = None,
        rendezvous_timeout_s: float = 300,
    ):
        """Tell the trainer ranks to save and stop, wait for them, then ask to be requeued.

        Runs in submitit's USR2 handler, which `__call__`'s wait loop calls (slurm/usr2.py). It
        waits for torchrun to exit through /proc, not Popen.wait: the wait loop polls the same
        Popen, and the exit is its to reap. torchrun starts every rank in a session of its own,
        so the signal goes to each rank's group; torchrun itself ignores USR2 and exits once its
        ranks have. A one-process job is the trainer itself."""
        proc = self._proc
        if proc is not None:
            one = procs_per_node == 1 and nodes == 1
            stop_and_wait(lambda: [proc.pid] if one else children_of(proc.pid), lambda: pid_alive(proc.pid))
        return submitit.helpers.DelayedSubmission(
            TrainerJob(), job_file, db_file, procs_per_node, nodes, code_dir, rendezvous_timeout_s
        )


# ---- several chains in one job (executor.pack) -------------------------------------------------
# A packed job runs K chains (jobs of the plan, each with its own row, job file, status file,
# locks and checkpoints) at once, each its own one-process trainer started exactly as TrainerJob
# starts a job alone, all on the job's GPU: through CUDA MPS where the node runs its daemon (the
# processes find it by themselves), else time-sliced by the driver. Kept apart from TrainerJob:
# a job of one chain never comes here.
PACK_LOOK_S = 10.0  # how often a packed job asks the store which of its chains were cancelled


class _PackStore:
    """The store as a packed job's wrapper sees it: which chains are still its own, who was
    cancelled, and a chain that died unseen. Never fails the job: without the store, every
    chain runs (a finished level is not trained again, and a level's lock keeps two trainers
    apart) and the scheduler's end state tells the rest."""

    def __init__(self, db_file: str) -> None:
        self.store = None
        try:
            url = open(db_file).read().strip()
            from db.store import Store  # SQLAlchemy (0.3 s): packed jobs only

            self.store = Store(url, migrate_schema=False)
        except Exception as exc:  # noqa: BLE001 - the chains train without it
            self._say("cannot open the store", exc)

    @staticmethod
    def _say(what: str, exc: BaseException) -> None:
        print(f"[tp] packed job: {what}: {type(exc).__name__}: {exc}", flush=True)

    def rows(self, job_ids: list[str]) -> dict[str, tuple[str, str | None]] | None:
        if self.store is None:
            return None
        try:
            return {jid: (j.state, j.sched_id) for jid, j in self.store.jobs(job_ids).items()}
        except Exception as exc:  # noqa: BLE001
            self._say("cannot read its chains' states", exc)
            return None

    def to_run(self, chains: dict[str, str], mine: str | None) -> list[str]:
        """The job files (of `chains`: job file -> job id) this job trains now: all of them,
        but a chain finished or cancelled, one that another scheduler job took over (the
        supervisor resubmitted it alone), and one that failed in an earlier run of this job
        (its retry is the supervisor's). What a requeue of the job runs again."""
        rows = self.rows(list(chains.values()))
        if rows is None:
            return list(chains)
        out = []
        for job_file, job_id in chains.items():
            state, sched = rows.get(job_id, ("PENDING", None))
            if state in ("PENDING", "RUNNING", "PREEMPTED") and (sched is None or mine is None or sched == mine):
                out.append(job_file)
            else:
                print(f"[tp] packed job: chain {job_id} is {state} (job {sched}): not run here", flush=True)
        return out

    def cancelled(self, chains: dict[str, str]) -> list[str]:
        rows = self.rows(list(chains.values())) or {}
        return [jf for jf, jid in chains.items() if rows.get(jid, ("",))[0] == "CANCELLED"]

    def failed(self, job_id: str, status: dict, sched_id: str | None) -> None:
        """A chain that died without reporting (SIGKILL): FAILED in the store now, with the failure
        class reconcile would give it once the whole job ends, so the supervisor retries it
        while the other chains train on."""
        if self.store is None:
            return
        try:
            self.store.set_job_state(
                job_id,
                "FAILED",
                only_from=("PENDING", "RUNNING"),
                failure=str(status["failure"]),
                message=f"{status['message']} (job {sched_id})" if sched_id else status["message"],
            )
        except Exception as exc:  # noqa: BLE001 - reconcile says it when the job ends
            self._say(f"cannot record chain {job_id} failed", exc)

    def close(self) -> None:
        if self.store is not None:
            try:
                self.store.close()
            except Exception:  # noqa: BLE001, S110 - closing a pool at the end
                pass


def _job_id_of(job_file: str) -> str:
    try:
        return str(json.loads(open(job_file).read())["job_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return os.path.basename(job_file).removesuffix(".json")


class PackedJob(submitit.helpers.Checkpointable):
    """Callable submitted through submitit for `executor.pack` > 1: K chains in one scheduler
    job on one GPU. Each chain's trainer is `python -m trainer.job JOB_FILE --db-file F`, with
    the environment, thread count and signals of the same chain run alone, so its levels are
    bit-identical to that. It reports through its own status file and store row; this wrapper
    forwards USR2 (`checkpoint`) to every trainer, stops a chain whose row was cancelled, records
    a chain killed by SIGKILL at once, and waits for all. A requeued job runs again only the
    chains still its own (see _PackStore.to_run)."""

    def __init__(self) -> None:
        self._procs: dict[str, subprocess.Popen] = {}  # job file -> its trainer

    def __call__(
        self, job_files: list[str], db_file: str, code_dir: str | None = None, cpus_per_chain: int | None = None
    ) -> str:
        self._usr2 = DeferredUsr2()
        env = dict(os.environ)
        if code_dir:
            try:
                check_code(job_files[0], code_dir)
            except Exception:
                said = read_status(job_files[0])
                for job_file in job_files[1:]:
                    report(job_file, said)
                raise
            env["PYTHONPATH"] = code_dir + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            env["PYTHONSAFEPATH"] = "1"
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        mine = None
        try:
            jenv = submitit.JobEnvironment()
            mine = str(jenv.job_id)
            env["TP_JOB_ID"] = mine
            env["TP_JOB_LOG"] = str(jenv.paths.stderr)
        except RuntimeError:  # not inside a submitit job (tests calling it directly)
            pass
        if cpus_per_chain and env.get("SLURM_CPUS_PER_TASK"):
            # Slurm gave the job K x cpus_per_task; each trainer takes the threads it takes alone
            # (trainer/distributed.py): the thread count changes float summation order.
            env["SLURM_CPUS_PER_TASK"] = str(cpus_per_chain)
        chains = {job_file: _job_id_of(job_file) for job_file in job_files}
        store = _PackStore(db_file)
        try:
            run = store.to_run(chains, mine)
            for job_file in run:
                status_path(job_file).unlink(missing_ok=True)
            try:
                self._usr2.answer()  # a warning during the set-up ends the job before a trainer starts
                for job_file in run:
                    cmd = trainer_command(job_file, db_file, 1)
                    print("[tp] " + " ".join(cmd), flush=True)
                    self._procs[job_file] = subprocess.Popen(
                        cmd, env=env, start_new_session=True, preexec_fn=_ignore_usr2
                    )
                rcs = self._wait(store, {jf: chains[jf] for jf in run}, mine, env.get("TP_JOB_LOG"))
            except UncompletedJobError as exc:  # submitit ended the job at its time-limit warning
                for job_file in run:
                    if read_status(job_file).get("state") != "COMPLETED":
                        timed_out_status(job_file, str(exc).rstrip("."))
                TrainerJob._replace_supervisor(job_files[0], db_file)
                raise
        finally:
            store.close()
        TrainerJob._replace_supervisor(job_files[0], db_file)
        bad = []
        for job_file, rc in rcs.items():
            status = read_status(job_file)
            state = status.get("state", "FAILED" if rc else "COMPLETED")
            if not (state == "COMPLETED" and rc == 0):
                said = status.get("message", "see the job log")
                bad.append(f"{job_file} ended {state} (exit status {rc}): {said}")
        if bad:
            raise RuntimeError(f"{len(bad)} of {len(job_files)} packed chains did not complete: " + "; ".join(bad))
        return "COMPLETED"

    def _wait(
        self, store: _PackStore, chains: dict[str, str], mine: str | None, log: str | None
    ) -> dict[str, int]:
        """Every trainer's exit status. Polls (half a second), so that a chain that ends is seen
        while the others train, and answers the time-limit warning in between (slurm/usr2.py:
        never inside the store queries, whose `except Exception` would swallow submitit's end)."""
        rcs: dict[str, int] = {}
        stopped: set[str] = set()
        look_s = float(os.environ.get("TP_PACK_LOOK_S", PACK_LOOK_S))
        next_look = time.monotonic() + look_s
        while len(rcs) < len(self._procs):
            self._usr2.answer()
            for job_file, proc in self._procs.items():
                if job_file in rcs or (rc := proc.poll()) is None:
                    continue
                rcs[job_file] = rc
                print(f"[tp] packed job: chain {chains[job_file]} ended, exit status {rc}", flush=True)
                if rc == -signal.SIGKILL and not read_status(job_file):
                    store.failed(chains[job_file], killed_status(job_file, log), mine)
            if time.monotonic() >= next_look and len(rcs) < len(self._procs):
                live = {jf: chains[jf] for jf in self._procs if jf not in rcs and jf not in stopped}
                for job_file in store.cancelled(live):  # tp-sweep cancel of this chain alone
                    print(f"[tp] packed job: chain {chains[job_file]} was cancelled: stopping it", flush=True)
                    try:
                        os.killpg(self._procs[job_file].pid, signal.SIGTERM)
                    except (ProcessLookupError, PermissionError):
                        pass
                    stopped.add(job_file)
                next_look = time.monotonic() + look_s
            time.sleep(0.5)
        self._usr2.answer()  # a warning that came as the last chain ended
        return rcs

    def checkpoint(
        self, job_files: list[str], db_file: str, code_dir: str | None = None, cpus_per_chain: int | None = None
    ):
        """USR2 to every trainer still running (each saves and stops, as alone), wait for them
        (through /proc, as TrainerJob.checkpoint does, signalled again until they stop), then
        ask to be requeued: the requeued job runs again the chains that did not finish."""

        def live() -> list[int]:
            return [p.pid for p in self._procs.values() if pid_alive(p.pid)]

        stop_and_wait(live, lambda: bool(live()))
        return submitit.helpers.DelayedSubmission(PackedJob(), job_files, db_file, code_dir, cpus_per_chain)
