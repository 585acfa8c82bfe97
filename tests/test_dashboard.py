"""The dashboard: trial notes and figures in the study, and the page in a real headless browser."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from hvtnas.cli import app
from tests.test_search import SPACE

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dash")
    path = root / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE, sort_keys=False))
    result = CliRunner().invoke(
        app, ["search", str(path), "--trials", "3", "--runs-dir", str(root / "runs"), "--no-cache"]
    )
    assert result.exit_code == 0, result.output
    return root / "runs" / "space"


def test_trials_carry_notes_and_the_study_carries_figures(run_dir: Path) -> None:
    storage = optuna.storages.get_storage(f"sqlite:///{run_dir / 'study.db'}")
    study = optuna.load_study(study_name="space", storage=storage)
    attrs = storage.get_study_system_attrs(study._study_id)
    assert any(key.startswith("dashboard:plot_data:pareto_") for key in attrs)  # save_plotly_graph_object
    assert any(key.startswith("dashboard:plot_data:hypervolume") for key in attrs)
    for trial in study.trials:  # optuna-dashboard keeps trial notes in the study's system attributes
        prefix = f"dashboard:{trial._trial_id}:note_str:"
        note = "".join(str(v) for k, v in sorted(attrs.items()) if k.startswith(prefix))
        assert "stem **patch**" in note and "params **" in note and "accuracy by epoch" in note
        assert f"outcome **{trial.user_attrs['outcome'].replace('_', ' ')}**" in note


@pytest.fixture(scope="module")
def server(run_dir: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "hvtnas", "dashboard", str(run_dir), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        # about 20 s on an idle 2-core machine, much more on a busy one: wait for the server to
        # answer (or the process to end), with a deadline far past any normal start
        deadline = time.monotonic() + 600
        while True:
            try:
                if urllib.request.urlopen(f"{url}/dashboard", timeout=5).status == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError("the dashboard did not come up: " + process.communicate()[0].decode())
            time.sleep(0.2)
        yield url
    finally:
        # killed, not terminated: the server only reads the study, and under pytest-xdist it is
        # started from a worker whose blocked signals it inherits, so a SIGTERM would stay pending
        process.kill()
        process.wait()


def test_dashboard_api_lists_the_study(server: str) -> None:
    body = urllib.request.urlopen(f"{server}/api/studies", timeout=60).read().decode()
    assert '"study_name": "space"' in body and '"maximize", "minimize"' in body


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Chromium and ChromeDriver (Debian: apt-get install chromium chromium-driver)",
)
def test_dashboard_page_shows_the_pareto_front_in_a_browser(server: str) -> None:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.get(f"{server}/dashboard/studies/1")
        text = ""
        deadline = time.monotonic() + 300  # the page renders with JavaScript: slow on a busy machine
        while time.monotonic() < deadline:
            text = driver.find_element("tag name", "body").text
            if "Pareto Front" in text and "accuracy (maximize) vs params (minimize)" in text:
                break
            time.sleep(0.5)
        assert "space" in text and "Pareto Front" in text, text[:500]
        assert "accuracy (maximize) vs params (minimize)" in text  # hvtnas's own figure, saved in the study
        driver.get(f"{server}/dashboard/studies/1/trials")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            text = driver.find_element("tag name", "body").text
            if "positional encoding" in text:
                break
            time.sleep(0.5)
        assert "positional encoding" in text  # the trial note with the architecture
    finally:
        driver.quit()
