"""Fixtures for pipeline tests: a tiny random llama student and a fake label-conditioned teacher."""

from __future__ import annotations

import pytest

from pipeline_helpers import teacher
from servers import FakeOpenAIServer


@pytest.fixture(scope="session")
def teacher_server():
    with FakeOpenAIServer(teacher) as server:
        yield server
