"""Curvature estimators (DESIGN §4): Hessian-vector products, Hutchinson ``tr H``, top eigenvalues (Lanczos),
spectral density (stochastic Lanczos quadrature), and alignment of ``Sigma`` with ``H`` and the empirical Fisher."""

from ._estimators._curvature import Alignment as Alignment
from ._estimators._curvature import SpectralDensity as SpectralDensity
from ._estimators._curvature import alignment as alignment
from ._estimators._curvature import hutchinson as hutchinson
from ._estimators._curvature import hvp as hvp
from ._estimators._curvature import spectral_density as spectral_density
from ._estimators._curvature import top_eigenvalues as top_eigenvalues
from ._estimators._curvature import trace_hessian as trace_hessian
