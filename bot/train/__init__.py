"""Fine-tuning: a LoRA adapter per persona from its export, and the gate before it serves.

data     reading an export (verified against its manifest) and tokens whose labels
         cover only the assistant's turns
train    `train_adapter(TrainJob)`: peft + TRL's SFT or DPO trainer, CPU or GPU
gate     the checks an adapter must pass to serve: validation loss, and a replay of
         the persona's example dialogues, declined topics and AI disclosure
report   `train_report.json` beside the adapter
cli      `bot train`
pipeline the weekly chain: export, then train, gate and canary on a GPU host

Heavy libraries (torch, transformers, peft, trl) are imported only when training runs.
"""
