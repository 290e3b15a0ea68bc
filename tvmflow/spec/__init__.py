"""spec: a stage of the tvmflow pipeline."""
