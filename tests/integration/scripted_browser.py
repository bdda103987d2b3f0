"""A scripted browser for CLI tests: opens the authorization URL, signs in on the real login page (hidden fields
and CSRF cookie included) and follows the redirect to the CLI's loopback listener.

    python tests/integration/scripted_browser.py URL     (user name and password from DS_TEST_USER/_PASSWORD)
"""

from __future__ import annotations

import os
import re
import sys
from html import unescape

import httpx


def main(url: str) -> None:
    with httpx.Client(timeout=30) as browser:
        page = browser.get(url)
        fields = {
            k: unescape(v) for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text)
        }
        fields.update(username=os.environ["DS_TEST_USER"], password=os.environ["DS_TEST_PASSWORD"], action="approve")
        answer = browser.post(url.split("?", 1)[0], data=fields)
        browser.get(answer.headers["location"])


if __name__ == "__main__":
    main(sys.argv[1])
