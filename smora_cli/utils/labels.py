"""Label conventions shared by the collators, which write labels, and the losses, which read them."""

# A label position that no loss counts (PyTorch's and transformers' default ignore_index).
IGNORE = -100
