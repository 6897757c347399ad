import pytest

from tuner.errors import ConfigError
from tuner.schedulers.rungs import hyperband_n, rung_levels, rung_sizes, s_max


@pytest.mark.parametrize(
    ("r", "big_r", "eta", "expected"),
    [
        (1, 81, 3, (1, 3, 9, 27, 81)),
        (1, 243, 3, (1, 3, 9, 27, 81, 243)),  # log(243, 3) = 4.999...: float logs lose this
        (1, 100, 3, (1, 3, 9, 27, 81, 100)),  # top rung is R even off the grid
        (2, 16, 2, (2, 4, 8, 16)),
        (1, 1000, 10, (1, 10, 100, 1000)),
        (5, 6, 3, (5, 6)),
    ],
    ids=["81-3", "exact-power-243", "R-not-power", "r2-eta2", "eta10", "two-rungs"],
)
def test_rung_levels_are_integer_milestones_ending_at_R(r, big_r, eta, expected):
    assert rung_levels(r, big_r, eta) == expected


@pytest.mark.parametrize(
    ("r", "big_r", "eta", "message"),
    [(1, 81, 1, "eta is 1, but must be >= 2"), (9, 9, 3, "need 1 <= min_resource < max_resource")],
    ids=["eta-1", "r-equals-R"],
)
def test_rung_levels_refuse_bad_settings(r, big_r, eta, message):
    with pytest.raises(ConfigError, match=message):
        rung_levels(r, big_r, eta)


def test_hyperband_table_R81_eta3_matches_the_paper():
    top = s_max(1, 81, 3)
    assert top == 4
    table = [rung_sizes(hyperband_n(s, top, 3), top - s + 1, 3) for s in range(top + 1)]
    assert table == [
        (81, 27, 9, 3, 1),
        (34, 11, 3, 1),
        (15, 5, 1),
        (8, 2),
        (5,),
    ]
    assert sum(sizes[0] for sizes in table) == 143
