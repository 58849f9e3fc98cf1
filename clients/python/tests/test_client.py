"""nat-client against a live coordinator with at least one worker that has the digits dataset.

    NAT_COORDINATOR=127.0.0.1:50051 python -m unittest discover -s clients/python/tests -v

`make test` runs this from worker/tests/python_client.rs, which starts the real coordinator and
a real worker. The tests fail (they do not skip) when NAT_COORDINATOR is unset.
"""

from __future__ import annotations

import hashlib
import io
import os
import unittest
import uuid
from pathlib import Path
from typing import List

import grpc

import nat_client
from nat_client import (
    Client,
    Event,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Progress,
)

REPO = Path(os.environ.get("NAT_REPO_ROOT", Path(__file__).resolve().parents[3]))


def coordinator() -> str:
    address = os.environ.get("NAT_COORDINATOR")
    if not address:
        raise AssertionError("set NAT_COORDINATOR=host:port of a running coordinator")
    return address.split("://")[-1].rstrip("/")


class ProtoInStep(unittest.TestCase):
    def test_stubs_were_generated_from_the_repository_proto(self) -> None:
        proto = REPO / "proto" / nat_client.PROTO_FILE
        digest = hashlib.sha256(proto.read_bytes()).hexdigest()
        self.assertEqual(
            nat_client.PROTO_SHA256,
            digest,
            f"the installed stubs are stale: reinstall nat-client (pip install {REPO}/clients/python)",
        )


class LiveCoordinator(unittest.TestCase):
    client: Client

    @classmethod
    def setUpClass(cls) -> None:
        cls.client = Client(coordinator(), timeout=20)
        cls.client.wait_ready(timeout=20)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.client.close()

    # === submit / get / list / cancel ===

    def test_submit_get_list_cancel(self) -> None:
        # No worker has CUDA, so the job stays queued until cancelled.
        job = self.client.submit_evaluate(
            ["darts-v2", "resnet-block"], "digits", seed=3, name="py: cancel me", device="cuda"
        )
        self.assertEqual((job.kind, job.state, job.dataset), ("evaluate", "queued", "digits"))
        self.assertEqual((job.name, job.tasks_total, job.budget_preset), ("py: cancel me", 2, "smoke"))
        self.assertEqual(len(job.architectures), 2)

        again = self.client.get_job(job.job_id)
        self.assertEqual((again.job_id, again.state), (job.job_id, "queued"))

        queued = [j.job_id for j in self.client.list_jobs(states=["queued"], limit=1000)]
        self.assertIn(job.job_id, queued)
        finished = [j.job_id for j in self.client.list_jobs(states=["succeeded", "failed"])]
        self.assertNotIn(job.job_id, finished)

        cancelled = self.client.cancel(job.job_id, reason="python client test")
        self.assertEqual(cancelled.state, "cancelled")
        self.assertTrue(cancelled.done)
        with self.assertRaises(FailedPrecondition) as caught:
            self.client.cancel(job.job_id)
        self.assertEqual(caught.exception.code, "FAILED_PRECONDITION")

        events = list(self.client.watch(job.job_id))
        self.assertTrue(events, "a cancelled job has events")
        self.assertTrue(events[-1].terminal)
        self.assertEqual(events[-1].state, "cancelled")
        result = self.client.result(job.job_id)
        self.assertEqual(result.state, "cancelled")
        self.assertTrue(all(a.accuracy is None for a in result.architectures))

    # === errors ===

    def test_invalid_input_is_invalid_argument_naming_the_field(self) -> None:
        with self.assertRaises(InvalidArgument) as caught:
            self.client.submit_evaluate(["darts-v2", "no-such-preset"], "digits")
        self.assertEqual(caught.exception.code, "INVALID_ARGUMENT")
        self.assertEqual(caught.exception.field, "architectures[1]", caught.exception.message)

        with self.assertRaises(InvalidArgument) as caught:
            self.client.submit_evaluate(["darts-v2"], "digits", budget="no-such-budget")
        self.assertIn("budget", caught.exception.field or "", caught.exception.message)

        with self.assertRaises(InvalidArgument) as caught:
            self.client.get_job("not an id")
        self.assertEqual(caught.exception.field, "job_id")

    def test_bad_input_refused_before_sending_names_the_field(self) -> None:
        with self.assertRaises(InvalidArgument) as caught:
            self.client.submit_evaluate(["darts-v2"], "digits", overrides={"epoch": 2})
        self.assertEqual(caught.exception.field, "budget.overrides.epoch")
        with self.assertRaises(InvalidArgument) as caught:
            self.client.submit_optimize(["darts-v2"], "digits", reward="nope")
        self.assertEqual(caught.exception.field, "optimize.reward")
        with self.assertRaises(InvalidArgument) as caught:
            self.client.list_jobs(states=["sleeping"])
        self.assertEqual(caught.exception.field, "states")

    def test_unknown_job_is_not_found(self) -> None:
        unknown = str(uuid.uuid4())
        for call in (self.client.get_job, self.client.result, self.client.cancel):
            with self.assertRaises(NotFound, msg=call.__name__) as caught:
                call(unknown)
            self.assertEqual(caught.exception.code, "NOT_FOUND")
        with self.assertRaises(NotFound):
            list(self.client.watch(unknown))
        # natctl's form of the address (NAT_COORDINATOR=http://host:port) works too.
        with Client(f"http://{coordinator()}/", timeout=20) as by_url:
            with self.assertRaises(NotFound):
                by_url.get_job(unknown)

    # === a real job, followed ===

    def test_watch_follows_a_real_job_to_its_result(self) -> None:
        job = self.client.submit_evaluate(["resnet-block"], "digits", seed=5, name="py: watch")
        plain = io.StringIO()
        finished = self.client.wait(job.job_id, progress=Progress(job, stream=plain, use_tqdm=False))
        self.assertEqual(finished.state, "succeeded", finished.error)
        self.assertIn(f"job {job.job_id}: succeeded", plain.getvalue())
        self.assertIn("task done: architecture 0, accuracy", plain.getvalue())

        events: List[Event] = list(self.client.watch(job.job_id))
        sequences = [e.sequence for e in events]
        self.assertTrue(all(a < b for a, b in zip(sequences, sequences[1:])), sequences)
        self.assertTrue(events[-1].terminal)
        self.assertEqual(events[-1].state, "succeeded")
        completed = [e for e in events if e.kind == "task_completed"]
        self.assertEqual(len(completed), 1)
        accuracy = completed[0].accuracy
        assert accuracy is not None
        self.assertTrue(0.0 <= accuracy <= 1.0)

        # Resuming after any event yields exactly the events after it.
        middle = len(events) // 2
        resumed = list(self.client.watch(job.job_id, after_sequence=events[middle].sequence))
        self.assertEqual([e.sequence for e in resumed], sequences[middle + 1 :])

        result = self.client.result(job.job_id)
        self.assertEqual((result.kind, result.state), ("evaluate", "succeeded"))
        self.assertEqual(len(result.architectures), 1)
        measured = result.architectures[0]
        self.assertEqual(measured.state, "succeeded")
        self.assertEqual(measured.accuracy, accuracy)
        self.assertGreater(measured.params or 0, 0)
        self.assertTrue(measured.genotype_darts)

        # The tqdm display over the same (finished) job.
        bar = io.StringIO()
        self.client.wait(job.job_id, progress=Progress(finished, stream=bar, use_tqdm=True))
        self.assertIn("1/1", bar.getvalue())

    def test_workers_lists_the_live_worker(self) -> None:
        workers = self.client.workers()
        digits = [w for w in workers if w.alive and "digits" in w.datasets]
        self.assertTrue(digits, workers)
        self.assertGreaterEqual(digits[0].slots, 1)

    # === reflection ===

    def test_reflection_v1alpha_lists_and_describes_the_services(self) -> None:
        from google.protobuf.descriptor_pool import DescriptorPool
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
            ProtoReflectionDescriptorDatabase,
        )

        with grpc.insecure_channel(coordinator()) as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            services = set(database.get_services())
            self.assertTrue(
                {"nat.v1.JobService", "nat.v1.WorkerService"} <= services, services
            )
            service = DescriptorPool(database).FindServiceByName("nat.v1.JobService")
            methods = {m.name for m in service.methods}
            local = {m.name for m in nat_client.pb.DESCRIPTOR.services_by_name["JobService"].methods}
            self.assertEqual(methods, local, "the coordinator serves the proto this client was built from")


if __name__ == "__main__":
    unittest.main()
