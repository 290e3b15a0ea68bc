"""runtime: a stage of the tvmflow pipeline."""
