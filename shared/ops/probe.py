"""`python -m shared.ops.probe URL`: a container health check without curl in the image.

Exit 0 when the URL answers with a status below 500 (a function deployed alone
answers a bare GET with a JSON 404 or 405, which still proves it serves), else 1.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence

from shared.ops.seconds import positive_seconds

# A health check's whole budget; a platform gives one a few seconds, never an hour.
MAX_TIMEOUT_S = 3600.0


def probe(url: str, timeout_s: float) -> tuple[bool, str]:
    # urlopen's timeout bounds each socket operation, not the request: a server that
    # sends its headers a byte at a time would hold the probe for good. A daemon thread
    # gives the whole request one deadline.
    outcome: list[tuple[bool, str]] = []
    asking = threading.Thread(target=lambda: outcome.append(_ask(url, timeout_s)), daemon=True)
    asking.start()
    asking.join(timeout_s)
    return outcome[0] if outcome else (False, f"{url}: no answer within {timeout_s:g} s")


def _ask(url: str, timeout_s: float) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        return False, f"{url}: no answer ({error})"
    except (http.client.HTTPException, ValueError) as error:
        # Not HTTP on that port (BadStatusLine), or a URL urllib cannot parse.
        return False, f"{url}: no HTTP answer ({type(error).__name__}: {error})"
    return status < 500, f"{url}: HTTP {status}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.ops.probe")
    parser.add_argument("url")
    parser.add_argument(
        "--timeout",
        type=positive_seconds(MAX_TIMEOUT_S),
        default=3.0,
        help=f"seconds, at most {MAX_TIMEOUT_S:g} (default 3)",
    )
    args = parser.parse_args(argv)
    healthy, detail = probe(args.url, args.timeout)
    print(detail)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
