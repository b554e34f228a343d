"""The container image's health check (deploy/Dockerfile HEALTHCHECK): GET /healthz on
this container's own listener, exit 0 when it answers 200, 1 otherwise.

It reads the port, the listen address and TLS from the same configuration the daemon
uses ($MIRROR_CONFIG plus MIRROR_* variables), so a changed port or TLS needs no change
here. Standard library only: the slim image has no curl or wget.
"""

from __future__ import annotations

import ssl
import sys
import urllib.request

from mirror.config import load


def main() -> int:
    server = load().server
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if server.tls_cert else "http"
    # The certificate names the service, not 127.0.0.1: liveness is what is checked here.
    context = ssl._create_unverified_context() if server.tls_cert else None
    try:
        with urllib.request.urlopen(f"{scheme}://{host}:{server.port}/healthz", timeout=4, context=context) as resp:
            return 0 if resp.status == 200 else 1
    except OSError as exc:
        print(f"health check failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
