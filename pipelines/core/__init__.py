"""The shared core: errors, seeding, I/O checks, run records, CV, blending, the training loop,
checkpoints, Optuna tuning and the Kaggle client. It imports no competition and no command,
so every competition can build on it and nothing in it changes when a competition does."""
