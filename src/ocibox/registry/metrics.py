"""Prometheus metrics in the text exposition format, without a client library.

Counted per request: the endpoint (a route name, never the repository, so the
number of series stays bounded), the method and the status; request duration
as a histogram; body bytes in and out.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def endpoint_of(path: str) -> str:
    if path in ("/v2", "/v2/"):
        return "base"
    if path == "/v2/_catalog":
        return "catalog"
    if not path.startswith("/v2/"):
        return path.strip("/").split("/")[0] or "other"
    for marker, name in (("/blobs/uploads", "uploads"), ("/blobs/", "blobs"), ("/manifests/", "manifests"),
                         ("/tags/list", "tags"), ("/referrers/", "referrers")):
        if marker in path:
            return name
    return "other"


class Metrics:
    def __init__(self) -> None:
        self.started = time.time()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self.duration_sum: dict[str, float] = defaultdict(float)
        self.bytes_in = 0
        self.bytes_out = 0

    def observe(self, endpoint: str, method: str, status: int, seconds: float,
                received: int, sent: int) -> None:
        self.requests[(endpoint, method, status)] += 1
        self.buckets[endpoint][bisect.bisect_left(BUCKETS, seconds)] += 1
        self.duration_sum[endpoint] += seconds
        self.bytes_in += received
        self.bytes_out += sent

    def render(self) -> str:
        out = [
            "# HELP ocibox_registry_requests_total HTTP requests by endpoint, method and status.",
            "# TYPE ocibox_registry_requests_total counter",
        ]
        for (endpoint, method, status), n in sorted(self.requests.items()):
            out.append(f'ocibox_registry_requests_total{{endpoint="{endpoint}",method="{method}",'
                       f'status="{status}"}} {n}')
        out += ["# HELP ocibox_registry_request_duration_seconds Time to answer a request.",
                "# TYPE ocibox_registry_request_duration_seconds histogram"]
        for endpoint, counts in sorted(self.buckets.items()):
            total = 0
            for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
                total += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                out.append(f'ocibox_registry_request_duration_seconds_bucket{{endpoint="{endpoint}",'
                           f'le="{le}"}} {total}')
            out.append(f'ocibox_registry_request_duration_seconds_sum{{endpoint="{endpoint}"}} '
                       f"{self.duration_sum[endpoint]:.6f}")
            out.append(f'ocibox_registry_request_duration_seconds_count{{endpoint="{endpoint}"}} {total}')
        out += [
            "# HELP ocibox_registry_received_bytes_total Request body bytes received.",
            "# TYPE ocibox_registry_received_bytes_total counter",
            f"ocibox_registry_received_bytes_total {self.bytes_in}",
            "# HELP ocibox_registry_sent_bytes_total Response body bytes sent.",
            "# TYPE ocibox_registry_sent_bytes_total counter",
            f"ocibox_registry_sent_bytes_total {self.bytes_out}",
            "# HELP ocibox_registry_start_time_seconds When the registry started.",
            "# TYPE ocibox_registry_start_time_seconds gauge",
            f"ocibox_registry_start_time_seconds {self.started:.3f}",
        ]
        return "\n".join(out) + "\n"
