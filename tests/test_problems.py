"""Built-in and user-defined finite-sum problems."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import float64, numpy_example_grads, user_problem
from jax.flatten_util import ravel_pytree

import sde_sam as ss

BUILDERS = {
    "quadratic": lambda: ss.problems.quadratic(hessian_noise=0.5),
    "linreg": lambda: ss.problems.linear_regression(n=32, d=4),
    "breast_cancer": lambda: ss.problems.breast_cancer_logistic(),
    "basins_1d": lambda: ss.problems.sharp_flat_basins(dim=1),
    "basins_2d": lambda: ss.problems.sharp_flat_basins(dim=2),
    "teacher_student": lambda: ss.problems.teacher_student(n=32),
    "digits_mlp": lambda: ss.problems.digits_mlp(hidden=(16, 8)),
    "user": user_problem,
}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n == "digits_mlp" else n for n in BUILDERS],  # digits_mlp: slow pass
)
def test_builtin_problem_losses_and_chunked_per_example_grads(name):
    problem = BUILDERS[name]()
    x = problem.init_params
    assert np.isfinite(float(problem.full_loss(x)))
    full = problem.per_example_grads(x)
    chunk = 7 if problem.num_examples < 1000 else 97  # divides none of the n: exercises the tail
    chunked = problem.per_example_grads(x, chunk_size=chunk)
    for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(chunked), strict=False):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    mean = jax.tree_util.tree_map(lambda a: a.mean(0), full)
    for a, b in zip(jax.tree_util.tree_leaves(mean), jax.tree_util.tree_leaves(problem.full_grad(x)), strict=False):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(problem.full_loss(x, chunk_size=chunk), problem.full_loss(x), rtol=1e-6)


def test_per_example_grads_match_finite_differences():
    with float64():
        problem = user_problem().with_dtype(jnp.float64)
        g = problem.per_example_grads(problem.init_params)
        flat = np.stack(
            [
                np.asarray(ravel_pytree(jax.tree_util.tree_map(lambda a: a[i], g))[0])
                for i in range(problem.num_examples)
            ]
        )
        fd = numpy_example_grads(problem, problem.init_params, range(problem.num_examples))
        np.testing.assert_allclose(flat, fd, rtol=1e-6, atol=1e-8)  # float64 central differences, h = 1e-5


def test_quadratic_has_the_chosen_mean_spectrum():
    problem = ss.problems.quadratic(spectrum=(10.0, 1.0, 0.1), hessian_noise=0.5)
    H = jax.hessian(problem.full_loss)(problem.init_params)
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(np.asarray(H))), [0.1, 1.0, 10.0], rtol=1e-5)


def test_sharp_flat_basins_curvatures():
    problem = ss.problems.sharp_flat_basins(dim=1, noise_scale=0.0)
    hess = jax.grad(jax.grad(lambda x: problem.full_loss(jnp.array([x]))))
    assert float(hess(-1.0)) > 5 * float(hess(1.0))  # sharp basin at -1, flat at +1 (mixture softens h_s=16)
    assert bool(ss.problems.in_sharp_basin(problem.init_params))


def test_digits_mlp_parameter_paths_and_accuracy():
    problem = ss.problems.digits_mlp(hidden=16)
    assert set(problem.init_params) == {"dense_0", "layer_norm_0", "dense_out"}
    assert problem.num_examples + problem.test_data["label"].shape[0] == 1797  # pyright: ignore[reportOptionalSubscript]
    acc = float(problem.accuracy(problem.init_params))
    assert 0.0 <= acc <= 0.3  # untrained: near chance


def test_mnist1d_is_generated_offline_with_its_documented_sizes():
    """4000 training and 1000 test signals of length 40, 10 classes; label noise flips about its fraction."""
    train, test = ss.problems.load_mnist1d_split()
    assert train["image"].shape == (4000, 40) and test["image"].shape == (1000, 40)
    assert set(np.unique(np.asarray(train["label"]))) == set(range(10))
    noisy, _ = ss.problems.load_mnist1d_split(label_noise=0.5)
    changed = float(np.mean(np.asarray(noisy["label"]) != np.asarray(train["label"])))
    assert 0.4 < changed < 0.5  # half are redrawn, a tenth of those land on their own label: 0.45 expected
    with pytest.raises(ValueError, match="label_noise"):
        ss.problems.load_mnist1d_split(label_noise=1.5)


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
@pytest.mark.parametrize("make", [lambda: ss.problems.mnist1d_mlp(hidden=8), lambda: ss.problems.mnist1d_cnn((4, 4))])
def test_mnist1d_networks_train(make):
    problem = make()
    assert problem.num_examples == 4000 and problem.test_data is not None
    runs = ss.run_discrete(
        problem,
        ss.variants.sgd(),
        ss.UniformSubset(32),
        eta=0.1,
        steps=40,
        num_runs=2,
        key=jr.key(0),
        record=ss.observables("loss", every=40),
        progress=False,
    )
    assert runs.mean("loss")[-1] < runs.mean("loss")[0]


def test_mnist1d_cnn_refuses_groups_that_do_not_divide_its_channels():
    with pytest.raises(ValueError, match="`groups`=3"):
        ss.problems.mnist1d_cnn((4, 8), groups=3)
