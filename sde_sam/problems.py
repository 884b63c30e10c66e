"""Finite-sum problems: the :class:`Problem` container and built-in problems (DESIGN §1)."""

from ._problems._adapters import from_equinox as from_equinox
from ._problems._adapters import from_flax as from_flax
from ._problems._builtin import breast_cancer_logistic as breast_cancer_logistic
from ._problems._builtin import digits_mlp as digits_mlp
from ._problems._builtin import in_sharp_basin as in_sharp_basin
from ._problems._builtin import layer_norm as layer_norm
from ._problems._builtin import linear_regression as linear_regression
from ._problems._builtin import load_digits_split as load_digits_split
from ._problems._builtin import quadratic as quadratic
from ._problems._builtin import sharp_flat_barrier as sharp_flat_barrier
from ._problems._builtin import sharp_flat_basins as sharp_flat_basins
from ._problems._builtin import softmax_cross_entropy as softmax_cross_entropy
from ._problems._builtin import teacher_student as teacher_student
from ._problems._micro_batch import AbstractMicroBatchGradient as AbstractMicroBatchGradient
from ._problems._micro_batch import DenseLayerNormMLP as DenseLayerNormMLP
from ._problems._mnist1d import load_mnist1d_split as load_mnist1d_split
from ._problems._mnist1d import mnist1d_cnn as mnist1d_cnn
from ._problems._mnist1d import mnist1d_mlp as mnist1d_mlp
