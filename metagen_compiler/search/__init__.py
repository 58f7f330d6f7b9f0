"""`metagenc search`: the search space from a spec's holes, the Optuna engine, prototype training, the history database, the outputs."""
