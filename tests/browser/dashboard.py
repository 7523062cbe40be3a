"""Drives the master's dashboard in a real Chromium, as an operator would during a deploy.

Run by master/tests/e2e_dashboard.rs with a real master, real minions and a one-time login URL
from `brine-master dashboard login`. Uses Debian's chromium and chromium-driver through
Selenium; nothing is downloaded at run time. Exits non-zero with the reason on the first broken
promise, and saves a screenshot of each view in --screenshots.
"""

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--login-url", required=True)
    parser.add_argument("--master-bin", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--hosts", required=True, help="comma-separated minion ids")
    parser.add_argument("--second-roles", required=True,
                        help="a roles file that changes every host, for the second job")
    parser.add_argument("--screenshots", required=True)
    return parser.parse_args()


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1400,900", "--disable-gpu"):
        options.add_argument(flag)
    # The master's certificate is signed by the fleet's own CA, which this throwaway browser
    # profile does not know; an operator imports ca.pem instead.
    options.set_capability("acceptInsecureCerts", True)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def fail(message):
    print(f"dashboard test failed: {message}", file=sys.stderr)
    sys.exit(1)


def wait(driver, what, condition, timeout=30):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2,
                             ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: condition(d))
    except TimeoutException:
        fail(f"timed out after {timeout}s waiting for {what}; page {driver.current_url}:\n"
             f"{driver.find_element(By.TAG_NAME, 'body').text[:2000]}")


def mark(driver):
    """Marks the page: a reload would lose the mark."""
    driver.execute_script("window.__brine_not_reloaded = true;")


def still_marked(driver, what):
    if not driver.execute_script("return window.__brine_not_reloaded === true;"):
        fail(f"the page was reloaded while {what}")


def shoot(driver, directory, name):
    path = Path(directory) / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot {path}")


def signed_out(driver):
    return len(driver.find_elements(By.ID, "signed-out")) == 1


def highstate(args):
    return subprocess.Popen(
        [args.master_bin, "highstate", "--data-dir", args.data_dir, "--output", "json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def job_rows(driver):
    return driver.find_elements(By.CSS_SELECTOR, "table#jobs tr[data-job]")


def main():
    args = parse_args()
    hosts = args.hosts.split(",")
    Path(args.screenshots).mkdir(parents=True, exist_ok=True)
    parts = urlsplit(args.login_url)
    base = f"{parts.scheme}://{parts.netloc}"
    driver = browser()
    try:
        # Without a session, nothing is shown.
        driver.get(base + "/")
        if not signed_out(driver):
            fail("a page without a session was served")
        shoot(driver, args.screenshots, "signed-out")

        # The one-time link signs in and lands on the fleet.
        driver.get(args.login_url)
        wait(driver, "the fleet view", lambda d: d.find_elements(By.CSS_SELECTOR, "table#hosts"))
        for host in hosts:
            row = wait(driver, f"host {host} to be listed",
                       lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-host="{host}"]'))[0]
            link = row.find_element(By.CSS_SELECTOR, ".link").text.strip()
            if link != "linked":
                fail(f"host {host} shows link {link!r}, not 'linked'")

        # A highstate started from the CLI appears on the jobs page, and finishes, without a
        # reload.
        driver.get(base + "/jobs")
        wait(driver, "the jobs view", lambda d: d.find_elements(By.CSS_SELECTOR, "table#jobs"))
        before = {row.get_attribute("data-job") for row in job_rows(driver)}
        mark(driver)
        first = highstate(args)
        new_row = wait(driver, "the new job's row",
                       lambda d: [r for r in job_rows(d) if r.get_attribute("data-job") not in before])[0]
        job_id = new_row.get_attribute("data-job")
        wait(driver, f"job {job_id} to finish on the page",
             lambda d: d.find_element(By.CSS_SELECTOR, f'tr[data-job="{job_id}"] .status').text.strip()
             not in ("", "running"), timeout=90)
        still_marked(driver, "a job ran")
        if first.wait(timeout=60) != 0:
            fail(f"the first highstate failed: {first.stderr.read().decode()}")
        shoot(driver, args.screenshots, "jobs")

        # The fleet now shows each host's container and the job that made it.
        driver.get(base + "/")
        for host in hosts:
            row = wait(driver, f"host {host}'s last job",
                       lambda d: [r for r in d.find_elements(By.CSS_SELECTOR, f'tr[data-host="{host}"]')
                                  if r.find_element(By.CSS_SELECTOR, ".last-job").text.strip()])[0]
            if job_id not in row.find_element(By.CSS_SELECTOR, ".last-job").get_attribute("innerHTML"):
                fail(f"host {host}'s last job is not {job_id}: {row.text}")
            if not row.find_element(By.CSS_SELECTOR, ".containers").text.strip().startswith("1"):
                fail(f"host {host} does not show its container: {row.text}")
        shoot(driver, args.screenshots, "fleet")
        driver.get(base + "/jobs")
        wait(driver, "the jobs view", lambda d: d.find_elements(By.CSS_SELECTOR, "table#jobs"))

        # Its timeline: one row per host, with its phases.
        driver.find_element(By.CSS_SELECTOR, f'a[href="/jobs/{job_id}"]').click()
        wait(driver, "the job's page",
             lambda d: d.find_elements(By.CSS_SELECTOR, '#job[data-state="finished"]'))
        groups = driver.find_elements(By.CSS_SELECTOR, "svg#timeline g[data-host]")
        if sorted(g.get_attribute("data-host") for g in groups) != sorted(hosts):
            fail(f"the timeline shows {[g.get_attribute('data-host') for g in groups]}, not {hosts}")
        if not driver.find_elements(By.CSS_SELECTOR, "svg#timeline rect.phase.health"):
            fail("the timeline shows no health phase")
        shoot(driver, args.screenshots, "job-timeline")

        # A job followed on its own page while it runs: hosts' statuses and the job's state
        # change in place.
        shutil.copyfile(args.second_roles, Path(args.data_dir) / "roles.toml")
        driver.get(base + "/jobs")
        wait(driver, "the jobs view", lambda d: d.find_elements(By.CSS_SELECTOR, "table#jobs"))
        before = {row.get_attribute("data-job") for row in job_rows(driver)}
        second = highstate(args)
        new_row = wait(driver, "the second job's row",
                       lambda d: [r for r in job_rows(d) if r.get_attribute("data-job") not in before])[0]
        second_id = new_row.get_attribute("data-job")
        driver.get(f"{base}/jobs/{second_id}")
        wait(driver, "the running job's page", lambda d: d.find_elements(By.ID, "job"))
        mark(driver)
        running = driver.find_element(By.ID, "job").get_attribute("data-state") == "running"
        if running:
            shoot(driver, args.screenshots, "job-running")
        wait(driver, "the job to finish in place",
             lambda d: d.find_element(By.ID, "job").get_attribute("data-state") == "finished",
             timeout=90)
        still_marked(driver, "the job page followed a job")
        for host in hosts:
            status = driver.find_element(
                By.CSS_SELECTOR, f'#job-hosts tr[data-host="{host}"] .status').text.strip()
            if status != "changed":
                fail(f"host {host} shows {status!r} after a job that changed it")
        if not running:
            print("the second job had finished before its page opened; its live update was not seen",
                  file=sys.stderr)
        if second.wait(timeout=60) != 0:
            fail(f"the second highstate failed: {second.stderr.read().decode()}")

        driver.get(base + "/releases")
        wait(driver, "the releases", lambda d: d.find_elements(By.CSS_SELECTOR, "table#releases tr[data-release]"))
        shoot(driver, args.screenshots, "releases")

        driver.get(base + "/lock")
        wait(driver, "the lock view", lambda d: d.find_elements(By.TAG_NAME, "main"))
        shoot(driver, args.screenshots, "lock")

        # The session's cookie is the only key: without it, and with the used link, nothing.
        driver.delete_all_cookies()
        driver.get(base + "/jobs")
        if not signed_out(driver):
            fail("a page was served after the session's cookie was dropped")
        driver.get(args.login_url)
        if not signed_out(driver):
            fail("a used sign-in link signed in again")
        if not driver.find_elements(By.XPATH, "//*[contains(., 'invalid or has been used')]"):
            fail("a used sign-in link was not explained")
    finally:
        driver.quit()
    print("dashboard test passed")


if __name__ == "__main__":
    main()
