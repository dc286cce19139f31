"""dsd_spec.expectation against the published tables (Leviathan et al. 2023; shared notes)."""

import pytest

from dsd_spec import expectation

PUBLISHED_E = {
    0.6: [1.60, 1.96, 2.18, 2.31, 2.38, 2.43, 2.46, 2.47],
    0.8: [1.80, 2.44, 2.95, 3.36, 3.69, 3.95, 4.16, 4.33],
    0.9: [1.90, 2.71, 3.44, 4.10, 4.69, 5.22, 5.70, 6.13],
}


@pytest.mark.parametrize("alpha", sorted(PUBLISHED_E))
def test_expected_tokens_iid_matches_table(alpha):
    got = [round(expectation.expected_tokens_iid(alpha, g), 2) for g in range(1, 9)]
    assert got == PUBLISHED_E[alpha]


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.6, 0.95, 1.0])
@pytest.mark.parametrize("gamma", [0, 1, 4, 9])
def test_per_position_form_equals_iid_form_for_constant_alpha(alpha, gamma):
    assert expectation.expected_tokens_per_round([alpha], gamma) == pytest.approx(
        expectation.expected_tokens_iid(alpha, gamma)
    )


def test_per_position_acceptance_uses_products():
    # 1 + a1 + a1*a2 + a1*a2*a3
    assert expectation.expected_tokens_per_round([0.9, 0.5, 0.2], 3) == pytest.approx(1 + 0.9 + 0.45 + 0.09)


@pytest.mark.parametrize(
    ("c", "alpha", "gamma", "factor"),
    [(0.05, 0.6, 4, 1.92), (0.05, 0.8, 8, 3.09), (0.2, 0.6, 2, 1.40), (0.2, 0.8, 4, 1.87), (0.5, 0.8, 2, 1.22)],
)
def test_optimal_gamma_colocated_matches_published(c, alpha, gamma, factor):
    g, f = expectation.optimal_gamma_colocated(alpha, c, gamma_max=8)
    assert g == gamma
    assert f == pytest.approx(factor, abs=0.006)


@pytest.mark.parametrize("bad", [-0.1, 1.1])
def test_alpha_out_of_range_is_rejected(bad):
    with pytest.raises(ValueError, match="alpha"):
        expectation.expected_tokens_iid(bad, 3)
