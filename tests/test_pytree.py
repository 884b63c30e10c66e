"""``sde_sam._pytree.fields_pytree``: a node rebuilt by JAX keeps its type and fields without running the class's
validation (which would refuse tracers and placeholders), and its leaves are keyed by field name."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

import sde_sam as ss
from sde_sam import train
from sde_sam._pytree import fields_pytree


@fields_pytree(leaves=("x",), static=("label",))
@dataclasses.dataclass(frozen=True)
class Checked:
    x: float
    label: str = "a"

    def __post_init__(self):
        if not isinstance(self.x, float):  # refuses tracers and placeholders, as a validating class does
            raise TypeError(f"`x` must be a float, got {type(self.x).__name__}")


def test_a_rebuilt_node_skips_the_validation_and_keeps_its_static_fields():
    node = Checked(2.0, "b")
    doubled = jax.jit(lambda n: jax.tree_util.tree_map(lambda x: 2 * x, n))(node)  # rebuilt around tracers
    assert type(doubled) is Checked and doubled.label == "b" and float(doubled.x) == 4.0
    assert jax.tree_util.tree_structure(node) == jax.tree_util.tree_structure(Checked(3.0, "b"))
    assert jax.tree_util.tree_structure(node) != jax.tree_util.tree_structure(Checked(2.0, "c"))
    with pytest.raises(TypeError, match="`x` must be a float"):
        Checked(1)  # a user's construction is still validated


def test_leaves_are_keyed_by_field_name():
    problem = ss.problems.linear_regression(n=8, d=2)
    names = {p[0].name for p, _ in jax.tree_util.tree_leaves_with_path(problem)}
    assert names == {"data", "init_params"}  # test_data is None: no leaf
    v = ss.variants.rw_sam(0.05, 0.5)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(v)]
    assert paths[0] == ".rho" and len(paths) == 1 + len(v.rule.hyperparameters)


def test_a_traced_rho_and_a_subclass_survive_a_round_trip():
    stacked = jax.tree_util.tree_map(lambda *r: jnp.stack(r), ss.variants.sam(0.05), ss.variants.sam(0.1))
    doubled = jax.vmap(lambda v: 2 * v.rho)(stacked)  # the variant is rebuilt around a traced rho
    assert [float(r) for r in doubled] == pytest.approx([0.1, 0.2])
    bn = train.digits_cnn(channels=(2,), norm="batch")
    again = jax.tree_util.tree_map(lambda a: a, bn)
    assert type(again) is type(bn) and again.name == bn.name and again.loss_fn is bn.loss_fn


def test_a_field_cannot_be_both_a_leaf_and_static():
    with pytest.raises(ValueError, match="both leaves and static"):
        fields_pytree(leaves=("x",), static=("x",))
