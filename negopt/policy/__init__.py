"""The negative-prompt model (text side): its input format and deployed decode (:mod:`decode`, with the
Python API ``NegativePromptGenerator``), sampling and log-probs for RL and search (:mod:`sampling`),
nucleus sampling (:mod:`nucleus`), the retrieval index (:mod:`retrieval`) and the retrieve-and-rerank
decode (:mod:`rerank`), and supervised fine-tuning (:mod:`sft`)."""
