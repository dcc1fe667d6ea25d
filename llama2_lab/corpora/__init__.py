"""Data the project makes itself (nothing is downloaded): the generated story corpus that pretrains
the tiny model (with `numbers`, the digits and capitals its context extension adds), and the checkable dialogues that fine-tune and evaluate the chat models."""
