"""The /dashboard page in a real browser (Debian's chromium, headless, through
chromium-driver and selenium; scripts/test installs them): after a burst of requests the
numbers on the page equal /v1/owl/cost, the charts are drawn, and a screenshot is saved.
With keys set, the page loads without one and asks for it."""

import shutil
import time

import pytest

import rawhttp
from conftest import Server, fresh_home
from test_cost import chat


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100"):
        opts.add_argument(a)
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(driver), options=opts)


def wait_loaded(d, since, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        loaded = d.find_element("tag name", "body").get_attribute("data-loaded")
        if loaded and int(loaded) > since:
            return
        time.sleep(0.1)
    raise AssertionError("the dashboard never loaded /v1/owl/cost: " + d.find_element("id", "status").text)


def value(d, id_):
    return d.find_element("id", id_).get_attribute("data-value")


@pytest.fixture(scope="module")
def dash_server(tmp_path_factory):
    home = fresh_home(tmp_path_factory, "dash-home")
    s = Server("--parallel", "4", env={"OWL_HOME": str(home)})
    for i in range(5):
        chat(s.url, i, max_tokens=6)
    yield s
    s.stop()


def test_the_page_shows_what_the_cost_endpoint_says(dash_server, tmp_path):
    d = browser()
    try:
        t0 = int(time.time() * 1000)
        d.get(dash_server.url + "/dashboard")
        wait_loaded(d, t0)
        c = rawhttp.get(dash_server.url + "/v1/owl/cost").json()
        t = c["totals"]
        assert int(value(d, "requests")) == t["requests"] == 5
        assert d.find_element("id", "requests").text == "5"
        assert int(value(d, "total_tokens")) == t["total_tokens"]
        assert d.find_element("id", "total_tokens").text == f"{t['total_tokens']:,}"
        for k in ("cost_usd", "baseline_usd", "savings_usd", "local_per_1m", "busy_s"):
            assert float(value(d, k)) == t[k], k
        assert d.find_element("id", "baseline_model").text == c["baseline_model"] == "gpt-4.1-mini"
        # One row per API plus this machine, each at the price the endpoint gives.
        rows = d.find_elements("css selector", "#apis tbody tr")
        assert len(rows) == len(c["apis"]) + 1
        shown = {r.get_attribute("data-model"): float(r.find_element("css selector", ".per1m").get_attribute("data-value")) for r in rows}
        for a in c["apis"]:
            assert shown[a["model"]] == a["blended_per_1m"], a["model"]
        # Tokens per hour: one bar per hour of the ledger, its height from the same tokens.
        bars = d.find_elements("css selector", "#hours rect")
        assert sum(int(b.get_attribute("data-tokens")) for b in bars) == t["total_tokens"]
        # The break-even chart marks the crossing at the endpoint's break-even.
        cross = d.find_element("id", "crossing")
        assert float(cross.get_attribute("data-tokens")) == c["breakeven"]["tokens_per_month"]
        d.find_element("id", "own_line")
        d.find_element("id", "rent_line")
        # It refreshes live: a new request shows up without reloading.
        chat(dash_server.url, 99, max_tokens=4)
        deadline = time.time() + 20
        while time.time() < deadline and value(d, "requests") != "6":
            time.sleep(0.2)
        assert value(d, "requests") == "6"
        shot = tmp_path / "dashboard.png"
        assert d.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")
    finally:
        d.quit()


def test_with_keys_the_page_loads_and_asks_for_one(tmp_path_factory):
    home = fresh_home(tmp_path_factory, "dash-keys-home")
    s = Server("--api-key", "ops:sekrit", env={"OWL_HOME": str(home)})
    d = browser()
    try:
        chat(s.url, 1, max_tokens=4, headers={"Authorization": "Bearer sekrit"})
        d.get(s.url + "/dashboard")
        form = d.find_element("id", "keyform")
        deadline = time.time() + 20
        while time.time() < deadline and not form.is_displayed():
            time.sleep(0.1)
        assert form.is_displayed(), "the page asks for a key"
        assert value(d, "requests") == ""
        t0 = int(time.time() * 1000)
        d.find_element("id", "key").send_keys("sekrit")
        d.find_element("css selector", "#keyform button").click()
        wait_loaded(d, t0)
        assert value(d, "requests") == "1"
        assert d.execute_script("return sessionStorage.getItem('owl-api-key')") == "sekrit"
        assert not form.is_displayed()
    finally:
        d.quit()
        s.stop()
