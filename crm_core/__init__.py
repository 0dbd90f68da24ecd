"""CRM Lab engine: CAM classifiers, Grad-CAM++, the CAM-driven Reconstruction Module, evaluation."""
__version__ = "0.1.0"
