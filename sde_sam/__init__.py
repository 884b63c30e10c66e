"""sde-sam: sharpness-aware minimization studied through stochastic differential equations.

The four nouns: a *problem* (finite-sum loss), a *sampler* (how batches are drawn), a *variant* (SAM-type
method) and a *record* (observables to keep). See DESIGN §9 for the API sketch.
"""

from . import _early  # noqa: F401  first: a Ctrl-C while the command line imports ends it cleanly (status 130)
from . import curvature as curvature
from . import noise as noise
from . import parallel as parallel
from . import problems as problems
from . import quantities as quantities
from . import sde as sde
from . import symbolic as symbolic
from . import train as train
from . import validation as validation
from . import variants as variants
from ._ensemble import mean_stderr as mean_stderr
from ._estimators._estimate import Eigs as Eigs
from ._estimators._estimate import Estimate as Estimate
from ._estimators._observables import Record as Record
from ._estimators._observables import observables as observables
from ._io import load_result as load_result
from ._io import save_result as save_result
from ._problems._problem import Problem as Problem
from ._problems._sampler import AbstractSampler as AbstractSampler
from ._problems._sampler import UniformSubset as UniformSubset
from ._problems._sampler import WithoutReplacement as WithoutReplacement
from ._problems._sampler import WithReplacement as WithReplacement
from ._problems._sampler import sampling_factor as sampling_factor
from ._sde._sde_model import SDEModel as SDEModel
from ._sde._sde_model import sde_model as sde_model
from ._sde._simulate import Paths as Paths
from ._sde._simulate import simulate as simulate
from ._training._momentum import Momentum as Momentum
from ._training._runner import Runs as Runs
from ._training._runner import run_discrete as run_discrete
from ._validation._map import ValidityMap as ValidityMap
from ._validation._map import validity_map as validity_map
from ._validation._validate import Validation as Validation
from ._validation._validate import validate as validate
from ._variants._optax import with_optax as with_optax
from ._version import __version__ as __version__
