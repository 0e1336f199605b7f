"""The wheel as users get it: built, installed into a fresh venv, schemas inside, commands work."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests

from conftest import BIN, ROOT, STREAMS, TEST_KEY

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only the built wheel (and its dependencies) installed: its bin/."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [str(BIN / "uv"), "build", "--wheel", "--out-dir", str(work), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = work.glob("tap_stripe_dd-*.whl")
    venv = work / "venv"
    subprocess.run([str(BIN / "uv"), "venv", "--quiet", str(venv)], check=True)
    subprocess.run(
        [
            str(BIN / "uv"),
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            str(wheel),
        ],
        check=True,
    )
    return venv / "bin"


def test_wheel_ships_the_schemas_and_discovers_six_streams(installed, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"api_key": TEST_KEY}))
    result = subprocess.run(
        [str(installed / "tap-stripe-dd"), "--config", str(config), "--discover"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    catalog = json.loads(result.stdout)
    assert sorted(s["tap_stream_id"] for s in catalog["streams"]) == sorted(STREAMS)
    for stream in catalog["streams"]:
        assert stream["schema"]["properties"]["created"]["format"] == "date-time"


def test_installed_emulator_prints_its_url_and_serves(installed, tmp_path):
    process = subprocess.Popen(
        [str(installed / "stripe-dd"), "emulator", "--port", "0", "--objects", "5"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        body = requests.get(f"{url}/v1/charges", auth=(TEST_KEY, ""), timeout=10).json()
        assert body["object"] == "list" and len(body["data"]) == 5
    finally:
        process.terminate()
        assert process.wait(10) == 0
