"""Property-based: schemathesis generates requests from /openapi.json and checks every live answer of
the gunicorn gateway (status documented, JSON matching its schema, no 5xx). Admin operations are
called without the token (401/403 each), so the shared TorchServe is never changed by random input."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

OPERATIONS = ["GET /healthz", "GET /readyz", "GET /models", "GET /metrics", "POST /predict",
              "POST /admin/register", "POST /admin/unregister", "POST /admin/scale", "POST /admin/default",
              "POST /admin/split", "DELETE /admin/split"]


def test_the_spec_lists_every_operation(gateway_openapi):  # (schemathesis leaves out the spec's own URL)
    labels = {r.ok().label for r in gateway_openapi.get_all_operations()}
    assert labels == set(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_every_answer_matches_the_openapi_spec(gateway_openapi, label):
    method, path = label.split(" ", 1)
    operation = gateway_openapi[path][method]
    seen = []

    @given(case=operation.as_strategy())
    @settings(max_examples=8 if method == "GET" else 15, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        # a client id per example keeps the per-client rate limit out of the way
        headers = {} if "X-Client-Id" in (case.headers or {}) else {"X-Client-Id": f"schemathesis-{len(seen)}"}
        # a schema can say "binary", not "a decodable photo of at least 2x2 px": the 400/422 answers to
        # random bytes are right (their bodies are still checked against the spec)
        excluded = [positive_data_acceptance] if path == "/predict" else []
        response = case.call_and_validate(headers=headers, excluded_checks=excluded)
        seen.append(response.status_code)

    check()
    assert seen
    if path.startswith("/admin"):
        assert set(seen) <= {401, 403}, seen  # no token, or a generated wrong one
    elif method == "GET" and path != "/readyz":
        assert set(seen) == {200}, seen
