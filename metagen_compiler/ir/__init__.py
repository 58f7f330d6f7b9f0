"""The intermediate representations: the spec IR (ir.spec) the passes fill, the graph IR (ir.graph)
and the structure IR (ir.structure: one class per specialised block) the backends read."""
