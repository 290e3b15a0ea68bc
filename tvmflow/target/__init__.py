"""target: a stage of the tvmflow pipeline."""
