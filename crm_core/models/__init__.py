"""Models: ResNet classifier (+DRS), ReconstructNet decoder, registry of named variants."""
from crm_core.models.classifier import ARCHS, ClassifierOutput, CamClassifier, LogitsOnly, ModelConfig, build_classifier
from crm_core.models.decoder import ReconstructNet, from_tanh_range, resize_reconstruction, to_tanh_range
from crm_core.models.drs import DRS, DRS_DEFAULT_DELTA, delta_override
from crm_core.models.registry import MODEL_VARIANTS, create_model, register_model

__all__ = [
    "ARCHS", "ClassifierOutput", "CamClassifier", "LogitsOnly", "ModelConfig", "build_classifier",
    "ReconstructNet", "from_tanh_range", "resize_reconstruction", "to_tanh_range", "DRS", "DRS_DEFAULT_DELTA", "delta_override",
    "MODEL_VARIANTS", "create_model", "register_model",
]
