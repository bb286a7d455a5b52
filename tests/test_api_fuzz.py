"""The HTTP API under Schemathesis (issue 16, item 5): requests generated from the server's own
OpenAPI schema, valid and invalid, with every check on — no server error, every status and body
as the schema documents them — on a small index, with and without the token."""
from __future__ import annotations

import shutil

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from conftest import PARIS
from layerseek.index import Index

TOKEN = "fuzz-token"
OPTS = {"backbone": "mobilenet_v2", "layers": ("last",), "max_side": 128}


@pytest.fixture(scope="module")
def fuzzed_index(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "photos").mkdir()
    for name in PARIS[:4]:
        shutil.copy(data_dir / "paris6k-subset" / "jpg" / name, root / "photos" / name)
    with Index.create(root / "idx", "gem", verify=True, **OPTS) as idx:
        idx.add_folder(root / "photos")
    return root / "idx"


@pytest.fixture
def api_schema(fuzzed_index):
    """The schema of a new app on the index (an app's shutdown closes its catalog)."""
    from layerseek.server.app import allowed_host_names, create_app

    # A request can fit the schema and still not be an image (the schema cannot say "JPEG bytes"):
    # such valid-looking uploads may be refused as documented (400, 413, 415).
    config = schemathesis.Config.from_dict({"checks": {"positive_data_acceptance": {
        "expected-statuses": ["2xx", "3xx", 400, 401, 403, 404, 409, 413, 415, 429]}}})
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(
        fuzzed_index, token=TOKEN, allowed_hosts=allowed_host_names(extra=["testserver"])), config=config)  # its Host


def _fuzz(schema, mode, examples: int, headers: dict | None = None) -> list[str]:
    """Run `examples` generated requests per operation; the checks' failures, one line each."""
    failures = []
    for result in schema.get_all_operations():
        op = result.ok()

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            case.call_and_validate(headers=headers)

        try:
            run()
        except Unsatisfiable:  # nothing to make invalid (GET /health takes no input)
            continue
        except Exception as e:  # noqa: BLE001 - collected, reported together
            failures.append(f"{op.label}: {str(e).strip().splitlines()[0][:400]}")
    return failures


@pytest.mark.parametrize("token", [False, True], ids=["anonymous", "token"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_the_api_as_documented(api_schema, mode, token):
    """Every generated request, schema-valid and not, with and without the token: no 5xx, and
    status, content type, headers and body as the schema documents them."""
    failures = _fuzz(api_schema, mode, 20, {"Authorization": f"Bearer {TOKEN}"} if token else None)
    assert failures == [], "\n".join(failures)
