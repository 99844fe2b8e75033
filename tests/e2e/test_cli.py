"""``fluxserve run`` and ``fluxserve predictions …`` as a user runs them: subprocesses against a real server."""

from __future__ import annotations

import base64
import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.support import FLUXSERVE, Server, wait_for


def cli_env(server: Server, prefix: str = "/v1", **extra: str) -> dict[str, str]:
    env = server.env()
    env.pop("REPLICATE_API_TOKEN", None)
    env.update(FLUXSERVE_API_TOKEN=server.key, FLUXSERVE_BASE_URL=f"{server.base}{prefix}", **extra)
    return env


def cli(server: Server, *args: str, prefix: str = "/v1", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLUXSERVE, *args], env=cli_env(server, prefix), capture_output=True, text=True, timeout=timeout
    )


def prediction_id(stderr: str) -> str:
    match = re.search(r"Prediction ([a-z0-9]{26})", stderr)
    assert match, stderr
    return match.group(1)


def test_run_saves_the_images(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = cli(
        server,
        "run",
        "black-forest-labs/flux-schnell",
        "-i",
        "prompt=a paper boat",
        "-i",
        "megapixels=0.25",
        "-i",
        "num_outputs=2",
        "-i",
        "output_format=png",
        "-i",
        "aspect_ratio=16:9",
        "-o",
        str(out),
        prefix="/replicate/v1",
    )
    assert result.returncode == 0, result.stderr
    saved = [Path(line) for line in result.stdout.splitlines()]
    assert [p.name for p in saved] == ["out-0.png", "out-1.png"]
    for path in saved:
        with Image.open(path) as image:
            assert (image.format, image.size) == ("PNG", (672, 384))
    pid = prediction_id(result.stderr)
    assert f"{server.base}/p/{pid}" in result.stderr
    assert "succeeded" in result.stderr
    # A second run into the same directory keeps the first files.
    again = cli(
        server, "run", "black-forest-labs/flux-schnell", "-i", "prompt=x", "-i", "megapixels=0.25", "-o", str(out)
    )
    assert again.returncode == 0, again.stderr
    assert [Path(line).name for line in again.stdout.splitlines()] == ["out-0.webp"]
    assert (out / "out-0.png").exists()


@pytest.mark.parametrize("mode", ["stream", "poll"])
def test_run_shows_progress_and_types_inputs_from_the_schema(server: Server, mode: str) -> None:
    args = ["run", "fluxserve-fixtures/slow-steps", "-i", "steps=5", "-i", "step_seconds=0.05", "-i", "seed=42"]
    result = cli(server, *args, *(["--no-stream"] if mode == "poll" else []))
    assert result.returncode == 0, result.stderr
    # Without a terminal the log lines themselves are the progress.
    assert "Using seed: 42" in result.stderr  # "42" became the integer the schema asks for
    assert re.search(r"100%\|.*\| 5/5", result.stderr), result.stderr
    assert result.stdout == "done 5 steps\n"


def test_progress_bar_on_a_terminal(server: Server) -> None:
    parent, child = pty.openpty()
    process = subprocess.Popen(
        [*FLUXSERVE, "run", "fluxserve-fixtures/slow-steps", "-i", "steps=8", "-i", "step_seconds=0.1"],
        env=cli_env(server, COLUMNS="100", TERM="xterm-256color"),
        stdin=child,
        stdout=child,
        stderr=child,
    )
    os.close(child)
    screen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([parent], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(parent, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        elif process.poll() is not None:
            break
    os.close(parent)
    assert process.wait(timeout=30) == 0
    text = screen.decode(errors="replace")
    assert "━" in text  # rich's bar
    assert "8/8" in text
    assert "Using seed: 0" in text  # other log lines are still shown


def test_ctrl_c_cancels_the_prediction(server: Server) -> None:
    process = subprocess.Popen(
        [*FLUXSERVE, "run", "fluxserve-fixtures/slow-steps", "-i", "steps=400", "-i", "step_seconds=0.05"],
        env=cli_env(server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a test runner's worker process (pytest-xdist) may ignore SIGINT, and a child
        # inherits an ignored signal, so Python would never install its KeyboardInterrupt handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stderr is not None
    seen = ""
    for line in process.stderr:
        seen += line
        if "3/400" in line:
            break
    pid = prediction_id(seen)
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(timeout=30) == 130, seen + rest
    assert f"Prediction {pid}: canceled" in rest
    with server.client() as http:
        assert wait_for(http, pid, timeout=10)["status"] == "canceled"


def test_file_inputs_travel_as_data_uris(server: Server, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("hello from a file")
    # The noop model echoes its prompt, so the output is the data URI we sent; it is saved as a file.
    result = cli(server, "run", "fluxserve-fixtures/noop", "-i", f"prompt=@{note}", "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    saved = Path(result.stdout.strip())
    assert saved == tmp_path / "out" / "output-0.txt"
    assert saved.read_text() == "hello from a file"
    pid = prediction_id(result.stderr)
    with server.client() as http:
        sent = http.get(f"/predictions/{pid}").json()["input"]["prompt"]
    assert sent == "data:text/plain;base64," + base64.b64encode(b"hello from a file").decode()
    missing = cli(server, "run", "fluxserve-fixtures/noop", "-i", f"prompt=@{tmp_path / 'nope.png'}")
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_bad_inputs_and_errors_are_reported(server: Server) -> None:
    typed = cli(server, "run", "fluxserve-fixtures/slow-steps", "-i", "steps=many")
    assert typed.returncode == 2 and "steps must be an integer" in typed.stderr
    refused = cli(server, "run", "black-forest-labs/flux-schnell", "-i", "prompt=x", "-i", "num_outputs=9")
    assert refused.returncode == 1 and "num_outputs must be less than or equal to 4" in refused.stderr
    failed = cli(server, "run", "fluxserve-fixtures/raises-in-predict", "-i", "message=broken on purpose")
    assert failed.returncode == 1 and "failed: broken on purpose" in failed.stderr
    env = cli_env(server)
    del env["FLUXSERVE_API_TOKEN"]
    no_key = subprocess.run([*FLUXSERVE, "predictions", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert no_key.returncode == 2 and "No API key" in no_key.stderr
    # REPLICATE_API_TOKEN works as well.
    env["REPLICATE_API_TOKEN"] = server.key
    listed = subprocess.run([*FLUXSERVE, "predictions", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr


def test_predictions_list_get_cancel_open(server: Server, tmp_path: Path) -> None:
    with server.client() as http:
        response = http.post(
            "/models/fluxserve-fixtures/slow-steps/predictions", json={"input": {"steps": 300, "step_seconds": 0.05}}
        )
        pid = response.json()["id"]
    listed = cli(server, "predictions", "list", "--json", "-n", "3")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == 3 and rows[0]["id"] == pid
    table = cli(server, "predictions", "list")
    assert pid in table.stdout and "fluxserve-fixtures/slow-steps" in table.stdout
    got = cli(server, "predictions", "get", pid, prefix="/replicate/v1")
    body = json.loads(got.stdout)
    assert body["id"] == pid and body["urls"]["get"] == f"{server.base}/replicate/v1/predictions/{pid}"
    canceled = cli(server, "predictions", "cancel", pid)
    assert canceled.stdout.split()[0] == pid
    with server.client() as http:
        assert wait_for(http, pid, timeout=10)["status"] == "canceled"
    assert cli(server, "predictions", "open", pid, "--no-browser").stdout.strip() == f"{server.base}/p/{pid}"
    # Without --no-browser the URL goes to the browser ($BROWSER, here a script that writes it down).
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    env = cli_env(server, BROWSER=str(browser))
    subprocess.run([*FLUXSERVE, "predictions", "open", pid], env=env, check=True, capture_output=True, timeout=60)
    deadline = time.monotonic() + 10
    while not opened.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert opened.read_text().strip() == f"{server.base}/p/{pid}"
    missing = cli(server, "predictions", "get", "notaprediction")
    assert missing.returncode == 1 and "Prediction notaprediction not found" in missing.stderr
