"""experiments: a stage of the tvmflow pipeline."""
