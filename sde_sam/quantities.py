"""Recorded quantities as classes (docs/estimators.md, "Observables"): the registry behind
:func:`sde_sam.observables`, each with its estimator sizes as fields and its cost per evaluation."""

from ._estimators._observables import REGISTRY as REGISTRY
from ._estimators._observables import AbstractObservable as AbstractObservable
from ._estimators._observables import Accuracy as Accuracy
from ._estimators._observables import BatchGradNorm as BatchGradNorm
from ._estimators._observables import Distance as Distance
from ._estimators._observables import EffectiveSampleSize as EffectiveSampleSize
from ._estimators._observables import GradNormSq as GradNormSq
from ._estimators._observables import LambdaMax as LambdaMax
from ._estimators._observables import Loss as Loss
from ._estimators._observables import ParamNormSq as ParamNormSq
from ._estimators._observables import TestAccuracy as TestAccuracy
from ._estimators._observables import TestLoss as TestLoss
from ._estimators._observables import TraceHessian as TraceHessian
from ._estimators._observables import TraceSigma as TraceSigma
from ._estimators._observables import TraceSigmaMinibatch as TraceSigmaMinibatch
