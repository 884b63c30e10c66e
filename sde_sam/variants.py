"""SAM variants: compositions of a direction rule, a normalization, a mask and a preconditioner (DESIGN §2).

``eps_j = rho T N(T M d_j)``: the rule gives ``d_j`` (:class:`AbstractRule`), ``M`` is the SAM-ON mask, ``T`` an
elementwise preconditioner (:class:`AbstractPreconditioner`, ASAM) and ``N`` the normalization
(:class:`AbstractNormalization`). One factory per method; write your own rule by subclassing :class:`AbstractRule`.
"""

from ._perturbation import AbstractNormalization as AbstractNormalization
from ._perturbation import AbstractPreconditioner as AbstractPreconditioner
from ._perturbation import FullGradientNorm as FullGradientNorm
from ._perturbation import Identity as Identity
from ._perturbation import ParameterScale as ParameterScale
from ._perturbation import UnitNorm as UnitNorm
from ._rules import AbstractRule as AbstractRule
from ._rules import BatchGradient as BatchGradient
from ._rules import Directions as Directions
from ._rules import Friendly as Friendly
from ._rules import FullGradient as FullGradient
from ._rules import NoAscent as NoAscent
from ._rules import RandomDirection as RandomDirection
from ._rules import Reweighted as Reweighted
from ._variants import NAMES as NAMES
from ._variants import NORM_EPS as NORM_EPS
from ._variants import StepOutput as StepOutput
from ._variants import Variant as Variant
from ._variants import asam as asam
from ._variants import asam_on as asam_on
from ._variants import dnsam as dnsam
from ._variants import f_sam as f_sam
from ._variants import f_usam as f_usam
from ._variants import get as get
from ._variants import is_normalization_param as is_normalization_param
from ._variants import m_sam as m_sam
from ._variants import m_usam as m_usam
from ._variants import n_sam as n_sam
from ._variants import n_usam as n_usam
from ._variants import rademacher_like as rademacher_like
from ._variants import random_sam as random_sam
from ._variants import resolve_mask as resolve_mask
from ._variants import rw_sam as rw_sam
from ._variants import rw_usam as rw_usam
from ._variants import safe_normalize as safe_normalize
from ._variants import sam as sam
from ._variants import sam_on as sam_on
from ._variants import sgd as sgd
from ._variants import usam as usam
