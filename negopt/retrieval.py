"""The retrieval baseline: answer with the negative of the most similar training prompt.

People copy negative prompts between similar prompts, so the honest trivial baseline for "write the
negative for this prompt" is a lookup, not the most frequent negative. Similarity is the cosine of
TF-IDF vectors over prompt words (scikit-learn, fitted on train only): ``cos(a, b) = a . b`` on
L2-normalised rows. Ties go to the earliest training row, so the baseline is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class RetrievalIndex:
    """TF-IDF over training prompts; ``nearest(prompts, k)`` -> indices ``[n, k]`` and cosines ``[n, k]``."""

    def __init__(self, prompts: Sequence[str], negatives: Sequence[str]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not prompts or len(prompts) != len(negatives):
            raise ValueError(f"RetrievalIndex: need equal, non-zero prompts and negatives, got "
                             f"{len(prompts)} and {len(negatives)}")
        self.negatives = list(negatives)
        # word unigrams + bigrams, sublinear tf: long prompts repeat words ("masterpiece, masterpiece")
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1,
                                          token_pattern=r"(?u)\b\w+\b")
        self.matrix = self.vectorizer.fit_transform(list(prompts))  # [n_train, V], rows L2-normalised

    def nearest(self, prompts: Sequence[str], k: int = 1, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar training rows per prompt, best first (ties: lower index first)."""
        k = min(k, self.matrix.shape[0])
        idx, sims = [], []
        for i in range(0, len(prompts), batch_size):
            q = self.vectorizer.transform(list(prompts[i:i + batch_size]))
            s = (q @ self.matrix.T).toarray()  # [b, n_train] cosines
            # stable sort on -s keeps the earlier training row first among equal similarities
            top = np.argsort(-s, axis=1, kind="stable")[:, :k]
            idx.append(top)
            sims.append(np.take_along_axis(s, top, axis=1))
        return np.concatenate(idx), np.concatenate(sims)

    def predict(self, prompts: Sequence[str]) -> list[str]:
        """The negative of each prompt's most similar training prompt."""
        if not prompts:
            return []
        idx, _ = self.nearest(prompts, 1)
        return [self.negatives[i] for i in idx[:, 0]]
