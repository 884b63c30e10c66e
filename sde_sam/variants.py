"""SAM variants: one perturbation-rule abstraction, one factory per method (DESIGN §2)."""

from ._variants import NAMES as NAMES
from ._variants import NORM_EPS as NORM_EPS
from ._variants import StepOutput as StepOutput
from ._variants import Variant as Variant
from ._variants import f_sam as f_sam
from ._variants import f_usam as f_usam
from ._variants import get as get
from ._variants import is_normalization_param as is_normalization_param
from ._variants import m_sam as m_sam
from ._variants import m_usam as m_usam
from ._variants import n_sam as n_sam
from ._variants import n_usam as n_usam
from ._variants import rademacher_like as rademacher_like
from ._variants import resolve_mask as resolve_mask
from ._variants import rw_sam as rw_sam
from ._variants import rw_usam as rw_usam
from ._variants import safe_normalize as safe_normalize
from ._variants import sam as sam
from ._variants import sam_on as sam_on
from ._variants import sgd as sgd
from ._variants import usam as usam
