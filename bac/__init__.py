"""bac: reproducible pediatric bone age assessment, five papers in numbered notebooks.

Light modules are imported here (`bac.config`, `bac.env`, `bac.report`, `bac.metrics`, `bac.data`);
the heavier ones on use (`from bac import preprocess, train`, `from bac.models import ren2019`).
"""
from bac import config, data, env, metrics, report  # noqa: F401

__version__ = "0.1.0"
