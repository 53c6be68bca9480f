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

    def rows():
        return [r.get_attribute("data-tenant") for r in driver.find_elements(By.CSS_SELECTOR, "#tenants tbody tr.tenant")]

    driver.get(base + "/")
    wait("the first render", lambda: driver.execute_script("return document.body.dataset.rendered") and text("tenant-count").isdigit())
    seen["first_render_ms"] = driver.execute_script(
        "return Number(document.body.dataset.rendered) - performance.timeOrigin")
    for key in ("version", "tenant-count", "suspended-count", "degraded-count", "down-count", "endpoint-count", "last-reload", "page-info"):
        seen[key] = text(key)
    seen["rows"] = rows()
    driver.save_screenshot(screenshot.replace(".png", "-table.png"))
    seen["cells"] = [[c.text for c in r.find_elements(By.TAG_NAME, "td")]
                     for r in driver.find_elements(By.CSS_SELECTOR, "#tenants tbody tr.tenant")[:20]]

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
        driver.find_element(By.CSS_SELECTOR, "#tenants tbody tr.tenant").click()
        wait("the tenant view", lambda: driver.find_elements(By.CSS_SELECTOR, "#tenant-view tr.endpoint"))
        view = driver.find_element(By.ID, "tenant-view")
        seen["view_title"] = view.find_element(By.TAG_NAME, "h2").text
        seen["view_endpoints"] = [
            {"health": r.find_element(By.CSS_SELECTOR, ".health").text,
             "last_error": r.find_element(By.CSS_SELECTOR, ".last-error").text,
             "endpoint": r.find_elements(By.TAG_NAME, "td")[0].text}
            for r in view.find_elements(By.CSS_SELECTOR, "tr.endpoint")]
        seen["view_migration"] = text("migration")
    seen["color_scheme"] = driver.execute_script(
        "return getComputedStyle(document.documentElement).getPropertyValue('color-scheme').trim()")
    driver.save_screenshot(screenshot)
finally:
    driver.quit()
print(json.dumps(seen))
