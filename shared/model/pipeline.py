"""The two scikit-learn pipelines: ours (the artifact) and the seed's, kept for comparison.

Both read the object rows of `features.ads_to_rows` and end in a logistic regression,
so `predict_proba(rows)[:, 1]` is P(violation).
"""

from __future__ import annotations

from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from shared.model.features import (
    CATEGORY,
    RAW_FIELDS,
    TOKEN_PATTERN,
    seed_features,
    signal_features,
    texts_of,
)

# Terms seen in fewer ads are mostly phone digits and handles: the signals cover those.
MIN_DOCUMENT_FREQUENCY = 3
REGULARISATION_C = 4.0
ALL_COLUMNS = list(range(len(RAW_FIELDS)))


def build_moderation_pipeline() -> Pipeline:
    """Text TF-IDF (word unigrams) + one-hot category + moderator signals → logistic regression."""
    text = Pipeline(
        [
            ("document", FunctionTransformer(texts_of)),
            (
                "tfidf",
                TfidfVectorizer(
                    token_pattern=TOKEN_PATTERN,
                    lowercase=True,
                    ngram_range=(1, 1),
                    min_df=MIN_DOCUMENT_FREQUENCY,
                    norm="l2",
                    sublinear_tf=False,
                ),
            ),
        ]
    )
    features = ColumnTransformer(
        [
            ("text", text, ALL_COLUMNS),
            ("category", OneHotEncoder(handle_unknown="ignore"), [CATEGORY]),
            ("signals", FunctionTransformer(signal_features), ALL_COLUMNS),
        ],
        sparse_threshold=1.0,
    )
    classifier = LogisticRegression(C=REGULARISATION_C, max_iter=2000, solver="liblinear")
    return Pipeline([("features", features), ("classifier", classifier)])


def build_seed_pipeline() -> Pipeline:
    """The seed's model: four numeric features → logistic regression."""
    return Pipeline(
        [
            ("features", FunctionTransformer(seed_features)),
            ("classifier", LogisticRegression(max_iter=1000)),
        ]
    )
