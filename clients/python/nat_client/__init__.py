"""Python client of the nat-orchestrator coordinator.

    from nat_client import Client

    with Client("127.0.0.1:50051") as nat:
        job = nat.submit_evaluate(["darts-v2", "resnet-block"], "digits", budget="smoke")
        nat.wait(job.job_id)                      # progress bar (tqdm) or lines
        for arch in nat.result(job.job_id).architectures:
            print(arch.index, arch.accuracy)

Errors are `NatError` subclasses, one per gRPC status code (`InvalidArgument`, `NotFound`,
`FailedPrecondition`, …). The generated messages are in ``nat_client.pb`` (package ``nat.v1``).
"""

from ._proto import PROTO_FILE, PROTO_SHA256
from ._proto.nat.v1 import nat_pb2 as pb
from ._proto.nat.v1 import nat_pb2_grpc as pb_grpc
from .client import BUDGET_FIELDS, DEFAULT_ADDRESS, Client
from .errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NatError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from .progress import Progress
from .types import (
    TERMINAL_STATES,
    ArchitectureResult,
    Event,
    Job,
    JobResult,
    TlsOptions,
    Worker,
)

__all__ = [
    "Aborted",
    "AlreadyExists",
    "ArchitectureResult",
    "BUDGET_FIELDS",
    "Cancelled",
    "Client",
    "DEFAULT_ADDRESS",
    "DeadlineExceeded",
    "Event",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "Job",
    "JobResult",
    "NatError",
    "NotFound",
    "PROTO_FILE",
    "PROTO_SHA256",
    "PermissionDenied",
    "Progress",
    "ResourceExhausted",
    "TERMINAL_STATES",
    "TlsOptions",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Worker",
    "pb",
    "pb_grpc",
]
