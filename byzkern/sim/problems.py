"""Training problems with gradients batched over workers.

Every problem holds a training set (features ``A`` or images, ``labels``) and computes, for a
parameter vector x (dim,), the gradients of many workers at once: ``gradients(x, idx, labels,
weights)`` takes an index array (n, b) into the training set (row i: worker i's samples) and
returns the (n, dim) matrix of weighted-mean loss gradients plus the l2 term, one row per
worker, in one vectorised pass (a batched matrix product for the linear models,
``torch.func.vmap`` over workers for the nets). The objective of one worker is
``mean_j loss(x; a_j, y_j) + lam ||x||^2``.
"""
from __future__ import annotations

import numpy as np


class Problem:
    """What every problem provides; subclasses implement ``_gradients``, ``_losses`` and
    ``_predict``. ``test`` is an optional held-out (features, labels) pair for ``accuracy``."""

    dtype = np.float64
    classes = 0

    def __init__(self, features, labels, lam=0.0, test=None):
        self.features, self.labels, self.lam, self.test = features, labels, float(lam), test

    @property
    def samples(self):
        return len(self.labels)

    def init(self, seed=0):
        """The initial point: zeros (convex problems); the nets draw their default init."""
        return np.zeros(self.dim, dtype=self.dtype)

    def gradients(self, x, idx, labels=None, weights=None):
        """(n, dim) gradients: row i is sum_j weights[i, j] grad loss(x; sample idx[i, j],
        labels[i, j]) + 2 lam x. Default labels: the true ones; default weights: 1/b."""
        idx = np.asarray(idx)
        labels = self.labels[idx] if labels is None else labels
        weights = np.full(idx.shape, 1.0 / idx.shape[1]) if weights is None else weights
        G = self._gradients(np.asarray(x, dtype=self.dtype), idx, labels, weights)
        return G + (2 * self.lam) * x if self.lam else G

    def sample_gradients(self, x, idx, labels=None):
        """(n, b, dim) per-sample gradients (each with the l2 term), for SAGA's tables."""
        n, b = np.shape(idx)
        labels = self.labels[idx] if labels is None else labels
        return self.gradients(x, np.reshape(idx, (n * b, 1)), np.reshape(labels, (n * b, 1))).reshape(n, b, -1)

    def loss(self, x, idx=None):
        """Mean loss over the samples ``idx`` (default: all) plus lam ||x||^2."""
        idx = np.arange(self.samples) if idx is None else np.asarray(idx)
        x = np.asarray(x, dtype=self.dtype)
        return float(self._losses(x, idx).mean() + self.lam * np.dot(x, x))

    def accuracy(self, x):
        """Fraction of the test set predicted right; NaN without a test set."""
        if self.test is None:
            return float("nan")
        features, labels = self.test
        return float((self._predict(np.asarray(x, dtype=self.dtype), features) == labels).mean())

    def flip(self, labels):
        """Label flipping (a data attack): y -> -y for +-1 labels, l -> (classes - 1) - l."""
        return -labels if self.classes == 0 else (self.classes - 1) - labels


class _LinearModel(Problem):
    """Scores Z = A W with W = x reshaped (p, k); subclasses give the loss of Z and its
    derivative in Z (``_link``). One gather of A[idx] and two batched products per call."""

    outputs = 1

    @property
    def dim(self):
        return self.features.shape[1] * self.outputs

    def _weights(self, x):
        return x.reshape(self.features.shape[1], self.outputs)

    def _gradients(self, x, idx, labels, weights):
        A = self.features[idx]                                   # (n, b, p)
        _, residual = self._link(A @ self._weights(x), labels)   # dloss/dZ: (n, b, k)
        return np.einsum("nbp,nbk->npk", A, residual * weights[..., None]).reshape(len(idx), -1)

    def _losses(self, x, idx):
        loss, _ = self._link(self.features[idx] @ self._weights(x), self.labels[idx])
        return loss


class LogisticRegression(_LinearModel):
    """l2-regularised logistic regression, labels in {-1, +1} (seeds 000, 002):
    ``f(x) = mean_j log(1 + exp(-y_j a_j^T x)) + lam ||x||^2``."""

    def _link(self, Z, y):
        margin = -y * Z[..., 0]
        # sigmoid(m) written with tanh: no overflow for large |m|
        return np.logaddexp(0.0, margin), (-y * 0.5 * (1.0 + np.tanh(margin / 2)))[..., None]

    def _predict(self, x, features):
        return np.where(features @ x >= 0, 1.0, -1.0)


class LeastSquares(_LinearModel):
    """Least squares (seed 001): ``f(w) = mean_j (a_j^T w - b_j)^2 / 2`` (lam = 0 there)."""

    def _link(self, Z, y):
        r = Z[..., 0] - y
        return 0.5 * r * r, r[..., None]

    def _predict(self, x, features):
        return features @ x


class SoftmaxRegression(_LinearModel):
    """Multinomial logistic (softmax) regression with a bias (seed 003 on MNIST): features get a
    constant 1 column, x is the (p + 1) x classes weight matrix raveled, loss = cross-entropy."""

    def __init__(self, features, labels, lam=0.0, test=None, classes=10):
        with_bias = lambda F: np.hstack([F.reshape(len(F), -1), np.ones((len(F), 1))])  # noqa: E731
        test = None if test is None else (with_bias(test[0]), test[1])
        super().__init__(with_bias(features), np.asarray(labels), lam, test)
        self.classes = self.outputs = classes

    def _link(self, Z, y):
        Z = Z - Z.max(axis=-1, keepdims=True)
        log_p = Z - np.log(np.exp(Z).sum(axis=-1, keepdims=True))
        onehot = np.eye(self.classes)[y]
        return -(log_p * onehot).sum(axis=-1), np.exp(log_p) - onehot

    def _predict(self, x, features):
        return (features @ self._weights(x)).argmax(axis=1)


class TorchNet(Problem):
    """A torch classifier (MLP, CNN) trained with cross-entropy; x is the flat float32 vector of
    its parameters (``byzkern.flatten`` order). Worker gradients: ``torch.func.vmap`` over the
    worker axis of ``torch.func.grad`` of the weighted batch loss, so one call runs one batched
    forward and backward pass for all workers."""

    dtype = np.float32

    def __init__(self, module, images, labels, lam=0.0, test=None, classes=10):
        import torch

        super().__init__(torch.as_tensor(images, dtype=torch.float32), np.asarray(labels), lam,
                         None if test is None else (torch.as_tensor(test[0], dtype=torch.float32), test[1]))
        self.module, self.classes = module.eval(), classes
        self.names = [name for name, _ in module.named_parameters()]
        self.shapes = [tuple(p.shape) for _, p in module.named_parameters()]

    @property
    def dim(self):
        return sum(int(np.prod(s)) for s in self.shapes)

    def init(self, seed=0):
        import torch

        torch.manual_seed(seed)
        for layer in self.module.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
        return np.concatenate([p.detach().numpy().ravel() for p in self.module.parameters()]).astype(np.float32)

    def _params(self, x):
        import torch

        flat, params, start = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), {}, 0
        for name, shape in zip(self.names, self.shapes):
            size = int(np.prod(shape))
            params[name] = flat[start:start + size].reshape(shape)
            start += size
        return params

    def _batch_loss(self, params, images, labels, weights):
        import torch
        from torch.func import functional_call

        logits = functional_call(self.module, params, (images,))
        return (torch.nn.functional.cross_entropy(logits, labels, reduction="none") * weights).sum()

    def _gradients(self, x, idx, labels, weights):
        import torch
        from torch.func import grad, vmap

        grads = vmap(grad(self._batch_loss), in_dims=(None, 0, 0, 0))(
            self._params(x), self.features[torch.from_numpy(idx)], torch.from_numpy(np.asarray(labels, dtype=np.int64)),
            torch.from_numpy(np.asarray(weights, dtype=np.float32)))
        return torch.cat([grads[name].reshape(len(idx), -1) for name in self.names], dim=1).numpy()

    def _logits(self, x, images, chunk=2000):
        import torch
        from torch.func import functional_call

        params = self._params(x)
        with torch.no_grad():
            return torch.cat([functional_call(self.module, params, (images[i:i + chunk],))
                              for i in range(0, len(images), chunk)])

    def _losses(self, x, idx):
        import torch

        logits = self._logits(x, self.features[torch.from_numpy(idx)])
        return torch.nn.functional.cross_entropy(logits, torch.from_numpy(self.labels[idx]), reduction="none").numpy()

    def _predict(self, x, images):
        return self._logits(x, images).argmax(dim=1).numpy()


def mlp(hidden=(1000,), inputs=784, classes=10):
    """Seed 001's MNIST net: fully connected with ReLU (one hidden layer of 1000 by default)."""
    import torch.nn as nn

    sizes, layers = (inputs, *hidden), [nn.Flatten()]
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], classes))


def cnn(classes=10):
    """Seed 004's MNIST CNN (Table 3): C(20)-R-M-C(20)-R-M-L(500)-R-L(10) on (1, 28, 28) input
    (5x5 kernels, no padding, 2x2 max-pool); log-softmax is inside the cross-entropy loss."""
    import torch.nn as nn

    return nn.Sequential(nn.Unflatten(1, (1, 28)),  # (b, 28, 28) images -> one channel
                         nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(20, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(320, 500), nn.ReLU(), nn.Linear(500, classes))
