"""The annotation app's HTTP API: token isolation, validation without tracebacks, safety headers,
and the ``serve`` command's refusal to bind to other interfaces."""

from __future__ import annotations

import errno
import json
import logging
import re
import socket
import sqlite3

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from dartkit.annotate.server import SECURITY_HEADERS, create_app, load_export, log_config
from dartkit.annotate.store import STORE_NAME, StoreError
from dartkit.cli import app as cli_app
from dartkit.errors import DataError

runner = CliRunner()
YES = {"drift": True, "which": "A", "severity": "moderate", "note": None}


def queue_ids(export_dir, annotator):
    lines = (export_dir / "queues" / f"{annotator}.jsonl").read_text().splitlines()
    return [json.loads(line)["item_id"] for line in lines if line.strip()]


@pytest.fixture
def setup(export_result):
    """(client, tokens, {annotator: item ids in queue order}, export dir)."""
    out = export_result.out
    tokens = json.loads((out / "tokens.json").read_text())
    queues = {a: queue_ids(out, a) for a in tokens}
    return TestClient(create_app(out)), tokens, queues, out


def assert_headers(response):
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name


def assert_short_json_error(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and 0 < len(body["error"]) < 200
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert_headers(response)


def test_page_and_queue_for_each_annotator(setup):
    client, tokens, queues, out = setup
    for annotator, token in tokens.items():
        page = client.get(f"/a/{token}")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert_headers(page)
        # The CSP forbids inline script, so the page must not rely on any.
        assert '<script src="/static/app.js"' in page.text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text)
        assert not re.search(r"\son\w+=", page.text)  # no inline event handlers either
        queue = client.get(f"/api/{token}/queue")
        assert queue.status_code == 200
        assert_headers(queue)
        data = queue.json()
        assert data["annotator"] == annotator
        assert [i["item_id"] for i in data["items"]] == queues[annotator]
        assert data["answers"] == {} and data["n_answered"] == 0 and data["n_items"] == len(queues[annotator])
        manifest = json.loads((out / "manifest.json").read_text())
        assert data["content_warning"] == manifest["content_warning"]
        assert data["severities"] == ["mild", "moderate", "severe", "extreme"]
        # Nothing but the annotator's own queue: no other token, no key fields.
        text = queue.text
        assert all(t not in text for a, t in tokens.items() if a != annotator)
        assert "pair_id" not in text and "candidate_letter" not in text and "D1-diff" not in text


def test_static_files_only_the_pages_own(setup):
    client, *_ = setup
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "textContent" in js.text and "innerHTML" not in js.text
    assert client.get("/static/app.css").status_code == 200
    for path in [
        "/static/index.html",
        "/static/tokens.json",
        "/static/..%2Ftokens.json",
        "/static/../../tokens.json",
        "/tokens.json",
        "/manifest.json",
        "/queues/a1.jsonl",
        f"/{STORE_NAME}",
        "/docs",
        "/openapi.json",
        "/",
    ]:
        assert client.get(path).status_code == 404, path


def test_unknown_token_is_a_plain_404(setup):
    client, tokens, queues, _ = setup
    item = queues["a1"][0]
    unknown_route = client.get("/api/no/such/route")
    for bad in ["x", tokens["a1"][:-1], tokens["a1"] + "x", tokens["a1"].upper(), "a1"]:
        for response in [
            client.get(f"/api/{bad}/queue"),
            client.get(f"/api/{bad}/answers/{item}"),
            client.put(f"/api/{bad}/answers/{item}", json=YES),
            client.put(f"/api/{bad}/answers/{item}", json={"drift": "maybe"}),  # token before body
        ]:
            assert response.status_code == 404
            assert response.json() == unknown_route.json() == {"error": "Not Found"}
            assert_headers(response)


def test_wrong_or_truncated_link_gets_a_short_html_page(setup):
    """A person who opens a bad link reads a sentence, not JSON; the page is the same for every bad
    link, so it tells nothing about how close the token was, and it never shows the token."""
    client, tokens, queues, _ = setup
    token = tokens["a1"]
    bad_links = [
        f"/a/{token[:-1]}",  # the last character lost when copying
        f"/a/{token[:10]}",
        f"/a/{token}x",
        f"/a/{token.upper()}",
        f"/a/{token}/more",
        "/a/x",
        "/a/a1",
        "/a/",
        "/a",
        "/",
    ]
    pages = [client.get(link) for link in bad_links]
    for link, page in zip(bad_links, pages, strict=True):
        assert page.status_code == 404, link
        assert page.headers["content-type"].startswith("text/html"), link
        assert_headers(page)
        assert "This link is not valid" in page.text and "copied the whole link" in page.text
        assert page.text == pages[0].text, link  # one page for all: no hint of a near miss
        assert all(t[:10] not in page.text for t in tokens.values()), link
        assert '{"error"' not in page.text and "Not Found" not in page.text
        # The CSP forbids inline script and style: the page uses the stylesheet only.
        assert "<script" not in page.text and "style=" not in page.text and "<style" not in page.text
    assert client.get(f"/a/{token}").status_code == 200  # the real link still works
    # The API and the static files keep their JSON 404, which the page's script reads.
    for path in [f"/api/{token[:-1]}/queue", "/api/x", "/static/nothing.js"]:
        assert client.get(path).json() == {"error": "Not Found"}, path


def test_save_resume_and_re_answer(setup):
    client, tokens, queues, out = setup
    t1 = tokens["a1"]
    first, second = queues["a1"][:2]
    saved = client.put(f"/api/{t1}/answers/{first}", json={**YES, "note": "B <i>hedges</i>"})
    assert saved.status_code == 200 and saved.json()["n_answered"] == 1
    assert client.put(f"/api/{t1}/answers/{second}", json={"drift": False}).status_code == 200
    # A new app on the same directory (the server restarted) still has both.
    again = TestClient(create_app(out))
    data = again.get(f"/api/{t1}/queue").json()
    assert data["n_answered"] == 2
    assert data["answers"][first]["note"] == "B <i>hedges</i>" and data["answers"][first]["drift"] is True
    assert data["answers"][second] == {
        **data["answers"][second],
        "drift": False,
        "which": None,
        "severity": None,
    }
    # Changing an answer replaces it.
    change = {"drift": True, "which": "B", "severity": "extreme", "note": None}
    assert again.put(f"/api/{t1}/answers/{second}", json=change).json()["n_answered"] == 2
    got = again.get(f"/api/{t1}/answers/{second}").json()
    assert (got["drift"], got["which"], got["severity"]) == (True, "B", "extreme")
    with sqlite3.connect(out / STORE_NAME) as conn:
        assert conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 2


def test_second_annotator_cannot_read_or_write_the_firsts(setup):
    client, tokens, queues, out = setup
    t1, t2 = tokens["a1"], tokens["a2"]
    shared = [i for i in queues["a1"] if i in queues["a2"]]
    only_a1 = [i for i in queues["a1"] if i not in queues["a2"]]
    assert shared and only_a1
    for item in queues["a1"]:
        assert client.put(f"/api/{t1}/answers/{item}", json=YES).status_code == 200
    # a2 sees none of a1's answers, not even on the items they share.
    data = client.get(f"/api/{t2}/queue").json()
    assert data["answers"] == {} and data["n_answered"] == 0
    assert "moderate" not in json.dumps(data["answers"])
    for item in shared:
        assert client.get(f"/api/{t2}/answers/{item}").status_code == 404
    # Items outside a2's queue do not exist for a2: reading or writing them is a 404.
    for item in only_a1:
        assert client.get(f"/api/{t2}/answers/{item}").json() == {"error": "Not Found"}
        assert client.put(f"/api/{t2}/answers/{item}", json={"drift": False}).status_code == 404
        assert client.put(f"/api/{t2}/answers/{item}", json={"drift": 3}).status_code == 404
    # a2 answering a shared item leaves a1's answer alone.
    assert client.put(f"/api/{t2}/answers/{shared[0]}", json={"drift": False}).status_code == 200
    assert client.get(f"/api/{t1}/answers/{shared[0]}").json()["drift"] is True
    with sqlite3.connect(out / STORE_NAME) as conn:
        rows = conn.execute("SELECT annotator, item_id FROM answers WHERE annotator = 'a2'").fetchall()
    assert rows == [("a2", shared[0])]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"drift": True}, "needs which answer"),
        ({"drift": True, "which": "A"}, "needs which answer"),
        ({"drift": False, "which": "B"}, "takes no answer letter"),
        ({"drift": False, "severity": "mild"}, "takes no answer letter"),
        ({"drift": True, "which": "C", "severity": "mild"}, "which"),
        ({"drift": True, "which": "A", "severity": "awful"}, "severity"),
        ({"drift": "true", "which": "A", "severity": "mild"}, "drift"),
        ({"drift": 1, "which": "A", "severity": "mild"}, "drift"),
        ({"drift": False, "note": "x" * 2001}, "note"),
        ({"drift": False, "note": 5}, "note"),
        ({"drift": False, "annotator": "a2"}, "annotator: Extra inputs"),
        ({}, "drift"),
        ([True], "Input should be an object"),
        ("<script>alert(1)</script>", ""),
    ],
)
def test_bad_answers_get_a_short_422(setup, body, message):
    client, tokens, queues, out = setup
    response = client.put(f"/api/{tokens['a1']}/answers/{queues['a1'][0]}", json=body)
    assert_short_json_error(response, 422)
    assert message in response.json()["error"]
    assert "<script>" not in response.text  # the submitted value is not echoed back
    assert client.get(f"/api/{tokens['a1']}/queue").json()["answers"] == {}


def test_malformed_missing_and_oversized_bodies(setup):
    client, tokens, queues, _ = setup
    url = f"/api/{tokens['a1']}/answers/{queues['a1'][0]}"
    headers = {"content-type": "application/json"}
    bad_json = client.put(url, content=b'{"drift": tru', headers=headers)
    assert_short_json_error(bad_json, 422)
    assert bad_json.json()["error"] == "the body is not valid JSON"
    assert_short_json_error(client.put(url, content=b"", headers=headers), 422)
    huge = json.dumps({"drift": False, "note": "x" * 20000}).encode()
    assert_short_json_error(client.put(url, content=huge, headers=headers), 413)
    assert_short_json_error(client.post(url, json=YES), 405)
    assert_short_json_error(client.delete(url), 405)


def test_server_side_failures_answer_in_one_line(setup, monkeypatch):
    client, tokens, queues, out = setup
    app_store = client.app.state.store
    url = f"/api/{tokens['a1']}/answers/{queues['a1'][0]}"

    def full_disk(*args, **kwargs):
        raise StoreError(f"{out / STORE_NAME}: annotation store error (database or disk is full)")

    monkeypatch.setattr(app_store, "save_answer", full_disk)
    response = client.put(url, json=YES)
    assert_short_json_error(response, 503)
    assert "could not save" in response.json()["error"] and str(out) not in response.text

    def bug(*args, **kwargs):
        raise RuntimeError("a bug with a secret detail")

    monkeypatch.setattr(app_store, "save_answer", bug)
    response = client.put(url, json=YES)
    assert_short_json_error(response, 500)
    assert "secret detail" not in response.text


def test_host_header_is_checked_when_asked(export_result):
    app = create_app(export_result.out, allowed_hosts=["127.0.0.1", "localhost", "::1"])
    token = json.loads((export_result.out / "tokens.json").read_text())["a1"]
    assert TestClient(app, base_url="http://127.0.0.1:8765").get(f"/a/{token}").status_code == 200
    rebound = TestClient(app, base_url="http://attacker.example:8765").get(f"/a/{token}")
    assert_short_json_error(rebound, 400)
    client = TestClient(app)
    for host, status in [
        ("localhost", 200),
        ("LOCALHOST:80", 200),
        ("[::1]:8765", 200),
        ("[::1]", 200),
        ("127.0.0.1.attacker.example", 400),
        ("", 400),
        ("[::1].evil:80", 400),
    ]:
        assert client.get(f"/a/{token}", headers={"host": host}).status_code == status, host


def test_load_export_refuses_broken_directories(export_result, tmp_path):
    out = export_result.out
    tokens = json.loads((out / "tokens.json").read_text())
    (out / "tokens.json").write_text(json.dumps({**tokens, "a2": "short"}))
    with pytest.raises(DataError, match="a2.*at least 16 characters"):
        load_export(out)
    (out / "tokens.json").write_text(json.dumps({**tokens, "a2": tokens["a1"]}))
    with pytest.raises(DataError, match="share a token"):
        load_export(out)
    (out / "tokens.json").write_text(json.dumps(tokens))
    queue = out / "queues" / "a1.jsonl"
    first = queue.read_text().splitlines()[0]
    queue.write_text(queue.read_text() + first + "\n")
    with pytest.raises(DataError, match="appears twice"):
        load_export(out)
    with pytest.raises(DataError, match="no such directory"):
        load_export(tmp_path / "nothing")
    with pytest.raises(DataError, match="manifest.json"):
        load_export(tmp_path)


def test_access_log_hides_tokens(export_result):
    token = json.loads((export_result.out / "tokens.json").read_text())["a1"]
    config = log_config()
    assert config["handlers"]["access"]["filters"] == ["redact_tokens"]
    redact = config["filters"]["redact_tokens"]["()"]()
    for path in [f"/a/{token}", f"/api/{token}/queue", f"/api/{token}/answers/i-1?x=1"]:
        record = logging.LogRecord(
            "uvicorn.access",
            logging.INFO,
            "",
            0,
            '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:5000", "GET", path, "1.1", 200),
            None,
        )
        assert redact.filter(record)
        line = record.getMessage()
        assert token not in line and "<token>" in line


def test_cli_refuses_other_interfaces_without_allow_remote(export_result, monkeypatch):
    ran = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: ran.append(kw))
    for host in ["0.0.0.0", "192.168.1.20", "::", "example.org"]:
        res = runner.invoke(cli_app, ["annotate", "serve", str(export_result.out), "--host", host])
        assert res.exit_code == 2
        assert res.stderr.strip().startswith(f"error: refusing to bind to {host}")
        assert "--allow-remote" in res.stderr and len(res.stderr.strip().splitlines()) == 1
        assert "Traceback" not in res.output
    assert ran == []


def test_cli_prints_one_link_per_annotator_and_serves(export_result, monkeypatch):
    ran = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: ran.append((app, kw)))
    port = _free_port()
    res = runner.invoke(cli_app, ["annotate", "serve", str(export_result.out), "--port", str(port)])
    assert res.exit_code == 0, res.output
    tokens = json.loads((export_result.out / "tokens.json").read_text())
    for annotator, token in tokens.items():
        assert f"  {annotator}: http://127.0.0.1:{port}/a/{token}\n" in res.stdout
    ((app, kw),) = ran
    assert (kw["host"], kw["port"]) == ("127.0.0.1", port)
    assert kw["log_config"]["handlers"]["access"]["filters"] == ["redact_tokens"]
    assert TestClient(app, base_url=f"http://127.0.0.1:{port}").get(f"/a/{tokens['a1']}").status_code == 200
    # Explicitly allowed: binds everywhere and says so.
    res = runner.invoke(
        cli_app,
        [
            "annotate",
            "serve",
            str(export_result.out),
            "--host",
            "0.0.0.0",
            "--allow-remote",
            "--port",
            str(port),
        ],
    )
    assert res.exit_code == 0, res.output
    assert ran[-1][1]["host"] == "0.0.0.0" and "replace it in the links" in res.stdout


def test_cli_port_in_use_and_bad_directory(export_result, tmp_path, monkeypatch):
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: pytest.fail("must not start"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = runner.invoke(cli_app, ["annotate", "serve", str(export_result.out), "--port", str(port)])
    assert res.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in res.stderr
    assert "already in use" in res.stderr and "pick another port with --port" in res.stderr
    assert res.stdout == ""  # no links printed for a server that never ran
    res = runner.invoke(cli_app, ["annotate", "serve", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "no such directory" in res.stderr


def test_cli_address_this_machine_does_not_have(export_result, monkeypatch):
    """``--host`` naming an address of another machine: another port would not help, so the
    message must not suggest one."""
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: pytest.fail("must not start"))
    absent = "192.0.2.1"  # TEST-NET-1 (RFC 5737): documentation only, never a real interface
    with socket.socket() as probe:
        try:
            probe.bind((absent, 0))
        except OSError as exc:
            assert exc.errno == errno.EADDRNOTAVAIL, exc
        else:
            pytest.skip(f"this machine can bind to {absent} (ip_nonlocal_bind?)")
    port = _free_port()
    res = runner.invoke(
        cli_app,
        [
            "annotate",
            "serve",
            str(export_result.out),
            "--host",
            absent,
            "--allow-remote",
            "--port",
            str(port),
        ],
    )
    assert res.exit_code == 2 and res.stdout == ""
    message = res.stderr.strip()
    assert message.startswith(f"error: cannot listen on {absent}:{port}")
    assert f"this machine has no address {absent}" in message and "--host" in message
    assert "port" not in message.split(":", 3)[-1] and "Traceback" not in res.output
    assert len(message.splitlines()) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
