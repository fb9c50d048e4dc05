"""Train challengers, evaluate them against the champion, gate the promotion, and keep the MLflow registry honest."""
