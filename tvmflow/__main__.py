from tvmflow.cli import run

run()
