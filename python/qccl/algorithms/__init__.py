"""Training across slow links: synchronize rarely instead of every step.

    LocalSGD: every replica steps on its own; every `sync_every` steps the parameters
        are averaged through the group (compressed with its codec when it has one).
    DiLoCo: the same rhythm, but the averaged change of the parameters since the last
        sync is an outer gradient, applied by an outer optimizer (SGD with Nesterov
        momentum in the paper), optionally fragment by fragment on a staggered schedule
        and with the all-reduce overlapped with the next inner steps (Streaming DiLoCo).
    ParameterServer / ParameterServerClient: asynchronous training; servers hold shards
        of the parameters, workers push (compressed) gradients and pull parameters
        without waiting for each other, within a bounded staleness.

Only the optimizer step is wrapped: the model and data loading stay as they are.
"""

from .diloco import DiLoCo
from .local_sgd import LocalSGD
from .parameter_server import ParameterServer, ParameterServerClient, ServerReport

__all__ = ["DiLoCo", "LocalSGD", "ParameterServer", "ParameterServerClient", "ServerReport"]
