"""Shared test configuration. Fixtures of a family live in tests/support/ and are imported here."""

from __future__ import annotations

import pytest

from tests.support.e2e import model, notifier, rt  # noqa: F401  (fixtures of the e2e tests)
from tests.support.interrupts import block_project  # noqa: F401  (a fixture)
from tests.support.openai_server import openai_server  # noqa: F401  (a fixture)
from tests.support.postgres import postgres_cluster, postgres_url  # noqa: F401  (fixtures)
from tests.support.server import collected, deploy_agent  # noqa: F401  (server test fixtures)
from tests.support.slack_server import slack_server  # noqa: F401  (a fixture of the Slack tests)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="Rewrite the expected files of tests/golden/ from the compiler's current output.",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses a PostgreSQL database is marked `postgres` (select with -m)."""
    for item in items:
        if "postgres_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
