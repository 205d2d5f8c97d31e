"""biobank: specimen biobank inventory for phenotype-linked research registries."""

__version__ = "0.1.0"
