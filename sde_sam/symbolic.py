"""Symbolic derivation (sympy) of every variant's drift and diffusion, checked against the code (DESIGN §5)."""

from ._symbolic._check import compare as compare
from ._symbolic._check import variants_for as variants_for
from ._symbolic._derive import Derivation as Derivation
from ._symbolic._derive import Setting as Setting
from ._symbolic._derive import Spec as Spec
from ._symbolic._derive import Symbols as Symbols
from ._symbolic._derive import batch_distribution as batch_distribution
from ._symbolic._derive import closed_form as closed_form
from ._symbolic._derive import derive as derive
from ._symbolic._derive import identities as identities
from ._symbolic._derive import lambdified as lambdified
from ._symbolic._derive import numeric as numeric
from ._symbolic._derive import sampling_factor_by_enumeration as sampling_factor_by_enumeration
from ._symbolic._derive import sigma_matrix as sigma_matrix
from ._symbolic._derive import spec_of as spec_of
from ._symbolic._derive import symbols as symbols
from ._symbolic._derive import update as update
from ._symbolic._report import report_markdown as report_markdown
from ._symbolic._report import write_report as write_report
from ._symbolic._rules import AbstractSymbolicRule as AbstractSymbolicRule
from ._symbolic._specs import symbolic_spec_of as symbolic_spec_of
