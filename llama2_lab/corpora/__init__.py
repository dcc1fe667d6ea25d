"""Data the project makes itself (nothing is downloaded): the generated story corpus that pretrains
the tiny model, and the checkable dialogues that fine-tune and evaluate the chat models."""
