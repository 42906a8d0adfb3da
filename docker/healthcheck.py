"""The pushsource container's HEALTHCHECK: healthy while the control API
answers and no station has failed (a wrong password, a server gone for good).

    python healthcheck.py [URL]    (default http://127.0.0.1:8700/api/stations?summary=1)

Exit 0 healthy, 1 not, with one line saying why.
"""

from __future__ import annotations

import json
import sys
import urllib.request

URL = "http://127.0.0.1:8700/api/stations?summary=1"


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else URL
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            stations = json.load(response)["stations"]
    except Exception as exc:  # any failure to answer is unhealthy
        print(f"unhealthy: the control API at {url} does not answer: {exc}")
        return 1
    failed = [s["id"] for s in stations if (s.get("connection") or {}).get("state") == "failed"]
    if failed:
        print(f"unhealthy: failed: {', '.join(failed)}")
        return 1
    print(f"healthy: {len(stations)} stations, none failed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
