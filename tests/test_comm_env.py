"""Issue 23: a malformed MPI launcher variable is refused by name instead of running alone."""

import pytest

from bnlab.comm import WorldSizeError, launcher_world_size


@pytest.mark.parametrize("value", ["abc", "0", "-2", "2.5", "", "²"])
def test_malformed_size_variable_is_named(value):
    with pytest.raises(WorldSizeError, match=r"PMI_SIZE=.* is not a positive process count"):
        launcher_world_size({"PMI_SIZE": value})


@pytest.mark.parametrize(
    "env,size",
    [
        ({}, None),
        ({"PMI_SIZE": "4"}, 4),
        ({"OMPI_COMM_WORLD_SIZE": " 2 "}, 2),
        ({"PMI_RANK": "0"}, None),
    ],
)
def test_well_formed_environments(env, size):
    assert launcher_world_size(env) == size
