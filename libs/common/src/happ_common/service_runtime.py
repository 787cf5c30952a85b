"""How a service process starts: logging, then uvicorn on the service's port.

uvicorn picks uvloop and httptools when installed (``uvicorn[standard]``); each
service runs one worker process and scales by replicas, not by forking.
"""

from __future__ import annotations

import gc
import logging
import sys

import uvicorn
from fastapi import FastAPI


def configure_logging(service: str, level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s",
        force=True,
    )
    # aiokafka logs every transient connection error at ERROR; the services
    # report those through /readyz and metrics instead.
    logging.getLogger("aiokafka").setLevel(
        logging.CRITICAL if level.upper() != "DEBUG" else logging.DEBUG
    )


def freeze_startup_heap() -> None:
    """Move everything allocated at startup out of the collector's sight.

    Called at the end of each lifespan's startup. Without it, full collections
    walk every module, model and client object on each pass: in the ingress
    under a steady 2,000 webhooks/s they were the p99 (65 ms, against 23 ms with
    the startup heap frozen; ``make bench-ingress``).
    """
    gc.collect()
    gc.freeze()


def serve(app: FastAPI, *, host: str, port: int, service: str, log_level: str) -> None:
    configure_logging(service, log_level)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=15,
        # Nothing reads the client address, so no X-Forwarded-* rewriting per request.
        proxy_headers=False,
        server_header=False,
    )
