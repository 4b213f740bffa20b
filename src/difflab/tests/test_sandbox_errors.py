"""Pathwise errors of the ODE samplers against a tight solve (toy.sandbox.ode_errors)."""

from difflab.toy.sandbox import ode_errors


def test_ode_errors_show_first_and_second_order():
    """Halving the step halves Euler's and DDIM's error and quarters Heun's (Euler:
    order 1; Heun: order 2, Karras et al. 2022, Alg. 1). The ratios at NFE 200 -> 400
    are measured on 64 points; 25 % covers the pre-asymptotic term."""
    rows, ref = ode_errors(nfes=(200, 400), rk45_tols=(1e-6,), n_samples=64, seed=3)
    err = {(r["sampler"], r["nfe"]): r["err"] for r in rows}
    assert ref.shape == (64, 2)
    for name, factor in [("ode_euler", 2), ("ddim", 2), ("ode_heun", 4)]:
        ratio = err[name, 200] / err[name, 400]
        assert abs(ratio / factor - 1) < 0.25, (name, ratio)
    rk45 = next(r for r in rows if r["sampler"] == "rk45")
    assert rk45["err"] < err["ode_heun", 400]  # tight tolerance: most accurate
