import pytest


@pytest.mark.ray
def test_session_ray_runs_a_task(ray_address):
    import ray

    @ray.remote
    def square(x):
        return x * x

    assert ray.get(square.remote(7)) == 49
    assert ray.cluster_resources()["CPU"] == 2.0
