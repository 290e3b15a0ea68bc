"""ir: a stage of the tvmflow pipeline."""
