"""The messages to and from engine processes and Ray tasks: a job crosses whole."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import PurePosixPath

import pytest

from fetchcli.models import Expectation
from fetchcli.parallel.wire import Jobs, WireError, WireJob, frame
from tests.helpers import job


def test_a_job_crosses_the_wire_whole():
    original = dataclasses.replace(
        job("https://a.test/data.bin?x=1", line=7),
        expect=Expectation(path="d/data.bin", sha256="ab" * 32, size=3, meta={"k": "v"}),
        relpath=PurePosixPath("d/data.bin"),
        etag='"v1"',  # --update's: without it an engine or a shard asks without If-None-Match
    )
    wire = WireJob.of(original)
    assert wire.etag == '"v1"'
    assert pickle.loads(frame(Jobs([wire]))[4:]).jobs[0].to_job() == original


def test_a_url_that_does_not_parse_on_the_other_side_is_a_wire_error():
    with pytest.raises(WireError, match="did not parse"):
        WireJob("-", 1, "not a url").to_job()
