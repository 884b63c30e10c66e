"""Does an SDE describe a training run, and where does it stop? (docs/validation.md; DESIGN §3.5)

:func:`validate` compares discrete runs with every rung of the SDE ladder and with SVAG, and gives a verdict per
observable by equivalence tests against a :class:`Tolerance`; :func:`validity_map` does so over a grid of ``eta``,
``rho`` (and ``m``).
"""

from ._validation._validate import Level as Level
from ._validation._validate import Rung as Rung
from ._validation._validate import ladder as ladder
from ._validation._verdict import Agreement as Agreement
from ._validation._verdict import Comparison as Comparison
from ._validation._verdict import Tolerance as Tolerance
from ._validation._verdict import Verdict as Verdict
from ._validation._verdict import VerdictKind as VerdictKind
from ._validation._verdict import agreement as agreement
from ._validation._verdict import verdict_of as verdict_of
