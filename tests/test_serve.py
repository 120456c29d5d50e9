"""`dmtui serve`: the app in a real headless browser (Debian's chromium and its driver),
on 127.0.0.1 only. Skipped, saying why, where chromium or chromedriver is missing
(`./dev test` installs them as root with apt-get).

The browser draws the terminal on a canvas, so the test reads what the app sent it: a
script installed before the page loads records every websocket message the page gets.
"""

from __future__ import annotations

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
from pathlib import Path

import pytest
from processes import descendants

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="chromium and chromium-driver are not installed "
                                       "(`./dev test` installs them as root: apt-get install chromium chromium-driver)")

RECORD_WEBSOCKET = """
window.__received = [];
const Native = window.WebSocket;
window.WebSocket = function (...args) {
  const socket = new Native(...args);
  socket.addEventListener("message", async (event) => {
    const data = event.data;
    let text = typeof data === "string" ? data
      : data instanceof Blob ? await data.text() : new TextDecoder().decode(data);
    window.__received.push(text);
  });
  return socket;
};
window.WebSocket.prototype = Native.prototype;
Object.assign(window.WebSocket, Native);
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WebDriver:
    """The few W3C WebDriver calls the test needs, over HTTP to chromedriver."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        capabilities = {"browserName": "chrome", "goog:chromeOptions": {
            "binary": CHROMIUM, "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800",
                                         "--disable-dev-shm-usage"]}}
        self.session = self.call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})["sessionId"]

    def call(self, method: str, path: str, body: dict | None = None):
        request = urllib.request.Request(self.base + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def session_call(self, method: str, path: str, body: dict | None = None):
        return self.call(method, f"/session/{self.session}{path}", body)

    def script(self, source: str):
        return self.session_call("POST", "/execute/sync", {"script": source, "args": []})

    def close(self) -> None:
        self.call("DELETE", f"/session/{self.session}")


def wait_until(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def listening(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state held by one of `pids`."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table, size in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                address, port = fields[1].split(":")
                if size == 8:
                    shown = socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1])
                else:
                    shown = socket.inet_ntop(socket.AF_INET6, b"".join(
                        bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, 32, 8)))
                found.add((shown, int(port, 16)))
    return found


def test_serve_shows_the_app_in_a_real_browser_and_takes_keys(tmp_path):
    data = tmp_path / "browser-prefs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"}) + "\n"
                            for i in range(37)))
    port, driver_port = free_port(), free_port()
    env = {**os.environ, "DMTUI_STATE_DIR": str(tmp_path / "state")}
    server = subprocess.Popen([sys.executable, "-m", "dmtui", "serve", str(data), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              start_new_session=True)
    chromedriver = subprocess.Popen([CHROMEDRIVER, f"--port={driver_port}"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
    browser = None
    try:
        first = server.stdout.readline()
        second = server.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        assert url in first, first
        assert f"ssh -L {port}:127.0.0.1:{port}" in second, second
        wait_until(lambda: ("127.0.0.1", port) in listening({server.pid} | descendants(server.pid)), 30,
                   "the server to listen")
        wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{driver_port}/status", timeout=5), 30,
                   "chromedriver")
        browser = WebDriver(driver_port)
        browser.session_call("POST", "/goog/cdp/execute",
                             {"cmd": "Page.addScriptToEvaluateOnNewDocument", "params": {"source": RECORD_WEBSOCKET}})
        browser.session_call("POST", "/url", {"url": url})

        def screen_text() -> str:
            text = "".join(browser.script("return window.__received || []"))
            return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)

        shown = wait_until(lambda: (t := screen_text()) and "browser-prefs.jsonl" in t and "37" in t and "loaded" in t
                           and t, 120, "the app's first screen (dataset name and pair count)")
        assert "Dataset" in shown
        assert browser.script("return document.querySelectorAll('.xterm-screen canvas').length") > 0
        textarea = browser.session_call("POST", "/element", {"using": "css selector",
                                                              "value": ".xterm-helper-textarea"})
        element = next(iter(textarea.values()))
        before = len(screen_text())
        browser.session_call("POST", f"/element/{element}/value", {"text": "3"})  # the Score tab
        wait_until(lambda: "reward model" in screen_text()[before:], 60, "the Score tab after pressing 3")
        # Only the served port listens, on 127.0.0.1 (each browser tab's app process listens on nothing).
        assert listening({server.pid} | descendants(server.pid)) == {("127.0.0.1", port)}
    finally:
        if browser is not None:
            browser.close()
        chromedriver.terminate()
        chromedriver.wait(timeout=30)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert server.returncode is not None
