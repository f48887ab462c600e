"""Simulated Byzantine distributed training: problems, data, partitioning, the cluster and its
history. See :mod:`byzkern.algorithms` for the methods that run on it."""
from . import data, partition
from .history import History, plot, run
from .problems import LeastSquares, LogisticRegression, SoftmaxRegression, TorchNet, cnn, mlp
from .simulation import Batch, Simulation, generator

__all__ = ["Batch", "History", "LeastSquares", "LogisticRegression", "Simulation", "SoftmaxRegression",
           "TorchNet", "cnn", "data", "generator", "mlp", "partition", "plot", "run"]
