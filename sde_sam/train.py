"""Real training of small networks, recorded with versions and device (DESIGN §6.3); see :mod:`sde_sam._train`."""

from ._networks import BatchNormProblem as BatchNormProblem
from ._networks import digits_cnn as digits_cnn
from ._networks import is_batch_norm_problem as is_batch_norm_problem
from ._train import OBSERVABLES as OBSERVABLES
from ._train import Estimators as Estimators
from ._train import Schedule as Schedule
from ._train import TrainConfig as TrainConfig
from ._train import TrainRecord as TrainRecord
from ._train import build_problem as build_problem
from ._train import evaluate as evaluate
from ._train import build_sampler as build_sampler
from ._train import build_schedule as build_schedule
from ._train import build_variant as build_variant
from ._train import micro_batch_size as micro_batch_size
from ._train import record as record
from ._train import run_keys as run_keys
from ._train import sde_time as sde_time
from ._train import step_time as step_time
