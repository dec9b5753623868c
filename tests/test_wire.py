"""The messages to and from engine processes and Ray tasks: a job crosses whole."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import PurePosixPath

import httpx

from fetchcli.models import Expectation, Recorded
from fetchcli.parallel.wire import Jobs, WireJob, frame
from tests.helpers import job


def test_a_job_crosses_the_wire_whole():
    original = dataclasses.replace(
        job("https://a.test/data.bin?x=1", line=7),
        expect=Expectation(path="d/data.bin", sha256="ab" * 32, size=3, meta={"k": "v"}),
        relpath=PurePosixPath("d/data.bin"),
        # --update's: without it an engine or a shard asks without If-None-Match
        recorded=Recorded('"v1"', 3, "cd" * 32),
    )
    wire = WireJob.of(original)
    assert wire.recorded == Recorded('"v1"', 3, "cd" * 32)
    assert pickle.loads(frame(Jobs([wire]))[4:]).jobs[0].to_job() == original


def test_a_job_crosses_with_its_url_parsed_and_is_not_parsed_again(monkeypatch):
    original = job("https://a.test/d%C3%A9j%C3%A0/x.bin?q=%20", line=3)
    payload = frame(Jobs([WireJob.of(original)]))[4:]

    def no_parsing(*args, **kwargs):
        raise AssertionError("an engine parsed a URL again")

    with monkeypatch.context() as patch:
        patch.setattr(httpx.URL, "__init__", no_parsing)
        arrived = pickle.loads(payload).jobs[0].to_job()
    assert arrived == original
    assert arrived.parsed.raw_path == b"/d%C3%A9j%C3%A0/x.bin?q=%20"
    assert arrived.parsed.raw_host == b"a.test"
