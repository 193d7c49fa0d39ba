"""The app layer: the `cxrbench` CLI (cli.py) and every DVC stage entry, one module per stage family (data, prior,
train, translate, evaluate, report/publish), plus bench and the new-baseline scaffold. The only layer that may import
everything (core, methods, eval, reports); nothing imports it back (tests/test_layers.py)."""
