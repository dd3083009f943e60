"""seqlab: train, decode, evaluate and explain sequence models, from the RNN to the Transformer."""

__version__ = "0.1.0"
