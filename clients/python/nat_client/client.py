"""`Client`: the coordinator's JobService over one gRPC channel."""

from __future__ import annotations

import functools
import time
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

import grpc

from ._proto.nat.v1 import nat_pb2 as pb
from ._proto.nat.v1 import nat_pb2_grpc as pb_grpc
from .errors import InvalidArgument, Unavailable, from_rpc_error
from .progress import Progress
from .types import Event, Job, JobResult, TlsOptions, Worker, job_state_name

T = TypeVar("T")
E = TypeVar("E")

#: The coordinator's default gRPC address.
DEFAULT_ADDRESS = "127.0.0.1:50051"

#: Budget override names (the fields of ``nat.v1.BudgetOverrides``).
BUDGET_FIELDS = frozenset(f.name for f in pb.BudgetOverrides.DESCRIPTOR.fields)

_SPACES: Dict[str, pb.SearchSpace] = {
    "nat": pb.SEARCH_SPACE_NAT,
    "nat++": pb.SEARCH_SPACE_NAT_PLUS_PLUS,
}
_REWARDS: Dict[str, pb.RewardMode] = {
    "proxy": pb.REWARD_MODE_PROXY,
    "supernet": pb.REWARD_MODE_SUPERNET,
}
_DEVICES: Dict[str, pb.DeviceKind] = {"cpu": pb.DEVICE_KIND_CPU, "cuda": pb.DEVICE_KIND_CUDA}
_SUPERNET_FIELDS = frozenset(f.name for f in pb.SupernetSettings.DESCRIPTOR.fields)

BudgetOverrides = Mapping[str, Union[int, float]]


def _rpc(method: Callable[..., T]) -> Callable[..., T]:
    """Turns a failed call's `grpc.RpcError` into the `NatError` of its status code."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return method(*args, **kwargs)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    return wrapper


class Client:
    """A connection to a coordinator's JobService.

    ``address`` is ``host:port``, or a URL as natctl takes it (``NAT_COORDINATOR``):
    ``http://host:port``, or ``https://host:port`` (TLS with the system's roots unless ``tls``
    says otherwise). ``tls`` (a `TlsOptions`, or True for the system's root
    certificates) makes the channel secure; ``token`` is sent as ``authorization: Bearer TOKEN``
    on every call. ``timeout`` (seconds) bounds each unary call; `watch` has no deadline.
    Use it as a context manager, or call `close`.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        tls: Union[TlsOptions, bool, None] = None,
        token: Optional[str] = None,
        timeout: float = 30.0,
    ) -> None:
        if address.startswith("https://"):
            address = address[len("https://") :]
            tls = True if tls is None else tls
        elif address.startswith("http://"):
            address = address[len("http://") :]
        address = address.rstrip("/")
        self.address = address
        self.timeout = timeout
        self._metadata: Tuple[Tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        if tls is None or tls is False:
            self._channel = grpc.insecure_channel(address)
        else:
            options = tls if isinstance(tls, TlsOptions) else TlsOptions()
            credentials = grpc.ssl_channel_credentials(
                root_certificates=options.root_certificates,
                private_key=options.private_key,
                certificate_chain=options.certificate_chain,
            )
            channel_options = []
            if options.server_name:
                channel_options.append(("grpc.ssl_target_name_override", options.server_name))
            self._channel = grpc.secure_channel(address, credentials, options=channel_options)
        # The generated stub is untyped; every call below is typed by its request and response.
        self._jobs: Any = pb_grpc.JobServiceStub(self._channel)  # type: ignore[no-untyped-call]

    # === connection ===

    def close(self) -> None:
        """Closes the channel; calls in flight fail."""
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Blocks until the channel is connected; raises `Unavailable` after ``timeout`` s."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise Unavailable(
                f"no coordinator answered at {self.address} within {timeout} s"
            ) from None

    # === submitting ===

    def submit_evaluate(
        self,
        architectures: Sequence[str],
        dataset: str,
        budget: str = "smoke",
        *,
        seed: int = 0,
        name: str = "",
        priority: int = 0,
        epochs: Optional[int] = None,
        overrides: Optional[BudgetOverrides] = None,
        dataset_shape: Optional[Tuple[int, int, int]] = None,
        device: Optional[str] = None,
    ) -> Job:
        """Submits an ``evaluate`` job: train and evaluate each architecture once.

        ``architectures``: preset names (``"darts-v2"``), canonical genotype JSON or DARTS
        strings. ``budget``: a preset (``"smoke"``, ``"small"``, ``"paper"``); ``epochs`` and
        ``overrides`` (any field of ``nat.v1.BudgetOverrides``) change it. ``dataset_shape`` is
        ``(channels, image_size, classes)``, needed only for a dataset that is not built in when
        no worker has reported it. ``device``: ``"cpu"`` or ``"cuda"`` (None = any).
        """
        request = self._submission(
            pb.JOB_KIND_EVALUATE,
            architectures,
            dataset,
            budget,
            seed=seed,
            name=name,
            priority=priority,
            epochs=epochs,
            overrides=overrides,
            dataset_shape=dataset_shape,
            device=device,
        )
        return self._submit(request)

    def submit_optimize(
        self,
        architectures: Sequence[str],
        dataset: str,
        budget: str = "smoke",
        *,
        seed: int = 0,
        name: str = "",
        priority: int = 0,
        epochs: Optional[int] = None,
        overrides: Optional[BudgetOverrides] = None,
        dataset_shape: Optional[Tuple[int, int, int]] = None,
        device: Optional[str] = None,
        space: str = "nat",
        reward: str = "proxy",
        iterations: int = 0,
        samples_per_iteration: int = 0,
        final_budget: Optional[str] = None,
        final_overrides: Optional[BudgetOverrides] = None,
        final_seeds: int = 0,
        max_cost_ratio: float = 0.0,
        control: str = "",
        derive_samples: int = 0,
        derive_argmax: bool = False,
        random_inputs: bool = False,
        policy_id: str = "",
        policy_profile: str = "",
        learning_rate: float = 0.0,
        entropy_weight: float = 0.0,
        max_staleness: int = 0,
        supernet: Optional[BudgetOverrides] = None,
    ) -> Job:
        """Submits an ``optimize`` (NAT) job: learn a policy that transforms the architectures.

        The shared arguments are those of `submit_evaluate`. ``space``: ``"nat"`` or
        ``"nat++"``; ``reward``: ``"proxy"`` or ``"supernet"`` (with ``supernet`` overriding
        fields of ``nat.v1.SupernetSettings``). ``final_budget``/``final_overrides``: the budget
        of the final evaluation, on ``final_seeds`` paired seeds. ``max_cost_ratio``: candidates
        costing more than this times the original are out. ``control``: ``"random"`` also
        derives from uniform samples. Zero or empty values take the coordinator's defaults
        (``nat.v1.OptimizeSpec`` documents each).
        """
        request = self._submission(
            pb.JOB_KIND_OPTIMIZE,
            architectures,
            dataset,
            budget,
            seed=seed,
            name=name,
            priority=priority,
            epochs=epochs,
            overrides=overrides,
            dataset_shape=dataset_shape,
            device=device,
        )
        spec = request.optimize
        spec.space = _choice("optimize.space", space, _SPACES)
        spec.reward = _choice("optimize.reward", reward, _REWARDS)
        spec.iterations = iterations
        spec.samples_per_iteration = samples_per_iteration
        spec.max_staleness = max_staleness
        spec.learning_rate = learning_rate
        spec.entropy_weight = entropy_weight
        spec.policy_profile = policy_profile
        spec.policy_id = policy_id
        spec.derive_argmax = derive_argmax
        spec.derive_samples = derive_samples
        spec.random_inputs = random_inputs
        spec.final_seeds = final_seeds
        spec.max_cost_ratio = max_cost_ratio
        spec.control = control
        if final_budget is not None or final_overrides:
            spec.final_budget.CopyFrom(
                _budget("optimize.final_budget", final_budget or "", None, final_overrides)
            )
        if supernet:
            for key, value in supernet.items():
                if key not in _SUPERNET_FIELDS:
                    raise InvalidArgument(
                        f"invalid optimize.supernet.{key}: not a field of nat.v1.SupernetSettings"
                    )
                try:
                    setattr(spec.supernet, key, value)
                except (TypeError, ValueError) as error:
                    raise InvalidArgument(f"invalid optimize.supernet.{key}: {error}") from None
        return self._submit(request)

    def _submission(
        self,
        kind: pb.JobKind,
        architectures: Sequence[str],
        dataset: str,
        budget: str,
        *,
        seed: int,
        name: str,
        priority: int,
        epochs: Optional[int],
        overrides: Optional[BudgetOverrides],
        dataset_shape: Optional[Tuple[int, int, int]],
        device: Optional[str],
    ) -> pb.SubmitJobRequest:
        if isinstance(architectures, str):
            raise InvalidArgument("invalid architectures: pass a list of strings, not one string")
        request = pb.SubmitJobRequest(
            kind=kind,
            architectures=list(architectures),
            dataset=dataset,
            budget=_budget("budget", budget, epochs, overrides),
            seed=seed,
            priority=priority,
            name=name,
        )
        if dataset_shape is not None:
            channels, image_size, classes = dataset_shape
            request.dataset_shape.CopyFrom(
                pb.DatasetShape(channels=channels, image_size=image_size, classes=classes)
            )
        if device is not None:
            request.requirements.device = _choice("requirements.device", device, _DEVICES)
        return request

    @_rpc
    def _submit(self, request: pb.SubmitJobRequest) -> Job:
        response = self._jobs.SubmitJob(request, timeout=self.timeout, metadata=self._metadata)
        return Job.from_proto(response.job)

    # === reading ===

    @_rpc
    def get_job(self, job_id: str) -> Job:
        """The job now."""
        request = pb.GetJobRequest(job_id=job_id)
        response = self._jobs.GetJob(request, timeout=self.timeout, metadata=self._metadata)
        return Job.from_proto(response.job)

    @_rpc
    def list_jobs(self, states: Iterable[str] = (), limit: int = 0) -> List[Job]:
        """Jobs, newest first; ``states`` (e.g. ``["running"]``) filters, ``limit`` 0 = 100."""
        try:
            values = [job_state_name(s) for s in states]
        except ValueError as error:
            raise InvalidArgument(f"invalid states: {error}") from None
        request = pb.ListJobsRequest(states=values, limit=limit)
        response = self._jobs.ListJobs(request, timeout=self.timeout, metadata=self._metadata)
        return [Job.from_proto(job) for job in response.jobs]

    @_rpc
    def result(self, job_id: str) -> JobResult:
        """The job's result so far (complete once the job succeeded)."""
        request = pb.GetJobResultRequest(job_id=job_id)
        response = self._jobs.GetJobResult(request, timeout=self.timeout, metadata=self._metadata)
        return JobResult.from_proto(response)

    @_rpc
    def workers(self) -> List[Worker]:
        """The registered workers."""
        request = pb.ListWorkersRequest()
        response = self._jobs.ListWorkers(request, timeout=self.timeout, metadata=self._metadata)
        return [Worker.from_proto(worker) for worker in response.workers]

    # === following ===

    def watch(self, job_id: str, after_sequence: int = 0) -> Iterator[Event]:
        """The job's events after ``after_sequence`` (0 = from the start), then live ones.

        The generator ends after the event that finishes the job; closing it early (``break``)
        hangs up. Errors (an unknown job: `NotFound`) are raised when iterating.
        """
        request = pb.WatchJobRequest(job_id=job_id, after_sequence=after_sequence)
        stream = self._jobs.WatchJob(request, metadata=self._metadata)
        try:
            for event in stream:
                yield Event.from_proto(event)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            stream.cancel()

    def wait(self, job_id: str, *, progress: Union[bool, Progress] = True) -> Job:
        """Follows the job with `watch` until it is finished; returns the finished job.

        ``progress``: True shows a `Progress` display (a tqdm bar when tqdm is installed, else
        lines on standard error), False nothing; or pass your own `Progress`.
        """
        display: Optional[Progress]
        if isinstance(progress, Progress):
            display = progress
        elif progress:
            display = Progress(self.get_job(job_id))
        else:
            display = None
        last = 0
        try:
            while True:
                for event in self.watch(job_id, after_sequence=last):
                    last = event.sequence
                    if display is not None:
                        display.update(event)
                job = self.get_job(job_id)
                if job.done:
                    return job
                # The stream ended before the job did (the coordinator restarted): resume.
                time.sleep(0.5)
        finally:
            if display is not None:
                display.close()

    # === changing ===

    @_rpc
    def cancel(self, job_id: str, reason: str = "") -> Job:
        """Cancels a queued or running job; a finished one is `FailedPrecondition`."""
        request = pb.CancelJobRequest(job_id=job_id, reason=reason)
        response = self._jobs.CancelJob(request, timeout=self.timeout, metadata=self._metadata)
        return Job.from_proto(response.job)


def _budget(
    field: str, preset: str, epochs: Optional[int], overrides: Optional[BudgetOverrides]
) -> pb.BudgetSpec:
    """A BudgetSpec; an unknown override name is `InvalidArgument` naming it."""
    spec = pb.BudgetSpec(preset=preset)
    values = dict(overrides or {})
    if epochs is not None:
        values["epochs"] = epochs
    for key, value in values.items():
        if key not in BUDGET_FIELDS:
            raise InvalidArgument(
                f"invalid {field}.overrides.{key}: not a field of nat.v1.BudgetOverrides"
            )
        try:
            setattr(spec.overrides, key, value)
        except (TypeError, ValueError) as error:
            raise InvalidArgument(f"invalid {field}.overrides.{key}: {error}") from None
    return spec


def _choice(field: str, value: str, choices: Mapping[str, E]) -> E:
    try:
        return choices[value]
    except KeyError:
        names = ", ".join(sorted(choices))
        raise InvalidArgument(f"invalid {field}: {value!r} is not one of {names}") from None
