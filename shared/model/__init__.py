"""The moderation model: features, training, the artifact, loading and batch inference.

    loader = ModelLoader(settings.model_uri)       # nothing is loaded yet
    verdicts = loader.get().predict(ads)           # ModelUnavailable / InvalidFeatures

Train with `python -m shared.model train`; see `shared/model/__main__.py`.
"""

from shared.model.loading import ModelLoader, load_model
from shared.model.model import ModerationModel

__all__ = ["ModelLoader", "ModerationModel", "load_model"]
