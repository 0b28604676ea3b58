"""Curation: scoring models, stored scores, queries and rules, quality flags, the Curate page model."""
