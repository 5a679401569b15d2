"""deepyard: one YAML job spec → distributed DeepSpeed training on Ray.

Data flow: job.yaml → deepyard.spec (validated once) → deepyard.cli → deepyard.launch
→ deepyard.train on every rank (models, data, DeepSpeed) → summary and history.
"""

__version__ = "0.1.0"
