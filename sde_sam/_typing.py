"""Type aliases shared by the package."""

import numpy as np

#: A real scalar parameter: a Python number or a numpy scalar (factories store it as a Python float).
Real = float | int | np.floating | np.integer
