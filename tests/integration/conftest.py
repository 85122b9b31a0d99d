from __future__ import annotations

import pytest

from tests.harness import Running, start_service, test_settings


@pytest.fixture
async def server(tmp_path) -> Running:  # type: ignore[misc]
    running = await start_service(test_settings(tmp_path))
    yield running
    await running.close()
    await running.service.stop()
