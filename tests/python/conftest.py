"""Test tiers (pytest markers, see README, "Run the tests"): every test is `unit` (one process,
seconds: `python -m pytest -m unit` is the edit-test loop), `multiprocess` (ranks or
launchers as processes) or `perf` (the benchmark tools run end to end on a small size,
never asserting timings). A module declares `unit` or `perf` in its `pytestmark`; every
other test is multiprocess, so a new test that starts processes can never slow the
quick tier by forgetting its marker."""

import pytest

from world import World

TIERS = ("unit", "multiprocess", "perf")

_worlds = {}


def get_world(size):
    """A live qccl world of `size` ranks, restarted when a previous test broke it."""
    world = _worlds.get(size)
    if world is None or world.broken:
        if world is not None:
            world.close()
        world = _worlds[size] = World(size)
    return world


@pytest.fixture(params=[2, 4], ids=["2ranks", "4ranks"])
def world(request):
    return get_world(request.param)


@pytest.fixture
def world2():
    return get_world(2)


def pytest_sessionfinish(session, exitstatus):
    for world in _worlds.values():
        world.close()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if not any(item.get_closest_marker(tier) for tier in TIERS):
            item.add_marker("multiprocess")
