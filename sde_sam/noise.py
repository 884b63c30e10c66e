"""Stochastic gradient noise estimators (DESIGN §4): per-example gradients, ``tr Sigma``, ``Sigma v``, top
eigenpairs of ``Sigma``, mini-batch ``tr Sigma``, the variance sharpness term and its gradient, ``E||g_gamma||``,
tail index and Gaussianity of the noise."""

from ._estimators._noise import BatchGradNorm as BatchGradNorm
from ._estimators._noise import Gaussianity as Gaussianity
from ._estimators._noise import expected_batch_grad_norm as expected_batch_grad_norm
from ._estimators._noise import expected_effective_sample_size as expected_effective_sample_size
from ._estimators._noise import gaussianity as gaussianity
from ._estimators._noise import gaussianity_from_samples as gaussianity_from_samples
from ._estimators._noise import grad_trace_sigma as grad_trace_sigma
from ._estimators._noise import per_example_grads as per_example_grads
from ._estimators._noise import projected_noise as projected_noise
from ._estimators._noise import sigma_matrix as sigma_matrix
from ._estimators._noise import sigma_matvec as sigma_matvec
from ._estimators._noise import sigma_top_eigs as sigma_top_eigs
from ._estimators._noise import tail_index as tail_index
from ._estimators._noise import tail_index_from_samples as tail_index_from_samples
from ._estimators._noise import trace_sigma as trace_sigma
from ._estimators._noise import trace_sigma_minibatch as trace_sigma_minibatch
from ._estimators._noise import variance_sharpness as variance_sharpness
