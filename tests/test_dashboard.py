"""The dashboard, served by ``cpbi dashboard`` and driven in a real headless chromium, on the analysed world.

The expected numbers are computed here with pandas from ``fact_basket_lines`` as delta-rs reads it (gross
minus refunds, summed by hand), never with :mod:`cpbi_spark.metrics`, so a wrong filter or KPI definition in
the dashboard shows up as a difference. The browser tests skip when chromium or chromedriver is missing
(``scripts/setup.sh`` installs both); the in-process tests (Streamlit's AppTest) always run.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from cpbi_spark.dashboard import OPTIONS_VARIABLE, PAGES

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                   reason="chromium and chromedriver are needed for the browser tests "
                                          "(scripts/setup.sh installs Debian's chromium and chromium-driver)")
APP = Path(__file__).resolve().parents[1] / "lib" / "cpbi_spark" / "dashboard" / "app.py"
DASHBOARD_USER = f"dashboard:{getpass.getuser()}"


# --------------------------------------------------------------------------- independent expectations
def _delta(ctx, name: str, columns: list[str] | None = None) -> pd.DataFrame:
    from deltalake import DeltaTable

    return DeltaTable(ctx.lake.path(name)).to_pandas(columns=columns)


@pytest.fixture(scope="module")
def lines(analysed_world) -> pd.DataFrame:
    """fact_basket_lines with the amounts as floats (delta-rs gives decimals)."""
    ctx = analysed_world[0]
    frame = _delta(ctx, "fact_basket_lines", ["basket_id", "customer_id", "basket_ts", "channel",
                                              "amount_reporting", "returned_amount_reporting"])
    for column in ("amount_reporting", "returned_amount_reporting"):
        frame[column] = frame[column].map(lambda v: float(v) if isinstance(v, Decimal) else v).fillna(0.0)
    return frame


def net_revenue(frame: pd.DataFrame) -> float:
    """What the retailer keeps: sale amounts minus refunds."""
    return float(frame["amount_reporting"].sum() - frame["returned_amount_reporting"].sum())


def shown_amount(text: str) -> float:
    """``$1,234,567`` or ``-$1,234`` (the dashboard's currency format) as a number."""
    match = re.fullmatch(r"(-?)\$([\d,]+)", text.strip())
    assert match, f"not a currency amount: {text!r}"
    return (-1 if match.group(1) else 1) * float(match.group(2).replace(",", ""))


def world_overrides(ctx) -> dict[str, str]:
    storage = ctx.config.storage
    return {"storage.root": storage.root, "storage.landing": storage.landing, "storage.outputs": storage.outputs,
            "platform.enabled": "false"}


def audit_rows(ctx, since: dt.datetime) -> pd.DataFrame:
    """Access decisions the dashboard's reader recorded since ``since``."""
    frame = _delta(ctx, "audit_access")
    return frame[(frame["user_name"] == DASHBOARD_USER) & (frame["decided_ts"] >= pd.Timestamp(since))]


def test_an_unknown_role_stops_the_command_before_a_server_starts(capsys):
    from cpbi_spark.cli import main

    assert main(["dashboard", "--env", "ci", "--role", "nobody", "--headless", "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err
    assert "unknown role 'nobody'" in err and "analyst" in err and "engineer" in err


# --------------------------------------------------------------------------- the served dashboard
@dataclass
class Server:
    url: str
    started: dt.datetime
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(analysed_world, tmp_path_factory):
    """``cpbi dashboard --headless`` on a free port over the analysed world, as role analyst (the default)."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no browser to drive the served dashboard")
    ctx = analysed_world[0]
    port, log = _free_port(), tmp_path_factory.mktemp("dashboard") / "server.log"
    entry = Path(sys.executable).with_name("cpbi")
    cmd = [str(entry)] if entry.exists() else [sys.executable, "-c", "from cpbi_spark.cli import main; main()"]
    cmd += ["dashboard", "--headless", "--port", str(port), "--env", "ci"]
    for key, value in world_overrides(ctx).items():
        cmd += ["--set", f"{key}={value}"]
    started = dt.datetime.now(dt.timezone.utc)
    with log.open("w") as out:
        # Its own process group: if the server does not stop on SIGTERM, the group (server and JVM) is killed.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, f"cpbi dashboard exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, f"the dashboard did not answer in 90 s:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
    yield Server(url, started, log)
    proc.send_signal(signal.SIGTERM)  # cpbi forwards it to the Streamlit server
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail("cpbi dashboard did not stop on SIGTERM")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1500"):
        options.add_argument(arg)
    # An explicit driver path: Selenium Manager must not try to download one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _script_idle(driver) -> bool:
    from selenium.webdriver.common.by import By

    apps = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stApp"]')
    return bool(apps) and apps[0].get_attribute("data-test-script-state") == "notRunning"


def open_page(driver, url: str, title: str, timeout: float = 240) -> None:
    """Load ``url`` and wait until its script run finished with ``title`` as the page heading."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, timeout, poll_frequency=0.5).until(
        lambda d: _script_idle(d) and title in [h.text for h in d.find_elements(By.TAG_NAME, "h1")])


def metric_text(driver, label: str) -> str:
    from selenium.webdriver.common.by import By

    for tile in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]'):
        if tile.find_element(By.CSS_SELECTOR, '[data-testid="stMetricLabel"]').text.strip() == label:
            return tile.find_element(By.CSS_SELECTOR, '[data-testid="stMetricValue"]').text.strip()
    raise AssertionError(f"no metric labelled {label!r} on the page")


def wait_for_metric(driver, label: str, timeout: float = 120) -> str:
    """The value of the metric ``label`` once the page shows it (an idle script with the page heading can
    still be before the run that draws the metrics, on a slow machine)."""
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d):
        try:
            return metric_text(d, label)
        except AssertionError:
            return False

    return WebDriverWait(driver, timeout, poll_frequency=0.5).until(
        shown, message=f"no metric labelled {label!r} on the page after {timeout} s")


def exceptions_shown(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')]


@needs_browser
def test_every_page_loads_with_its_title_and_no_error(server, browser, analysed_world):
    ctx = analysed_world[0]
    timings = {}
    for path, title in PAGES.items():
        began = time.monotonic()
        open_page(browser, f"{server.url}/" + ("" if path == "overview" else path), title)
        timings[path] = round(time.monotonic() - began, 1)
        assert exceptions_shown(browser) == [], f"page {title} shows an exception"
        body = browser.find_element("tag name", "body").text
        if path == "interventions" and not ctx.lake.exists("recommended_interventions"):
            assert "run `cpbi run interventions`" in body or "run cpbi run interventions" in body
        if path == "health":
            # The analyst role reads gold and insights only; the recorder is off in this world.
            assert "may not read audit_recon" in body and "platform recorder is off" in body
        if path == "baskets":
            assert "Top rules by lift" in body and "→" in body   # the rules chart or table has rows
    print(f"page load seconds (first includes Spark start-up): {timings}")


@needs_browser
def test_channel_filter_changes_net_revenue_to_the_independent_value(server, browser, lines, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(browser, server.url + "/", PAGES["overview"])
    before = wait_for_metric(browser, "Net revenue")
    assert abs(shown_amount(before) - net_revenue(lines)) < 1, (before, net_revenue(lines))

    channel = sorted(lines["channel"].dropna().unique())[0]
    expected = net_revenue(lines[lines["channel"] == channel])
    box = next(b for b in browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMultiSelect"]')
               if b.text.startswith("Channel"))
    field = box.find_element(By.TAG_NAME, "input")
    field.click()
    field.send_keys(channel)
    field.send_keys(Keys.ENTER)
    WebDriverWait(browser, 120, poll_frequency=0.5).until(
        lambda d: _script_idle(d) and metric_text(d, "Net revenue") != before)
    after = metric_text(browser, "Net revenue")
    assert abs(shown_amount(after) - expected) < 1, (channel, after, expected)
    assert f"channel={channel}" in browser.current_url   # the filtered view is a shareable link
    assert exceptions_shown(browser) == []

    browser.find_element(By.TAG_NAME, "h1").click()   # close the channel list before the picture
    WebDriverWait(browser, 10).until(
        lambda d: not [e for e in d.find_elements(By.CSS_SELECTOR, '[role="listbox"]') if e.is_displayed()])
    time.sleep(0.5)   # its fade-out
    shot = tmp_path / f"dashboard-overview-{channel}.png"
    assert browser.save_screenshot(str(shot))
    print(f"dashboard screenshot: {shot}")
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size[0] >= 1000 and image.size[1] >= 800
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
    # A blank or error page has a handful of colours; KPI tiles, text and a bar chart give hundreds.
    assert colors is not None and len(colors) > 200
    assert max(count for count, _ in colors) / sum(count for count, _ in colors) < 0.9


@needs_browser
def test_the_served_pages_read_through_the_role_reader_once_per_table_version(server, analysed_world):
    ctx = analysed_world[0]
    rows = audit_rows(ctx, server.started)
    rows = rows[rows["role"] == "analyst"]
    decisions = rows.groupby(["dataset_id", "decision"]).size().to_dict()
    for table in ("fact_basket_lines", "basket_rules", "cohort_retention", "uplift_studies"):
        assert decisions.get((table, "granted")) == 1, (table, decisions)  # read and audited once, then cached
    # No grant on silver (segments by current loyalty tier / region) nor on the platform layer.
    assert decisions.get(("dim_customer", "denied")) == 1, decisions
    assert decisions.get(("audit_recon", "denied")) == 1, decisions


# --------------------------------------------------------------------------- in-process app runs (AppTest)
def _app(ctx, role: str, monkeypatch):
    from streamlit.testing.v1 import AppTest

    options = {"env": "ci", "role": role, "overrides": world_overrides(ctx)}
    monkeypatch.setenv(OPTIONS_VARIABLE, json.dumps(options))
    return AppTest.from_file(str(APP), default_timeout=240)


def _kpi(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _chart_frame(at, column: str) -> pd.DataFrame:
    """The data behind the first Altair chart that has ``column``."""
    import pyarrow as pa

    for chart in at.get("vega_lite_chart"):
        for dataset in chart.proto.datasets:
            frame = pa.ipc.open_stream(dataset.data.data).read_pandas()
            if column in frame.columns:
                return frame
    raise AssertionError(f"no chart with a {column} column")


def test_a_shared_link_with_channel_and_loyalty_tier_filters_gives_the_independent_kpi_and_chart(
        analysed_world, lines, monkeypatch):
    ctx = analysed_world[0]
    channel = sorted(lines["channel"].dropna().unique())[-1]
    customers = _delta(ctx, "dim_customer", ["customer_id", "loyalty_tier", "is_current"])
    gold = set(customers[customers["is_current"] & (customers["loyalty_tier"] == "gold")]["customer_id"])
    chosen = lines[(lines["channel"] == channel) & lines["customer_id"].isin(gold)]

    at = _app(ctx, "engineer", monkeypatch)   # engineer reads silver, so it may segment by loyalty tier
    # The filters are bound to the address: this is the link `?channel=...&segment_by=Loyalty+tier&segment=gold`.
    at.query_params.update({"channel": channel, "segment_by": "Loyalty tier", "segment": "gold"})
    at.run()
    assert not at.exception, at.exception
    assert at.multiselect(key="channel").value == [channel] and at.multiselect(key="segment").value == ["gold"]
    assert abs(shown_amount(_kpi(at, "Net revenue")) - net_revenue(chosen)) < 1
    assert 0 < net_revenue(chosen) < net_revenue(lines) / 3

    monthly = _chart_frame(at, "net_revenue")
    month = pd.to_datetime(chosen["basket_ts"], utc=True).dt.tz_localize(None).dt.to_period("M").dt.to_timestamp()
    expected = (chosen["amount_reporting"] - chosen["returned_amount_reporting"]).groupby(month).sum()
    shown = monthly.assign(month=pd.to_datetime(monthly["month"])).set_index("month")["net_revenue"]
    pd.testing.assert_series_equal(shown.sort_index(), expected.sort_index(), check_names=False,
                                   check_index_type=False, check_freq=False, rtol=1e-9)


def test_a_role_without_the_pii_grant_gets_customer_data_masked(analysed_world):
    """The dashboard shows no personal data; its reader still masks them for a role without the PII grant."""
    from cpbi_spark.dashboard.data import DashboardData
    from cpbi_spark.platform.access import SecureReader

    ctx = analysed_world[0]
    started = dt.datetime.now(dt.timezone.utc)
    data = DashboardData(SecureReader(ctx, "engineer", user=DASHBOARD_USER))
    seen = data.table("dim_customer").select("customer_sk", "email", "phone").toPandas().set_index("customer_sk")
    stored = _delta(ctx, "dim_customer", ["customer_sk", "email", "phone"]).set_index("customer_sk")
    both = seen.join(stored, rsuffix="_stored").dropna(subset=["email_stored"])
    assert len(both) > 100 and (both["email"] != both["email_stored"]).all()
    rows = audit_rows(ctx, started)
    masked = rows[(rows["dataset_id"] == "dim_customer") & (rows["role"] == "engineer")]
    assert list(masked["decision"]) == ["masked"] and "email" in masked["masked_columns"].iloc[0]
