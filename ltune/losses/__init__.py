"""Pure loss functions of tensors (no Lightning, nothing of ltune but torch): the math of each paper, with its
formula, shapes and reference in the docstring."""
