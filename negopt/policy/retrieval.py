"""The retrieval baseline: answer with the negative of the most similar training prompt.

People copy negative prompts between similar prompts, so the honest trivial baseline for "write the
negative for this prompt" is a lookup, not the most frequent negative. Similarity is the cosine of
TF-IDF vectors over prompt words (scikit-learn, fitted on train only): ``cos(a, b) = a . b`` on
L2-normalised rows. Ties go to the earliest training row, so the baseline is deterministic.

The same index feeds retrieval-augmented SFT (``sft.retrieval.k``): the model's source carries the
negatives of the prompt's ``k`` nearest training prompts (:meth:`RetrievalIndex.context`). Such a
model needs its index at inference, so the index is saved beside the weights without pickle
(:meth:`save` / :meth:`load`): the TF-IDF matrix and idf as safetensors arrays, the vocabulary,
vectoriser settings and training negatives as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ARRAYS, META = "retrieval.safetensors", "retrieval.json"  # the saved index, in a model folder
# word unigrams + bigrams, sublinear tf: long prompts repeat words ("masterpiece, masterpiece")
VECTORIZER = {"ngram_range": [1, 2], "sublinear_tf": True, "min_df": 1, "token_pattern": r"(?u)\b\w+\b"}


def _vectorizer(settings: dict):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(**{**settings, "ngram_range": tuple(settings["ngram_range"])})


class RetrievalIndex:
    """TF-IDF over training prompts; ``nearest(prompts, k)`` -> indices ``[n, k]`` and cosines ``[n, k]``."""

    def __init__(self, prompts: Sequence[str], negatives: Sequence[str]) -> None:
        if not prompts or len(prompts) != len(negatives):
            raise ValueError(f"RetrievalIndex: need equal, non-zero prompts and negatives, got "
                             f"{len(prompts)} and {len(negatives)}")
        self.negatives = list(negatives)
        self.vectorizer = _vectorizer(VECTORIZER)
        self.matrix = self.vectorizer.fit_transform(list(prompts))  # [n_train, V], rows L2-normalised

    def nearest(self, prompts: Sequence[str], k: int = 1, batch_size: int = 256,
                exclude: np.ndarray | None = None, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar training rows per prompt, best first (ties: lower index first).

        ``exclude`` (a group id per query) with ``groups`` (a group id per training row) drops every
        training row of the query's own group: querying the training prompts themselves, a row must not
        retrieve itself or its near duplicates (the split keeps those away from every test prompt).
        """
        k = min(k, self.matrix.shape[0])
        idx, sims = [], []
        for i in range(0, len(prompts), batch_size):
            q = self.vectorizer.transform(list(prompts[i:i + batch_size]))
            s = (q @ self.matrix.T).toarray()  # [b, n_train] cosines
            if exclude is not None:
                s[np.asarray(exclude[i:i + batch_size])[:, None] == np.asarray(groups)[None, :]] = -np.inf
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

    def context(self, prompts: Sequence[str], k: int, groups: np.ndarray | None = None) -> list[list[str]]:
        """The negatives of each prompt's ``k`` nearest training prompts, best first.

        ``groups``: the training prompts are the queries (row ``i`` is training row ``i``) and each row's
        own group (``groups[i]``, e.g. its near-duplicate group) is excluded, so a model learns from
        neighbours as distant as a test prompt's, not to copy its own target.
        """
        if not prompts or k < 1:
            return [[] for _ in prompts]
        if groups is not None and not len(groups) == len(prompts) == self.matrix.shape[0]:
            raise ValueError(f"RetrievalIndex.context: groups exclude a training row's own group, so the queries "
                             f"must be the {self.matrix.shape[0]} training prompts; got {len(prompts)} prompts "
                             f"and {len(groups)} groups")
        idx, sims = self.nearest(prompts, k, exclude=groups, groups=groups)
        # a row whose every training row is excluded gets fewer neighbours (cosine -inf marks them)
        return [[self.negatives[j] for j, s in zip(row, srow, strict=True) if np.isfinite(s)]
                for row, srow in zip(idx, sims, strict=True)]

    def save(self, path: str | Path) -> None:
        """``retrieval.safetensors`` (CSR matrix, idf) + ``retrieval.json`` (vocabulary, settings, negatives)."""
        from safetensors.numpy import save_file

        m = self.matrix.tocsr()
        save_file({"data": m.data.astype(np.float64), "indices": m.indices.astype(np.int64),
                   "indptr": m.indptr.astype(np.int64), "idf": self.vectorizer.idf_.astype(np.float64)},
                  str(Path(path) / ARRAYS))
        vocab = {t: int(i) for t, i in self.vectorizer.vocabulary_.items()}
        meta = {"vectorizer": VECTORIZER, "shape": list(m.shape), "vocabulary": vocab, "negatives": self.negatives}
        (Path(path) / META).write_text(json.dumps(meta, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> RetrievalIndex:
        """The index :meth:`save` wrote to ``path`` (no pickle: arrays and JSON only)."""
        from safetensors.numpy import load_file
        from scipy.sparse import csr_matrix

        arrays = load_file(str(Path(path) / ARRAYS))
        meta = json.loads((Path(path) / META).read_text(encoding="utf-8"))
        self = cls.__new__(cls)
        self.negatives = meta["negatives"]
        self.vectorizer = _vectorizer(meta["vectorizer"])
        self.vectorizer.vocabulary_ = meta["vocabulary"]
        self.vectorizer.idf_ = arrays["idf"]
        self.matrix = csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=tuple(meta["shape"]))
        return self

    @staticmethod
    def saved_in(path: str | Path) -> bool:
        return (Path(path) / ARRAYS).is_file() and (Path(path) / META).is_file()
