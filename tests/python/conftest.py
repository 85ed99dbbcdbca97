import pytest

from world import World

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
