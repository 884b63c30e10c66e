"""SAM variants: compositions of a direction rule, a normalization, a mask and a preconditioner (DESIGN §2).

``eps_j = rho T N(T M d_j)``: the rule gives ``d_j`` (:class:`AbstractRule`), ``M`` is the SAM-ON mask, ``T`` an
elementwise preconditioner (:class:`AbstractPreconditioner`, ASAM) and ``N`` the normalization
(:class:`AbstractNormalization`). One factory per method; write your own rule by subclassing :class:`AbstractRule`.
"""

from ._variants._perturbation import AbstractNormalization as AbstractNormalization
from ._variants._perturbation import AbstractPreconditioner as AbstractPreconditioner
from ._variants._perturbation import FullGradientNorm as FullGradientNorm
from ._variants._perturbation import Identity as Identity
from ._variants._perturbation import ParameterScale as ParameterScale
from ._variants._perturbation import UnitNorm as UnitNorm
from ._variants._rules import AbstractRule as AbstractRule
from ._variants._rules import BatchGradient as BatchGradient
from ._variants._rules import Directions as Directions
from ._variants._rules import Friendly as Friendly
from ._variants._rules import FullGradient as FullGradient
from ._variants._rules import NoAscent as NoAscent
from ._variants._rules import RandomDirection as RandomDirection
from ._variants._rules import Reweighted as Reweighted
from ._variants._rules import effective_sample_size as effective_sample_size
from ._variants._variant import NAMES as NAMES
from ._variants._variant import StepOutput as StepOutput
from ._variants._variant import Variant as Variant
from ._variants._variant import asam as asam
from ._variants._variant import asam_on as asam_on
from ._variants._variant import dnsam as dnsam
from ._variants._variant import f_sam as f_sam
from ._variants._variant import f_usam as f_usam
from ._variants._variant import get as get
from ._variants._variant import is_normalization_param as is_normalization_param
from ._variants._variant import m_sam as m_sam
from ._variants._variant import m_usam as m_usam
from ._variants._variant import n_sam as n_sam
from ._variants._variant import n_usam as n_usam
from ._variants._variant import random_sam as random_sam
from ._variants._variant import rw_sam as rw_sam
from ._variants._variant import rw_usam as rw_usam
from ._variants._variant import sam as sam
from ._variants._variant import sam_on as sam_on
from ._variants._variant import sgd as sgd
from ._variants._variant import usam as usam
