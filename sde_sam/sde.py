"""SDE models of SAM variants: drift, diffusion, the model object (DESIGN §3)."""

from ._sde._batches import BatchDistribution as BatchDistribution
from ._sde._batches import batch_distribution as batch_distribution
from ._sde._batches import expectation as expectation
from ._sde._batches import uniform_subset as uniform_subset
from ._sde._diffusion import DIFFUSIONS as DIFFUSIONS
from ._sde._diffusion import empirical_sample as empirical_sample
from ._sde._diffusion import first_order_sample as first_order_sample
from ._sde._diffusion import leading_sample as leading_sample
from ._sde._diffusion import sigma_sqrt_times as sigma_sqrt_times
from ._sde._diffusion import standard_normal_weights as standard_normal_weights
from ._sde._drift import closed_form_drift as closed_form_drift
from ._sde._drift import drift_is_exact as drift_is_exact
from ._sde._drift import expected_drift as expected_drift
from ._sde._drift import expected_micro_batch_grad_norm as expected_micro_batch_grad_norm
from ._sde._drift import general_drift as general_drift
from ._sde._drift import linearized_update as linearized_update
from ._sde._drift import sde_state as sde_state
from ._sde._drift import second_order as second_order
from ._sde._sde_model import DRIFTS as DRIFTS
from ._sde._sde_model import SDEModel as SDEModel
from ._sde._sde_model import monte_carlo_size as monte_carlo_size
from ._sde._sde_model import sde_model as sde_model
from ._sde._sde_model import step_keys as step_keys
from ._sde._simulate import Paths as Paths
from ._sde._simulate import em_step as em_step
from ._sde._simulate import simulate as simulate
