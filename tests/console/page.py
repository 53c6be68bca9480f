"""Drives the status page in headless Chromium (Debian chromium and
chromium-driver) through Selenium's WebDriver client, and prints what the
page shows as JSON for tests/console.rs to check.

usage: page.py <admin base URL> <screenshot.png> <search> [open]
  - loads the page, waits for the first render of the tenant table;
  - types <search> into the search box, waits for the table to answer;
  - with "open": opens the first tenant found and waits for its view.
Every wait has a deadline; a missed one exits non-zero with the reason.
"""
import json
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

base, screenshot, search = sys.argv[1], sys.argv[2], sys.argv[3]
open_first = len(sys.argv) > 4 and sys.argv[4] == "open"

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1440,900"):
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
seen = {}
try:
    def wait(what, condition, seconds=30):
        try:
            return WebDriverWait(driver, seconds, poll_frequency=0.05).until(lambda d: condition())
        except Exception:
            print(f"timed out after {seconds}s waiting for {what}", file=sys.stderr)
            driver.save_screenshot(screenshot)
            raise

    def text(element_id):
        return driver.find_element(By.ID, element_id).text

    # The page re-renders on its refresh timer, so rows are read in one script
    # (a row found by one WebDriver call may be gone by the next: stale).
    def rows():
        return driver.execute_script(
            "return [...document.querySelectorAll('#tenants tbody tr.tenant')].map(r => r.dataset.tenant)")

    driver.get(base + "/")
    wait("the first render", lambda: driver.execute_script("return document.body.dataset.rendered") and text("tenant-count").isdigit())
    seen["first_render_ms"] = driver.execute_script(
        "return Number(document.body.dataset.rendered) - performance.timeOrigin")
    for key in ("version", "tenant-count", "suspended-count", "degraded-count", "down-count", "endpoint-count", "last-reload", "page-info"):
        seen[key] = text(key)
    seen["rows"] = rows()
    driver.save_screenshot(screenshot.replace(".png", "-table.png"))
    seen["cells"] = driver.execute_script(
        "return [...document.querySelectorAll('#tenants tbody tr.tenant')].slice(0, 20)"
        ".map(r => [...r.querySelectorAll('td')].map(c => c.innerText.trim()))")

    before = driver.execute_script("return document.body.dataset.rendered")
    box = driver.find_element(By.ID, "search")
    started = time.monotonic()
    box.send_keys(search)
    wait("the search's answer", lambda: driver.execute_script("return document.body.dataset.rendered") != before
         and all(search.lower() in (r or "").lower() for r in rows()))
    seen["search_ms"] = (time.monotonic() - started) * 1000
    seen["search_rows"] = rows()
    seen["search_page_info"] = text("page-info")

    if open_first and seen["search_rows"]:
        driver.execute_script("document.querySelector('#tenants tbody tr.tenant').click()")
        wait("the tenant view", lambda: driver.find_elements(By.CSS_SELECTOR, "#tenant-view tr.endpoint"))
        seen["view_title"] = driver.execute_script("return document.querySelector('#tenant-view h2').innerText.trim()")
        seen["view_endpoints"] = driver.execute_script(
            "return [...document.querySelectorAll('#tenant-view tr.endpoint')].map(r => ({"
            "health: r.querySelector('.health').innerText.trim(),"
            "last_error: r.querySelector('.last-error').innerText.trim(),"
            "endpoint: r.querySelector('td').innerText.trim()}))")
        seen["view_migration"] = text("migration")
    seen["color_scheme"] = driver.execute_script(
        "return getComputedStyle(document.documentElement).getPropertyValue('color-scheme').trim()")
    driver.save_screenshot(screenshot)
finally:
    driver.quit()
print(json.dumps(seen))
