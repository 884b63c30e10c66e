"""Scaling out over devices and processes: meshes, sharded paths/runs, streaming moments (``jax.distributed``)."""

from ._parallel._parallel import Moments as Moments
from ._parallel._parallel import initialize as initialize
from ._parallel._parallel import is_main_process as is_main_process
from ._parallel._parallel import launch_local as launch_local
from ._parallel._parallel import make_mesh as make_mesh
from ._parallel._parallel import run_discrete as run_discrete
from ._parallel._parallel import save as save
from ._parallel._parallel import shutdown as shutdown
from ._parallel._parallel import simulate as simulate
from ._parallel._parallel import simulate_moments as simulate_moments
