import json

import pytest

from dartkit.config import DecodingConfig
from dartkit.generate.cache import GenerationCache, cache_key, generate_cached
from dartkit.generate.dummy import DummyBackend


def convs(n):
    return [[{"role": "user", "content": f"question {i}"}] for i in range(n)]


def test_rerun_is_served_from_cache(tmp_path):
    backend = DummyBackend("mixed")
    path = tmp_path / "cache.jsonl"
    texts, keys = generate_cached(backend, convs(5), DecodingConfig(), GenerationCache(path))
    assert backend.calls == 5 and len(set(keys)) == 5
    again, _ = generate_cached(backend, convs(5), DecodingConfig(), GenerationCache(path))
    assert backend.calls == 5
    assert again == texts


def test_key_changes_with_model_prompt_and_decoding():
    m = [{"role": "user", "content": "q"}]
    base = cache_key({"model": "a"}, m, DecodingConfig())
    assert cache_key({"model": "b"}, m, DecodingConfig()) != base
    assert cache_key({"model": "a"}, [{"role": "user", "content": "q2"}], DecodingConfig()) != base
    assert cache_key({"model": "a"}, m, DecodingConfig(max_new_tokens=10)) != base
    assert cache_key({"model": "a", "adapter_sha256": "x"}, m, DecodingConfig()) != base


class Dies(DummyBackend):
    """Finishes `survive` generations, then the process 'dies'."""

    def __init__(self, survive):
        super().__init__("yes")
        self.survive = survive

    def generate(self, conversations, decoding):
        for j, (i, text) in enumerate(super().generate(conversations, decoding)):
            if j == self.survive:
                raise KeyboardInterrupt
            yield i, text


def test_interrupted_run_loses_nothing_finished_and_duplicates_nothing(tmp_path):
    path = tmp_path / "cache.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_cached(Dies(3), convs(8), DecodingConfig(), GenerationCache(path))
    assert len(GenerationCache(path)) == 3
    # simulate a kill in the middle of writing a line
    with path.open("a") as f:
        f.write('{"key": "abc", "te')
    resumed = DummyBackend("yes")
    cache = GenerationCache(path)
    assert cache.torn_lines == 1
    generate_cached(resumed, convs(8), DecodingConfig(), cache)
    assert resumed.calls == 5
    keys = [
        json.loads(line)["key"]
        for line in path.read_text().splitlines()
        if line.startswith('{"key": "') and line.endswith("}")
    ]
    assert len(keys) == len(set(keys)) == 8


def test_duplicate_prompts_generated_once(tmp_path):
    backend = DummyBackend("no")
    texts, keys = generate_cached(
        backend, convs(3) + convs(3), DecodingConfig(), GenerationCache(tmp_path / "c.jsonl")
    )
    assert backend.calls == 3 and texts[:3] == texts[3:]
