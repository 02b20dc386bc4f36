"""gunicorn settings for the gateway: `gunicorn -c python:gateway.gunicorn_conf 'gateway:create_app()'`.

Environment: WOOF_GATEWAY_BIND (default 127.0.0.1:8000), WOOF_GATEWAY_WORKERS (2),
WOOF_GATEWAY_THREADS (8), WOOF_GATEWAY_ACCESS_LOG (a file, rolled at 10 MB with 3 old copies, or - for
stdout; off by default),
PROMETHEUS_MULTIPROC_DIR (a fresh temp folder when unset). Command-line flags override these.
"""

import os
import tempfile
from pathlib import Path

from gateway.config import ACCESS_LOG_BACKUPS, ACCESS_LOG_MAX_BYTES

# prometheus_client picks its multiprocess value class at import: set the folder before anything imports it
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="woof-prometheus-")
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

bind = [os.environ.get("WOOF_GATEWAY_BIND") or "127.0.0.1:8000"]
workers = int(os.environ.get("WOOF_GATEWAY_WORKERS") or 2)
threads = int(os.environ.get("WOOF_GATEWAY_THREADS") or 8)
worker_class = "gthread"
timeout = 120  # a worker silent this long is restarted; predictions are bounded by WOOF_READ_TIMEOUT
graceful_timeout = 20
keepalive = 5
_access = os.environ.get("WOOF_GATEWAY_ACCESS_LOG") or None
accesslog = _access if _access in (None, "-") else None  # a file: rolled by the handler below instead
if _access not in (None, "-"):
    # one line per request, in a file that rolls at 10 MB keeping 3 old copies: a bounded access log
    logconfig_dict = {  # replaces gunicorn's defaults as a whole: its error log stays on stderr as before
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(message)s"},
                       "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"}},
        "handlers": {"access": {"class": "logging.handlers.RotatingFileHandler", "filename": _access,
                                "maxBytes": ACCESS_LOG_MAX_BYTES, "backupCount": ACCESS_LOG_BACKUPS,
                                "formatter": "plain"},
                     "error": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                               "formatter": "generic"}},
        "root": {"level": "INFO", "handlers": ["error"]},
        "loggers": {"gunicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
                    "gunicorn.error": {"handlers": ["error"], "level": "INFO", "propagate": False}},
    }
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms id=%({x-request-id}o)s client=%({x-client-id}i)s'
proc_name = "woof-gateway"
# gunicorn 24+ opens a control socket at one fixed path per user: several gateways (tests, load test)
# would take it from each other, and woof needs none of its commands
control_socket_disable = True


def on_starting(server):
    # counters of a previous run would otherwise be summed into this one's
    for stale in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
        stale.unlink()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
