"""artifact: a stage of the tvmflow pipeline."""
