"""How backfill's and reconcile's worker processes start, and the heap of a process that has
built what it keeps (synctools.aws.procs); the region known without a boto3 session."""

from __future__ import annotations

import gc
import sys
import threading

import pytest

from synctools.aws import procs
from synctools.aws.session import Aws


@pytest.mark.skipif(sys.platform != "linux", reason="fork is chosen on Linux only")
def test_workers_are_forked_only_from_a_process_of_one_thread() -> None:
    # GIVEN this process running a second thread (which could hold a lock as the child forks)
    release = threading.Event()
    other = threading.Thread(target=release.wait, name="holder")
    other.start()
    try:
        # THEN workers are spawned
        assert procs.pool_context().get_start_method() == "spawn"
    finally:
        release.set()
        other.join()
    # AND a caller that says how gets it
    assert procs.pool_context("fork").get_start_method() == "fork"
    assert procs.pool_context("spawn").get_start_method() == "spawn"


def test_a_forked_child_runs_alone_when_this_process_does() -> None:
    if threading.active_count() != 1:
        pytest.skip(f"this test process runs {threading.active_count()} threads")
    ctx = procs.pool_context()
    assert ctx.get_start_method() == ("fork" if sys.platform == "linux" else "spawn")


def test_what_is_settled_is_given_back_to_the_collector_on_the_way_out() -> None:
    before = gc.get_freeze_count()
    kept = [[n] for n in range(10)]  # objects the collector tracks
    with procs.settled():
        assert gc.get_freeze_count() >= before + len(kept)
        gc.collect()  # a collection inside leaves the settled objects where they are
        assert gc.get_freeze_count() >= before + len(kept)
    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError), procs.settled():
        raise RuntimeError("an error inside")
    assert gc.get_freeze_count() == 0


def test_a_region_given_or_in_the_environment_needs_no_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    aws = Aws(region="eu-west-1")
    assert aws.region_name == "eu-west-1" and aws._session is None
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    env = Aws()
    assert env.region_name == "us-east-2" and env._session is None
    monkeypatch.setenv("AWS_REGION", "ap-south-1")  # AWS_REGION first, as the session takes it
    assert Aws().region_name == "ap-south-1"
    assert Aws(region="eu-west-1").region_name == "eu-west-1"
