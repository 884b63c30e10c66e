"""Real training of small networks, recorded with versions and device (DESIGN §6.3).

The config and what it names: ``_training/_config.py``; the record: ``_training/_record.py``; the recorder:
``_training/_train.py``.
"""

from ._problems._networks import BatchNormProblem as BatchNormProblem
from ._problems._networks import digits_cnn as digits_cnn
from ._training._config import OBSERVABLES as OBSERVABLES
from ._training._config import Schedule as Schedule
from ._training._config import TrainConfig as TrainConfig
from ._training._config import build_momentum as build_momentum
from ._training._config import build_problem as build_problem
from ._training._config import build_sampler as build_sampler
from ._training._config import build_variant as build_variant
from ._training._config import micro_batch_size as micro_batch_size
from ._training._config import sde_time as sde_time
from ._training._record import TrainRecord as TrainRecord
from ._training._train import Estimators as Estimators
from ._training._train import evaluate as evaluate
from ._training._train import record as record
