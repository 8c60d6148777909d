"""The openai backend against a real HTTP server that speaks the chat-completions API."""

from __future__ import annotations

import json
import logging
import threading
import time
from email.utils import formatdate

import pytest

from dartkit.config import BackendConfig, DecodingConfig
from dartkit.generate.base import Backend, BackendError
from dartkit.generate.cache import GenerationCache, generate_cached
from dartkit.generate.openai_backend import PLACEHOLDER_API_KEY, OpenAIBackend, _retry_after_s
from dartkit.generate.spec import parse_spec

# tests/ holds servers.py, shared by every test that needs an OpenAI-compatible endpoint.
from servers import (
    FakeOpenAIServer,
    Reply,
    completion,
    conversations,
    echo,
    error_body,
    keyword_teacher,
    openai_server,
    reply,
    scripted,
)

KEY_ENV = "DARTKIT_TEST_OPENAI_KEY"
SECRET = "sk-test-0123456789abcdefSECRET"
GREEDY = DecodingConfig(max_new_tokens=32)


def make_backend(base_url: str, **cfg) -> OpenAIBackend:
    cfg.setdefault("api_key_env", KEY_ENV)
    cfg.setdefault("timeout_s", 5.0)
    cfg.setdefault("max_retries", 3)
    # Tiny backoff: the tests check that retries happen, not how long they wait.
    return OpenAIBackend(parse_spec(f"openai:fake-model@{base_url}"), BackendConfig(**cfg), backoff_s=0.01)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SECRET


def run_all(backend: OpenAIBackend, convs, decoding=GREEDY) -> dict[int, str]:
    out: dict[int, str] = {}
    for i, text in backend.generate(convs, decoding):
        assert i not in out, f"index {i} yielded twice"
        out[i] = text
    return out


def worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "dartkit-openai"]


def test_every_index_gets_its_own_answer():
    prompts = [f"prompt number {i}" for i in range(12)]
    with FakeOpenAIServer(echo) as server:
        backend = make_backend(server.base_url, concurrency=4)
        assert isinstance(backend, Backend)
        results = run_all(backend, conversations(prompts))
        backend.close()
    assert results == dict(enumerate(prompts))
    assert server.attempts == 12
    assert not worker_threads()


def test_keyword_teacher_answers_by_content():
    with openai_server(keyword_teacher("bomb")) as url:
        backend = make_backend(url)
        results = run_all(backend, conversations(["how to build a BOMB", "how to bake bread"]))
    assert results[0].endswith("Conclusion: YES")
    assert results[1].endswith("Conclusion: NO")


def test_key_is_sent_as_bearer_token_and_decoding_is_mapped():
    sampling = DecodingConfig(max_new_tokens=17, temperature=0.7, top_p=0.9, seed=42)
    with FakeOpenAIServer(echo) as server:
        backend = make_backend(server.base_url, concurrency=1)
        run_all(backend, conversations(["a"]), GREEDY)
        run_all(backend, conversations(["b"]), sampling)
    greedy_req, sampled_req = server.requests
    assert greedy_req.headers["authorization"] == f"Bearer {SECRET}"
    assert greedy_req.path == "/v1/chat/completions"
    assert greedy_req.json["model"] == "fake-model"
    assert greedy_req.json["messages"] == [{"role": "user", "content": "a"}]
    assert greedy_req.json["max_tokens"] == 32
    assert greedy_req.json["temperature"] == 0
    assert "seed" not in greedy_req.json
    assert sampled_req.json["max_tokens"] == 17
    assert sampled_req.json["temperature"] == 0.7
    assert sampled_req.json["top_p"] == 0.9
    assert sampled_req.json["seed"] == 42


def test_null_content_is_asked_again_then_marked_filtered(tmp_path):
    with FakeOpenAIServer(lambda req: None) as server:
        backend = make_backend(server.base_url)
        cache = GenerationCache(tmp_path / "cache.jsonl")
        texts, keys = generate_cached(backend, conversations(["x"]), GREEDY, cache)
        assert server.attempts == 1 + backend.null_retries == 3  # bounded
    assert texts == [""]
    assert cache.info(keys[0])["finish"] == "filtered"
    # The mark is on disk: a rerun serves it marked, without asking again.
    assert GenerationCache(tmp_path / "cache.jsonl").info(keys[0])["finish"] == "filtered"


def test_a_null_reply_that_succeeds_on_retry_is_a_normal_answer():
    with FakeOpenAIServer(scripted([None], then=lambda req: "Conclusion: NO")) as server:
        results = run_all(make_backend(server.base_url), conversations(["x"]))
    assert server.attempts == 2
    assert results == {0: "Conclusion: NO"} and results[0].finish == "stop"


def test_length_cut_answers_are_marked_truncated_and_not_retried(tmp_path):
    with FakeOpenAIServer(lambda req: reply("The answer depends on", "length")) as server:
        cache = GenerationCache(tmp_path / "cache.jsonl")
        texts, keys = generate_cached(make_backend(server.base_url), conversations(["x"]), GREEDY, cache)
        assert server.attempts == 1
    assert texts == ["The answer depends on"]
    assert cache.info(keys[0])["finish"] == "truncated"


def test_server_model_and_fingerprint_are_recorded(tmp_path):
    with openai_server(lambda req: reply("Conclusion: YES", fingerprint="fp_44709d6fcb")) as url:
        cache = GenerationCache(tmp_path / "cache.jsonl")
        _, keys = generate_cached(make_backend(url), conversations(["x"]), GREEDY, cache)
    assert cache.info(keys[0]) == {"served_model": "fake-model-2024", "system_fingerprint": "fp_44709d6fcb"}
    record = json.loads((tmp_path / "cache.jsonl").read_text())
    assert record["served_model"] == "fake-model-2024" and record["system_fingerprint"] == "fp_44709d6fcb"


def test_a_server_change_within_one_cache_is_reported(tmp_path, caplog):
    with FakeOpenAIServer(lambda req: reply("Conclusion: YES", fingerprint="fp_old")) as server:
        backend = make_backend(server.base_url)
        generate_cached(backend, conversations(["first"]), GREEDY, GenerationCache(tmp_path / "c.jsonl"))
        # The provider swaps the model behind the same name between two runs sharing a cache.
        server.handler = lambda req: reply("Conclusion: NO", model="fake-model-2025", fingerprint="fp_new")
        cache = GenerationCache(tmp_path / "c.jsonl")
        with caplog.at_level(logging.WARNING):
            generate_cached(backend, conversations(["first", "second"]), GREEDY, cache)
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    for value in ("fake-model-2024", "fp_old", "fake-model-2025", "fp_new"):
        assert value in warnings
    assert cache.served_changes == [
        {
            "model": backend.spec,
            "old": {"served_model": "fake-model-2024", "system_fingerprint": "fp_old"},
            "new": {"served_model": "fake-model-2025", "system_fingerprint": "fp_new"},
        }
    ]


def test_eval_metrics_count_truncated_and_filtered_answers_and_server_versions(tmp_path):
    from dartkit.config import EvalConfig
    from dartkit.data.prepare import prepare_data
    from dartkit.stages import evaluate

    prepare_data(tmp_path / "data", suite="demo")
    answers = iter(
        [reply("Conclusion: YES"), reply("Analysis: it depends on", "length")]
        + [reply(None)] * 3
        + [reply(None, refusal="I can't help with that.")]
        + [reply("Conclusion: NO", fingerprint="fp_b")] * 3
    )
    with FakeOpenAIServer(lambda req: next(answers)) as server:
        cfg = EvalConfig(
            model=f"openai:fake-model@{server.base_url}",
            data=tmp_path / "data",
            out=tmp_path / "eval",
            limit=5,
            backend=BackendConfig(api_key_env=KEY_ENV, concurrency=1),
            bootstrap_samples=100,
        )
        metrics = evaluate.run(cfg)
    assert metrics["n"] == 5
    assert metrics["n_truncated"] == 1 and metrics["n_filtered"] == 1 and metrics["n_refused"] == 1
    assert {(v["system_fingerprint"], v["n"]) for v in metrics["served_versions"]} == {
        ("fp_a", 4),
        ("fp_b", 1),
    }
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert on_disk["n_truncated"] == 1 and on_disk["n_filtered"] == 1 and on_disk["n_refused"] == 1
    gens = [json.loads(line) for line in (tmp_path / "eval" / "generations.jsonl").read_text().splitlines()]
    assert sorted(str(g["finish"]) for g in gens) == ["None", "None", "filtered", "refused", "truncated"]
    assert "I can't help with that." in [g["text"] for g in gens]
    assert all(g["served_model"] == "fake-model-2024" for g in gens)


def test_429_and_500_are_retried_until_success():
    handler = scripted(
        [
            (429, error_body("Rate limit reached", "rate_limit_error")),
            (500, error_body("internal error", "server_error")),
            (503, "upstream unavailable"),
            "finally",
        ]
    )
    with FakeOpenAIServer(handler) as server:
        results = run_all(make_backend(server.base_url, max_retries=3), conversations(["q"]))
    assert results == {0: "finally"}
    assert server.attempts == 4


def test_retries_are_ours_not_the_sdks():
    # max_retries=0 must mean one attempt: the SDK's own retry loop is switched off.
    with (
        FakeOpenAIServer(scripted([(429, error_body("slow down"))])) as server,
        pytest.raises(BackendError, match="gave up after 1 attempt"),
    ):
        run_all(make_backend(server.base_url, max_retries=0), conversations(["q"]))
    assert server.attempts == 1


def test_retry_after_header_is_honoured():
    handler = scripted([(429, {"Retry-After": "1"}, error_body("slow down")), "ok"])
    with FakeOpenAIServer(handler) as server:
        assert run_all(make_backend(server.base_url), conversations(["q"])) == {0: "ok"}
    first, second = server.requests
    # The computed backoff is ~0.01 s; only the header explains a wait of about a second.
    assert second.received_at - first.received_at >= 0.9


def test_retry_after_is_capped():
    handler = scripted([(429, {"Retry-After": "3600"}, error_body("come back in an hour")), "ok"])
    with FakeOpenAIServer(handler) as server:
        backend = OpenAIBackend(
            f"openai:m@{server.base_url}",
            BackendConfig(api_key_env=KEY_ENV),
            backoff_s=0.01,
            max_retry_after_s=0.05,
        )
        start = time.monotonic()
        assert run_all(backend, conversations(["q"])) == {0: "ok"}
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    ("status", "hint"),
    [(401, "authentication failed"), (403, "permission denied"), (404, "not found"), (400, "bad request")],
)
def test_client_errors_fail_at_once_without_leaking_the_key(status, hint):
    # A careless server echoes the key back; it must not reach the error message.
    body = error_body(f"Incorrect API key provided: {SECRET}", "invalid_request_error", "invalid_api_key")
    with FakeOpenAIServer(lambda req: (status, body)) as server:
        backend = make_backend(server.base_url, max_retries=5)
        with pytest.raises(BackendError) as info:
            run_all(backend, conversations(["q"]))
    assert server.attempts == 1
    message = str(info.value)
    assert f"HTTP {status}" in message
    assert hint in message
    assert server.base_url in message and "fake-model" in message
    assert SECRET not in message and "0123456789abcdef" not in message
    assert "Traceback" not in message and "\n" not in message
    # Nothing chained onto the error either: the SDK's exception holds the request headers.
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert SECRET not in repr(backend) and SECRET not in str(backend.identity())
    assert backend.identity() == {"backend": "openai", "model": "fake-model", "base_url": server.base_url}


def test_401_message_names_the_key_variable():
    with (
        openai_server(lambda req: (401, error_body("bad key"))) as url,
        pytest.raises(BackendError, match=f"\\${KEY_ENV}"),
    ):
        run_all(make_backend(url), conversations(["q"]))


def test_key_stays_out_of_logs(caplog):
    handler = scripted([(500, error_body(f"oops {SECRET}")), "ok"])
    with caplog.at_level(logging.DEBUG), openai_server(handler) as url:
        run_all(make_backend(url), conversations(["q"]))
    assert "retry 1/3" in caplog.text
    assert SECRET not in caplog.text


def test_concurrency_is_bounded():
    delay = 0.2
    with FakeOpenAIServer(echo, delay_s=delay) as server:
        backend = make_backend(server.base_url, concurrency=3)
        results = run_all(backend, conversations([str(i) for i in range(9)]))
    assert len(results) == 9
    # max_in_flight >= 2 already proves requests overlapped; no wall-clock bound on a shared machine.
    assert 2 <= server.max_in_flight <= 3


def test_timeouts_are_retried_then_fail():
    with FakeOpenAIServer(echo, delay_s=2.0) as server:
        backend = make_backend(server.base_url, timeout_s=0.2, max_retries=2)
        with pytest.raises(
            BackendError, match=r"gave up after 3 attempt\(s\); last error: timed out after 0.2 s"
        ):
            run_all(backend, conversations(["q"]))
    assert server.attempts == 3


def test_connection_errors_are_retried_then_fail():
    with FakeOpenAIServer() as server:
        url = server.base_url
    # The server is gone now: nothing listens on its port.
    with pytest.raises(BackendError, match="gave up after 2 attempt.*connection failed"):
        run_all(make_backend(url, max_retries=1), conversations(["q"]))


def test_results_before_a_failure_stay_yielded():
    def handler(req):
        text = req["messages"][-1]["content"]
        return (500, error_body("model crashed")) if text == "bad" else text

    seen = []
    with FakeOpenAIServer(handler) as server:
        backend = make_backend(server.base_url, concurrency=1, max_retries=1)
        with pytest.raises(BackendError, match="HTTP 500: model crashed"):
            for item in backend.generate(conversations(["good", "bad", "never"]), GREEDY):
                seen.append(item)
    assert seen == [(0, "good")]
    assert server.attempts == 3  # good, bad, bad again; "never" was not sent
    assert not worker_threads()


def test_stopping_early_does_not_wait_for_requests_in_flight():
    # The first answer is instant; every other request would take 30 s.
    handler = scripted(["first"], then=lambda req: Reply(200, completion("slow"), delay_s=30))
    with FakeOpenAIServer(handler) as server:
        backend = make_backend(server.base_url, concurrency=2, timeout_s=60)
        start = time.monotonic()
        gen = backend.generate(conversations([str(i) for i in range(20)]), GREEDY)
        first = next(gen)
        gen.close()
        elapsed = time.monotonic() - start
        assert first[1] == "first"
        assert not worker_threads()
        assert server.attempts <= 3
        backend.close()
    assert elapsed < 5


def test_close_is_idempotent_and_final():
    with openai_server() as url:
        backend = make_backend(url)
        backend.close()
        backend.close()
        with pytest.raises(BackendError, match="closed"):
            run_all(backend, conversations(["q"]))


def test_empty_batch_sends_nothing():
    with FakeOpenAIServer() as server:
        assert run_all(make_backend(server.base_url), []) == {}
    assert server.attempts == 0


def test_missing_key_uses_placeholder_and_warns_only_for_remote_urls(monkeypatch, caplog):
    monkeypatch.delenv(KEY_ENV)
    with caplog.at_level(logging.WARNING, logger="dartkit.generate.openai_backend"):
        OpenAIBackend("openai:deepseek-chat@https://api.deepseek.com/v1", BackendConfig(api_key_env=KEY_ENV))
    assert len(caplog.records) == 1
    assert KEY_ENV in caplog.text and "\n" not in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING), FakeOpenAIServer(echo) as server:
        backend = make_backend(server.base_url)
        assert run_all(backend, conversations(["hi"])) == {0: "hi"}
    assert not caplog.records
    assert server.requests[0].headers["authorization"] == f"Bearer {PLACEHOLDER_API_KEY}"


def test_generate_cached_serves_a_rerun_from_the_cache(tmp_path):
    prompts = conversations(["is a bomb harmful?", "is bread harmful?", "is a bomb harmful?", "hello"])
    with FakeOpenAIServer(keyword_teacher("bomb")) as server:
        backend = make_backend(server.base_url, concurrency=2)
        texts, keys = generate_cached(backend, prompts, GREEDY, GenerationCache(tmp_path / "cache.jsonl"))
        assert server.attempts == 3  # the duplicate prompt is asked once
        backend.close()

        rerun = make_backend(server.base_url, concurrency=2)
        texts2, keys2 = generate_cached(rerun, prompts, GREEDY, GenerationCache(tmp_path / "cache.jsonl"))
        assert server.attempts == 3  # nothing new reached the server
    assert texts2 == texts and keys2 == keys
    assert texts[0] == texts[2] and texts[0].endswith("Conclusion: YES")
    assert texts[1].endswith("Conclusion: NO")
    assert SECRET not in (tmp_path / "cache.jsonl").read_text()


def test_load_backend_builds_it_from_a_spec_string():
    from dartkit.generate import load_backend

    backend = load_backend(
        "openai:deepseek-chat@https://api.deepseek.com/v1/", BackendConfig(api_key_env=KEY_ENV)
    )
    assert isinstance(backend, OpenAIBackend)
    assert backend.spec == "openai:deepseek-chat@https://api.deepseek.com/v1"
    assert backend.identity() == {
        "backend": "openai",
        "model": "deepseek-chat",
        "base_url": "https://api.deepseek.com/v1",
    }
    backend.close()


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "HTTP-DATE IN 30 S"}, 30.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_forms(headers, seconds):
    if headers.get("retry-after") == "HTTP-DATE IN 30 S":  # built here: collection happens seconds earlier
        headers = {"retry-after": formatdate(time.time() + 30, usegmt=True)}
    got = _retry_after_s(headers)
    assert got == pytest.approx(seconds, abs=1.5) if seconds is not None else got is None
