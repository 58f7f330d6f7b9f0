"""Semantics: the catalogues (families, tasks, modalities, constraints), values, the program of loaded modules, elaboration."""
