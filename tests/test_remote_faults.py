"""RemotePool against scripted OpenAI-compatible servers over real HTTP on loopback: the faults a healthy llama.cpp
server never shows on demand (5xx, malformed and truncated streams, stalls), retries with backoff, health checks,
the queue's order under a policy, held tokens of a stopped agent. (The same pool against the real
`llama_cpp.server` is in test_remote.py.)"""

from __future__ import annotations

import os
import threading
import time

import pytest
from aiosh.kernel.config import BackendSettings, ConfigError
from aiosh.kernel.remote import RemotePool, api_key_for
from aiosh.kernel.requests import GenRequest, SchedInfo
from aiosh.kernel.scheduler import load_policy

from tests.servers import (
    ALIAS,
    ScriptedServer,
    chunk,
    free_port,
    send_error,
    send_event,
    start_events,
    stream_words,
)

pytestmark = [pytest.mark.timeout(60)]


def settings(url: str, **kw) -> BackendSettings:
    base = dict(base_url=url, model=ALIAS, max_concurrent=2, timeout_s=5.0, connect_timeout_s=1.0, retries=2,
                backoff_s=0.05, health_interval_s=0.1)
    return BackendSettings(**{**base, **kw})


def pool_of(entries: dict[str, BackendSettings], policy: str = "fifo") -> RemotePool:
    return RemotePool(ALIAS, entries, load_policy(policy)).start()


@pytest.fixture
def servers():
    made: list[ScriptedServer] = []

    def make(behaviour, **kw) -> ScriptedServer:
        s = ScriptedServer(behaviour, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def pools():
    made: list[RemotePool] = []

    def make(*args, **kw) -> RemotePool:
        p = pool_of(*args, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def ask(pool: RemotePool, text: str = "hi", **kw) -> GenRequest:
    return GenRequest(messages=[{"role": "user", "content": text}], max_tokens=16, **kw)


def test_a_clean_stream_streams_counts_and_times(servers, pools):
    srv = servers(stream_words(["Hel", "lo", " there"], delay=0.02))
    pool = pools({"a": settings(srv.url)})
    h = pool.submit(ask(pool, sched=SchedInfo(owner=7)))
    chunks = list(h)
    r = h.wait(10)
    assert chunks == ["Hel", "lo", " there"] and r.text == "Hello there"
    assert (r.finish_reason, r.error, r.completion_tokens, r.backend) == ("eos", None, 3, "a")
    assert r.usage_estimated  # the server reported no usage
    assert 0 < r.t_submit <= r.t_admit <= r.t_first <= r.t_end
    body = srv.requests[0]
    assert body["model"] == ALIAS and body["stream"] is True and body["max_tokens"] == 16
    assert body["messages"] == [{"role": "user", "content": "hi"}] and body["top_k"] == 40


def test_usage_from_the_server_replaces_the_estimate(servers, pools):
    def run(h, body):
        start_events(h)
        send_event(h, chunk("a"))
        send_event(h, chunk(finish="length"))
        send_event(h, '{"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [], '
                      '"usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}}')
        send_event(h, "[DONE]")

    pool = pools({"a": settings(servers(run).url)})
    steps = []
    pool.add_step_listener(steps.append)
    r = pool.submit(ask(pool, sched=SchedInfo(owner=3))).wait(10)
    assert (r.finish_reason, r.prompt_tokens, r.completion_tokens, r.usage_estimated) == ("length", 11, 2, False)
    sampled = [o for rec in steps for o in rec.sampled]
    prefilled = [p for rec in steps for p in rec.prefilled]
    assert len(sampled) == 2 and all(o[0] == 3 for o in sampled)  # one chunk seen + one more the usage counted
    assert prefilled == [(3, r.prompt_tokens and prefilled[0][1], 11)]


def test_503_then_ok_is_retried_and_the_server_comes_back(servers, pools):
    calls = {"n": 0}

    def flaky(h, body):
        calls["n"] += 1
        if calls["n"] == 1:
            send_error(h, 503, "loading model")
        else:
            stream_words(["ok"])(h, body)

    pool = pools({"a": settings(servers(flaky).url)})
    r = pool.submit(ask(pool)).wait(10)
    assert (r.error, r.text) == (None, "ok")
    row = pool.backend_stats()[0]
    assert row.retries == 1 and row.healthy and row.last_error == "HTTP 503: loading model"


@pytest.mark.parametrize("behaviour, message", [
    (lambda h, b: send_error(h, 500, "boom"), "HTTP 500: boom"),
    (lambda h, b: (start_events(h), send_event(h, "{not json"), send_event(h, "[DONE]")), "malformed stream"),
    (stream_words([], finish=None), "stream ended without a finish reason"),
])
def test_persistent_faults_fail_after_bounded_retries(servers, pools, behaviour, message):
    srv = servers(behaviour)
    pool = pools({"a": settings(srv.url, retries=2)})
    t0 = time.monotonic()
    r = pool.submit(ask(pool)).wait(20)
    assert r.finish_reason == "error" and r.error.startswith(f"backend a: {message}")
    assert r.error.endswith("(3 attempts)") and "\n" not in r.error
    assert len(srv.requests) == 3
    assert time.monotonic() - t0 >= 0.05 + 0.1  # backoff 0.05 then 0.1 (health checks pass in between)


def test_a_stream_cut_after_tokens_is_an_error_not_a_retry(servers, pools):
    srv = servers(stream_words(["one", " two", " three"], finish=None, done=False))
    pool = pools({"a": settings(srv.url)})
    h = pool.submit(ask(pool))
    got = list(h)
    r = h.wait(10)
    assert "".join(got) == "one two three"  # what arrived was delivered, once
    assert r.error == "backend a: stream ended without a finish reason after 3 tokens"
    assert len(srv.requests) == 1 and not pool.backend_stats()[0].healthy


def test_a_stall_times_out(servers, pools):
    gate = threading.Event()

    def stall(h, body):
        start_events(h)
        send_event(h, chunk("x"))
        gate.wait(10)

    srv = servers(stall)
    pool = pools({"a": settings(srv.url, timeout_s=0.5, retries=0)})
    r = pool.submit(ask(pool)).wait(10)
    gate.set()
    assert r.error == "backend a: timed out after 0.5s after 1 tokens"


def test_connection_refused_goes_to_the_healthy_replica(servers, pools):
    good = servers(stream_words(["fine"]))
    dead = f"http://127.0.0.1:{free_port()}/v1"
    pool = pools({"dead": settings(dead), "good": settings(good.url)})
    results = [pool.submit(ask(pool)).wait(10) for _ in range(4)]
    assert all(r.error is None and r.backend == "good" for r in results)
    rows = {row.name: row for row in pool.backend_stats()}
    assert not rows["dead"].healthy and rows["dead"].last_error == "connection refused"
    assert rows["good"].healthy and rows["good"].requests == 4


def test_no_healthy_server_is_an_error_after_the_retries(pools):
    pool = pools({"dead": settings(f"http://127.0.0.1:{free_port()}/v1", retries=1)})
    r = pool.submit(ask(pool)).wait(10)
    assert r.error == "backend dead: connection refused (2 attempts)"


def test_a_client_error_is_not_retried(servers, pools):
    srv = servers(lambda h, b: send_error(h, 400, "prompt too long"))
    pool = pools({"a": settings(srv.url)})
    r = pool.submit(ask(pool)).wait(10)
    assert r.error == "backend a: HTTP 400: prompt too long" and len(srv.requests) == 1
    assert pool.backend_stats()[0].healthy


def test_the_key_comes_from_the_named_variable(servers, pools, monkeypatch):
    seen = []

    def run(h, body):
        seen.append(h.headers.get("Authorization"))
        stream_words(["k"])(h, body)

    srv = servers(run)
    monkeypatch.setenv("AIOSH_TEST_KEY", "sekrit")
    pool = pools({"a": settings(srv.url, api_key_env="AIOSH_TEST_KEY")})
    assert pool.submit(ask(pool)).wait(10).error is None
    assert seen == ["Bearer sekrit"]
    monkeypatch.delenv("AIOSH_TEST_KEY")
    with pytest.raises(ConfigError, match=r"\[backends.a\] api_key_env: environment variable AIOSH_TEST_KEY "
                                          r"is not set"):
        api_key_for("a", settings(srv.url, api_key_env="AIOSH_TEST_KEY"))
    assert "AIOSH_TEST_KEY" not in os.environ


def test_the_queue_is_ordered_by_the_policy(servers, pools):
    """One slot: while the first request runs, three wait; `priority` admits them by nice, not by arrival."""
    release = threading.Event()

    def run(h, body):
        if body["messages"][0]["content"] == "first":
            start_events(h)
            send_event(h, chunk("..."))
            release.wait(10)
            send_event(h, chunk(finish="stop"))
            send_event(h, "[DONE]")
        else:
            stream_words(["ok"])(h, body)

    srv = servers(run)
    pool = pools({"a": settings(srv.url, max_concurrent=1)}, policy="priority")
    first = pool.submit(ask(pool, "first", sched=SchedInfo(owner=1)))
    deadline = time.monotonic() + 5
    while not srv.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    later = [pool.submit(ask(pool, f"nice {n}", sched=SchedInfo(owner=10 + i, nice=n)))
             for i, n in enumerate((10, 0, -5))]
    time.sleep(0.2)
    assert len(srv.requests) == 1 and sum(1 for s in pool.seqs() if s.slot is None) == 3
    release.set()
    for h in (first, *later):
        assert h.wait(10).error is None
    assert [b["messages"][0]["content"] for b in srv.requests] == ["first", "nice -5", "nice 0", "nice 10"]


def test_a_stopped_agents_tokens_are_held_until_it_continues(servers, pools):
    srv = servers(stream_words([f"w{i} " for i in range(6)], delay=0.1))
    pool = pools({"a": settings(srv.url)})
    sched = SchedInfo(owner=5)
    h = pool.submit(ask(pool, sched=sched))
    first = h.pipe.read(5)
    sched.stopped = True
    time.sleep(0.9)  # the other five words arrive from the server meanwhile
    assert h.n_generated == 6 and not h.pipe.has_data  # received and counted, not delivered
    sched.stopped = False
    pool.wake()
    rest = "".join(h)
    assert first + rest == "".join(f"w{i} " for i in range(6))


def test_an_unhealthy_replica_is_skipped_until_a_health_check_passes(servers, pools):
    sick = {"on": True}

    def flaky(h, body):
        if sick["on"]:
            send_error(h, 502, "bad gateway")
        else:
            stream_words(["back"])(h, body)

    bad = servers(flaky)
    good = servers(stream_words(["good"]))
    pool = pools({"bad": settings(bad.url, max_concurrent=4), "good": settings(good.url, max_concurrent=1)})
    first = pool.submit(ask(pool)).wait(10)  # least loaded is "bad" (4 slots): 502, retried on "good"
    assert (first.error, first.text, first.backend) == (None, "good", "good")
    bad.health_ok = False
    n_bad = len(bad.requests)
    for _ in range(3):
        assert pool.submit(ask(pool)).wait(10).backend == "good"
    assert len(bad.requests) == n_bad  # skipped, though it has more free slots
    time.sleep(0.4)  # health checks every 0.1 s: they fail
    row = {r.name: r for r in pool.backend_stats()}["bad"]
    assert not row.healthy and row.last_error == "HTTP 503: unhealthy" and row.checked > 0
    sick["on"], bad.health_ok = False, True
    deadline = time.monotonic() + 5
    while not pool.backend_stats()[0].healthy and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pool.backend_stats()[0].healthy
    assert pool.submit(ask(pool)).wait(10).backend == "bad"  # back in rotation, and the least loaded


def test_switching_the_policy_reaches_the_pool(servers, pools):
    pool = pools({"a": settings(servers(stream_words(["x"])).url)})
    pool.set_policy(load_policy("rr"))
    assert pool.submit(ask(pool)).wait(10).error is None
    assert pool.scheduler.policy.name == "rr"
