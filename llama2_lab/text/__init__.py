"""Text in and out of the model: the SentencePiece tokenizer (Llama 2's settings) and the
Llama-2-chat format (``[INST]``, ``<<SYS>>``) with the loss masks fine-tuning uses."""
