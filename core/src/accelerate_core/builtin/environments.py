"""Environment detectors: one process, torchrun (and ``accel launch``), SLURM."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..errors import EnvironmentDetectionError
from ..hookspecs import hookimpl
from ..specs import EnvironmentInfo

SINGLE_PRIORITY = 0
SLURM_PRIORITY = 10
TORCHRUN_PRIORITY = 20

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def _int(environ: Mapping[str, str], name: str, source: str) -> int:
    value = environ[name]
    try:
        number = int(value)
    except ValueError:
        raise EnvironmentDetectionError(
            f"{source}: {name}={value!r} is not an integer; fix the launch environment"
        ) from None
    if number < 0:
        raise EnvironmentDetectionError(f"{source}: {name}={number} must not be negative")
    return number


def _port(environ: Mapping[str, str], name: str, source: str) -> int | None:
    return _int(environ, name, source) if environ.get(name) else None


def _check(info: EnvironmentInfo) -> EnvironmentInfo:
    if info.world_size < 1:
        raise EnvironmentDetectionError(f"{info.source}: world size {info.world_size} < 1")
    if info.rank >= info.world_size:
        raise EnvironmentDetectionError(
            f"{info.source}: rank {info.rank} is not below world size {info.world_size}"
        )
    if info.local_rank >= info.local_world_size:
        raise EnvironmentDetectionError(
            f"{info.source}: local rank {info.local_rank} is not below local world size "
            f"{info.local_world_size}"
        )
    return info


class TorchrunDetector:
    """torchrun, ``accel launch`` and any launcher that sets torch's RANK/WORLD_SIZE contract."""

    @hookimpl
    def accelerate_core_detect_environment(
        self, environ: Mapping[str, str]
    ) -> EnvironmentInfo | None:
        return detect_torchrun(environ)


def detect_torchrun(environ: Mapping[str, str]) -> EnvironmentInfo | None:
    present = [v for v in TORCHRUN_VARS if v in environ]
    if not present:
        return None
    if len(present) < len(TORCHRUN_VARS):
        missing = [v for v in TORCHRUN_VARS if v not in environ]
        raise EnvironmentDetectionError(
            f"the environment sets {', '.join(f'{v}={environ[v]}' for v in present)} but not "
            f"{', '.join(missing)}; start the script with torchrun or `accel launch`, or unset "
            "these variables to run one process"
        )
    world = _int(environ, "WORLD_SIZE", "torchrun")
    local_world = (
        _int(environ, "LOCAL_WORLD_SIZE", "torchrun") if "LOCAL_WORLD_SIZE" in environ else world
    )
    return _check(
        EnvironmentInfo(
            source="torchrun",
            priority=TORCHRUN_PRIORITY,
            rank=_int(environ, "RANK", "torchrun"),
            world_size=world,
            local_rank=_int(environ, "LOCAL_RANK", "torchrun"),
            local_world_size=local_world,
            master_addr=environ.get("MASTER_ADDR"),
            master_port=_port(environ, "MASTER_PORT", "torchrun"),
        )
    )


def first_slurm_host(nodelist: str) -> str | None:
    """The first host of a SLURM node list (``"gpu[03-05,9],cpu1"`` -> ``"gpu03"``)."""
    match = re.match(r"\s*([^,\[\s]+)(?:\[([^\]]+)\])?", nodelist)
    if match is None:
        return None
    prefix, ranges = match.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def slurm_rendezvous(environ: Mapping[str, str]) -> tuple[str | None, int | None]:
    """MASTER_ADDR/MASTER_PORT, else the job's first node and a port derived from the job id.

    Every task of a job computes the same answer, so ``srun python train.py`` needs no exports.
    """
    addr = environ.get("MASTER_ADDR") or first_slurm_host(
        environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST") or ""
    )
    port = _port(environ, "MASTER_PORT", "slurm")
    job = environ.get("SLURM_JOB_ID") or environ.get("SLURM_JOBID") or ""
    if port is None and job.isdigit():
        port = 15000 + int(job) % 20000  # as PyTorch Lightning: unprivileged, per job
    return addr, port


class SlurmDetector:
    """Processes started by ``srun``: one task per process (SLURM_PROCID/SLURM_NTASKS).

    The rendezvous is ``MASTER_ADDR``/``MASTER_PORT`` when exported, else the first node of the
    job and a port derived from the job id (``slurm_rendezvous``).
    """

    @hookimpl
    def accelerate_core_detect_environment(
        self, environ: Mapping[str, str]
    ) -> EnvironmentInfo | None:
        # SLURM_STEP_ID is set only inside a job step (srun); an sbatch/salloc shell that runs
        # `python train.py` directly is one process even though SLURM_NTASKS may be larger.
        if "SLURM_PROCID" not in environ or "SLURM_STEP_ID" not in environ:
            return None
        world = _int(environ, "SLURM_NTASKS", "slurm") if "SLURM_NTASKS" in environ else 1
        local_rank = _int(environ, "SLURM_LOCALID", "slurm") if "SLURM_LOCALID" in environ else 0
        # SLURM_TASKS_PER_NODE looks like "4" or "4(x2)" or "2,1": the first count is this shape's.
        per_node = re.match(r"\d+", environ.get("SLURM_TASKS_PER_NODE", ""))
        local_world = int(per_node.group()) if per_node else world
        master_addr, master_port = slurm_rendezvous(environ)
        return _check(
            EnvironmentInfo(
                source="slurm",
                priority=SLURM_PRIORITY,
                rank=_int(environ, "SLURM_PROCID", "slurm"),
                world_size=world,
                local_rank=local_rank,
                local_world_size=max(local_world, local_rank + 1),
                master_addr=master_addr,
                master_port=master_port,
                extra={"node_rank": environ.get("SLURM_NODEID")},
            )
        )


class SingleProcessDetector:
    """The fallback when no launcher is detected: exactly one process."""

    @hookimpl
    def accelerate_core_detect_environment(self) -> EnvironmentInfo:
        return EnvironmentInfo(source="single", priority=SINGLE_PRIORITY)


DETECTORS: tuple[object, ...] = (TorchrunDetector(), SlurmDetector(), SingleProcessDetector())
