"""The per-host scheduler through the CLI, against several real loopback hosts (one FaultServer
each): the limits hold as the servers see them, a list grouped by host does not run one host at
a time, a paused host delays only its own URLs, and --per-host-rate spaces a host's requests;
in one process and with engine processes. Every assertion is on what the servers saw (counts,
order, overlap), never on how long the run took."""

from __future__ import annotations

import contextlib
import itertools
import statistics
from collections.abc import Iterator

import pytest

from tests.helpers import CLOCK_SLACK, cli
from tests.servers import FaultServer

HOSTS = 4
PROCESSES = pytest.mark.parametrize("processes", ["1", "2"])


@pytest.fixture(scope="module")
def hosts() -> Iterator[list[FaultServer]]:
    """Four loopback servers: four hosts to the scheduler (127.0.0.1:port each)."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(FaultServer()) for _ in range(HOSTS)]


def grouped(hosts: list[FaultServer], unique: str, per_host: int, delay: float) -> list[str]:
    """`per_host` slow URLs of each host, host after host: the order of a sitemap."""
    return [
        host.url(f"/slow/{unique}/{i}?delay={delay}") for host in hosts for i in range(per_host)
    ]


def run(hosts: list[FaultServer], processes: str, urls: list[str], *flags: str) -> None:
    """Fetch `urls` with the CLI; every one ok, and every server without an error."""
    for host in hosts:
        host.reset_stats()
    stdin = "\n".join(urls).encode()
    result = cli("get", "--no-save", "-P", processes, "--jsonl", "-", *flags, stdin=stdin)
    assert result.exit_code == 0, result.stderr
    assert len(result.records()) == len(urls)
    assert [host.take_errors() for host in hosts] == [[]] * len(hosts)


@PROCESSES
def test_per_host_holds_at_every_host(hosts, unique, processes):
    urls = grouped(hosts, unique, 10, 0.4)
    run(hosts, processes, urls, "-c", "16", "--per-host", "2")
    # Exactly the limit: reached (so the test can fail) and never passed, with two engines
    # too: each host is fetched by one of them (two engines with a host's URLs each would
    # overlap for over a second, whatever the difference in their start).
    assert [host.max_in_flight for host in hosts] == [2] * HOSTS


@PROCESSES
def test_a_list_grouped_by_host_runs_its_hosts_together(hosts, unique, processes):
    urls = grouped(hosts, unique, 6, 0.6)
    run(hosts, processes, urls, "-c", "4", "--per-host", "2")
    spans = [host.timeline(f"/slow/{unique}/") for host in hosts]
    assert all(len(span) == 6 for span in spans)
    # Every host had begun before any host was done: the last host of the list did not wait
    # for the first to finish (workers that wait on a busy host with its URL in hand would
    # all hold the first host's URLs, and run the list about one host at a time). With two
    # engines, a host alone in one is done after 3 x 0.6 s: the other engine had that long
    # to start.
    last_first_start = max(span[0][1] for span in spans)
    first_last_end = min(max(ended for *_, ended in span) for span in spans)
    assert last_first_start < first_last_end


def run_with_a_pause(
    hosts: list[FaultServer],
    unique: str,
    processes: str,
    mine: int,
    theirs: int,
    *flags: str,
    delay: float = 0.05,
) -> tuple[float, list[float], list[float]]:
    """Fetch the first host's URLs first (its first one answered 503 + Retry-After: 3), then
    `theirs` URLs of each other host, answered after `delay`. Return when the 503 left, when
    the paused host's other `mine` URLs began, and when the others' ended, as the servers
    saw them."""
    paused, *others = hosts
    asked_target = f"/retry-after/{unique}?fail=1&after=3&status=503"
    first = [paused.url(asked_target)] + [paused.url(f"/ok/{unique}/mine{i}") for i in range(mine)]
    rest = [h.url(f"/slow/{unique}/{i}?delay={delay}") for h in others for i in range(theirs)]
    run(hosts, processes, first + rest, *flags)
    (_, _, asked), *_ = paused.timeline("/retry-after/")
    mine_began = [began for _, began, _ in paused.timeline(f"/ok/{unique}/mine")]
    theirs_ended = [ended for h in others for *_, ended in h.timeline(f"/slow/{unique}/")]
    assert len(mine_began) == mine and len(theirs_ended) == theirs * len(others)
    return asked, mine_began, theirs_ended


@PROCESSES
def test_a_paused_host_delays_only_its_own_urls(hosts, unique, processes):
    # The paused host's URLs come first, as in a grouped list, one at a time (--per-host 1:
    # none is on the wire when the 503 comes); -c 4 would all be taken by them if they
    # waited in workers.
    flags = ("-c", "4", "--per-host", "1")
    asked, mine_began, theirs_ended = run_with_a_pause(
        hosts, unique, processes, 6, 6, *flags, delay=0.1
    )
    # The paused host started nothing until its pause was over, and the other hosts' URLs
    # were all done meanwhile, without waiting for it.
    assert min(mine_began) >= asked + 3 - CLOCK_SLACK
    assert max(theirs_ended) < asked + 3


@PROCESSES
def test_per_host_rate_spaces_each_hosts_requests(hosts, unique, processes):
    two = hosts[:2]
    urls = [h.url(f"/ok/{unique}/{i}") for i, h in itertools.product(range(5), two)]
    run(hosts, processes, urls, "-c", "8", "--per-host-rate", "5")
    for host in two:
        began = [began for _, began, _ in host.timeline(f"/ok/{unique}/")]
        assert len(began) == 5
        # 5 a second: 0.2 s apart, as the server saw them arrive; generous below, as a
        # request's head may take a while to arrive (the first one's connect), never less.
        gaps = [b - a for a, b in itertools.pairwise(began)]
        assert min(gaps) >= 0.1, gaps


@PROCESSES
def test_the_deadline_records_the_jobs_waiting_for_their_host(hosts, unique, processes):
    busy, paused = hosts[:2]
    hung = busy.url(f"/hang/{unique}")
    behind = [busy.url(f"/ok/{unique}/behind{i}") for i in range(3)]  # --per-host 1: waiting
    asked = paused.url(f"/retry-after/{unique}?fail=1&after=60&status=429")
    quiet = [paused.url(f"/ok/{unique}/quiet{i}") for i in range(2)]  # paused for 60 s
    urls = [hung, *behind, asked, *quiet]
    stdin = "\n".join(urls).encode()
    # A deadline well past the engines' start (a second or two on a loaded machine): the hung
    # and the paused URLs were sent by then, the others were waiting.
    result = cli("get", "--no-save", "-P", processes, "--per-host", "1", "--deadline", "4",
                 "--backoff-max", "60", "--jsonl", "-", stdin=stdin)  # fmt: skip
    assert result.exit_code == 1
    by_url = {r["url"]: r for r in result.records()}
    assert sorted(by_url) == sorted(urls)  # each once
    assert {r["error"] for r in by_url.values()} == {"deadline exceeded"}
    attempts = {url: by_url[url]["attempts"] for url in urls}
    assert attempts == {hung: 1, **dict.fromkeys(behind, 0), asked: 1, **dict.fromkeys(quiet, 0)}
    assert paused.timeline(f"/ok/{unique}/") == []  # nothing was sent to the paused host


@PROCESSES
def test_without_per_host_limits_a_paused_host_holds_up_no_other(hosts, unique, processes):
    # No --per-host: jobs are dealt to engines in small windows, not by host. The paused
    # host's URLs come first and outnumber the windows (-c 2: one worker, 4 jobs an engine);
    # waiting out the pause in the engines, they must not keep the other hosts' URLs out.
    asked, mine_began, theirs_ended = run_with_a_pause(hosts, unique, processes, 20, 4, "-c", "2")
    # The other hosts were all done while the pause lasted (that the pause holds is
    # test_a_paused_host_delays_only_its_own_urls's), and the paused host's URLs after it.
    assert max(theirs_ended) < asked + 3 < max(mine_began) + CLOCK_SLACK


def test_with_engines_a_host_alone_in_one_gets_the_whole_rate(hosts, unique):
    # --per-host puts all of a host's jobs in one engine: that engine is given the whole
    # --rate as soon as the coordinator sees where the work is (less a small share kept for
    # the idle engine), not the even half it starts with.
    host = hosts[0]
    urls = [host.url(f"/ok/{unique}/r{i}") for i in range(25)]
    run(hosts, "2", urls, "-c", "4", "--per-host", "2", "--rate", "10")
    began = sorted(began for _, began, _ in host.timeline(f"/ok/{unique}/r"))
    assert len(began) == 25
    # At 10 a second the last 20 starts take about 2 s; at an engine's half, 4 s.
    assert began[-1] - began[4] < 3.0
    # And never faster than asked (a head may arrive late, after its connect: generous).
    assert min(b - a for a, b in itertools.pairwise(began)) >= 0.05


def paused_first(paused: FaultServer, unique: str, mine: int, delay: float) -> list[str]:
    """The paused host's URLs: the first answered 503 + Retry-After: 1, then `mine` answered
    after `delay` (`/slow/UNIQUE/mineN`)."""
    first = [paused.url(f"/retry-after/{unique}?fail=1&after=1&status=503")]
    return first + [paused.url(f"/slow/{unique}/mine{i}?delay={delay}") for i in range(mine)]


@PROCESSES
def test_when_a_pause_ends_its_host_takes_turns_with_the_others(hosts, unique, processes):
    # No --per-host. While the first host is paused, its URLs wait (with -P 2, in the
    # engines, out of their windows) and the others run. When the pause ends, its URLs must
    # take turns with the others' still to come, not run first while every other host waits.
    paused, *others = hosts
    rest = [h.url(f"/slow/{unique}/{i}?delay=0.03") for i in range(60) for h in others]
    run(hosts, processes, paused_first(paused, unique, 120, 0.03) + rest, "-c", "4")
    (_, _, asked), *_ = paused.timeline("/retry-after/")
    mine = [began for _, began, _ in paused.timeline(f"/slow/{unique}/mine")]
    theirs = [began for h in others for _, began, _ in h.timeline(f"/slow/{unique}/")]
    # Those of its URLs on the wire before the 503 came back ran then; the rest waited.
    assert sum(t >= asked + 1 - CLOCK_SLACK for t in mine) >= 100
    # The others had work left when it ended (4 at a time, 180 x 0.03 s take 1.35 s), and
    # from a little after it, while the paused host's URLs ran, theirs kept starting too:
    # taking turns, 3 hosts of 4 get ~3/4 of the slots (~50 starts in 0.5 s), not none.
    later = asked + 1.2
    assert sum(later <= t < later + 0.5 for t in mine) > 5
    assert sum(later <= t < later + 0.5 for t in theirs) > 15


def in_flight_over_time(spans: list[tuple[float, float]], step: float = 0.01) -> list[int]:
    """How many of the (began, ended) spans were open, every `step` from the first start."""
    first, last = min(b for b, _ in spans), max(e for _, e in spans)
    moments = (first + step * k for k in range(int((last - first) / step)))
    return [sum(b <= t < e for b, e in spans) for t in moments]


@PROCESSES
def test_after_a_pause_its_host_gets_every_worker_once_the_others_are_done(
    hosts, unique, processes
):
    # No --per-host, -c 4. The other hosts' few URLs are all done during the pause; then only
    # the paused host has work, and all 4 workers must fetch it: with -P 2, both engines' (its
    # jobs dealt during the pause must not all have gone to one engine, with half of -c).
    paused, *others = hosts
    rest = [h.url(f"/ok/{unique}/{i}") for i in range(3) for h in others]
    run(hosts, processes, paused_first(paused, unique, 200, 0.05) + rest, "-c", "4")
    (_, _, asked), *_ = paused.timeline("/retry-after/")
    after = [(b, e) for _, b, e in paused.timeline(f"/slow/{unique}/mine") if b >= asked + 0.5]
    assert len(after) >= 150
    # Most of the time, 4 on the wire (one engine's alone: 2).
    assert statistics.median(in_flight_over_time(after)) == 4
