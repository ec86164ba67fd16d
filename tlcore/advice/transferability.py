"""Transferability scores: how well frozen pretrained features suit a labelled dataset, computed in seconds from the
features the engine already caches, before any network is trained.

    knn_accuracy      cross-validated k-nearest-neighbour accuracy on the features (a strong, simple baseline;
                      Sorkhei et al., 2025)
    logme             LogME, the log maximum evidence of a Bayesian linear model on the features (You et al., ICML 2021)
    h_score           H-score, how much of the features' variance the class means explain (Bao et al., ICIP 2019), with
                      the shrunk covariance of Ibrahim et al. (2022, 'Newer is not always better')
    leep              LEEP, from the source head's predictions (Nguyen et al., ICML 2020)
    head_entropy      how unsure the original ImageNet head is on these images, 0 (sure) to 1 (uniform): a cheap
                      measure of distance from the pretraining domain
    pixel_accuracy    a linear model on raw downsampled pixels: what the data gives without any pretraining
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.covariance import ledoit_wolf_shrinkage
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from tlcore.engine.train import fit_linear_head


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 5, folds: int = 5, seed: int = 0) -> float:
    """Stratified k-fold accuracy of a cosine k-NN classifier (k capped by the smallest training fold)."""

    labels = np.asarray(labels)
    smallest = int(np.bincount(labels).min()) if len(labels) else 0
    folds = max(2, min(folds, smallest))
    if smallest < 2:
        raise ValueError("k-NN cross-validation needs at least 2 images of every class")
    k = max(1, min(k, int(len(labels) * (folds - 1) / folds) - 1))
    clf = KNeighborsClassifier(n_neighbors=k, metric="cosine")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(clf, np.asarray(features, dtype=np.float32), labels, cv=cv).mean())


def logme(features: np.ndarray, labels: np.ndarray, iterations: int = 11) -> float:
    """LogME (You et al., 2021): the mean over classes of the maximised log evidence per sample of a Bayesian linear
    regression from the features to the one-hot label, by the paper's fixed-point iteration. Higher is better; it is
    comparable across models on one dataset, not across datasets."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    n, d = f.shape
    v, s, _ = np.linalg.svd(f.T @ f, full_matrices=True)  # eigen-decomposition of the D x D Gram matrix
    evidences = []
    for c in np.unique(y):
        target = (y == c).astype(np.float64)
        projected = v.T @ (f.T @ target)
        alpha, beta = 1.0, 1.0
        lam = alpha / beta
        eps = 1e-5
        for _ in range(iterations):
            gamma = (s / (s + lam)).sum()
            m = v @ (projected * beta / (alpha + beta * s))
            alpha_de = (m * m).sum()
            alpha = gamma / (alpha_de + eps)
            beta_de = ((target - f @ m) ** 2).sum()
            beta = (n - gamma) / (beta_de + eps)
            new_lam = alpha / beta
            if abs(new_lam - lam) / lam < 0.01:
                lam = new_lam
                break
            lam = new_lam
        evidence = (d / 2.0 * np.log(alpha) + n / 2.0 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * s))
                    - beta / 2.0 * (beta_de + eps) - alpha / 2.0 * (alpha_de + eps) - n / 2.0 * np.log(2 * np.pi))
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def h_score(features: np.ndarray, labels: np.ndarray, shrinkage: bool = True) -> float:
    """H-score (Bao et al., 2019): tr(cov(f)^-1 cov(E[f | y])), the share of the features' variance that the class
    means explain, summed over directions; higher is better, at most min(classes - 1, dimensions).

    With `shrinkage` (the default), the regularised H-score of Ibrahim et al. (2022): cov(f) is the Ledoit-Wolf
    estimate (1 - a) S + a mu I and the between-class covariance is scaled by (1 - a) likewise. Without it the sample
    covariance's pseudo-inverse is used, as in the original; with fewer images than dimensions that over-fits, which
    is why the shrunk one ranks models better there. Both covariances are population ones (divided by n).

    Computed through the thin SVD of the centred features, so it costs O(n d min(n, d)), not O(d^3): the class means
    lie in the span of the features, where the inverse is diagonal."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    n, d = f.shape
    f = f - f.mean(0, keepdims=True)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    means = np.zeros((len(classes), d))
    np.add.at(means, inverse, f)
    means /= counts[:, None]  # class means of the centred features: E[f | y] - E[f]
    _, s, vt = np.linalg.svd(f, full_matrices=False)
    sample_eig = s ** 2 / n  # eigenvalues of the sample covariance, along the rows of vt
    alpha, mu = 0.0, 0.0
    if shrinkage and n > 1:
        alpha = float(ledoit_wolf_shrinkage(f, assume_centered=True))
        mu = float(np.sum(sample_eig) / d)
    eig = (1.0 - alpha) * sample_eig + alpha * mu
    keep = eig > max(eig.max(initial=0.0), 1e-300) * 1e-12  # the pseudo-inverse's cut-off (rank-deficient S)
    projected = means @ vt[keep].T  # the class means in the eigenbasis
    weights = counts / n
    return float((1.0 - alpha) * np.sum(weights[:, None] * projected ** 2 / eig[keep]))


def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP (Nguyen et al., 2020): the average log-likelihood of the labels under the "expected empirical predictor"
    built from the source head's class probabilities. At most 0; closer to 0 is better."""
    p = np.asarray(source_probs, dtype=np.float64)
    y = np.asarray(labels)
    classes = int(y.max()) + 1
    joint = np.zeros((classes, p.shape[1]))
    for c in range(classes):
        joint[c] = p[y == c].sum(0)
    joint /= len(y)
    conditional = joint / np.clip(joint.sum(0, keepdims=True), 1e-12, None)  # P(y | z)
    likelihood = (p @ conditional.T)[np.arange(len(y)), y]
    return float(np.mean(np.log(np.clip(likelihood, 1e-12, None))))


def head_entropy(source_logits: torch.Tensor | np.ndarray) -> float:
    """Mean entropy of the source head's softmax, divided by log(#source classes): 0 when the pretrained classifier is
    sure about every image, 1 when it spreads its belief evenly (the images look like nothing it was trained on)."""
    logits = torch.as_tensor(np.asarray(source_logits), dtype=torch.float64)
    logp = torch.log_softmax(logits, dim=1)
    entropy = -(logp.exp() * logp).sum(1)
    return float(entropy.mean() / np.log(logits.shape[1]))


def pixel_accuracy(train_pixels: np.ndarray, train_labels: np.ndarray, val_pixels: np.ndarray,
                   val_labels: np.ndarray, l2_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1)) -> float:
    """Validation accuracy of a linear classifier on raw pixels: the same standardised, L2-tuned multinomial logistic
    regression (L-BFGS) that feature extraction fits on frozen features, so the two are comparable."""

    classes = int(max(np.max(train_labels), np.max(val_labels))) + 1
    fit = fit_linear_head(torch.as_tensor(train_pixels, dtype=torch.float32), torch.as_tensor(train_labels),
                          torch.as_tensor(val_pixels, dtype=torch.float32), torch.as_tensor(val_labels), classes,
                          l2_grid, max_iter=100)
    return float(fit.val_accuracy)
