"""The methods of the five papers, each a short class over the public kernels, run on a
:class:`byzkern.sim.Simulation` (see :func:`byzkern.sim.run`).

| method | paper |
| --- | --- |
| ``RobustDGD``, ``RobustDSHB`` | seed 004, Algorithms 1 and 3 |
| ``ByzVRMarina`` | seed 000, Algorithm 1 |
| ``RobustCompressedGD`` (Options I/II), ``ErrorFeedbackGD`` | seed 001, Algorithms 1 and 2 |
| ``ByzEF21SGDM`` | seed 002, Algorithm 1 |
| ``ByrdSAGA`` | seed 003, Algorithm 2 |
| ``sgd``, ``byrd_sgd``, ``rs_byrd_sgd``, ``br_sgdm`` (D-SHB settings), ``BRCSGD``, ``BRDIANA`` | baselines of seeds 000, 002, 003 |
"""
from .base import Method
from .compressed import BRCSGD, BRDIANA
from .ef21 import ByzEF21SGDM
from .marina import ByzVRMarina
from .momentum import RobustDGD, RobustDSHB, br_sgdm, byrd_sgd, rs_byrd_sgd, sgd
from .saga import ByrdSAGA
from .thresholding import ErrorFeedbackGD, RobustCompressedGD

__all__ = ["BRCSGD", "BRDIANA", "ByrdSAGA", "ByzEF21SGDM", "ByzVRMarina", "ErrorFeedbackGD", "Method",
           "RobustCompressedGD", "RobustDGD", "RobustDSHB", "br_sgdm", "byrd_sgd", "rs_byrd_sgd", "sgd"]
