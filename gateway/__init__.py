"""Flask gateway in front of TorchServe: /predict, /models, admin model switching, metrics, OpenAPI.

`create_app` is imported lazily: gunicorn imports `gateway.gunicorn_conf` (which must set
PROMETHEUS_MULTIPROC_DIR before prometheus_client is imported anywhere) through this package.
"""


def create_app(config=None):
    """The gateway's Flask app; `config` (a dict) overrides settings read from the environment."""
    from .app import create_app as _create_app

    return _create_app(config)
