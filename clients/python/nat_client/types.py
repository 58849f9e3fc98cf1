"""The values the client returns: frozen dataclasses over the wire messages.

Each keeps the message it was made from as ``proto`` (a ``nat.v1`` message with ``.pyi`` stubs),
for the fields the dataclass leaves out. States and kinds are lower-case names: ``"queued"``,
``"running"``, ``"succeeded"``, ``"failed"``, ``"cancelled"``; ``"evaluate"``, ``"optimize"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

from ._proto.nat.v1 import nat_pb2 as pb

#: Job states in which a job is finished.
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


def enum_name(enum: Any, value: int, prefix: str) -> str:
    """``JOB_STATE_SUCCEEDED`` → ``succeeded`` (an unknown number → ``unknown(N)``)."""
    try:
        name: str = enum.Name(value)
    except ValueError:
        return f"unknown({value})"
    return name[len(prefix) :].lower() if name.startswith(prefix) else name.lower()


def job_state_name(name: str) -> str:
    """``"running"`` → ``"JOB_STATE_RUNNING"``; raises ValueError for an unknown name."""
    full = "JOB_STATE_" + name.upper()
    pb.JobState.Value(full)
    return full


@dataclass(frozen=True)
class Job:
    """A job as the coordinator reports it (`GetJob`, `ListJobs`, `SubmitJob`, `CancelJob`)."""

    job_id: str
    kind: str
    state: str
    name: str
    dataset: str
    budget_preset: str
    architectures: Tuple[str, ...]
    tasks_total: int
    tasks_pending: int
    tasks_running: int
    tasks_succeeded: int
    tasks_failed: int
    tasks_cancelled: int
    created_at_unix_ms: int
    finished_at_unix_ms: int
    error: str
    waiting_reason: str
    proto: pb.Job = field(repr=False, compare=False)

    @property
    def done(self) -> bool:
        """Whether the job is finished (succeeded, failed or cancelled)."""
        return self.state in TERMINAL_STATES

    @classmethod
    def from_proto(cls, job: pb.Job) -> "Job":
        return cls(
            job_id=job.job_id,
            kind=enum_name(pb.JobKind, job.kind, "JOB_KIND_"),
            state=enum_name(pb.JobState, job.state, "JOB_STATE_"),
            name=job.name,
            dataset=job.dataset,
            budget_preset=job.budget_preset,
            architectures=tuple(job.architectures),
            tasks_total=job.tasks_total,
            tasks_pending=job.tasks_pending,
            tasks_running=job.tasks_running,
            tasks_succeeded=job.tasks_succeeded,
            tasks_failed=job.tasks_failed,
            tasks_cancelled=job.tasks_cancelled,
            created_at_unix_ms=job.created_at_unix_ms,
            finished_at_unix_ms=job.finished_at_unix_ms,
            error=job.error,
            waiting_reason=job.waiting_reason,
            proto=job,
        )


@dataclass(frozen=True)
class Event:
    """One event of `Client.watch`.

    ``kind`` is the name of the event's ``oneof`` member: ``"state_changed"``, ``"progress"``,
    ``"task_completed"``, ``"task_failed"``, ``"new_best"``, ``"task_progress"``,
    ``"policy_updated"`` or ``"phase_changed"`` (``""`` for a kind this client does not know);
    ``payload`` is that member's message (e.g. ``nat.v1.TaskCompleted``). ``sequence`` is
    strictly increasing per job: pass the last one seen as ``after_sequence`` to resume.
    """

    sequence: int
    job_id: str
    at_unix_ms: int
    kind: str
    payload: Any
    proto: pb.JobEvent = field(repr=False, compare=False)

    @property
    def state(self) -> Optional[str]:
        """The new job state of a ``state_changed`` event, else None."""
        if self.kind != "state_changed":
            return None
        return enum_name(pb.JobState, self.payload.state, "JOB_STATE_")

    @property
    def terminal(self) -> bool:
        """Whether this event ends the job (the stream ends after it)."""
        return self.state in TERMINAL_STATES

    @property
    def accuracy(self) -> Optional[float]:
        """The accuracy a ``task_completed`` or ``new_best`` event carries, else None."""
        if self.kind == "task_completed":
            return float(self.payload.result.accuracy)
        if self.kind == "new_best":
            return float(self.payload.accuracy)
        return None

    @classmethod
    def from_proto(cls, event: pb.JobEvent) -> "Event":
        kind = event.WhichOneof("event") or ""
        payload = getattr(event, kind) if kind else None
        return cls(
            sequence=event.sequence,
            job_id=event.job_id,
            at_unix_ms=event.at_unix_ms,
            kind=kind,
            payload=payload,
            proto=event,
        )


@dataclass(frozen=True)
class ArchitectureResult:
    """One architecture of a job's result: its measurement once its task succeeded."""

    index: int
    genotype_darts: str
    genotype_json: str
    canonical_hash: str
    state: str
    accuracy: Optional[float]
    params: Optional[int]
    madds: Optional[int]
    error: str
    attempts: int
    proto: pb.ArchitectureResult = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, arch: pb.ArchitectureResult) -> "ArchitectureResult":
        measured = arch.HasField("result")
        return cls(
            index=arch.index,
            genotype_darts=arch.genotype_darts,
            genotype_json=arch.genotype_json,
            canonical_hash=arch.canonical_hash,
            state=enum_name(pb.TaskState, arch.state, "TASK_STATE_"),
            accuracy=float(arch.result.accuracy) if measured else None,
            params=int(arch.result.params) if measured else None,
            madds=int(arch.result.madds) if measured else None,
            error=arch.error,
            attempts=arch.attempts,
            proto=arch,
        )


@dataclass(frozen=True)
class JobResult:
    """`GetJobResult`: per architecture its result; optimize jobs also ``optimize`` outcomes.

    ``optimize`` holds the ``nat.v1.OptimizeOutcome`` messages as they are (original, best,
    verdict, recommendation, final evaluation); ``proto`` the whole response (policy, learning).
    """

    job_id: str
    kind: str
    state: str
    architectures: List[ArchitectureResult]
    optimize: List[pb.OptimizeOutcome]
    proto: pb.GetJobResultResponse = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, response: pb.GetJobResultResponse) -> "JobResult":
        return cls(
            job_id=response.job_id,
            kind=enum_name(pb.JobKind, response.kind, "JOB_KIND_"),
            state=enum_name(pb.JobState, response.state, "JOB_STATE_"),
            architectures=[ArchitectureResult.from_proto(a) for a in response.architectures],
            optimize=list(response.optimize),
            proto=response,
        )


@dataclass(frozen=True)
class Worker:
    """A registered worker (`ListWorkers`)."""

    worker_id: str
    name: str
    alive: bool
    slots: int
    datasets: Tuple[str, ...]
    devices: Tuple[str, ...]
    tasks_in_hand: int
    last_seen_unix_ms: int
    proto: pb.WorkerInfo = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, worker: pb.WorkerInfo) -> "Worker":
        caps = worker.capabilities
        return cls(
            worker_id=worker.worker_id,
            name=worker.name,
            alive=worker.alive,
            slots=caps.slots,
            datasets=tuple(caps.datasets),
            devices=tuple(d.name or enum_name(pb.DeviceKind, d.kind, "DEVICE_KIND_") for d in caps.devices),
            tasks_in_hand=worker.tasks_in_hand,
            last_seen_unix_ms=worker.last_seen_unix_ms,
            proto=worker,
        )


@dataclass(frozen=True)
class TlsOptions:
    """TLS settings of a connection (PEM bytes; all None = the system's root certificates).

    ``server_name`` overrides the name checked against the certificate (tests, IP addresses).
    """

    root_certificates: Optional[bytes] = None
    private_key: Optional[bytes] = None
    certificate_chain: Optional[bytes] = None
    server_name: Optional[str] = None
