"""Each task's loss, metrics, example targets and extra model methods, as real Python (one class per task, grouped
by kind: language, classification, regression, similarity, detection, rl, diffusion).

A task class holds what the generated model class gets for its task (backends/pytorch/losses.py names the class
of each loss and derives model.py's template lines from it, reading this package's text, never importing it):

- `loss(self, batch)` and `metrics(self, batch)`: their bodies are Model.loss's and Model.metrics's;
- `targets(model, inputs, batch, batch_size, g, seed, example_inputs)` (a staticmethod): its body is the lines of
  example_batch() after `batch` holds the inputs;
- `init(self, config)`: its body ends Model.__init__;
- any other public method (diffusion's `sample`): pasted into the model class whole, decorators included.

A subclass inherits what it does not define. `self` is the generated model (`TaskModel` for the type checker).
The spec's input names are filled in for fixed spellings (slots.py): the string "x" is the model's first input
and "next_x" the next observation of it, "y" the token input a next-token loss predicts; a call of a slot function
starred in an argument list (`self(*batch_inputs(batch))`) stands for the argument list the emitter writes out
(`self(batch["image"], batch["text"])`), `*cond` for the conditioning inputs' names and `cond[0]` for the first
of them. Layout and comments are kept as they are written here.

Importing this package does not import torch (its modules do).
"""
