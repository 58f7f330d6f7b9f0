"""The intermediate representations: the spec IR (ir.spec) the passes fill, and the graph IR (ir.graph) the backends read."""
