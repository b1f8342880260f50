"""`stephctl view` on the demo project: its HTTP API, and the page in a real headless Chromium.

The browser test drives Debian's ``chromium`` through ``chromium-driver`` (selenium); where they
are not installed it skips with one line saying what to install (``.ci/run`` installs them).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from steph.config import load_project
from steph.demo import TARGET
from steph.errors import ConfigError
from steph.layout import ProjectLayout
from steph.view import ProjectView, ViewServer
from steph.view.data import OVERLAY_PX_PER_PATCH
from steph.view.server import check_loopback

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from typer.testing import CliRunner

    from stephctl.main import app

    root = tmp_path_factory.mktemp("view") / "demo"
    result = CliRunner().invoke(app, ["demo", str(root), "--quick"])
    assert result.exit_code == 0, result.output
    return root


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture
def server(demo: Path) -> Iterator[ViewServer]:
    layout, config = load_project(demo)
    before = _snapshot(demo)
    srv = ViewServer(ProjectView(layout, config, TARGET), "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
    assert _snapshot(demo) == before  # the viewer writes nothing into the project


def _get(srv: ViewServer, path: str) -> bytes:
    with urllib.request.urlopen(srv.url + path.lstrip("/"), timeout=300) as response:
        return response.read()


def _steph_run(layout: ProjectLayout) -> str:
    return next(m for m in layout.result_methods(TARGET) if m.startswith("steph"))


def _test_patients(layout: ProjectLayout, method: str) -> dict[str, float]:
    out = {}
    for fold in layout.result_folds(TARGET, method):
        with layout.predictions(TARGET, method, fold).open() as fh:
            out.update({row["patient_id"]: float(row["risk"]) for row in csv.DictReader(fh)})
    return out


def test_only_loopback_addresses() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_loopback(host)
    for host in ("0.0.0.0", "192.168.1.10", "::", "example.org"):
        with pytest.raises(ConfigError, match="loopback"):
            check_loopback(host)


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_the_ipv6_loopback_is_served_with_a_bracketed_url(demo: Path) -> None:
    """``--host ::1`` passes the loopback check, so the server must listen there (an IPv4 server
    cannot bind it) and its URL must bracket the address."""
    if not _ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback (::1)")
    layout, config = load_project(demo)
    srv = ViewServer(ProjectView(layout, config, TARGET), "::1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        assert srv.url.startswith("http://[::1]:")
        assert json.loads(_get(srv, "/api/target"))["methods"] == layout.result_methods(TARGET)
    finally:
        srv.shutdown()
        srv.server_close()


def test_api_lists_patients_and_draws_an_overlay_on_the_patch_grid(demo: Path, server: ViewServer) -> None:
    from matplotlib import colormaps

    layout = ProjectLayout(demo)
    run = _steph_run(layout)
    assert json.loads(_get(server, "/api/target"))["methods"] == layout.result_methods(TARGET)
    rows = json.loads(_get(server, f"/api/patients?method={run}"))
    risks = _test_patients(layout, run)
    assert {r["patient_id"] for r in rows} == set(risks)
    assert [r["risk"] for r in rows] == sorted(risks.values(), reverse=True)
    assert {r["group"] for r in rows} == {"high", "low"}
    pid = rows[0]["patient_id"]
    patient = json.loads(_get(server, f"/api/patient?method={run}&patient={pid}"))
    assert {c["method"] for c in patient["comparison"]} >= {run, "cancer-specific"}
    assert patient["transfer"] is not None and len(patient["transfer"]["w"]) == len(
        patient["transfer"]["sources"]
    )
    slide = patient["slides"][0]
    assert slide["image"]

    view = server.view
    attention = view.attention(run, patient["fold"], pid)[0]
    high = max(float(a.max()) for a in view.attention(run, patient["fold"], pid))
    png = Image.open(
        io.BytesIO(
            _get(
                server,
                f"/overlay.png?method={run}&fold={patient['fold']}&patient={pid}&slide={slide['slide_id']}",
            )
        )
    )
    overlay = np.asarray(png.convert("RGBA"))
    assert overlay.shape[:2] == view.overlay_shape(slide["slide_id"])
    side = slide["patch_size_level0"]
    d = side / OVERLAY_PX_PER_PATCH
    coords = view._slide(slide["slide_id"]).coords
    for k in range(len(coords)):  # the pixel at each patch's centre has that patch's colour
        x, y = coords[k]
        pixel = overlay[int((y + side / 2) / d), int((x + side / 2) / d)]
        expected = np.round(255 * np.array(colormaps["viridis"](attention[k] / high))[:3])
        assert pixel[3] == 255 and np.abs(pixel[:3].astype(int) - expected).max() <= 1
    painted = overlay[..., 3] > 0
    assert painted.sum() == len(coords) * OVERLAY_PX_PER_PATCH**2  # nothing outside the patches

    dzi = _get(server, f"/dzi/{slide['slide_id']}.dzi").decode()
    assert f'Width="{slide["width"]}"' in dzi and f'Height="{slide["height"]}"' in dzi
    top = json.loads(_get(server, f"/api/top?method={run}&fold={patient['fold']}&patient={pid}"))
    assert top[0]["attention"] == pytest.approx(high)
    assert Image.open(
        io.BytesIO(_get(server, f"/patch.jpeg?slide={top[0]['slide_id']}&x={top[0]['x']}&y={top[0]['y']}"))
    ).size == (160, 160)

    request = urllib.request.Request(server.url + "api/target", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 405
    with pytest.raises(urllib.error.HTTPError) as missing:
        _get(server, "/static/../../pyproject.toml")
    assert missing.value.code == 404


def _driver():  # type: ignore[no-untyped-def]
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        pytest.skip(
            "headless browser test: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1500,900",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))


def _wait(driver, script: str, timeout: float = 300.0):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(
        f"timed out waiting for: {script}; page error: {driver.execute_script('return window.stephView && window.stephView.error')}"
    )


ALIGNMENT = """
const s = window.stephView, slide = s.viewer.world.getItemAt(0), overlay = s.overlay;
const d = arguments[0], out = [];
for (const [x, y] of arguments[1]) {
  const a = slide.imageToViewportCoordinates(x, y), b = overlay.imageToViewportCoordinates(x / d, y / d);
  out.push([a.x - b.x, a.y - b.y]);
}
const size = overlay.source.dimensions;
return {errors: out, width: size.x, height: size.y, slideWidth: slide.source.dimensions.x, items: s.viewer.world.getItemCount()};
"""


def test_page_in_headless_chromium_tiles_two_levels_and_aligned_overlay(
    demo: Path, server: ViewServer
) -> None:
    driver = _driver()
    try:
        driver.get(server.url)
        _wait(
            driver, "return window.stephView && window.stephView.ready && window.stephView.overlay !== null"
        )
        assert driver.execute_script("return window.stephView.error") is None
        layout = ProjectLayout(demo)
        run = _steph_run(layout)
        assert driver.execute_script("return window.stephView.method") == run
        rows = driver.find_elements("css selector", "#patients tbody tr")
        assert len(rows) == len(_test_patients(layout, run))
        assert {r.find_elements("css selector", "td")[3].text for r in rows} == {"high", "low"}

        _wait(driver, "return window.stephView.viewer.world.getItemAt(0).getFullyLoaded()")
        first = set(server.tiles)
        driver.execute_script(
            "const v = window.stephView.viewer.viewport; v.zoomTo(v.getMaxZoom(), null, true);"
        )
        # getFullyLoaded() may still answer for the old view right after zoomTo: wait for the
        # deeper level's tiles to arrive rather than for the flag.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with server.tiles_lock:
                deepest = max(server.tiles, default=0)
            if deepest > max(first, default=0):
                break
            time.sleep(0.2)
        _wait(driver, "return window.stephView.viewer.world.getItemAt(0).getFullyLoaded()")
        second = set(server.tiles)
        assert first and max(second) > max(first)  # tiles of a deeper level came back after zooming

        info = driver.execute_script("return window.stephView.info")
        slide = info["slides"][0]
        d = slide["patch_size_level0"] / OVERLAY_PX_PER_PATCH
        coords = server.view._slide(slide["slide_id"]).coords
        corners = [[int(x), int(y)] for x, y in coords] + [
            [int(x) + slide["patch_size_level0"], int(y) + slide["patch_size_level0"]] for x, y in coords
        ]
        result = driver.execute_script(ALIGNMENT, d, corners)
        assert result["items"] == 2 and result["slideWidth"] == slide["width"]
        assert (result["height"], result["width"]) == server.view.overlay_shape(slide["slide_id"])
        tolerance = d / slide["width"]  # one overlay pixel (a quarter patch) in viewport units
        errors = np.abs(np.array(result["errors"]))
        assert errors.max() <= tolerance, errors.max() / tolerance

        driver.execute_script("document.getElementById('overlay-on').click()")
        assert driver.execute_script("return window.stephView.overlay.getOpacity()") == 0
        driver.execute_script("document.getElementById('overlay-on').click()")
        driver.execute_script(
            "const r = document.getElementById('opacity'); r.value = 0.8; r.dispatchEvent(new Event('input'))"
        )
        assert driver.execute_script("return window.stephView.overlay.getOpacity()") == pytest.approx(0.8)
        transfer = driver.find_element("id", "transfer").text
        assert "no transfer for this patient" in transfer or "lambda" in transfer
        _wait(driver, "return document.querySelectorAll('#top img').length >= 2")  # both methods' top patches
    finally:
        driver.quit()
